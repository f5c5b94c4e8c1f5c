"""One optimizer step: micro-batches of forward + summed token loss (normalised by the step's tokens) and
backward under autocast, clipping, the update; under DP, per-record losses, clipping and noise
(design decision 1). Also what a run's precision and device must allow (check_runtime).

    stats = optimizer_step(net, optimizer, micro_batches, device, precision, max_norm, clip_value)
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..config import TrainConfig, TrainingConfig
from ..data import (
    IGNORE_INDEX,
    Batch,
)
from ..distributed import ALONE, World
from ..errors import ConfigError
from ..models.precision import cpu_has_native_bf16
from ..optim import check_optimizer_runs
from ..privacy import PrivateTraining, check_privacy_runtime

log = logging.getLogger("synthloom")


def check_runtime(config: TrainingConfig, device: torch.device) -> None:
    """Refuse, before any work, what this machine cannot run (the config alone cannot know it)."""
    t = config.train
    if t.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA GPU; training runs on {device}: use bf16 or fp32")
    if t.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision: this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use fp16")
    if t.tf32 is not None and device.type != "cuda":
        raise ConfigError(f"train.tf32: TF32 is a CUDA setting and training runs on {device}; set it to null")
    if t.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "train.precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 matmuls run "
            "emulated and slower than fp32 (see benchmarks/RESULTS.md); fp32 is the fast choice here"
        )
    check_optimizer_runs(config.optim, device)
    if config.privacy.enabled:
        check_privacy_runtime()
    if config.model.kind == "seq2seq" and importlib.util.find_spec("sacrebleu") is None:
        raise ConfigError(
            "model.kind seq2seq: its validation BLEU and chrF need sacrebleu: pip install 'synthloom[seq2seq]'"
        )
    if t.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: needs TensorBoard: pip install 'synthloom[tensorboard]'")


# --------------------------------------------------------------------------- one optimizer step


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and, for fp16, the grad scaler."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: Any = None

    @classmethod
    def of(cls, name: str, device: torch.device) -> "Precision":
        if name == "bf16":
            return cls(device.type, torch.bfloat16)
        if name == "fp16":
            return cls(device.type, torch.float16, torch.amp.GradScaler(device.type))
        return cls(device.type)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()


@dataclass
class StepStats:
    loss_sum: float  # summed token losses (divide by tokens for the mean)
    tokens: int
    correct: int
    grad_norm: float  # global L2 norm before clipping
    skipped: bool  # fp16: the grad scaler found inf/nan gradients and skipped the update
    nonfinite: bool = False  # the loss was NaN/inf (without a grad scaler): no update was applied


def optimizer_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Batch],
    device: torch.device,
    cfg: TrainConfig,
    precision: Precision,
    world: World = ALONE,
    ddp: torch.nn.Module | None = None,
) -> StepStats:
    """One optimizer update from its micro-batches. The loss is normalised over every token of the
    step (sum of token losses / tokens in all micro-batches), so k micro-batches of n records give
    the gradients of one batch of k*n, whatever the records' lengths.

    Data-parallel (`ddp`: the DDP module around net.loss, see loop.LossOf): the tokens are counted over
    all ranks' micro-batches, and DDP's mean over ranks is undone, so the update of w ranks with
    micro-batches of n equals one process's with w*n (design decision 2 across processes). Gradients
    are all-reduced once, in the last micro-batch's backward (no_sync before); the step's loss, and so
    the non-finite check, is the sum over ranks, so every rank skips or applies the same update."""
    tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets, _ in micro_batches)
    if world.distributed:
        tokens = int(world.sum([tokens])[0])
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = 0.0, 0
    forward = ddp if ddp is not None else net.loss
    for j, (inputs, targets, positions) in enumerate(micro_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        last = j == len(micro_batches) - 1
        with ddp.no_sync() if ddp is not None and not last else nullcontext():  # (forward and backward in it)
            with precision.autocast():
                loss, right = forward(inputs, targets, to_device(positions, device))  # summed token losses
            scaled = loss * (world.size / tokens) if world.distributed else loss / tokens
            (precision.scaler.scale(scaled) if precision.scaler is not None else scaled).backward()
        loss_sum += loss.item()
        correct += int(right)
    if world.distributed:
        loss_sum, correct = world.sum([loss_sum, correct])
        correct = int(correct)
    if precision.scaler is None and not math.isfinite(loss_sum):
        optimizer.zero_grad(set_to_none=True)  # never apply a NaN/inf gradient
        return StepStats(loss_sum, tokens, correct, math.nan, False, nonfinite=True)
    if precision.scaler is not None:
        precision.scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = clip_gradients(params, cfg.max_grad_norm, cfg.clip_grad_value)
    if precision.scaler is None:
        optimizer.step()
        return StepStats(loss_sum, tokens, correct, grad_norm, False)
    scale = precision.scaler.get_scale()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return StepStats(loss_sum, tokens, correct, grad_norm, precision.scaler.get_scale() < scale)


def private_optimizer_step(
    net: torch.nn.Module,
    private: PrivateTraining,
    micro_batches: list[Batch],
    device: torch.device,
    precision: Precision,
    world: World = ALONE,
) -> StepStats:
    """One DP-SGD update from the step's sampled records (design decision 1): each record's loss is the
    mean of its token losses; its gradient is clipped to privacy.max_grad_norm; noise is added once,
    after the last micro-batch. grad_norm is the median per-record gradient norm before clipping.

    Data-parallel: `micro_batches` hold this rank's share of the step's records (none is fine); the
    clipped sums are all-reduced by Opacus' DistributedDPOptimizer in the last add_micro_batch, the noise
    is added on rank 0 only, and whether the step's loss is finite is agreed before that, so every rank
    applies or discards the same update."""
    tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets, _ in micro_batches)
    private.optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, norms = 0.0, 0, []
    for i, (inputs, targets, positions) in enumerate(micro_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        with precision.autocast():
            logits = net.logits(inputs, to_device(positions, device))  # (B, T, V)
        mask = targets != IGNORE_INDEX
        token_loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(targets)
        with warnings.catch_warnings():  # the embedding's input (token ids) needs no gradient: Opacus knows
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            (token_loss.sum(1) / mask.sum(1)).sum().backward()  # per-record mean losses, summed
        loss_sum += token_loss.detach().sum().item()
        with torch.no_grad():
            correct += int(((logits.argmax(-1) == targets) & mask).sum())
        last = i == len(micro_batches) - 1
        if last or not math.isfinite(loss_sum):
            break
        norms.append(private.record_norms())
        private.add_micro_batch(last=False)
    if world.distributed:  # the step's totals, and so whether it is finite, the same on every rank
        loss_sum, correct, tokens = world.sum([loss_sum, correct, tokens])
        correct, tokens = int(correct), int(tokens)
    if not math.isfinite(loss_sum):
        private.discard()
        private.end_step()  # its records were drawn: the step counts against the budget all the same
        return StepStats(loss_sum, tokens, correct, math.nan, False, nonfinite=True)
    if micro_batches:
        norms.append(private.record_norms())
        private.add_micro_batch(last=True)
    else:
        private.empty_step()
    private.end_step()
    norms = world.gather(torch.cat(norms) if norms else torch.zeros(0)) if world.distributed else norms
    median = float(torch.cat([n for n in norms if len(n)]).median()) if any(len(n) for n in norms) else 0.0
    return StepStats(loss_sum, tokens, correct, median, False)


def to_device(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def clip_gradients(params: list[torch.Tensor], max_norm: float, clip_value: float | None) -> float:
    """Clip each element to [-clip_value, clip_value], then the global L2 norm to max_norm
    (either off when 0/None). Returns the global norm before any clipping."""
    if clip_value is None and max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norm = float(torch.nn.utils.clip_grad_norm_(params, math.inf))  # measures; scales by 1
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm


@contextmanager
def tf32_setting(allow: bool | None) -> Iterator[None]:
    """train.tf32 for the run, then torch's previous settings back."""
    if allow is None:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
