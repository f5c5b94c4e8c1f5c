"""Learning-rate schedules with warmup, and the run's step plan they are built on.

    plan = plan_steps(config, n_train_records)       # counted once, before training
    schedule = build_schedule(config, optimizer, plan)
    ...                                              # after every optimizer update:
    schedule.step()
    schedule.end_of_epoch(metrics)                   # reduce_on_plateau reads its monitor here
    lrs = lr_curve(config, plan)                     # the LR of every step, without training

A step is one optimizer update. The LR used by update n (1-based) is what the optimizer holds
before it; `lr_curve` returns exactly those values. Warmup is linear over W updates: update n
uses optim.lr * (s + (1 - s) * n / W), so its last update reaches optim.lr and none runs at
LR 0; the schedule proper then runs over the remaining T - W updates, from its own start.
torch.optim.lr_scheduler supplies every schedule it has; polynomial (with an end LR),
inverse_sqrt and warmup_stable_decay are small LambdaLR functions here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.optim import lr_scheduler as sched

from .config import METRIC_MODE, TrainingConfig
from .data import count_batches
from .errors import ConfigError

AUTO_MIN_BATCH, AUTO_MAX_BATCH = 8, 256
AUTO_BATCHES_PER_EPOCH = 64  # train.batch_size null: about this many steps an epoch
AUTO_MAX_EPOCHS = 100  # train.epochs null: early stopping ends the run, this bounds it
# under privacy.enabled there is no early stopping (it would read un-noised losses), and DP-SGD does
# better with fewer, larger steps: about 10 steps an epoch, 64..1024 records, a fixed 30 epochs
AUTO_DP_STEPS_PER_EPOCH, AUTO_DP_MIN_BATCH, AUTO_DP_MAX_BATCH, AUTO_DP_EPOCHS = 10, 64, 1024, 30


def auto_batch_size(train_records: int) -> int:
    """train.batch_size null: the power of two giving about 64 batches an epoch, within 8..256
    (small tables get many small steps, large ones batches the CPU multiplies efficiently)."""
    batch = 2 ** int(math.log2(max(train_records, 1) / AUTO_BATCHES_PER_EPOCH)) if train_records else AUTO_MIN_BATCH
    return int(min(max(batch, AUTO_MIN_BATCH), AUTO_MAX_BATCH))


def auto_private_batch_size(train_records: int) -> int:
    """train.batch_size null under privacy: the power of two nearest a tenth of the records, 64..1024."""
    batch = 2 ** round(math.log2(max(train_records, 1) / AUTO_DP_STEPS_PER_EPOCH)) if train_records else 64
    return int(min(max(batch, AUTO_DP_MIN_BATCH), AUTO_DP_MAX_BATCH))


def resolve_for_records(config: TrainingConfig, train_records: int, world: int = 1) -> TrainingConfig:
    """The config with what depends on the number of training records filled in (train.batch_size,
    train.epochs when null): what training runs with and saves in the model dir. train.batch_size is
    records per micro-batch on each of `world` processes; left null, the size that suits the records is
    shared among them (ceil(auto / world) each), so a run takes the same steps on any number of them."""
    t = config.train
    if t.batch_size is not None and t.epochs is not None:
        return config
    private = config.privacy.enabled
    auto = auto_private_batch_size(train_records) if private else auto_batch_size(train_records)
    update = {
        "batch_size": t.batch_size or -(-auto // world),
        "epochs": t.epochs or (AUTO_DP_EPOCHS if private else AUTO_MAX_EPOCHS),
    }
    return config.model_copy(update={"train": t.model_copy(update=update)})


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run takes, computed before training."""

    train_records: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    batch_size: int = 0  # records per micro-batch on each process (train.batch_size, resolved)
    world_size: int = 1  # processes training together (torchrun): a step takes batch_size x world_size x accumulation

    def describe(self, config: TrainingConfig) -> str:
        t = resolve_for_records(config, self.train_records, self.world_size).train
        tail = (
            f"; warmup {self.warmup_steps:,} step(s)" if self.warmup_steps else ""
        ) + f" (schedule {config.schedule.name})"
        if not self.train_records:  # a plan for a given number of steps (synthloom schedule --steps)
            return f"{self.total_steps:,} step(s){tail}"
        per_step = f"{t.batch_size} x {t.grad_accumulation_steps}" if t.grad_accumulation_steps > 1 else t.batch_size
        if self.world_size > 1:
            per_step = f"{per_step} x {self.world_size} processes"
        limit = f"train.max_steps {t.max_steps}" if t.max_steps is not None else f"{self.epochs} epoch(s)"
        return (
            f"{self.train_records:,} training record(s), {per_step} per step: {self.steps_per_epoch:,} step(s) per "
            f"epoch; {limit} = {self.total_steps:,} step(s) at most{tail}"
        )


def plan_steps(config: TrainingConfig, train_records: int, total_steps: int | None = None, world: int = 1) -> StepPlan:
    """Count the run's steps from the number of training records (or take `total_steps` as
    given); reject a schedule that cannot fit in them (warmup as long as the run, a decay
    that would never happen). train.batch_size and train.epochs left null are resolved first.
    world: processes training together; each step takes a micro-batch from each of them."""
    config = resolve_for_records(config, train_records, world)
    t = config.train
    if config.privacy.enabled and config.privacy.poisson_sampling:
        # a step draws each record with probability q = 1 / steps_per_epoch (Opacus' convention), so a
        # step takes batch_size x grad_accumulation_steps (x world) records on average; micro-batches vary
        steps_per_epoch = max(1, math.ceil(train_records / (t.batch_size * t.grad_accumulation_steps * world)))
        micro = steps_per_epoch * t.grad_accumulation_steps
    else:
        micro = count_batches(train_records, t.batch_size * world)  # batches of all processes together
        steps_per_epoch = max(1, math.ceil(micro / t.grad_accumulation_steps))
    if total_steps is not None:
        total = total_steps
        epochs = math.ceil(total / steps_per_epoch) if train_records else 0
    elif t.max_steps is not None:
        total = t.max_steps
        epochs = math.ceil(total / steps_per_epoch)
    else:
        epochs = t.epochs
        total = epochs * steps_per_epoch
    s = config.schedule
    warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil((s.warmup_ratio or 0.0) * total)
    plan = StepPlan(train_records, micro, steps_per_epoch, epochs, total, warmup, t.batch_size, world)
    _check_fits(config, plan)
    return plan


def _check_fits(config: TrainingConfig, plan: StepPlan) -> None:
    s, total, warmup = config.schedule, plan.total_steps, plan.warmup_steps
    run = f"the run has {total:,} step(s)" + (f" ({plan.describe(config)})" if plan.train_records else "")
    if warmup and warmup >= total:
        key = "warmup_steps" if s.warmup_steps is not None else "warmup_ratio"
        raise ConfigError(f"schedule.{key}: a warmup of {warmup:,} step(s) is not shorter than the run; {run}")
    decay = total - warmup
    problem = None
    if s.name == "step" and s.step_size >= decay:
        problem = f"schedule.step_size: {s.step_size:,} >= the {decay:,} step(s) after warmup, so the LR never decays"
    elif s.name == "multistep" and s.milestones[-1] >= decay:
        problem = (
            f"schedule.milestones: {s.milestones[-1]:,} is not before the end of the {decay:,} step(s) after warmup"
        )
    elif s.name == "cosine_with_restarts" and s.cycles > decay:
        problem = f"schedule.cycles: {s.cycles} cycles do not fit in the {decay:,} step(s) after warmup"
    elif s.name == "warmup_stable_decay" and math.ceil(s.decay_ratio * total) > decay:
        problem = "schedule.decay_ratio: the decay and the warmup overlap; lower one of them"
    if problem:
        raise ConfigError(f"{problem}; {run}")


class LRSchedule:
    """torch schedulers for one run: `step()` after every optimizer update, `end_of_epoch()` after
    each evaluation. Never steps past the planned run, and only reduce_on_plateau reads metrics."""

    def __init__(self, per_step: sched.LRScheduler | None, plateau: sched.ReduceLROnPlateau | None, plan: StepPlan):
        self.per_step, self.plateau, self.plan = per_step, plateau, plan
        self.steps = 0
        self.monitor: str | None = None

    def step(self) -> None:
        self.steps += 1
        if self.per_step is None or self.steps >= self.plan.total_steps:
            return
        if self.plateau is not None and self.steps >= self.plan.warmup_steps:
            return  # warmup is over: the LR is reduce_on_plateau's from here on
        with warnings.catch_warnings():  # older torch warns on SequentialLR's internal step(0)
            warnings.simplefilter("ignore", UserWarning)
            self.per_step.step()

    def end_of_epoch(self, metrics: dict[str, float | None]) -> None:
        if self.plateau is None or self.steps < self.plan.warmup_steps:
            return
        value = metrics.get(self.monitor or "")
        if value is not None and math.isfinite(value):
            self.plateau.step(value)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        if self.per_step is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


def build_schedule(config: TrainingConfig, optimizer: torch.optim.Optimizer, plan: StepPlan) -> LRSchedule:
    s, lr = config.schedule, config.optim.lr
    warmup, decay = plan.warmup_steps, plan.total_steps - plan.warmup_steps
    if s.name == "reduce_on_plateau":
        mode = METRIC_MODE[s.monitor]
        warm = sched.LambdaLR(optimizer, _warmup_factor(warmup, s.warmup_start_factor)) if warmup else None
        plateau = sched.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            threshold_mode=s.threshold_mode,
            cooldown=s.cooldown,
            min_lr=s.min_lr,
        )
        out = LRSchedule(warm, plateau, plan)
        out.monitor = s.monitor
        return out
    if s.name == "constant":
        if not warmup:
            return LRSchedule(None, None, plan)
        return LRSchedule(sched.LambdaLR(optimizer, _warmup_factor(warmup, s.warmup_start_factor)), None, plan)
    if s.name == "one_cycle":  # its own warmup (pct_start); the config refuses another
        return LRSchedule(
            sched.OneCycleLR(
                optimizer,
                max_lr=lr,
                total_steps=plan.total_steps,
                pct_start=s.pct_start,
                anneal_strategy=s.anneal_strategy,
                div_factor=s.div_factor,
                final_div_factor=s.final_div_factor,
                three_phase=s.three_phase,
                cycle_momentum=False,
            ),
            None,
            plan,
        )
    main = _main_scheduler(config, optimizer, decay, warmup)
    if not warmup:
        return LRSchedule(main, None, plan)
    warm = sched.LambdaLR(optimizer, _warmup_factor(warmup, s.warmup_start_factor))
    return LRSchedule(sched.SequentialLR(optimizer, [warm, main], milestones=[warmup]), None, plan)


def _main_scheduler(config: TrainingConfig, optimizer, decay: int, warmup: int) -> sched.LRScheduler:
    """The schedule proper, over the `decay` steps after warmup (its step 0 is the first of them)."""
    s, lr = config.schedule, config.optim.lr
    if s.name == "linear":
        return sched.LinearLR(optimizer, start_factor=1.0, end_factor=s.min_lr_ratio, total_iters=decay)
    if s.name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=decay, eta_min=s.min_lr_ratio * lr)
    if s.name == "cosine_with_restarts":
        return sched.CosineAnnealingWarmRestarts(
            optimizer, T_0=math.ceil(decay / s.cycles), eta_min=s.min_lr_ratio * lr
        )
    if s.name == "step":
        return sched.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "multistep":
        return sched.MultiStepLR(optimizer, milestones=s.milestones, gamma=s.gamma)
    if s.name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=s.gamma)
    if s.name == "cyclical":
        return sched.CyclicLR(
            optimizer,
            base_lr=lr,
            max_lr=s.max_lr,
            step_size_up=s.step_size_up,
            step_size_down=s.step_size_down,
            mode=s.mode,
            gamma=s.gamma,
            cycle_momentum=False,
        )
    if s.name == "polynomial":
        return sched.LambdaLR(optimizer, _polynomial_factor(decay, s.power, s.end_lr / lr))
    if s.name == "inverse_sqrt":
        return sched.LambdaLR(optimizer, _inverse_sqrt_factor(s.timescale or max(warmup, 1)))
    if s.name == "warmup_stable_decay":
        decay_steps = math.ceil(s.decay_ratio * (decay + warmup))
        return sched.LambdaLR(optimizer, _wsd_factor(decay - decay_steps, decay_steps, s.decay_type, s.min_lr_ratio))
    raise AssertionError(f"unhandled schedule {s.name!r}")  # the config's union makes this unreachable


# -- the schedules torch lacks, as closed-form factors of optim.lr at scheduler step e


def _warmup_factor(warmup: int, start: float) -> Callable[[int], float]:
    # scheduler step e sets the LR of update e + 1
    return lambda e: min(1.0, start + (1.0 - start) * (e + 1) / warmup)


def _polynomial_factor(decay: int, power: float, end_ratio: float) -> Callable[[int], float]:
    return lambda e: (1.0 - end_ratio) * (1.0 - min(e, decay) / decay) ** power + end_ratio


def _inverse_sqrt_factor(timescale: int) -> Callable[[int], float]:
    return lambda e: math.sqrt(timescale / (timescale + e))


def _wsd_factor(stable: int, decay_steps: int, decay_type: str, floor: float) -> Callable[[int], float]:
    def factor(e: int) -> float:
        if e < stable:
            return 1.0
        p = min(1.0, (e - stable) / decay_steps)
        if decay_type == "linear":
            shape = 1.0 - p
        elif decay_type == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * p))
        else:  # 1-sqrt
            shape = 1.0 - math.sqrt(p)
        return floor + (1.0 - floor) * shape

    return factor


# -- the curve, without training


NOT_DECAYING = ("constant", "reduce_on_plateau")  # schedules whose LR does not fall along the planned steps


def lr_curve(config: TrainingConfig, plan: StepPlan, steps: int | None = None) -> list[float]:
    """The LR each update 1..total_steps (or 1..steps) uses, as the run `config` describes would use
    it. reduce_on_plateau depends on metrics not known before training: after warmup it shows optim.lr."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config.optim.lr)
    schedule = build_schedule(config, optimizer, plan)
    lrs = []
    for _ in range(plan.total_steps if steps is None else min(steps, plan.total_steps)):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: a no-op update that keeps torch's call-order check quiet
        schedule.step()
    return lrs
