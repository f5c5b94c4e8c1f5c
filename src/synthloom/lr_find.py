"""The LR range test: a short run on the config's data and model with the LR rising
exponentially from `start_lr` to `end_lr`, one LR per optimizer step; the loss is recorded
and an LR suggested. Nothing is written to output_dir (nothing is written at all).

    result = lr_find("config.yaml", start_lr=1e-7, end_lr=10, num_steps=100)
    print(result.suggestion, result.reason)

Each step is a real optimizer step as training takes it (accumulation, clipping, precision);
the schedule is not used (the test sets the LR itself). The loss is smoothed with a
bias-corrected exponential moving average; the run stops early once the smoothed loss
exceeds `diverge_factor` x its minimum. The suggestion is the LR where the smoothed loss
falls fastest (per log-LR) before its minimum, the usual reading of the curve.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .config import ConstantSchedule, TrainingConfig
from .data import Batches, batch_indices
from .errors import TrainingError
from .models import build_model, resolve_device
from .optim import build_optimizer
from .progress import progress_bar
from .tokenizers import slot_mask
from .train import Precision, as_config, check_runtime, optimizer_step, prepare

log = logging.getLogger("synthloom")


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # each step's mean token loss
    smoothed: list[float]
    suggestion: float | None
    reason: str
    stopped_early: bool


def lr_find(
    config: TrainingConfig | dict | str | Path,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    progress: bool | None = None,
) -> LRFindResult:
    if not (0 < start_lr < end_lr):
        raise TrainingError(f"lr-find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_steps < 5:
        raise TrainingError(f"lr-find: need at least 5 steps, got {num_steps}")
    config = as_config(config)
    if config.privacy.enabled:
        log.warning(
            "lr-find runs plain steps, without DP-SGD's per-record clipping and noise: its curve is not private "
            "and the LR it suggests is for non-private training (DP-SGD usually wants a larger one)"
        )
    device = resolve_device(config.train.device, "train.device")
    check_runtime(config, device)
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # the test sets the LR itself: the config's schedule (and whether it fits a run) plays no part
    data = prepare(config.model_copy(update={"schedule": ConstantSchedule()}))
    config = data.config  # train.batch_size resolved for the records
    net = build_model(config.model, data.tokenizer.vocab_size, slot_mask(data.tokenizer)).to(device)
    optimizer = build_optimizer(config.optim, net)
    precision = Precision.of(config.train.precision, device)
    batches = _endless_batches(data.batches, config.train.batch_size, random.Random(seed))
    growth = (end_lr / start_lr) ** (1.0 / (num_steps - 1))

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, stopped_early = 0.0, math.inf, False
    net.train()
    with progress_bar(progress, num_steps, "lr-find", "lr {task.fields[lr]:.2e}", lr=start_lr) as bar:
        for i in range(num_steps):
            lr = start_lr * growth**i
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [next(batches) for _ in range(config.train.grad_accumulation_steps)]
            stats = optimizer_step(net, optimizer, micro, device, config.train, precision)
            loss = stats.loss_sum / stats.tokens
            bar(i + 1, lr=lr)
            if not math.isfinite(loss):
                stopped_early = True
                break
            average = smoothing * average + (1 - smoothing) * loss
            value = average / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(value)
            best = min(best, value)
            if value > diverge_factor * best:
                stopped_early = True
                break
    suggestion, reason = suggest_lr(lrs, smoothed)
    return LRFindResult(lrs, losses, smoothed, suggestion, reason, stopped_early)


def suggest_lr(lrs: list[float], smoothed: list[float], skip: int = 3) -> tuple[float | None, str]:
    """The LR of the steepest fall of the smoothed loss (per log-LR) before its minimum."""
    if len(smoothed) < skip + 3:
        return None, f"too few steps before the loss diverged ({len(smoothed)}); lower start_lr or end_lr"
    low = int(np.argmin(smoothed))
    if low <= skip:
        if smoothed[-1] <= smoothed[low] * 1.01:
            return None, "the loss barely changed: every LR tried is too low; raise end_lr (or --steps)"
        return None, (
            f"the loss was lowest at the start (lr {lrs[low]:.2e}) and only rose: every LR tried is too high; "
            "lower start_lr"
        )
    slopes = np.gradient(np.asarray(smoothed), np.log(np.asarray(lrs)))
    steepest = skip + int(np.argmin(slopes[skip:low]))
    reason = (
        f"steepest fall of the smoothed loss at step {steepest + 1} of {len(lrs)} (lr {lrs[steepest]:.2e}); "
        f"the loss was lowest at lr {lrs[low]:.2e}, a tenth of which is {lrs[low] / 10:.2e}"
    )
    return lrs[steepest], reason


def _endless_batches(batches: Batches, batch_size: int, rng: random.Random) -> Iterator:
    for epoch in itertools.count():
        for k, idx in enumerate(batch_indices(batches.train, batch_size, rng)):
            yield batches.batch(batches.train, idx, key=(epoch, k))
