"""Training and generation speed of the benchmark LSTM on the bundled ~125-character table.

    python benchmarks/bench_lstm.py                      # both tokenizers, markdown rows on stdout
    python benchmarks/bench_lstm.py --tokenizer char --train-seconds 60 --records 2000

Fixed model: embedding 256, 2 LSTM layers of 256, batch 64, fp32 (issue 2's benchmark).
Each tokenizer runs in its own process so that peak memory (max RSS) is its own.
Training throughput counts only time inside optimizer steps (forward, backward, update);
generation throughput is records/s over all records sampled (valid or not) by a model
trained for --train-seconds, so record lengths are realistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "customers.csv"


def run_one(tokenizer: str, train_seconds: float, n_records: int, threads: int | None) -> dict:
    import torch

    from synthloom import load_model, train
    from synthloom.data import read_records
    from synthloom.config import DataConfig

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "output_dir": f"{tmp}/model",
            "data": {"path": str(DATA), "validation_split": 0.1},
            "tokenizer": {"kind": tokenizer, "vocab_size": 500},
            "model": {"embedding_dim": 256, "hidden_size": 256, "num_layers": 2, "dropout": 0.2},
            "train": {"epochs": 1000, "batch_size": 64, "max_time_seconds": train_seconds, "seed": 0},
            "early_stopping": {"enabled": False},
        }
        result = train(config, progress=False)
        model = load_model(result.output_dir)
        texts = read_records(DataConfig(path=DATA, format="csv", field_delimiter=",")).texts
        n_chars = sum(len(t) + 1 for t in texts)  # + the end of record
        n_tokens = sum(len(model.tokenizer.encode(t)) + 1 for t in texts)
        chars_per_token = n_chars / n_tokens
        tokens_per_s = result.summary["tokens_per_second"]

        model.generate(64, seed=0, max_invalid=10**9)  # warm up
        start = time.perf_counter()
        records = model.generate(n_records, seed=1, max_invalid=10**9, batch_size=1024)
        gen_seconds = time.perf_counter() - start
    return {
        "tokenizer": tokenizer,
        "vocab": model.tokenizer.vocab_size,
        "chars_per_token": round(chars_per_token, 2),
        "train_steps": result.steps,
        "train_tokens_per_s": round(tokens_per_s),
        "train_chars_per_s": round(tokens_per_s * chars_per_token),
        "final_val_loss": round(result.history[-1]["val_loss"], 4) if result.history else None,
        "gen_records": len(records),
        "gen_valid_pct": round(100 * sum(r.valid for r in records) / len(records), 1),
        "gen_records_per_s": round(len(records) / gen_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", choices=["char", "sentencepiece", "both"], default="both")
    ap.add_argument("--train-seconds", type=float, default=90.0)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.tokenizer, args.train_seconds, args.records, args.threads)))
        return
    kinds = ["char", "sentencepiece"] if args.tokenizer == "both" else [args.tokenizer]
    print(f"machine: {machine()}\n")
    cols = ["tokenizer", "vocab", "chars_per_token", "train_steps", "train_tokens_per_s", "train_chars_per_s",
            "final_val_loss", "gen_records", "gen_valid_pct", "gen_records_per_s", "peak_rss_mb", "threads", "torch"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for kind in kinds:
        cmd = [sys.executable, __file__, "--child", "--tokenizer", kind, "--train-seconds", str(args.train_seconds),
               "--records", str(args.records)] + (["--threads", str(args.threads)] if args.threads else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
