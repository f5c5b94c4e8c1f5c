"""Training throughput and peak memory of the benchmark LSTM under the training knobs:
precision (fp32 vs bf16), gradient accumulation (the same 64 records per step in smaller
micro-batches) and the optimizer (adamw vs adamw8bit).

    python benchmarks/bench_training_knobs.py                  # every variant, markdown rows
    python benchmarks/bench_training_knobs.py --variant bf16 --steps 10
    python benchmarks/bench_training_knobs.py --device cuda    # the same on a GPU

Model: embedding 256, 2 LSTM layers of 256, BPE-1000 tokens, the bundled table. Each
variant trains in its own process (so its peak RSS is its own) for a fixed number of steps;
throughput counts only the time inside optimizer steps. bf16 on a CPU without bf16
instructions is emulated and very slow, so it runs fewer steps there (--bf16-steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import DATA, machine, peak_rss_mb  # noqa: E402

VARIANTS = {  # name -> (train section, optim section)
    "fp32": ({"precision": "fp32"}, {}),
    "bf16": ({"precision": "bf16"}, {}),
    "fp16": ({"precision": "fp16"}, {}),
    "fp32 /2 x2": ({"grad_accumulation_steps": 2}, {}),  # half the batch per micro-batch, 2 of them
    "fp32 /4 x4": ({"grad_accumulation_steps": 4}, {}),
    "adamw": ({}, {"name": "adamw", "weight_decay": 0.01}),
    "adamw8bit": ({}, {"name": "adamw8bit", "weight_decay": 0.01}),
}


def run_variant(name: str, steps: int, device: str, model_dir: str, hidden: int, batch: int) -> dict:
    import torch

    from synthloom import train

    train_section, optim_section = VARIANTS[name]
    if "grad_accumulation_steps" in train_section:  # the same records per step, in k micro-batches
        batch //= train_section["grad_accumulation_steps"]
    config = {
        "output_dir": model_dir,
        "data": {"path": str(DATA), "validation_split": 0.1},
        "model": {"embedding_dim": 256, "hidden_size": hidden, "num_layers": 2, "dropout": 0.2},
        "optim": {"lr": 0.003, **optim_section},
        "train": {"max_steps": steps, "batch_size": batch, "seed": 0, "device": device, **train_section},
        "early_stopping": {"enabled": False},
        "checkpoint": {"save_best": False},
    }
    result = train(config, progress=False)
    s = result.summary
    return {
        "variant": name,
        "records_per_step": s["effective_batch_size"],
        "steps": result.steps,
        "tokens_per_s": round(s["tokens_per_second"]),
        "final_loss": round(result.history[-1]["loss"], 4),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else "",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--bf16-steps", type=int, default=6, help="steps for bf16 on a CPU (emulated there: slow)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--hidden", type=int, default=256, help="LSTM units per layer")
    ap.add_argument("--batch-size", type=int, default=64, help="records per step")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(
            json.dumps(run_variant(args.variant, args.steps, args.device, args.model_dir, args.hidden, args.batch_size))
        )
        return
    names = list(VARIANTS) if args.variant == "all" else [args.variant]
    if args.device == "cpu":
        names = [n for n in names if n != "fp16"]  # refused on the CPU, by design
    print(f"machine: {machine()}; device {args.device}; hidden {args.hidden}, {args.batch_size} records a step\n")
    cols = ["variant", "records_per_step", "steps", "tokens_per_s", "final_loss", "peak_rss_mb", "peak_gpu_mb"]
    cols += ["threads", "torch"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in names:
        steps = args.bf16_steps if name == "bf16" and args.device == "cpu" else args.steps
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--child", "--variant", name, "--steps", str(steps)]
            cmd += ["--device", args.device, "--model-dir", f"{tmp}/model"]
            cmd += ["--hidden", str(args.hidden), "--batch-size", str(args.batch_size)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
        print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
