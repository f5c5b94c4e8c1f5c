"""The fit loop, top to bottom.

    result = train("config.yaml")                        # or a TrainingConfig, or a dict
    result = train(config, callback=lambda s: print(s.epoch, s.val_loss))

Phases: validate the config and check output_dir -> read and split records -> train the
tokenizer and encode -> build model and optimizer, count the steps -> epochs of
(forward, backward, clip, step) with time / step limits at step boundaries -> evaluate,
history, callback, early stopping, best weights -> write the model dir in a staging dir and
rename it into place. Any failure removes the staging dir; output_dir is never half-written.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .checkpoint import (
    CHECKPOINTS_DIR,
    HISTORY_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    begin_model_dir,
    check_output_dir,
    discard_staging,
    publish_model_dir,
    save_config_json,
    save_weights,
    write_json,
)
from .config import TrainConfig, TrainingConfig, load_config, validate_config
from .data import IGNORE_INDEX, Records, iterate_batches, read_records, split_records
from .errors import ConfigError, TrainingError
from .hooks import load_callable
from .models import build_model, resolve_device
from .models.lstm import cpu_has_native_bf16
from .optim import build_optimizer, check_optimizer_runs
from .progress import progress_bar
from .schedules import StepPlan, build_schedule, plan_steps
from .steplog import STEPS_FILE, StepLog
from .tokenizers import EOR_ID, PAD_ID, UNK_ID, Tokenizer, encode_all, train_tokenizer

log = logging.getLogger("synthloom")


@dataclass
class EpochState:
    """What an epoch callback receives. Set `stop = True` to end training after this epoch."""

    epoch: int
    step: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    elapsed_seconds: float
    epsilon: float | None = None  # differential privacy: filled once DP training exists
    delta: float | None = None
    stop: bool = False


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict[str, Any]]
    stopped_by: str  # epochs | max_steps | early_stopping | time_limit | callback | interrupted
    steps: int
    epochs: int
    best_epoch: int | None
    summary: dict[str, Any] = field(default_factory=dict)


def train(
    config: TrainingConfig | dict | str | Path,
    *,
    callback: Callable[[EpochState], Any] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train a model as `config` says and write its model dir. Returns what happened."""
    # -- validate everything before any work
    config = as_config(config)
    check_output_dir(config)
    callbacks = [cb for cb in (callback, load_callable(config.train.epoch_callback, "train.epoch_callback")) if cb]
    device = resolve_device(config.train.device, "train.device")
    check_runtime(config, device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    staging = begin_model_dir(config)  # first: an unwritable place fails before any work
    try:
        with _stop_on_first_interrupt() as interrupted, _tf32(config.train.tf32):
            loop, summary = _fit(config, staging, callbacks, device, progress, interrupted)
        try:
            out = publish_model_dir(staging, config)
        except TrainingError:
            staging = None  # the message says where the trained model was kept
            raise
        staging = None
    finally:
        discard_staging(staging)
    log.info("stopped by %s after %d step(s); model dir: %s", loop.stopped_by, loop.step, out)
    return TrainResult(out, loop.history, loop.stopped_by, loop.step, loop.epoch, loop.best_epoch, summary)


def _fit(config, staging, callbacks, device, progress, interrupted) -> tuple["_FitLoop", dict[str, Any]]:
    """Records -> tokenizer -> model -> the fit loop -> every file of the model dir, in staging."""
    data = prepare(config)
    plan = data.plan

    # -- model, optimizer, schedule; the number of steps was counted in prepare()
    net = build_model(config.model, data.tokenizer.vocab_size).to(device)
    optimizer = build_optimizer(config.optim, net)
    schedule = build_schedule(config, optimizer, plan)
    n_params = sum(p.numel() for p in net.parameters())
    log.info(
        "model %s, %s parameters, device %s, %s", config.model.kind, f"{n_params:,}", device, config.train.precision
    )
    log.info("plan: %s", plan.describe(config))
    log.info("per-step log: %s (renamed with the model dir at the end)", staging / STEPS_FILE)
    total_steps, epochs = plan.total_steps, plan.epochs
    tokenizer, records, train_texts, val_texts = data.tokenizer, data.records, data.train_texts, data.val_texts
    train_ids, val_ids = data.train_ids, data.val_ids
    max_record_tokens = max(len(ids) for ids in train_ids + val_ids) + 1  # + end of record

    # -- the fit
    loop = _FitLoop(config, net, optimizer, schedule, device, train_ids, val_ids, callbacks, staging, interrupted)
    with (
        loop.steplog,
        progress_bar(
            progress,
            total_steps,
            "train",
            "epoch {task.fields[epoch]}",
            "loss {task.fields[loss]:.4f}",
            "{task.fields[rate]:,.0f} tok/s",
            epoch=0,
            loss=float("nan"),
            rate=0.0,
        ) as bar,
    ):
        loop.run(epochs, total_steps, bar)
    if loop.step == 0:
        raise TrainingError(f"training stopped ({loop.stopped_by}) before its first step; nothing was written")

    # -- the model dir: config, tokenizer, weights (best or last), history, summary
    weights = loop.best_state if (config.checkpoint.save_best and loop.best_state is not None) else net.state_dict()
    save_weights(weights, staging / WEIGHTS_FILE)
    save_config_json(config, staging)
    tokenizer.save(staging)
    _write_history(staging / HISTORY_FILE, loop.history)
    summary = {
        "synthloom_version": __version__,
        "vocab_size": tokenizer.vocab_size,
        "max_record_tokens": max_record_tokens,
        "columns": records.columns,
        "num_fields": records.num_fields,
        "records": {
            "used": len(records.texts),
            "train": len(train_texts),
            "validation": len(val_texts),
            "skipped_long": records.skipped_long,
            "skipped_empty": records.skipped_empty,
        },
        "parameters": n_params,
        "steps_per_epoch": plan.steps_per_epoch,
        "micro_batches_per_epoch": plan.micro_batches_per_epoch,
        "effective_batch_size": config.train.batch_size * config.train.grad_accumulation_steps,
        "planned_steps": total_steps,
        "warmup_steps": plan.warmup_steps,
        "steps": loop.step,
        "epochs": loop.epoch,
        "stopped_by": loop.stopped_by,
        "weights_from_epoch": loop.best_epoch if weights is loop.best_state else loop.epoch,
        "best": {"monitor": config.checkpoint.monitor, "epoch": loop.best_epoch, "value": loop.best_value},
        "train_seconds": round(loop.elapsed, 3),
        "tokens_per_second": round(loop.tokens_seen / max(loop.train_time, 1e-9), 1),
        "skipped_steps": loop.skipped_steps,
        "device": str(device),
        "precision": config.train.precision,
    }
    write_json(staging / SUMMARY_FILE, summary)
    return loop, summary


@dataclass
class Prepared:
    """The records, split and encoded, with the tokenizer trained on them and the step plan."""

    records: Records
    train_texts: list[str]
    val_texts: list[str]
    tokenizer: Tokenizer
    train_ids: list[list[int]]
    val_ids: list[list[int]]
    plan: StepPlan


def prepare(config: TrainingConfig) -> Prepared:
    seed = config.train.seed
    records = read_records(config.data)
    for note in records.notes:
        log.warning("%s: %s", config.data.path, note)
    train_texts, val_texts = split_records(records.texts, config.data.validation_split, seed)
    plan = plan_steps(config, len(train_texts))  # before the tokenizer: a schedule that cannot fit fails fast
    tokenizer = train_tokenizer(config.tokenizer, records.texts, seed=seed, delimiter=config.data.field_delimiter)
    train_ids = encode_all(tokenizer, train_texts)
    val_ids = encode_all(tokenizer, val_texts)
    n_unk = sum(UNK_ID in ids for ids in train_ids + val_ids)
    if n_unk:
        log.warning(
            "%d record(s) hold characters the tokenizer cannot represent (tokenizer.character_coverage=%s); "
            "they train on <unk> and generated records never contain those characters",
            n_unk,
            config.tokenizer.character_coverage,
        )
    log.info(
        "records: %d read, %d train, %d validation; tokenizer %s, vocabulary %d",
        len(records.texts),
        len(train_texts),
        len(val_texts),
        tokenizer.kind,
        tokenizer.vocab_size,
    )
    return Prepared(records, train_texts, val_texts, tokenizer, train_ids, val_ids, plan)


def plan_run(config: TrainingConfig) -> StepPlan:
    """The run's step plan from its records, read and split as training does (no tokenizer)."""
    records = read_records(config.data)
    train_texts, _ = split_records(records.texts, config.data.validation_split, config.train.seed)
    return plan_steps(config, len(train_texts))


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


def optimizer_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    cfg: TrainConfig,
    precision: Precision,
) -> StepStats:
    """One optimizer update from its micro-batches. The loss is normalised over every token of the
    step (sum of token losses / tokens in all micro-batches), so k micro-batches of n records give
    the gradients of one batch of k*n, whatever the records' lengths."""
    tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = 0.0, 0
    for inputs, targets in micro_batches:
        inputs, targets = inputs.to(device), targets.to(device)
        with precision.autocast():
            logits, _ = net(inputs)  # (B, T, V)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        scaled = loss / tokens
        (precision.scaler.scale(scaled) if precision.scaler is not None else scaled).backward()
        loss_sum += loss.item()
        with torch.no_grad():
            correct += int(((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum())
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
def _tf32(allow: bool | None) -> Iterator[None]:
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


@contextmanager
def _stop_on_first_interrupt() -> Iterator[dict[str, bool]]:
    """First Ctrl-C: finish the current step, stop, and write the model dir as usual.
    A second Ctrl-C aborts at once (nothing is written; output_dir stays as it was)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warning("interrupted: stopping after this step and writing the model dir (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _FitLoop:
    """The state of one fit: a small object so each phase below stays a short method."""

    def __init__(self, config, net, optimizer, schedule, device, train_ids, val_ids, callbacks, staging, interrupted):
        self.config, self.net, self.optimizer, self.schedule, self.device = config, net, optimizer, schedule, device
        self.precision = Precision.of(config.train.precision, device)
        self.steplog = StepLog(staging, config.train.logging_steps, config.train.tensorboard)
        self.train_ids, self.val_ids, self.callbacks, self.staging = train_ids, val_ids, callbacks, staging
        self.interrupted = interrupted  # {"stop": bool}, set by the first Ctrl-C
        self.rng = random.Random(config.train.seed)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.stopped_by = "epochs"
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.stale_epochs = 0  # early stopping: epochs since the monitored metric improved
        self.es_best: float | None = None
        self.tokens_seen = 0
        self.skipped_steps = 0
        self.train_time = 0.0
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, epochs: int, total_steps: int, bar) -> None:
        cfg = self.config.train
        for epoch in range(1, epochs + 1):
            self.epoch = epoch
            loss_sum, correct, tokens, stop = self.train_epoch(total_steps, bar)
            if tokens == 0:  # a limit hit before this epoch's first step: the last epoch stands
                self.epoch -= 1
                self.stopped_by = stop or self.stopped_by
                break
            val_loss, val_acc = self.evaluate() if self.val_ids else (None, None)
            state = EpochState(
                epoch=epoch,
                step=self.step,
                loss=loss_sum / tokens,
                accuracy=correct / tokens,
                val_loss=val_loss,
                val_accuracy=val_acc,
                lr=self.optimizer.param_groups[0]["lr"],
                elapsed_seconds=self.elapsed,
            )
            row = asdict(state)
            del row["stop"]
            self.history.append(row)
            self.schedule.end_of_epoch(row)
            log.info(
                "epoch %d: loss %.4f acc %.4f%s",
                epoch,
                state.loss,
                state.accuracy,
                f" val_loss {val_loss:.4f} val_acc {val_acc:.4f}" if val_loss is not None else "",
            )
            self.track_best(state)
            if self.config.checkpoint.save_every_epoch:
                ckpt = self.staging / CHECKPOINTS_DIR / f"epoch-{epoch:04d}"
                ckpt.mkdir(parents=True)
                save_weights(self.net.state_dict(), ckpt / WEIGHTS_FILE)
            for cb in self.callbacks:
                cb(state)
            if stop:
                self.stopped_by = stop
                break
            if state.stop:
                self.stopped_by = "callback"
                break
            if self.interrupted["stop"]:
                self.stopped_by = "interrupted"
                break
            if self.early_stop(state):
                self.stopped_by = "early_stopping"
                break
        if cfg.max_steps is not None and self.step >= cfg.max_steps and self.stopped_by == "epochs":
            self.stopped_by = "max_steps"

    # -- forward backward update
    def train_epoch(self, total_steps: int, bar) -> tuple[float, int, int, str | None]:
        cfg = self.config.train
        self.net.train()
        loss_sum, correct, tokens = 0.0, 0, 0
        batches = iterate_batches(self.train_ids, cfg.batch_size, self.rng, EOR_ID, PAD_ID)
        while micro_batches := list(itertools.islice(batches, cfg.grad_accumulation_steps)):
            # termination conditions, checked at step boundaries only
            if self.step >= total_steps:
                return loss_sum, correct, tokens, "max_steps"
            if self.interrupted["stop"]:
                return loss_sum, correct, tokens, "interrupted"
            if cfg.max_time_seconds is not None and self.elapsed >= cfg.max_time_seconds:
                log.info("time limit of %ss reached at step %d", cfg.max_time_seconds, self.step)
                return loss_sum, correct, tokens, "time_limit"

            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            stats = optimizer_step(self.net, self.optimizer, micro_batches, self.device, cfg, self.precision)
            self.step += 1
            self.schedule.step()
            if not math.isfinite(stats.loss_sum) and self.precision.scaler is None:
                raise TrainingError(
                    f"the loss became {stats.loss_sum} at step {self.step} (epoch {self.epoch}); "
                    "lower optim.lr or keep train.max_grad_norm > 0. Nothing was saved."
                )
            seconds = time.perf_counter() - t0
            self.skipped_steps += stats.skipped
            loss_sum += stats.loss_sum
            correct += stats.correct
            tokens += stats.tokens
            self.tokens_seen += stats.tokens
            self.train_time += seconds
            self.steplog.add(
                step=self.step,
                epoch=self.epoch,
                loss_sum=stats.loss_sum,
                tokens=stats.tokens,
                lr=lr,
                grad_norm=stats.grad_norm,
                seconds=seconds,
                skipped=stats.skipped,
            )
            bar(self.step, epoch=self.epoch, loss=loss_sum / tokens, rate=self.tokens_seen / max(self.train_time, 1e-9))
        return loss_sum, correct, tokens, None

    # -- evaluate
    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.net.eval()
        loss_sum, correct, tokens = 0.0, 0, 0
        for inputs, targets in iterate_batches(self.val_ids, self.config.train.batch_size, None, EOR_ID, PAD_ID):
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            with self.precision.autocast():
                logits, _ = self.net(inputs)
            mask = targets != IGNORE_INDEX
            loss_sum += float(
                F.cross_entropy(
                    logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
                )
            )
            correct += int(((logits.argmax(-1) == targets) & mask).sum())
            tokens += int(mask.sum())
        return loss_sum / tokens, correct / tokens

    # -- best weights and early stopping
    def track_best(self, state: EpochState) -> None:
        if not self.config.checkpoint.save_best:
            return
        value = getattr(state, self.config.checkpoint.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best_value is None or _better(value, self.best_value, self.config.checkpoint.monitor, 0.0):
            self.best_value, self.best_epoch = value, state.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def early_stop(self, state: EpochState) -> bool:
        es = self.config.early_stopping
        if not es.enabled:
            return False
        value = getattr(state, es.monitor)
        if self.es_best is None or _better(value, self.es_best, es.monitor, es.min_delta):
            self.es_best, self.stale_epochs = value, 0
            return False
        self.stale_epochs += 1
        if self.stale_epochs >= es.patience:
            log.info("early stopping: %s did not improve by %s for %d epoch(s)", es.monitor, es.min_delta, es.patience)
            return True
        return False


def _better(value: float, best: float, metric: str, min_delta: float) -> bool:
    if metric.endswith("accuracy"):
        return value > best + min_delta
    return value < best - min_delta


# --------------------------------------------------------------------------- helpers


def as_config(config: TrainingConfig | dict | str | Path) -> TrainingConfig:
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, TrainingConfig):  # re-validate: fields may have been assigned since
        return validate_config(config.model_dump(mode="json"))
    return validate_config(config)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        names = [f for f in EpochState.__dataclass_fields__ if f != "stop"]
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)
