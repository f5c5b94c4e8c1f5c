"""Public pretraining, then DP fine-tuning with LoRA, against DP training from scratch, at one epsilon.

    python benchmarks/bench_dp_lora.py --table card --epsilon 4 --budget 120
    python benchmarks/bench_dp_lora.py --table weather --model transformer

A real table a pip package ships is split three ways, seeded: a holdout (as bench_quality.py makes
it), and the rest in halves, "public" and "private". Every DP run trains on the private half to
privacy.target_epsilon with delta 1e-5 at record level, all mechanisms counted, and is scored by
SDMetrics' QualityReport (benchmarks/peers/score.py, its own venv) on rows sampled from it against
the private half, with the holdout for distance to closest record. The runs, one after another in
this process' machine:

- dp_scratch: the default config on the private half (its vocabularies from DP statistics);
- public: the default config on the public half, no DP (the starting point; not scored);
- dp_lora: train.init_from the public model, lora.enabled (defaults), DP on the private half;
- dp_full: train.init_from the public model, every weight trained, DP on the private half;
- nondp: the default config on the private half without DP (what DP costs, for reference).

Each trains for at most --budget seconds (train.max_time_seconds); the step time under DP (fit loop
seconds per optimizer step) shows what per-record gradients of the adapters only save.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402
from bench_quality import TABLES, child_env, score, split_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYNTHLOOM = ROOT / ".venv" / "bin" / "synthloom"


def halves(train_csv: Path, seed: int, out: Path) -> tuple[Path, Path]:
    with open(train_csv, newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    random.Random(seed + 1).shuffle(rows)
    paths = []
    for name, part in (("public", rows[: len(rows) // 2]), ("private", rows[len(rows) // 2 :])):
        path = out / f"{name}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def run(name: str, data: Path, work: Path, args, **sections) -> dict:
    """Train (synthloom train) and sample (synthloom generate) one config; the model dir's facts."""
    out = work / name
    config = {"output_dir": str(out), "overwrite": True, "data": {"path": str(data)}}
    config["train"] = {"max_time_seconds": args.budget, "seed": args.seed}
    if args.model == "transformer" and "init_from" not in sections.get("train", {}):
        config["model"] = {"kind": "transformer"}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = child_env(args.threads)
    with open(work / f"{name}.log", "w") as log:
        subprocess.run([str(SYNTHLOOM), "train", str(path), "--no-progress"], check=True, stderr=log, env=env)
    summary = json.loads((out / "summary.json").read_text())
    row = {
        "run": name,
        "steps": summary["steps"],
        "train_s": summary["train_seconds"],
        "ms_per_step": round(1000 * summary["step_seconds"] / max(summary["steps"], 1), 1),
        "parameters": summary["parameters"],
        "trained_parameters": summary.get("trained_parameters", summary["parameters"]),
        "stopped_by": summary["stopped_by"],
    }
    if (out / "privacy.json").is_file():
        privacy = json.loads((out / "privacy.json").read_text())
        row["epsilon"] = round(privacy["epsilon"], 3)
        row["delta"] = privacy["delta"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="card", choices=sorted(TABLES))
    ap.add_argument("--model", default="lstm", choices=["lstm", "transformer"])
    ap.add_argument("--epsilon", type=float, default=4.0)
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per run (%(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_dp_lora_"))
    train_csv, holdout_csv, *_ = split_table(TABLES[args.table], args.seed, work)
    public, private = halves(train_csv, args.seed, work)
    dp = {"enabled": True, "target_epsilon": args.epsilon, "delta": 1e-5}
    base = work / "public"
    plans = [
        ("dp_scratch", private, {"privacy": dp}),
        ("public", public, {}),
        ("dp_lora", private, {"privacy": dp, "lora": {"enabled": True}, "train": {"init_from": str(base)}}),
        ("dp_full", private, {"privacy": dp, "train": {"init_from": str(base)}}),
        ("nondp", private, {}),
    ]
    print(
        f"machine: {machine()}; table {args.table}; model {args.model}; epsilon {args.epsilon}; budget {args.budget} s"
    )
    n_private = sum(1 for _ in open(private)) - 1
    for name, data, sections in plans:
        row = run(name, data, work, args, **sections)
        if name != "public":
            synth = work / f"{name}.csv"
            cmd = [str(SYNTHLOOM), "generate", str(work / name), "-n", str(n_private), "--seed", str(args.seed + 1)]
            subprocess.run([*cmd, "-o", str(synth)], check=True, env=child_env(args.threads), capture_output=True)
            scored = score(private, holdout_csv, synth, work, name, args)
            row |= {k: scored.get(k) for k in ("quality", "column_shapes", "column_pair_trends", "valid_pct")}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
