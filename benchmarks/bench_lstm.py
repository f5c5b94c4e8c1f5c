"""Training and generation speed of the benchmark LSTM on the bundled ~125-character table.

    python benchmarks/bench_lstm.py                      # every tokenizer, markdown rows on stdout
    python benchmarks/bench_lstm.py --tokenizer char --train-steps 300 --records 2000

Fixed model: embedding 256, 2 LSTM layers of 256, batch 64, fp32 (issue 2's benchmark).
Training and generation each run in their own process, so each peak memory (max RSS) is
its own (a user who only generates never pays for training's peak).
Training throughput counts only time inside optimizer steps (forward, backward, update);
generation throughput is records/s over all records sampled (valid or not) by a model
trained for a fixed number of steps (seeded, so every run samples from the same model:
how fast invalid records run on depends on how trained the model is); it is the median of
--gen-rounds runs, with their range beside it (timings here vary by ~15 % run to run).
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


TOKENIZERS = {  # name -> tokenizer section
    "char": {"kind": "char"},
    "sp-unigram-500": {"kind": "sentencepiece", "model_type": "unigram", "vocab_size": 500},
    "sp-bpe-1000": {"kind": "sentencepiece", "model_type": "bpe", "vocab_size": 1000},
}


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_train(name: str, model_dir: str, train_steps: int, threads: int | None) -> dict:
    import torch

    from synthloom import train
    from synthloom.config import DataConfig
    from synthloom.data import read_records
    from synthloom.tokenizers import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    config = {
        "output_dir": model_dir,
        "data": {"path": str(DATA), "validation_split": 0.1},
        "tokenizer": TOKENIZERS[name],
        "model": {"embedding_dim": 256, "hidden_size": 256, "num_layers": 2, "dropout": 0.2},
        "train": {"max_steps": train_steps, "batch_size": 64, "seed": 0},
        "early_stopping": {"enabled": False},
    }
    result = train(config, progress=False)
    tokenizer = load_tokenizer(Path(model_dir))
    texts = read_records(DataConfig(path=DATA, format="csv", field_delimiter=",")).texts
    chars_per_token = sum(len(t) + 1 for t in texts) / sum(len(tokenizer.encode(t)) + 1 for t in texts)
    tokens_per_s = result.summary["tokens_per_second"]
    return {
        "vocab": tokenizer.vocab_size,
        "chars_per_token": round(chars_per_token, 2),
        "train_steps": result.steps,
        "train_tokens_per_s": round(tokens_per_s),
        "train_chars_per_s": round(tokens_per_s * chars_per_token),
        "final_val_loss": round(result.history[-1]["val_loss"], 4) if result.history else None,
        "train_peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_generate(model_dir: str, n_records: int, threads: int | None, rounds: int = 3) -> dict:
    import torch

    from synthloom import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir)
    model.generate(64, seed=0, max_invalid=10**9)  # warm up
    runs = []  # (records, valid, seconds) per round: this machine's timings vary by ~15 % run to run
    for seed in range(1, rounds + 1):
        start = time.perf_counter()
        records = model.generate(n_records, seed=seed, max_invalid=10**9)  # the default batch_size, streams
        seconds = time.perf_counter() - start
        runs.append((len(records), sum(r.valid for r in records), seconds))
    rates = sorted(n / s for n, _, s in runs)
    median = runs[sorted(range(rounds), key=lambda i: runs[i][0] / runs[i][2])[rounds // 2]]
    return {
        "gen_records": median[0],
        "gen_valid_pct": round(100 * median[1] / median[0], 1),
        "gen_records_per_s": round(median[0] / median[2], 1),
        "gen_records_per_s_range": f"{rates[0]:.0f}-{rates[-1]:.0f}",
        "gen_valid_per_s": round(median[1] / median[2], 1),
        "gen_peak_rss_mb": peak_rss_mb(),
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
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", choices=[*TOKENIZERS, "all"], default="all")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gen-rounds", type=int, default=3, help="generation runs; the median is reported")
    ap.add_argument("--child", choices=["train", "generate"], help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "train":
        print(json.dumps(run_train(args.tokenizer, args.model_dir, args.train_steps, args.threads)))
        return
    if args.child == "generate":
        print(json.dumps(run_generate(args.model_dir, args.records, args.threads, args.gen_rounds)))
        return
    names = list(TOKENIZERS) if args.tokenizer == "all" else [args.tokenizer]
    print(f"machine: {machine()}\n")
    cols = [
        "tokenizer",
        "vocab",
        "chars_per_token",
        "train_steps",
        "train_tokens_per_s",
        "train_chars_per_s",
        "final_val_loss",
        "train_peak_rss_mb",
        "gen_records",
        "gen_valid_pct",
        "gen_records_per_s",
        "gen_records_per_s_range",
        "gen_valid_per_s",
        "gen_peak_rss_mb",
        "threads",
        "torch",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    threads = ["--threads", str(args.threads)] if args.threads else []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = f"{tmp}/model"
            row = {"tokenizer": name}
            for child in ("train", "generate"):  # separate processes: each peak RSS is its own
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    child,
                    "--tokenizer",
                    name,
                    "--model-dir",
                    model_dir,
                    "--train-steps",
                    str(args.train_steps),
                    "--records",
                    str(args.records),
                    "--gen-rounds",
                    str(args.gen_rounds),
                    *threads,
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                row |= json.loads(out.strip().splitlines()[-1])
        print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
