"""Data-parallel training: 1 process against N on this machine, the same run (same global batch, same
steps), in training tokens per second and in seconds to the same validation loss.

    python benchmarks/bench_ddp.py                          # weather table and help-topic text, 1 vs 2
    python benchmarks/bench_ddp.py --runs table --steps 300 --nproc 2

Each run is `synthloom train CONFIG --nproc N` (torch's elastic launcher, as torchrun --standalone);
1 process uses all the cores through torch's threads, N processes use cores / N threads each. The
global batch is the same (train.batch_size x N = the 1-process batch), so both take the same optimizer
steps over the same records and end at the same weights up to float rounding (tests/test_ddp.py); what
differs is the time. tokens/s is the run's own count (steps.jsonl: tokens of all ranks over the steps'
wall time), train_s the whole command (start, rendezvous and the model dir included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402
from bench_quality import TABLES, child_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYNTHLOOM = ROOT / ".venv" / "bin" / "synthloom"


def text_file(work: Path) -> Path:
    """Python's own help topics, one paragraph a record (as bench_models.py's text run)."""
    import pydoc_data.topics as topics

    paragraphs = [p.replace("\n", " ").strip() for t in topics.topics.values() for p in t.split("\n\n")]
    path = work / "topics.txt"
    path.write_text("\n".join(p for p in paragraphs if 40 <= len(p) <= 400) + "\n")
    return path


def config(run: str, work: Path, nproc: int, args) -> dict:
    batch = args.batch // nproc
    common = {
        "output_dir": str(work / f"{run}_{nproc}"),
        "train": {"max_steps": args.steps, "batch_size": batch, "seed": 0, "logging_steps": 10},
        "early_stopping": {"enabled": False},
        "overwrite": True,
    }
    if run == "table":
        return common | {"data": {"path": str(TABLES["weather"])}}
    return common | {"data": {"path": str(text_file(work)), "format": "text"}, "tokenizer": {"kind": "char"}}


def measure(run: str, work: Path, nproc: int, args) -> dict:
    path = work / f"{run}_{nproc}.yaml"
    path.write_text(yaml.safe_dump(config(run, work, nproc, args)))
    cmd = [str(SYNTHLOOM), "train", str(path), "--no-progress", "-q", "--nproc", str(nproc)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=child_env(max(1, args.cores // nproc)), cwd=ROOT)
    seconds = time.perf_counter() - start
    out = work / f"{run}_{nproc}"
    lines = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    steady = lines[1:] or lines  # the first window holds the warm-up steps
    history = (out / "history.csv").read_text().splitlines()
    header, last = history[0].split(","), history[-1].split(",")
    return {
        "run": run,
        "processes": nproc,
        "threads_each": max(1, args.cores // nproc),
        "batch_each": args.batch // nproc,
        "steps": json.loads((out / "summary.json").read_text())["steps"],
        "tokens_per_second": round(sum(x["tokens_per_second"] for x in steady) / len(steady)),
        "train_s": round(seconds, 1),
        "val_loss": round(float(last[header.index("val_loss")]), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="table,text", help="table (weather, field tokens), text (char tokens)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256, help="the global batch: records a step, all processes")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    args = ap.parse_args()
    print(f"# {machine()}; torch threads: cores / processes", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        for run in args.runs.split(","):
            for nproc in (1, args.nproc):
                row = measure(run, Path(tmp), nproc, args)
                print(json.dumps(row), flush=True)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
