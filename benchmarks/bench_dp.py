"""DP-SGD vs plain training of the benchmark LSTM: time per epoch, the epsilon reached, where DP's time goes.

    python benchmarks/bench_dp.py                          # sp-bpe-1000, 1 epoch each, markdown on stdout
    python benchmarks/bench_dp.py --tokenizer char --epochs 1 --device cuda

Fixed model: embedding 256, 2 LSTM layers of 256, batch 64 (issue 2's benchmark), the bundled
customers table (4,500 training records). Both runs happen in this one process, plain first,
with the same config but `privacy` (noise multiplier 1.0, each record clipped to 1.0, Poisson
sampling at q = 1 / steps per epoch). Time per epoch counts optimizer steps only (forward,
backward, per-record gradients, clipping, noise, update), as summary.json's tokens_per_second does.
The breakdown times the phases of a few more DP steps on the trained model's batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402  (one description of the machine for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "customers.csv"
TOKENIZERS = {
    "char": {"kind": "char"},
    "sp-bpe-1000": {"kind": "sentencepiece", "model_type": "bpe", "vocab_size": 1000},
}


def config(name: str, out: str, epochs: int, device: str, private: bool) -> dict:
    cfg = {
        "output_dir": out,
        "data": {"path": str(DATA), "validation_split": 0.1},
        "tokenizer": TOKENIZERS[name],
        "model": {"embedding_dim": 256, "hidden_size": 256, "num_layers": 2, "dropout": 0.2},
        "train": {"epochs": epochs, "batch_size": 64, "seed": 0, "device": device},
        "early_stopping": {"enabled": False},
        "checkpoint": {"save_best": False},
    }
    if private:
        cfg["privacy"] = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0}
        cfg["train"]["max_grad_norm"] = 0.0
    return cfg


def breakdown(model_dir: str, name: str, epochs: int, device: str, steps: int = 5) -> dict:
    """Seconds per DP step in each phase, over `steps` steps."""
    import torch
    import torch.nn.functional as F

    from synthloom.config import validate_config
    from synthloom.data import IGNORE_INDEX, collate
    from synthloom.models import build_model
    from synthloom.optim import build_optimizer
    from synthloom.privacy import PrivateTraining, make_private, plan_privacy
    from synthloom.tokenizers import EOR_ID, PAD_ID
    from synthloom.train import prepare

    cfg = validate_config(config(name, f"{model_dir}-x", epochs, device, True))
    data = prepare(cfg)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    net = build_model(cfg.model, data.tokenizer.vocab_size).to(dev)
    hooks = make_private(net)
    optimizer = build_optimizer(cfg.optim, net)
    private = PrivateTraining(plan_privacy(cfg, len(data.train_ids), data.plan), optimizer, hooks, dev, 0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    phases = dict.fromkeys(["forward", "backward (incl. per-record grads)", "record norms", "clip+noise+update"], 0.0)
    net.train()
    for step in range(steps + 1):  # the first is a warm-up
        idx = sorted(private.sample(len(data.train_ids)), key=lambda i: len(data.train_ids[i]))
        batches = [
            collate([data.train_ids[i] for i in idx[j : j + 64]], EOR_ID, PAD_ID) for j in range(0, len(idx), 64)
        ]
        private.optimizer.zero_grad(set_to_none=True)
        for i, (inputs, targets) in enumerate(batches):
            inputs, targets = inputs.to(dev), targets.to(dev)
            marks = [time.perf_counter()]
            logits, _ = net(inputs)
            mask = targets != IGNORE_INDEX
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
            loss = (loss.view_as(targets).sum(1) / mask.sum(1)).sum()
            sync()
            marks.append(time.perf_counter())
            loss.backward()
            sync()
            marks.append(time.perf_counter())
            private.record_norms()
            sync()
            marks.append(time.perf_counter())
            private.add_micro_batch(last=i == len(batches) - 1)
            sync()
            marks.append(time.perf_counter())
            if step:
                for key, a, b in zip(phases, marks, marks[1:]):
                    phases[key] += (b - a) / steps
        private.end_step()
    return {k: round(v, 4) for k, v in phases.items()}


def layer_microbench(steps: int = 3) -> list[dict]:
    """Forward and backward seconds of the benchmark model's LSTM stack (B 64, T 40, V 1000) as nn.LSTM,
    as Opacus' own DPLSTM and as synthloom's DPLSTM, both under Opacus' per-record gradient hooks."""
    import warnings

    import torch
    import torch.nn.functional as F
    from opacus import GradSampleModule
    from opacus.layers import DPLSTM as OpacusDPLSTM

    from synthloom.models.dp_lstm import DPLSTM, register_grad_sampler

    warnings.filterwarnings("ignore", "Full backward hook is firing")
    register_grad_sampler()
    torch.manual_seed(0)

    class Net(torch.nn.Module):  # embedding -> 2 LSTM layers -> head, as the benchmark model
        def __init__(self, lstm):
            super().__init__()
            self.embedding, self.lstm, self.head = torch.nn.Embedding(vocab, 256), lstm, torch.nn.Linear(256, vocab)

        def forward(self, tokens):
            return self.head(self.lstm(self.embedding(tokens))[0])

    vocab, batch, length = 1000, 64, 40
    x, y = torch.randint(3, vocab, (batch, length)), torch.randint(3, vocab, (batch, length))
    rows = []
    for name in ("nn.LSTM (no per-record gradients)", "Opacus DPLSTM", "synthloom DPLSTM"):
        lstm = torch.nn.LSTM(256, 256, num_layers=2, batch_first=True)
        if name == "Opacus DPLSTM":
            lstm = OpacusDPLSTM(256, 256, num_layers=2, batch_first=True)
        elif name == "synthloom DPLSTM":
            lstm = DPLSTM.from_lstm(lstm)
        net = Net(lstm)
        if not name.startswith("nn."):
            GradSampleModule(net, loss_reduction="sum")
        times = [0.0, 0.0]
        for i in range(steps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum")
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            for p in net.parameters():
                p.grad = None
                p.grad_sample = None
            if i:
                times[0] += (t1 - t0) / steps
                times[1] += (t2 - t1) / steps
        rows.append({"layer": name, "forward_s": round(times[0], 3), "backward_s": round(times[1], 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", choices=list(TOKENIZERS), default="sp-bpe-1000")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layers-only", action="store_true", help="only the LSTM-layer microbenchmark")
    args = ap.parse_args()
    import torch

    from synthloom import train
    from synthloom.privacy import epsilon_after

    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else machine()
    print(f"machine: {device_name}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.device == "cpu":
        print("| layer | forward_s | backward_s |\n|---|---|---|")
        for row in layer_microbench():
            print(f"| {row['layer']} | {row['forward_s']} | {row['backward_s']} |")
        print()
        if args.layers_only:
            return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for private in (False, True):
            out = f"{tmp}/{'dp' if private else 'plain'}"
            result = train(config(args.tokenizer, out, args.epochs, args.device, private), progress=False)
            dp = json.loads((Path(out) / "privacy.json").read_text()) if private else None
            rows.append(
                {
                    "run": "DP-SGD" if private else "plain",
                    "steps": result.steps,
                    "s_per_epoch": round(result.summary["step_seconds"] / result.epochs, 1),
                    "tokens_per_s": round(result.summary["tokens_per_second"]),
                    "val_loss": round(result.history[-1]["val_loss"], 4),
                    "epsilon": round(dp["epsilon"], 3) if dp else "-",
                    "delta": f"{dp['delta']:.2g}" if dp else "-",
                    "sample_rate": round(dp["sample_rate"], 5) if dp else "-",
                }
            )
        phases = breakdown(f"{tmp}/dp", args.tokenizer, args.epochs, args.device)
        q, delta = rows[1]["sample_rate"], float(rows[1]["delta"])
        per_epoch = rows[1]["steps"] // args.epochs
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    print(f"\nDP slowdown per epoch: {rows[1]['s_per_epoch'] / rows[0]['s_per_epoch']:.2f}x")
    for epochs in (10, 30):
        eps = epsilon_after(1.0, q, epochs * per_epoch, delta, "prv")
        print(f"epsilon after {epochs} epochs at this noise: {eps:.2f}")
    print("\nDP step, seconds per phase (mean of 5 steps): " + json.dumps(phases))


if __name__ == "__main__":
    main()
