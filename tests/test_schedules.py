"""LR schedules and the step plan: every schedule's curve against its closed form (with and
without warmup), the plan's step counting, configs that cannot work, reduce_on_plateau's
epoch-driven reductions, and resuming a schedule from its state dict.

The closed forms here are written out independently of synthloom.schedules: update n (1-based)
uses lr * (s + (1 - s) * n / W) during a warmup of W updates, then the schedule proper at its
own step e = n - W - 1 over the D = T - W updates after warmup.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Callable

import pytest
import torch

from synthloom.config import SCHEDULES, TrainingConfig, load_config, validate_config
from synthloom.data import count_batches
from synthloom.errors import ConfigError
from synthloom.schedules import LRSchedule, StepPlan, build_schedule, lr_curve, plan_steps

LR = 0.01  # optim.lr in every test unless one says otherwise
T = 40  # total steps of the curve tests
APPROX = {"rel": 1e-9, "abs": 1e-12}


def config_for(
    schedule: dict, *, lr: float = LR, train: dict | None = None, data: dict | None = None
) -> TrainingConfig:
    return validate_config(
        {
            "output_dir": "m",
            "data": {"path": "x.csv", **(data or {})},
            "train": {"epochs": 1, "batch_size": 1, **(train or {})},
            "schedule": schedule,
            "optim": {"lr": lr},
        }
    )


def planned(schedule: dict, total: int = T, **kwargs) -> tuple[TrainingConfig, StepPlan]:
    """A config whose run is exactly `total` steps (max_steps, one record per step)."""
    config = config_for(schedule, train={"max_steps": total}, **kwargs)
    return config, plan_steps(config, total)


def sgd(lr: float = LR) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    param = torch.nn.Parameter(torch.zeros(1))
    return param, torch.optim.SGD([param], lr=lr)


@pytest.fixture(scope="module", autouse=True)
def _torch_optimizer_imported():
    """torch imports its compiler stack (about a second) on the first optimizer step: once, here."""
    _, optimizer = sgd()
    optimizer.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def advance(schedule: LRSchedule, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The LR each of the next `steps` updates uses, stepping like the training loop does."""
    lrs = []
    for _ in range(steps):
        lrs.append(current_lr(optimizer))
        optimizer.step()
        schedule.step()
    return lrs


# --------------------------------------------------------------------------- closed forms

MainLR = Callable[[int, int, int], float]  # (e, D, W) -> LR at the schedule proper's step e


def expected_curve(main: MainLR, total: int, warmup: int, start: float = 0.0, lr: float = LR) -> list[float]:
    out = []
    for n in range(1, total + 1):
        if n <= warmup:
            out.append(lr * (start + (1.0 - start) * n / warmup))
        else:
            out.append(main(n - warmup - 1, total - warmup, warmup))
    return out


def constant(e, d, w):
    return LR


def linear(m: float) -> MainLR:
    return lambda e, d, w: LR * (1.0 + (m - 1.0) * e / d)


def cosine(m: float) -> MainLR:
    return lambda e, d, w: m * LR + (LR - m * LR) * (1.0 + math.cos(math.pi * e / d)) / 2.0


def cosine_restarts(cycles: int, m: float) -> MainLR:
    def lr(e, d, w):
        t0 = math.ceil(d / cycles)
        eta_min = m * LR
        return eta_min + (LR - eta_min) * (1.0 + math.cos(math.pi * (e % t0) / t0)) / 2.0

    return lr


def polynomial(power: float, end_lr: float) -> MainLR:
    return lambda e, d, w: (LR - end_lr) * (1.0 - e / d) ** power + end_lr


def step(step_size: int, gamma: float) -> MainLR:
    return lambda e, d, w: LR * gamma ** (e // step_size)


def multistep(milestones: list[int], gamma: float) -> MainLR:
    return lambda e, d, w: LR * gamma ** sum(1 for m in milestones if m <= e)


def exponential(gamma: float) -> MainLR:
    return lambda e, d, w: LR * gamma**e


def cyclical(mode: str, max_lr: float, up: int, down: int | None = None, gamma: float = 1.0) -> MainLR:
    """torch CyclicLR: a triangle from base_lr up to max_lr in `up` steps and back in `down`;
    triangular2 halves the amplitude each cycle, exp_range scales it by gamma**iteration."""
    down = up if down is None else down

    def lr(e, d, w):
        size = up + down
        cycle = e // size + 1
        t = e % size
        height = t / up if t <= up else (size - t) / down
        amplitude = (max_lr - LR) * height
        if mode == "triangular2":
            amplitude /= 2.0 ** (cycle - 1)
        elif mode == "exp_range":
            amplitude *= gamma**e
        return LR + amplitude

    return lr


def inverse_sqrt(timescale: int | None) -> MainLR:
    def lr(e, d, w):
        tau = timescale if timescale is not None else max(w, 1)
        return LR * math.sqrt(tau / (tau + e))

    return lr


def warmup_stable_decay(decay_ratio: float, decay_type: str, m: float) -> MainLR:
    def lr(e, d, w):
        decay_steps = math.ceil(decay_ratio * (d + w))
        stable = d - decay_steps
        if e < stable:
            return LR
        p = (e - stable) / decay_steps
        shape = {"linear": 1.0 - p, "cosine": (1.0 + math.cos(math.pi * p)) / 2.0, "1-sqrt": 1.0 - math.sqrt(p)}
        return LR * (m + (1.0 - m) * shape[decay_type])

    return lr


# schedule name -> variants: (id, schedule keys besides name and warmup, closed form)
CASES: dict[str, list[tuple[str, dict, MainLR]]] = {
    "constant": [("default", {}, constant)],
    "linear": [("to-zero", {}, linear(0.0)), ("to-min", {"min_lr_ratio": 0.1}, linear(0.1))],
    "cosine": [("to-zero", {}, cosine(0.0)), ("to-min", {"min_lr_ratio": 0.05}, cosine(0.05))],
    "cosine_with_restarts": [
        ("3-cycles", {"cycles": 3, "min_lr_ratio": 0.1}, cosine_restarts(3, 0.1)),
        ("default", {}, cosine_restarts(2, 0.0)),
    ],
    "polynomial": [
        ("power2-end", {"power": 2.0, "end_lr": 0.001}, polynomial(2.0, 0.001)),
        ("sqrt-to-zero", {"power": 0.5}, polynomial(0.5, 0.0)),
    ],
    "step": [("7", {"step_size": 7, "gamma": 0.5}, step(7, 0.5))],
    "multistep": [("3-milestones", {"milestones": [5, 12, 30], "gamma": 0.5}, multistep([5, 12, 30], 0.5))],
    "exponential": [("0.9", {"gamma": 0.9}, exponential(0.9))],
    "cyclical": [
        (
            "triangular-up4-down6",
            {"max_lr": 0.05, "step_size_up": 4, "step_size_down": 6},
            cyclical("triangular", 0.05, 4, 6),
        ),
        (
            "triangular2-up5",
            {"mode": "triangular2", "max_lr": 0.03, "step_size_up": 5},
            cyclical("triangular2", 0.03, 5),
        ),
        (
            "exp_range-up3-down5",
            {"mode": "exp_range", "max_lr": 0.04, "step_size_up": 3, "step_size_down": 5, "gamma": 0.97},
            cyclical("exp_range", 0.04, 3, 5, 0.97),
        ),
    ],
    "inverse_sqrt": [("tau-from-warmup", {}, inverse_sqrt(None)), ("tau-10", {"timescale": 10}, inverse_sqrt(10))],
    "warmup_stable_decay": [
        (kind, {"decay_ratio": 0.25, "decay_type": kind, "min_lr_ratio": 0.1}, warmup_stable_decay(0.25, kind, 0.1))
        for kind in ("linear", "cosine", "1-sqrt")
    ],
}

# (id, warmup keys, W for T = 40, warmup_start_factor)
WARMUPS = [
    ("no-warmup", {}, 0, 0.0),
    ("warmup_steps", {"warmup_steps": 6}, 6, 0.0),
    ("warmup_ratio", {"warmup_ratio": 0.12, "warmup_start_factor": 0.25}, 5, 0.25),  # ceil(4.8) = 5
]

CURVE_PARAMS = [
    pytest.param(name, keys, main, warmup, w, s, id=f"{name}-{variant}-{wid}")
    for name, variants in CASES.items()
    for variant, keys, main in variants
    for wid, warmup, w, s in WARMUPS
]


def test_every_schedule_has_a_closed_form_case():
    """A schedule added to SCHEDULES must get a curve test here."""
    assert set(CASES) | {"one_cycle", "reduce_on_plateau"} == set(SCHEDULES)


@pytest.mark.parametrize("name, keys, main, warmup, w, start", CURVE_PARAMS)
def test_lr_curve_matches_closed_form(name, keys, main, warmup, w, start):
    config, plan = planned({"name": name, **keys, **warmup})
    assert plan.warmup_steps == w
    curve = lr_curve(config, plan)
    expected = expected_curve(main, T, w, start)
    assert len(curve) == T
    # first, warmup's end, the schedule proper's first, middle and last steps, then the whole curve
    for n in (1, max(w, 1), w + 1, w + 2, (w + T) // 2, T - 1, T):
        assert curve[n - 1] == pytest.approx(expected[n - 1], **APPROX), f"update {n}"
    assert curve == pytest.approx(expected, **APPROX)


def test_lr_curve_reduce_on_plateau_warms_up_then_holds_lr():
    """Without metrics reduce_on_plateau's curve is the warmup, then optim.lr."""
    config, plan = planned({"name": "reduce_on_plateau", "warmup_steps": 4, "warmup_start_factor": 0.2}, total=12)
    assert lr_curve(config, plan) == pytest.approx(expected_curve(constant, 12, 4, 0.2), **APPROX)
    config, plan = planned({"name": "reduce_on_plateau"}, total=12)
    assert lr_curve(config, plan) == pytest.approx([LR] * 12, **APPROX)


def test_cyclical_spot_values_by_hand():
    """triangular, up 4 / down 6 from 0.01 to 0.05: +0.01 a step up, -0.04/6 a step down."""
    config, plan = planned({"name": "cyclical", "max_lr": 0.05, "step_size_up": 4, "step_size_down": 6}, total=25)
    curve = lr_curve(config, plan)
    assert curve[0] == pytest.approx(0.01, **APPROX)
    assert curve[2] == pytest.approx(0.03, **APPROX)
    assert curve[4] == pytest.approx(0.05, **APPROX)  # the top, after step_size_up steps
    assert curve[7] == pytest.approx(0.05 - 3 * 0.04 / 6, **APPROX)
    assert curve[10] == pytest.approx(0.01, **APPROX)  # back at the bottom after up + down
    assert curve[14] == pytest.approx(0.05, **APPROX)


# --------------------------------------------------------------------------- one_cycle


def one_cycle(total, pct_start=0.3, div=25.0, final_div=1e4, strategy="cos", three_phase=False) -> list[float]:
    """torch OneCycleLR: from lr/div up to lr at step pct_start*T - 1, then down to lr/div/final_div at
    step T - 1 (three_phase: back to lr/div at 2*pct_start*T - 2 first), each piece annealed."""
    initial, low = LR / div, LR / div / final_div

    def anneal(a, b, pct):
        if strategy == "cos":
            return b + (a - b) * (1.0 + math.cos(math.pi * pct)) / 2.0
        return a + (b - a) * pct

    if three_phase:
        pieces = [
            (pct_start * total - 1, initial, LR),
            (2 * pct_start * total - 2, LR, initial),
            (total - 1, initial, low),
        ]
    else:
        pieces = [(pct_start * total - 1, initial, LR), (total - 1, LR, low)]
    out = []
    for t in range(total):
        begin = 0.0
        for i, (end, a, b) in enumerate(pieces):
            if t <= end or i == len(pieces) - 1:
                out.append(anneal(a, b, (t - begin) / (end - begin)))
                break
            begin = end
    return out


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"anneal_strategy": "linear"},
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
        {"three_phase": True, "anneal_strategy": "linear"},
        {"three_phase": True},
    ],
    ids=["cos", "linear", "pct0.25-div10", "three-phase-linear", "three-phase-cos"],
)
def test_one_cycle_matches_torch_formula(keys):
    config, plan = planned({"name": "one_cycle", **keys})
    torch_keys = {
        "pct_start": keys.get("pct_start", 0.3),
        "div": keys.get("div_factor", 25.0),
        "final_div": keys.get("final_div_factor", 1e4),
        "strategy": keys.get("anneal_strategy", "cos"),
        "three_phase": keys.get("three_phase", False),
    }
    assert lr_curve(config, plan) == pytest.approx(one_cycle(T, **torch_keys), **APPROX)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_start_peak_middle_and_end(strategy):
    """T = 40, pct_start 0.3: the peak is update 12 (step 11), the fall runs steps 11..39."""
    config, plan = planned({"name": "one_cycle", "anneal_strategy": strategy})
    curve = lr_curve(config, plan)
    initial, low = LR / 25.0, LR / 25.0 / 1e4
    assert curve[0] == pytest.approx(initial, **APPROX)
    assert curve[11] == pytest.approx(LR, **APPROX)
    assert max(curve) == pytest.approx(LR, **APPROX)
    assert curve[-1] == pytest.approx(low, **APPROX)
    # step 25 is halfway down (14 of 28 steps): both annealings give the midpoint there
    assert curve[25] == pytest.approx((LR + low) / 2.0, **APPROX)
    quarter = (LR + low) / 2.0 + (LR - low) / 2.0 * math.cos(math.pi / 4) if strategy == "cos" else LR - (LR - low) / 4
    assert curve[18] == pytest.approx(quarter, **APPROX)  # 7 of 28 steps down


# --------------------------------------------------------------------------- warmup


@pytest.mark.parametrize("name, keys", [("constant", {}), ("cosine", {}), ("linear", {"min_lr_ratio": 0.5})])
@pytest.mark.parametrize("warmup", [1, 3, 8])
def test_warmup_never_starts_at_zero_and_reaches_lr_on_its_last_update(name, keys, warmup):
    config, plan = planned({"name": name, "warmup_steps": warmup, **keys}, total=20)
    curve = lr_curve(config, plan)
    assert curve[0] == pytest.approx(LR / warmup, **APPROX)
    assert curve[0] > 0
    assert curve[warmup - 1] == pytest.approx(LR, **APPROX)
    assert all(b > a for a, b in zip(curve[:warmup], curve[1:warmup]))
    # the schedule proper starts at its own step 0: update W + 1 uses optim.lr too
    assert curve[warmup] == pytest.approx(LR, **APPROX)


def test_warmup_start_factor_sets_the_first_update():
    config, plan = planned({"name": "cosine", "warmup_steps": 4, "warmup_start_factor": 0.2}, total=20)
    curve = lr_curve(config, plan)
    assert curve[:4] == pytest.approx([LR * (0.2 + 0.8 * n / 4) for n in range(1, 5)], **APPROX)
    assert curve[0] == pytest.approx(0.4 * LR, **APPROX)
    assert curve[3] == pytest.approx(LR, **APPROX)


def test_warmup_ratio_ramps_over_ceil_of_ratio_times_steps():
    config, plan = planned({"name": "linear", "warmup_ratio": 0.1}, total=25)
    assert plan.warmup_steps == 3  # ceil(2.5)
    curve = lr_curve(config, plan)
    assert curve[:3] == pytest.approx([LR / 3, 2 * LR / 3, LR], **APPROX)


# --------------------------------------------------------------------------- plan_steps


def test_plan_counts_micro_batches_and_accumulated_steps():
    config = config_for({"name": "constant"}, train={"epochs": 4, "batch_size": 8, "grad_accumulation_steps": 3})
    plan = plan_steps(config, 100)
    assert plan.micro_batches_per_epoch == count_batches(100, 8) == 13
    assert plan.steps_per_epoch == 5  # ceil(13 / 3)
    assert (plan.epochs, plan.total_steps, plan.warmup_steps) == (4, 20, 0)
    assert plan.train_records == 100


def test_plan_without_accumulation_takes_a_step_per_micro_batch():
    config = config_for({"name": "constant"}, train={"epochs": 2, "batch_size": 8})
    plan = plan_steps(config, 100)
    assert (plan.steps_per_epoch, plan.total_steps) == (13, 26)


def test_plan_has_at_least_one_step_per_epoch():
    config = config_for({"name": "constant"}, train={"epochs": 3, "batch_size": 8, "grad_accumulation_steps": 50})
    plan = plan_steps(config, 10)
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (2, 1, 3)


def test_max_steps_wins_over_epochs_and_sets_the_epoch_count():
    config = config_for(
        {"name": "constant"}, train={"epochs": 30, "max_steps": 12, "batch_size": 8, "grad_accumulation_steps": 3}
    )
    plan = plan_steps(config, 100)
    assert plan.steps_per_epoch == 5
    assert (plan.total_steps, plan.epochs) == (12, 3)  # ceil(12 / 5)
    config = config_for({"name": "constant"}, train={"epochs": 1, "max_steps": 10, "batch_size": 8})
    assert plan_steps(config, 100).epochs == 1  # 10 steps fit in one 13-step epoch


@pytest.mark.parametrize(
    "ratio, total, warmup", [(0.1, 25, 3), (0.12, 40, 5), (0.01, 10, 1), (0.5, 10, 5), (0.0, 10, 0)]
)
def test_warmup_ratio_rounds_up(ratio, total, warmup):
    _, plan = planned({"name": "linear", "warmup_ratio": ratio}, total=total)
    assert plan.warmup_steps == warmup


def test_describe_mentions_total_steps_and_warmup():
    config = config_for(
        {"name": "cosine", "warmup_steps": 100}, train={"epochs": 3, "batch_size": 8, "grad_accumulation_steps": 3}
    )
    plan = plan_steps(config, 10_000)  # 1250 micro-batches, 417 steps per epoch
    text = plan.describe(config)
    assert plan.total_steps == 1251
    assert "1,251 step(s)" in text
    assert "10,000 training record(s)" in text
    assert "8 x 3" in text
    assert "warmup 100 step(s)" in text
    assert "cosine" in text
    config = config_for({"name": "constant"}, train={"max_steps": 7, "batch_size": 8})
    text = plan_steps(config, 100).describe(config)
    assert "train.max_steps 7" in text
    assert "7 step(s)" in text
    assert "warmup" not in text


# --------------------------------------------------------------------------- invalid combinations


def plan_error(schedule: dict, total: int = T, **kwargs) -> str:
    config = config_for(schedule, train={"max_steps": total}, **kwargs)
    with pytest.raises(ConfigError) as info:
        plan_steps(config, total)
    return str(info.value)


def config_error(schedule: dict, *, lr: float = LR, data: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config_for(schedule, lr=lr, data=data)
    return str(info.value)


@pytest.mark.parametrize("warmup", [10, 11])
def test_warmup_steps_not_shorter_than_the_run_is_an_error(warmup):
    message = plan_error({"name": "cosine", "warmup_steps": warmup}, total=10)
    assert "schedule.warmup_steps" in message
    assert "10 step(s)" in message
    planned({"name": "cosine", "warmup_steps": 9}, total=10)  # one step left after warmup is fine


def test_warmup_ratio_rounding_up_to_the_whole_run_is_an_error():
    message = plan_error({"name": "cosine", "warmup_ratio": 0.95}, total=10)  # ceil(9.5) = 10
    assert "schedule.warmup_ratio" in message
    assert "schedule.warmup_steps" not in message


def test_step_size_not_below_steps_after_warmup_is_an_error():
    message = plan_error({"name": "step", "step_size": 34, "warmup_steps": 6})
    assert "schedule.step_size" in message
    assert "34" in message
    planned({"name": "step", "step_size": 33, "warmup_steps": 6})


def test_multistep_last_milestone_not_before_the_end_is_an_error():
    message = plan_error({"name": "multistep", "milestones": [5, 34], "warmup_steps": 6})
    assert "schedule.milestones" in message
    planned({"name": "multistep", "milestones": [5, 33], "warmup_steps": 6})


def test_more_restart_cycles_than_steps_after_warmup_is_an_error():
    message = plan_error({"name": "cosine_with_restarts", "cycles": 8, "warmup_steps": 3}, total=10)
    assert "schedule.cycles" in message
    planned({"name": "cosine_with_restarts", "cycles": 7, "warmup_steps": 3}, total=10)


def test_warmup_stable_decay_overlapping_warmup_is_an_error():
    message = plan_error({"name": "warmup_stable_decay", "decay_ratio": 0.9, "warmup_steps": 5}, total=10)
    assert "schedule.decay_ratio" in message
    planned({"name": "warmup_stable_decay", "decay_ratio": 0.5, "warmup_steps": 5}, total=10)


@pytest.mark.parametrize("warmup", [{"warmup_steps": 5}, {"warmup_ratio": 0.1}])
def test_one_cycle_with_warmup_is_rejected_at_validation(warmup):
    message = config_error({"name": "one_cycle", **warmup})
    assert "schedule.warmup_" in message  # the message says warmup_steps even for warmup_ratio
    assert "one_cycle" in message
    assert "pct_start" in message
    config_for({"name": "one_cycle", "warmup_steps": 0})  # no warmup, spelled out


@pytest.mark.parametrize("max_lr", [LR, LR / 2])
def test_cyclical_max_lr_not_above_lr_is_an_error(max_lr):
    assert "schedule.max_lr" in config_error({"name": "cyclical", "max_lr": max_lr})


@pytest.mark.parametrize("end_lr", [LR, 2 * LR])
def test_polynomial_end_lr_not_below_lr_is_an_error(end_lr):
    assert "schedule.end_lr" in config_error({"name": "polynomial", "end_lr": end_lr})


def test_reduce_on_plateau_on_val_loss_needs_a_validation_split():
    message = config_error({"name": "reduce_on_plateau", "monitor": "val_loss"}, data={"validation_split": 0})
    assert "schedule.monitor" in message
    assert "validation_split" in message
    # left unset, the monitor follows the split
    config = config_for({"name": "reduce_on_plateau"}, data={"validation_split": 0})
    assert config.schedule.monitor == "loss"
    assert config_for({"name": "reduce_on_plateau"}).schedule.monitor == "val_loss"


@pytest.mark.parametrize("min_lr", [LR, 1.0])
def test_reduce_on_plateau_min_lr_not_below_lr_is_an_error(min_lr):
    assert "schedule.min_lr" in config_error({"name": "reduce_on_plateau", "min_lr": min_lr})


def test_warmup_steps_and_warmup_ratio_together_is_an_error():
    message = config_error({"name": "cosine", "warmup_steps": 5, "warmup_ratio": 0.1})
    assert "schedule.warmup_steps" in message
    assert "warmup_ratio" in message


def test_key_of_another_schedule_names_the_schedules_that_use_it():
    message = config_error({"name": "step", "step_size": 5, "min_lr_ratio": 0.1})
    assert "schedule.min_lr_ratio" in message
    assert "'step'" in message
    for user in ("linear", "cosine", "cosine_with_restarts", "warmup_stable_decay"):
        assert user in message


def test_unknown_schedule_name_suggests_the_closest():
    message = config_error({"name": "cosin"})
    assert "schedule.name" in message
    assert "did you mean 'cosine'?" in message


def test_yaml_exponents_without_a_dot_become_floats(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; the config still gets floats."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "output_dir: m\n"
        "data:\n  path: x.csv\n"
        "optim:\n  lr: 1e-3\n"
        "schedule:\n  name: cyclical\n  max_lr: 1e-2\n  step_size_up: 5\n"
        "train:\n  max_steps: 12\n  batch_size: 1\n"
    )
    config = load_config(path)
    assert isinstance(config.optim.lr, float) and config.optim.lr == 1e-3
    assert isinstance(config.schedule.max_lr, float) and config.schedule.max_lr == 1e-2
    curve = lr_curve(config, plan_steps(config, 12))
    assert curve[0] == pytest.approx(1e-3, **APPROX)
    assert curve[5] == pytest.approx(1e-2, **APPROX)  # the top after step_size_up steps


# --------------------------------------------------------------------------- reduce_on_plateau


def plateau(schedule: dict, total: int = 100, data: dict | None = None) -> tuple[LRSchedule, torch.optim.SGD]:
    config, plan = planned({"name": "reduce_on_plateau", **schedule}, total=total, data=data)
    _, optimizer = sgd()
    return build_schedule(config, optimizer, plan), optimizer


def epoch_lrs(schedule: LRSchedule, optimizer, values: list[float], key: str = "val_loss") -> list[float]:
    """The LR after each epoch that ends with `key` at the given value (a few steps per epoch)."""
    out = []
    for value in values:
        advance(schedule, optimizer, 2)
        schedule.end_of_epoch({"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5, key: value})
        out.append(current_lr(optimizer))
    return out


def test_plateau_reduces_after_patience_epochs_without_improvement():
    """torch semantics: the LR drops on the (patience + 1)-th epoch in a row that does not improve."""
    schedule, optimizer = plateau({"factor": 0.5, "patience": 2})
    lrs = epoch_lrs(schedule, optimizer, [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])
    assert lrs == pytest.approx([LR, LR, LR, LR, LR / 2, LR / 2, LR / 2, LR / 2, LR / 4, LR / 4, LR / 4], **APPROX)


def test_plateau_keeps_lr_while_the_metric_improves():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0})
    assert epoch_lrs(schedule, optimizer, [1.0, 0.9, 0.8, 0.7, 0.6]) == pytest.approx([LR] * 5, **APPROX)


def test_plateau_threshold_ignores_tiny_improvements():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 1, "threshold": 0.1, "threshold_mode": "abs"})
    assert epoch_lrs(schedule, optimizer, [1.0, 0.95, 0.91]) == pytest.approx([LR, LR, LR / 2], **APPROX)


def test_plateau_cooldown_waits_before_counting_again():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 1, "cooldown": 2})
    lrs = epoch_lrs(schedule, optimizer, [1.0] * 9)
    # reduce at epoch 3; epochs 4-5 are cooldown; two more bad epochs reduce again at 7
    assert lrs == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 2, LR / 2, LR / 4, LR / 4, LR / 4], **APPROX)
    schedule, optimizer = plateau({"factor": 0.5, "patience": 1})
    assert epoch_lrs(schedule, optimizer, [1.0] * 5) == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 4], **APPROX)


def test_plateau_never_goes_below_min_lr():
    schedule, optimizer = plateau({"factor": 0.1, "patience": 0, "min_lr": 0.002})
    assert epoch_lrs(schedule, optimizer, [1.0] * 5) == pytest.approx([LR, 0.002, 0.002, 0.002, 0.002], **APPROX)


def test_plateau_on_accuracy_maximises():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0, "monitor": "val_accuracy"})
    lrs = epoch_lrs(schedule, optimizer, [0.1, 0.2, 0.3, 0.4, 0.3], key="val_accuracy")
    assert lrs == pytest.approx([LR, LR, LR, LR, LR / 2], **APPROX)
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0, "monitor": "accuracy"})
    assert epoch_lrs(schedule, optimizer, [0.5, 0.6, 0.7], key="accuracy") == pytest.approx([LR] * 3, **APPROX)


def test_plateau_on_loss_minimises():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0, "monitor": "loss"})
    assert epoch_lrs(schedule, optimizer, [0.5, 0.6, 0.7], key="loss") == pytest.approx([LR, LR / 2, LR / 4], **APPROX)


def test_plateau_reads_only_its_monitor():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0})  # monitors val_loss
    for loss in (1.0, 0.5, 0.25):
        schedule.end_of_epoch({"loss": loss, "val_loss": 2.0})
    assert current_lr(optimizer) == pytest.approx(LR / 4, **APPROX)


def test_plateau_skips_epochs_without_a_finite_monitor_value():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0})
    schedule.end_of_epoch({"val_loss": 1.0})
    for metrics in ({"val_loss": None}, {"val_loss": float("nan")}, {"val_loss": float("inf")}, {"loss": 5.0}):
        schedule.end_of_epoch(metrics)
        assert current_lr(optimizer) == LR
    schedule.end_of_epoch({"val_loss": 2.0})
    assert current_lr(optimizer) == pytest.approx(LR / 2, **APPROX)


def test_plateau_steps_never_change_the_lr_without_warmup():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0})
    assert advance(schedule, optimizer, 100) == [LR] * 100


def test_plateau_waits_for_warmup_while_steps_ramp_the_lr():
    schedule, optimizer = plateau({"factor": 0.5, "patience": 0, "warmup_steps": 4, "warmup_start_factor": 0.2}, 30)
    seen = []
    for _ in range(3):  # three warmup updates, each followed by an awful epoch that must not count
        seen.append(current_lr(optimizer))
        optimizer.step()
        schedule.step()
        schedule.end_of_epoch({"val_loss": 100.0 + len(seen), "loss": 100.0})
    assert seen == pytest.approx([LR * (0.2 + 0.8 * n / 4) for n in (1, 2, 3)], **APPROX)
    assert current_lr(optimizer) == pytest.approx(LR, **APPROX)  # update 4, the last of warmup, uses optim.lr
    assert advance(schedule, optimizer, 5) == pytest.approx([LR] * 5, **APPROX)  # after warmup steps change nothing
    schedule.end_of_epoch({"val_loss": 1.0})
    schedule.end_of_epoch({"val_loss": 1.0})
    assert current_lr(optimizer) == pytest.approx(LR / 2, **APPROX)  # now epochs count, from a fresh best


# --------------------------------------------------------------------------- stepping and resuming


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "one_cycle"},
        {"name": "one_cycle", "three_phase": True},
        {"name": "cosine", "warmup_steps": 3},
        {"name": "cyclical", "max_lr": 0.05, "step_size_up": 2},
        {"name": "constant", "warmup_steps": 3},
    ],
    ids=["one_cycle", "one_cycle-three-phase", "cosine-warmup", "cyclical", "constant-warmup"],
)
def test_schedule_never_steps_past_the_planned_total(schedule):
    config, plan = planned(schedule, total=10)
    _, optimizer = sgd()
    lr_schedule = build_schedule(config, optimizer, plan)
    lrs = advance(lr_schedule, optimizer, plan.total_steps)  # the loop steps after every update, the last too
    assert lrs == pytest.approx(lr_curve(config, plan), **APPROX)
    last = current_lr(optimizer)
    assert last == pytest.approx(lrs[-1], **APPROX)
    assert advance(lr_schedule, optimizer, 5) == pytest.approx([last] * 5, **APPROX)  # and past it: nothing moves
    assert lr_schedule.steps == plan.total_steps + 5


def save_and_resume(schedule: dict, total: int, k: int) -> tuple[list[float], list[float]]:
    """LRs of updates k+1..total from an uninterrupted run and from one saved after k steps,
    pickled through torch.save, and resumed into a fresh optimizer and schedule."""
    config, plan = planned(schedule, total=total)
    _, optimizer = sgd()
    lr_schedule = build_schedule(config, optimizer, plan)
    advance(lr_schedule, optimizer, k)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": lr_schedule.state_dict()}, buffer)
    uninterrupted = advance(lr_schedule, optimizer, total - k)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    _, fresh_optimizer = sgd()
    fresh = build_schedule(config, fresh_optimizer, plan)
    fresh_optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))  # restores the group's lr
    fresh.load_state_dict(copy.deepcopy(saved["schedule"]))
    assert fresh.steps == k
    return uninterrupted, advance(fresh, fresh_optimizer, total - k)


@pytest.mark.parametrize("k", [2, 5, 6, 13, 29])
@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "cosine", "warmup_steps": 6, "min_lr_ratio": 0.1},
        {"name": "cyclical", "max_lr": 0.05, "step_size_up": 3, "step_size_down": 5},
        {"name": "cyclical", "mode": "triangular2", "max_lr": 0.05, "step_size_up": 3, "warmup_steps": 4},
        {"name": "cyclical", "mode": "exp_range", "gamma": 0.9, "max_lr": 0.05, "step_size_up": 3},
    ],
    ids=["cosine-warmup", "cyclical", "cyclical-triangular2-warmup", "cyclical-exp_range"],
)
def test_state_dict_round_trip_continues_the_same_lrs(schedule, k):
    uninterrupted, resumed = save_and_resume(schedule, total=30, k=k)
    assert resumed == pytest.approx(uninterrupted, **APPROX)


def test_state_dict_round_trip_keeps_plateau_progress():
    """A resumed reduce_on_plateau keeps its best value and bad-epoch count."""
    config, plan = planned({"name": "reduce_on_plateau", "factor": 0.5, "patience": 2}, total=30)
    _, optimizer = sgd()
    schedule = build_schedule(config, optimizer, plan)
    epoch_lrs(schedule, optimizer, [1.0, 0.5, 0.5, 0.5, 0.5])  # reduced once, best 0.5
    saved_opt, saved = copy.deepcopy(optimizer.state_dict()), copy.deepcopy(schedule.state_dict())
    _, fresh_optimizer = sgd()
    fresh = build_schedule(config, fresh_optimizer, plan)
    fresh_optimizer.load_state_dict(saved_opt)
    fresh.load_state_dict(saved)
    assert current_lr(fresh_optimizer) == pytest.approx(LR / 2, **APPROX)
    following = [0.6, 0.6, 0.6]  # worse than the saved best: the third reduces again
    assert epoch_lrs(fresh, fresh_optimizer, following) == pytest.approx(epoch_lrs(schedule, optimizer, following))
    assert current_lr(fresh_optimizer) == pytest.approx(LR / 4, **APPROX)
