"""Differential privacy: DP-SGD through Opacus, with one record as the unit of privacy.

    check_privacy_runtime()                               # the 'dp' extra is installed
    plan = plan_privacy(config, n_train, step_plan)       # delta, sample rate, the noise (for a target epsilon)
    hooks = make_private(net)                             # per-record-gradient layers, Opacus' hooks
    private = PrivateTraining(plan, optimizer, hooks, device, config.train.seed)
    for each step:
        indices = private.sample(n_train)                 # each record with probability q (Poisson)
        per micro-batch: forward, sum of per-record losses, backward, private.add_micro_batch(last)
        private.end_step()                                # the accountant counts the step
    private.epsilon(); private.report()                   # -> privacy.json

What DP-SGD does per step (Opacus' DPOptimizer): every sampled record's gradient is clipped to
privacy.max_grad_norm; the clipped gradients are summed over all micro-batches of the step;
Gaussian noise of std noise_multiplier x max_grad_norm is added once; the sum is divided by
the expected number of records per step (q x records). The accountant (Opacus' PRV, RDP or
GDP) turns (noise, q, steps) into epsilon at the run's delta. A record's loss is the mean of
its token losses, so a long record weighs no more than a short one before clipping.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainingConfig
from .errors import ConfigError, TrainingError
from .schedules import StepPlan

log = logging.getLogger("synthloom")

PRIVACY_FILE = "privacy.json"
OPACUS_MIN = (1, 5)

NOT_COVERED = [
    "text tokenizers (char, sentencepiece: their vocabulary is read from the records without noise); field "
    "tokens (the csv default) are covered: their vocabularies come from noisy counts (private_stats.py)",
    "schema.json (column types, missing values and date formats inferred from the records) and what generation "
    "derives from the data by default: the type checks (generate.check_types) and max_tokens (2 x the longest "
    "record); set generate.check_types: false and generate.max_tokens to sample from the weights alone",
    "summary.json, history.csv and steps.jsonl (record counts, the longest record, losses: computed without noise)",
    "the CSV header (column names)",
    "data.column_bounds: taken as public knowledge, not counted; bounds read off the records themselves would "
    "sit outside the guarantee",
    "records in the validation split: never trained on, but their loss is logged",
]


def check_privacy_runtime() -> None:
    """Refuse, before any work, a private run this installation cannot do."""
    if importlib.util.find_spec("opacus") is None:
        raise ConfigError("privacy.enabled: needs Opacus: pip install 'synthloom[dp]'")
    version = importlib.metadata.version("opacus")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < OPACUS_MIN:
        raise ConfigError(
            f"privacy.enabled: needs Opacus >= {'.'.join(map(str, OPACUS_MIN))}, found {version}: "
            "pip install -U 'synthloom[dp]'"
        )


@dataclass(frozen=True)
class PrivacyPlan:
    """The run's privacy parameters, fixed before its first step."""

    records: int  # training records: the population each step samples from
    sample_rate: float  # q: each record's probability of being in a step
    expected_batch_size: float  # q x records: what the noisy sum is divided by
    noise_multiplier: float
    delta: float
    max_grad_norm: float
    accountant: str
    planned_steps: int
    budget_steps: int | None  # target_epsilon: the most steps the budget allows (training stops there)
    target_epsilon: float | None  # DP-SGD's own target: privacy.target_epsilon less the encoding's
    poisson_sampling: bool
    secure_mode: bool
    encoding_epsilon: float = 0.0  # the field tokenizer's vocabularies (private_stats.py), composed with DP-SGD
    encoding_delta: float = 0.0

    def describe(self) -> str:
        target = (
            f", for epsilon {self.target_epsilon:g} after {self.planned_steps:,} steps" if self.target_epsilon else ""
        )
        return (
            f"DP-SGD: noise multiplier {self.noise_multiplier:.4g}{target}; each record clipped to "
            f"{self.max_grad_norm:g}; sample rate {self.sample_rate:.4g} ({self.expected_batch_size:.1f} records "
            f"per step on average{'' if self.poisson_sampling else ', shuffled fixed-size batches'}); delta "
            f"{self.delta:.3g}; {self.accountant} accountant"
            + (
                f"; the vocabularies spend epsilon {self.encoding_epsilon:g}, delta {self.encoding_delta:.3g} more"
                if self.encoding_epsilon
                else ""
            )
        )


def total_delta(config: TrainingConfig, train_records: int) -> float:
    """privacy.delta, or its default: 1e-5, or 1 / (10 x records) when that is smaller."""
    dp = config.privacy
    delta = dp.delta if dp.delta is not None else min(1e-5, 1.0 / (10 * train_records))
    if delta >= 1.0 / train_records:
        raise ConfigError(
            f"privacy.delta: {delta:g} is not below 1 / training records (1/{train_records:,} = "
            f"{1 / train_records:.3g}): a delta that large allows leaking a whole record; lower it or leave it null"
        )
    return delta


def encoding_budget(config: TrainingConfig, train_records: int) -> tuple[float, float]:
    """(epsilon, delta) the field tokenizer's vocabularies spend under DP: privacy.encoding_epsilon (null: a
    quarter of target_epsilon, or 1.0 with a noise_multiplier) and a tenth of the delta; (0, 0) for text
    tokenizers, whose vocabulary is not covered (NOT_COVERED), and with train.init_from, whose tokenizer is the
    starting model's: a model trained on public records costs nothing here; one trained privately on these
    records spent its own budget on them (privacy.json there), which adds to this run's."""
    dp = config.privacy
    if not dp.enabled or config.tokenizer.kind != "fields" or config.train.init_from is not None:
        return 0.0, 0.0  # (init_from: the vocabularies are that model's, none drawn from these records)
    epsilon = dp.encoding_epsilon
    if epsilon is None:
        epsilon = dp.target_epsilon / 4 if dp.target_epsilon is not None else 1.0
    return epsilon, total_delta(config, train_records) / 10


def plan_privacy(config: TrainingConfig, train_records: int, steps: StepPlan, saved: dict | None = None) -> PrivacyPlan:
    """Delta, the sample rate and the noise for this run. `saved`: a resumed run's plan, whose noise and
    sample rate it keeps (a target_epsilon run then stops where the budget ends, if its plan grew). With
    field tokens the vocabularies' share (encoding_budget) is taken off the target epsilon and the delta."""
    dp = config.privacy
    enc_epsilon, enc_delta = encoding_budget(config, train_records)
    if saved is not None:
        enc_epsilon, enc_delta = saved.get("encoding_epsilon", 0.0), saved.get("encoding_delta", 0.0)
    delta = total_delta(config, train_records) - enc_delta
    target = dp.target_epsilon - enc_epsilon if dp.target_epsilon is not None else None
    q = 1.0 / steps.steps_per_epoch
    if saved is not None:
        if saved["sample_rate"] != q or saved["records"] != train_records:
            raise TrainingError(
                f"--resume: the run sampled {saved['records']:,} records at rate {saved['sample_rate']:.4g}; "
                f"now {train_records:,} at {q:.4g}: the privacy accounting cannot continue"
            )
        noise = saved["noise_multiplier"]
    elif dp.noise_multiplier is not None:
        noise = dp.noise_multiplier
    else:
        noise = _noise_for(target, delta, q, steps.total_steps, dp.accountant)
    budget = None
    if target is not None:
        noised_for = saved["planned_steps"] if saved is not None else steps.total_steps
        budget = noised_for
        if steps.total_steps > noised_for:  # a resume asks for more steps than the noise was set for
            budget = _steps_within(target, delta, q, noise, noised_for, steps.total_steps, dp.accountant)
    return PrivacyPlan(
        records=train_records,
        sample_rate=q,
        expected_batch_size=q * train_records,
        noise_multiplier=noise,
        delta=delta,
        max_grad_norm=dp.max_grad_norm,
        accountant=dp.accountant,
        planned_steps=saved["planned_steps"] if saved is not None else steps.total_steps,
        budget_steps=budget,
        target_epsilon=target,
        poisson_sampling=dp.poisson_sampling,
        secure_mode=dp.secure_mode,
        encoding_epsilon=enc_epsilon,
        encoding_delta=enc_delta,
    )


def epsilon_after(noise: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """The accountant's epsilon after `steps` steps of (noise, q)."""
    if steps == 0:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(noise, q, steps)]
    return _get_epsilon(acc, delta)


def _noise_for(target: float, delta: float, q: float, steps: int, accountant: str) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # gdp's "experimental" warning: said in the docs
            return float(
                get_noise_multiplier(
                    target_epsilon=target,
                    target_delta=delta,
                    sample_rate=q,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=0.005 * target,
                )
            )
    except ValueError as exc:
        raise ConfigError(
            f"privacy.target_epsilon: {target:g} cannot be reached in {steps:,} steps at sample rate {q:.4g} ({exc}); "
            "raise it, train fewer steps or use a larger batch"
        ) from None


def _steps_within(target: float, delta: float, q: float, noise: float, lo: int, hi: int, accountant: str) -> int:
    """The most steps in [lo, hi] whose epsilon stays within the target (epsilon grows with steps)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if epsilon_after(noise, q, mid, delta, accountant) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _accountant(name: str):
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def _get_epsilon(acc, delta: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


def make_private(net: nn.Module) -> nn.Module:
    """Give the model per-record gradients, in place: the model makes its layers ones Opacus can hook
    (`net.prepare_per_record_gradients()`: the LSTM's becomes a DPLSTM, same weights, same names) and
    Opacus' hooks fill each parameter's `grad_sample` (the returned GradSampleModule holds them; `net`
    is still what runs). Call before building the optimizer."""
    from opacus import GradSampleModule

    net.prepare_per_record_gradients()
    try:
        return GradSampleModule(net, batch_first=True, loss_reduction="sum", strict=True)
    except NotImplementedError as exc:  # a layer Opacus cannot give per-record gradients for
        raise ConfigError(f"privacy.enabled: this model cannot be trained privately: {exc}") from None


class PrivateTraining:
    """Opacus' DPOptimizer around the run's optimizer, the accountant, and the step's record sampling."""

    def __init__(
        self, plan: PrivacyPlan, optimizer: torch.optim.Optimizer, hooks, device, seed: int | None, world=None
    ):
        """seed: privacy.noise_seed; None (the default) draws one from the OS. The generators' states
        go into the work dir's checkpoints (for --resume), never into a published model dir.

        world (data-parallel, distributed.World): rank 0 draws each step's records and every rank takes
        its share, so the records a step takes are one Poisson draw over all of them, as on one process;
        Opacus' DistributedDPOptimizer sums the ranks' clipped gradients and adds the noise on rank 0
        only; the accountant counts each step once. So the guarantee is the one-process run's."""
        from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

        self.plan, self.hooks = plan, hooks
        self.world = world
        distributed = world is not None and world.distributed
        self.seed_given = seed is not None
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 2
        self.sampler = torch.Generator().manual_seed(seed + 1)  # which records each step takes
        self.noise = torch.Generator(device=device).manual_seed(seed + 2)
        # DistributedDPOptimizer divides by expected_batch_size x world size: give it each rank's share
        self.optimizer = (DistributedDPOptimizer if distributed else DPOptimizer)(
            optimizer,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.expected_batch_size / (world.size if distributed else 1),
            loss_reduction="mean",  # the noisy sum / expected records per step
            generator=self.noise,
            secure_mode=plan.secure_mode,
        )
        self.accountant = _accountant(plan.accountant)
        self.steps = 0

    # -- a step
    def sample(self, n: int) -> list[int]:
        """This step's records: each of the n with probability q, independently (may be none).
        Data-parallel: rank 0's draw, on every rank."""
        if self.world is not None and self.world.distributed:
            return self.world.broadcast(self._draw(n) if self.world.main else None)
        return self._draw(n)

    def _draw(self, n: int) -> list[int]:
        q = self.plan.sample_rate
        if self.plan.secure_mode:
            u = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) / 2.0**64
            return np.flatnonzero(u < q).tolist()
        return torch.nonzero(torch.rand(n, generator=self.sampler) < q).squeeze(1).tolist()

    def params(self) -> list[torch.Tensor]:
        return self.optimizer.params

    def record_norms(self) -> torch.Tensor:
        """Each record's gradient norm before clipping, for the micro-batch just backpropagated."""
        grads = [p.grad_sample for p in self.params()]
        return torch.stack([g.reshape(len(g), -1).norm(dim=1) for g in grads], dim=1).norm(dim=1)

    def add_micro_batch(self, last: bool) -> None:
        """Clip this micro-batch's per-record gradients into the step's sum; the last one adds the
        noise and updates the weights."""
        if self.plan.secure_mode and last:
            self.noise.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        self.optimizer.signal_skip_step(do_skip=not last)
        self.optimizer.step()
        if not last:
            self.optimizer.zero_grad(set_to_none=True)  # keeps the clipped sum, drops the per-record gradients

    def empty_step(self) -> None:
        """A step whose draw took no record: the update is the noise alone (skipping it would tell)."""
        for p in self.params():
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        self.add_micro_batch(last=True)

    def discard(self) -> None:
        """Drop a step's partial sums (a non-finite loss): no update, and the step still counts."""
        for p in self.params():
            p.grad_sample = p.summed_grad = p.grad = None
        self.optimizer._step_skip_queue.clear()
        self.optimizer._is_last_step_skipped = False

    def end_step(self) -> None:
        self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)
        self.steps += 1

    # -- accounting
    def epsilon(self) -> float:
        """The epsilon spent so far, all mechanisms: DP-SGD's and the vocabularies'."""
        return self.sgd_epsilon() + self.plan.encoding_epsilon

    def sgd_epsilon(self) -> float:
        return _get_epsilon(self.accountant, self.plan.delta) if self.steps else 0.0

    @property
    def delta(self) -> float:
        return self.plan.delta + self.plan.encoding_delta

    def budget_reached(self, step: int) -> bool:
        return self.plan.budget_steps is not None and step >= self.plan.budget_steps

    def report(self, encoding: dict[str, Any] | None = None) -> dict[str, Any]:
        """privacy.json: what the guarantee is, with every number needed to recompute it. `encoding`:
        the field tokenizer's mechanisms (private_stats.PrivateStats.report)."""
        p = self.plan
        guarantee = f"({self.epsilon():.4g}, {self.delta:.3g})-DP for each training record"
        if p.encoding_epsilon:
            guarantee += (
                f": DP-SGD ({self.sgd_epsilon():.4g}, {p.delta:.3g}) and the vocabularies ({p.encoding_epsilon:.4g}, "
                f"{p.encoding_delta:.3g}), added (basic composition)"
            )
        if not p.poisson_sampling:
            guarantee += (
                " if batches were Poisson-sampled; they were shuffled fixed-size batches, so this is not a proven bound"
            )
        if p.accountant == "gdp":
            guarantee += "; the gdp accountant is an approximation that can underestimate epsilon"
        if self.seed_given:
            guarantee += "; only while privacy.noise_seed stays secret (it reproduces the noise)"
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "dp_sgd": {"epsilon": self.sgd_epsilon(), "delta": p.delta, "target_epsilon": p.target_epsilon},
            "encoding": (
                (encoding or {}) | {"epsilon": p.encoding_epsilon, "delta": p.encoding_delta}
                if p.encoding_epsilon
                else None
            ),
            "noise_multiplier": p.noise_multiplier,
            "sample_rate": p.sample_rate,
            "steps": self.steps,
            "accountant": p.accountant,
            "max_grad_norm": p.max_grad_norm,
            "records": p.records,
            "expected_batch_size": p.expected_batch_size,
            "poisson_sampling": p.poisson_sampling,
            "secure_mode": p.secure_mode,
            "noise_seed": "given (privacy.noise_seed)" if self.seed_given else "drawn from the OS, kept nowhere",
            "target_epsilon": p.target_epsilon + p.encoding_epsilon if p.target_epsilon is not None else None,
            "accountant_history": [list(h) for h in self.accountant.history],
            "guarantee": guarantee,
            "unit": "one record (one line or CSV row)",
            "not_covered": NOT_COVERED,
        }

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "plan": asdict(self.plan),
            "accountant": [tuple(h) for h in self.accountant.history],
            "steps": self.steps,
            "sampler": self.sampler.get_state(),
            "noise": self.noise.get_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(h) for h in state["accountant"]]
        self.steps = state["steps"]
        self.sampler.set_state(state["sampler"])
        self.noise.set_state(state["noise"])
