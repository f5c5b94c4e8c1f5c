"""The per-step training log: one JSON line every `train.logging_steps` steps, and the same
values to TensorBoard when `train.tensorboard` is on (the `tensorboard` extra).

    log = StepLog(model_dir, every=10, tensorboard=False)
    log.add(step=1, epoch=1, loss_sum=812.0, tokens=400, lr=3e-3, grad_norm=1.7, seconds=0.05)
    log.close()

Each line: step, epoch, loss (mean token loss over the steps since the last line), lr (the
LR the line's last step used), grad_norm (mean over those steps, before clipping),
tokens_per_second (over those steps), skipped_steps (fp16 steps the grad scaler skipped).
At each epoch's end, an evaluation line (as Hugging Face's log_history has its eval entries): step,
epoch and what the epoch measured after training, val_loss, val_accuracy, the seq2seq scores
(val_bleu, val_chrf, val_exact_match) and epsilon under privacy; it has no `loss` key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

STEPS_FILE = "steps.jsonl"
TENSORBOARD_DIR = "tensorboard"


class StepLog:
    def __init__(self, model_dir: Path, every: int, tensorboard: bool, enabled: bool = True):
        """enabled False (data-parallel ranks other than 0): counts, writes nothing."""
        self.every = every
        self.path = model_dir / STEPS_FILE
        self.fh = self.path.open("a", encoding="utf-8") if enabled else None  # a resumed run keeps its lines
        self.writer = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(model_dir / TENSORBOARD_DIR))
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.tokens, self.norms, self.seconds, self.skipped, self.n = 0.0, 0, 0.0, 0.0, 0, 0

    def add(
        self,
        *,
        step: int,
        epoch: int,
        loss_sum: float,
        tokens: int,
        lr: float,
        grad_norm: float,
        seconds: float,
        skipped: bool = False,
    ) -> None:
        self.loss_sum += loss_sum
        self.tokens += tokens
        self.norms += grad_norm
        self.seconds += seconds
        self.skipped += skipped
        self.n += 1
        if step % self.every or self.fh is None:
            return
        row = {
            "step": step,
            "epoch": epoch,
            "loss": self.loss_sum / max(self.tokens, 1),
            "lr": lr,
            "grad_norm": self.norms / self.n,
            "tokens_per_second": round(self.tokens / max(self.seconds, 1e-9), 1),
            "skipped_steps": self.skipped,
        }
        self.fh.write(json.dumps({k: _finite(v) for k, v in row.items()}) + "\n")
        self.fh.flush()
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_second"):
                self.writer.add_scalar(f"train/{key}", row[key], step)
        self._reset()

    def end_of_epoch(self, row: dict, step: int) -> None:
        """An epoch's history row (losses, accuracies, the seq2seq scores, epsilon) to TensorBoard as
        epoch/<name> at the run's step, and its evaluation to steps.jsonl; history.csv holds the row."""
        measured = {k: v for k, v in row.items() if (k.startswith("val_") or k in ("epsilon", "delta"))}
        measured = {k: v for k, v in measured.items() if v is not None}
        if measured and self.fh is not None:
            line = {"step": step, "epoch": row["epoch"], **measured}
            self.fh.write(json.dumps({k: _finite(v) for k, v in line.items()}) + "\n")
            self.fh.flush()
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "step", "elapsed_seconds") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def state(self) -> dict:
        """The open window (steps since the last line), for a checkpoint."""
        return {
            "loss_sum": self.loss_sum,
            "tokens": self.tokens,
            "norms": self.norms,
            "seconds": self.seconds,
            "skipped": self.skipped,
            "n": self.n,
        }

    def restore(self, state: dict, step: int, evaluated: set[tuple[int, int]]) -> None:
        """Continue a resumed run's log: step lines past its checkpoint's `step` are dropped, and evaluation
        lines of epochs the checkpoint's history does not hold, (epoch, step) (written, not yet saved)."""
        self.loss_sum, self.tokens, self.norms = state["loss_sum"], state["tokens"], state["norms"]
        self.seconds, self.skipped, self.n = state["seconds"], state["skipped"], state["n"]
        if self.fh is None:
            return
        self.fh.close()
        def keep(row: dict) -> bool:
            return row["step"] <= step if "loss" in row else (row["epoch"], row["step"]) in evaluated

        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if keep(json.loads(line))]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.fh = self.path.open("a", encoding="utf-8")

    def __enter__(self) -> "StepLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.writer is not None:
            self.writer.close()


def _finite(value):
    # JSON has no inf/nan: write them as strings a reader can still parse with float()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
