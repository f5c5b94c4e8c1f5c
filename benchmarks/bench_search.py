"""A 12-trial TPE study against a 12-point grid on a benchmark table: the best validation loss each finds.

    python benchmarks/bench_search.py                       # weather, 400 steps a trial
    python benchmarks/bench_search.py --table card --steps 300 --trials 12

Both studies search the config `synthloom config init` writes for the table, every trial trained for
the same fixed number of optimizer steps (train.max_steps, early stopping off, seed 0), so a trial's
value is its configuration's, not its luck with a time limit. The grid is the plain one users run:
optim.lr in {1e-3, 2e-3, 5e-3, 1e-2} x model.hidden_size in {64, 128, 256}. TPE searches the same two
keys as ranges and choices (optim.lr log-uniform 5e-4..2e-2) plus model.dropout (uniform 0..0.4),
seeded, no pruning (so both spend the same steps). The figure is the best val_loss (nats per token).
"""

from __future__ import annotations

import argparse
import csv
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
GRID = {"optim.lr": {"choices": [1e-3, 2e-3, 5e-3, 1e-2]}, "model.hidden_size": {"choices": [64, 128, 256]}}
TPE = {
    "optim.lr": {"log_uniform": [5e-4, 2e-2]},
    "model.hidden_size": {"choices": [64, 128, 256]},
    "model.dropout": {"uniform": [0.0, 0.4]},
}


def study(name: str, space: dict, sampler: str, work: Path, args) -> dict:
    config = {
        "output_dir": str(work / name),
        "data": {"path": str(TABLES[args.table])},
        "train": {"max_steps": args.steps, "seed": 0},
        "early_stopping": {"enabled": False},
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    (work / f"{name}_space.yaml").write_text(yaml.safe_dump(space))
    cmd = [str(SYNTHLOOM), "search", str(work / f"{name}.yaml"), "--space", str(work / f"{name}_space.yaml")]
    cmd += ["--trials", str(args.trials), "--sampler", sampler, "--pruner", "none", "--seed", "0", "-q"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=child_env(args.threads))
    seconds = time.perf_counter() - start
    with open(work / name / "trials.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["state"] == "COMPLETE"]
    best = min(rows, key=lambda r: float(r["val_loss"]))
    params = {k: v for k, v in best.items() if k not in ("trial", "state", "val_loss")}
    return {"study": name, "trials": len(rows), "best_val_loss": round(float(best["val_loss"]), 4),
            "best_params": params, "seconds": round(seconds, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="weather", choices=sorted(TABLES))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    print(f"machine: {machine()}; table {args.table}; {args.steps} steps a trial; {args.trials} trials")
    for name, space, sampler in (("grid", GRID, "grid"), ("tpe", TPE, "tpe")):
        print(study(name, space, sampler, work, args), flush=True)


if __name__ == "__main__":
    main()
