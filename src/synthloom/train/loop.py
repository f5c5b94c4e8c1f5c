"""The fit loop: epochs of steps with limits at step boundaries, evaluation, history, callbacks, the
plateau schedule, best weights, early stopping, checkpoints and exact resume.

    loop = FitLoop(config, net, optimizer, schedule, device, batches, callbacks, work, interrupted, private)
    loop.run(epochs, total_steps, bar)

Data-parallel (world.size > 1, see distributed.py): each step's batches are drawn by every rank from the
same seeded order and split among them (rank r takes records r, r + w, ...); the stops that depend on a
rank's own clock or signals (time limit, Ctrl-C, a callback) are agreed at step boundaries; validation
is split among the ranks and summed; only rank 0 writes checkpoints, logs and the progress bar.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    copy_checkpoint,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from ..config import METRIC_MODE
from ..data import (
    IGNORE_INDEX,
    batch_indices,
)
from ..distributed import ALONE, World
from ..errors import ModelDirError, TrainingError
from ..models.seq2seq import teacher_forcing_at
from ..privacy import PrivateTraining
from ..resume import capture_rng, restore_rng
from ..schedules import NOT_DECAYING, StepPlan, lr_curve
from ..steplog import StepLog
from .step import Precision, StepStats, optimizer_step, private_optimizer_step, to_device

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
    epsilon: float | None = None  # differential privacy: the epsilon spent so far (privacy.enabled)
    delta: float | None = None
    val_bleu: float | None = None  # seq2seq: greedy targets of the validation sources, sacrebleu's corpus BLEU
    val_chrf: float | None = None  # and chrF (0..100)
    val_exact_match: float | None = None  # and the share decoded exactly (0..1)
    stop: bool = False


PAIR_METRICS = ("val_bleu", "val_chrf", "val_exact_match")  # in history.csv only for a seq2seq model


@contextmanager
def stop_on_signals() -> Iterator[dict[str, bool]]:
    """First Ctrl-C or SIGTERM: finish the current step, write a checkpoint and the model dir
    as usual. A second Ctrl-C aborts at once; the last checkpoint stays for --resume."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True
        name = "SIGTERM" if signum == signal.SIGTERM else "interrupted"
        log.warning(
            "%s: stopping after this step, writing a checkpoint and the model dir (Ctrl-C again to abort)", name
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


SCHEDULE_CHECK_STEPS = 20  # steps timed before the time limit's end is estimated (warn_if_the_time_limit_...)


class FitLoop:
    """The state of one fit: a small object so each phase below stays a short method. Its
    state at a step boundary is what a checkpoint holds (`state()`, `restore()`)."""

    def __init__(
        self, config, net, optimizer, schedule, device, batches, callbacks, work, interrupted, private=None,
        world: World = ALONE, ddp: torch.nn.Module | None = None,
    ):  # fmt: skip
        self.config, self.net, self.optimizer, self.schedule, self.device = config, net, optimizer, schedule, device
        self.private: PrivateTraining | None = private  # DP-SGD (privacy.enabled)
        self.world, self.ddp = world, ddp  # data-parallel: the processes, and DDP around net.loss (not under DP)
        self.precision = Precision.of(config.train.precision, device)
        self.steplog = StepLog(work, config.train.logging_steps, config.train.tensorboard, enabled=world.main)
        self.batches, self.callbacks, self.work = batches, callbacks, work
        self.train_ids, self.val_ids = batches.train, batches.val
        self.interrupted = interrupted  # {"stop": bool}, set by the first Ctrl-C or SIGTERM
        self.rng = random.Random(config.train.seed)  # the batch order
        self.epoch_rng: Any = None  # self.rng's state when the current epoch began
        self.step = 0
        self.epoch = 0
        self.epoch_done = True  # the checkpointed epoch is complete (resume starts the next one)
        self.micro_done = 0  # micro-batches (Poisson-sampled DP: steps) of the current epoch already trained
        self.epoch_totals = [0.0, 0, 0]  # loss sum, correct predictions, tokens of the current epoch
        self.history: list[dict[str, Any]] = []
        self.stopped_by = "epochs"
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.stale_epochs = 0  # early stopping: epochs since the monitored metric improved
        self.es_best: float | None = None
        self.tokens_seen = 0
        self.skipped_steps = 0
        self.nonfinite_steps = 0
        self.train_time = 0.0
        self.last_checkpoint: Path | None = None
        self.start = time.perf_counter()
        self.first_step, self.start_elapsed = 0, 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, epochs: int, total_steps: int, bar) -> None:
        cfg = self.config.train
        self.first_step, self.start_elapsed = self.step, self.elapsed  # this process's step rate: expected_steps
        first = self.epoch + 1 if self.epoch_done else self.epoch  # a resumed run may be mid-epoch
        for epoch in range(first, epochs + 1):
            if self.epoch_done:  # a new epoch (a resumed one goes on where it was)
                self.epoch, self.epoch_done, self.micro_done, self.epoch_totals = epoch, False, 0, [0.0, 0, 0]
                self.epoch_rng = self.rng.getstate()
            stop = self.train_epoch(total_steps, bar)
            if stop is not None and self.step > 0:
                self.save_checkpoint()  # mid-epoch, at the step boundary where it stopped: resumable
            loss_sum, correct, tokens = self.epoch_totals
            if tokens == 0:  # a limit hit before this epoch's first step: the last epoch stands
                self.epoch -= 1
                self.stopped_by = stop or self.stopped_by
                break
            val_loss, val_acc = self.evaluate() if len(self.val_ids) else (None, None)
            pair = self.pair_metrics() if self.batches.pairs and len(self.val_ids) else {}
            epsilon = self.private.epsilon() if self.private is not None else None
            state = EpochState(
                epoch=epoch,
                step=self.step,
                loss=loss_sum / tokens,
                accuracy=correct / tokens,
                val_loss=val_loss,
                val_accuracy=val_acc,
                lr=self.optimizer.param_groups[0]["lr"],
                elapsed_seconds=self.elapsed,
                epsilon=epsilon,
                delta=self.private.delta if self.private is not None else None,
                **{f"val_{k}": v for k, v in pair.items()},
            )
            row = asdict(state)
            del row["stop"]
            if not self.batches.pairs:
                for key in PAIR_METRICS:
                    del row[key]
            self.history.append(row)
            self.steplog.end_of_epoch(row, self.step)
            self.schedule.end_of_epoch(row)
            log.info(
                "epoch %d: loss %.4f acc %.4f%s%s",
                epoch,
                state.loss,
                state.accuracy,
                f" val_loss {val_loss:.4f} val_acc {val_acc:.4f}" if val_loss is not None else "",
                f" epsilon {epsilon:.4g} (delta {state.delta:.3g})" if epsilon is not None else "",
            )
            if pair:
                log.info("epoch %d: val_bleu %.2f val_chrf %.2f val_exact_match %.4f", epoch, *pair.values())
            shown = {"val": "–" if val_loss is None else f"{val_loss:.4f}"}
            bar(self.step, **shown, **({} if epsilon is None else {"epsilon": epsilon}))
            new_best = self.track_best(state)
            for cb in self.callbacks:
                cb(state)
            reason = stop
            if reason is None and self.world.any(state.stop):  # (a callback on any rank stops them all)
                reason = "callback"
            if reason is None and self.world.any(self.interrupted["stop"]):
                reason = "interrupted"
            if reason is None and self.early_stop(state):  # (the same validation loss on every rank)
                reason = "early_stopping"
            if stop is None:  # the epoch is complete: checkpoint it (and the best one)
                self.epoch_done = True
                path = self.save_checkpoint()
                if new_best and path is not None:
                    copy_checkpoint(path, BEST_CHECKPOINT)
            if reason is not None:
                self.stopped_by = reason
                break
        if cfg.max_steps is not None and self.step >= cfg.max_steps and self.stopped_by == "epochs":
            self.stopped_by = "max_steps"

    # -- forward backward update
    def train_epoch(self, total_steps: int, bar) -> str | None:
        """Train the rest of the current epoch; returns why it stopped early, or None."""
        cfg = self.config.train
        self.net.train()
        self.rng.setstate(self.epoch_rng)  # the epoch's batch order, drawn again (a resumed epoch skips ahead)
        poisson = self.private is not None and self.private.plan.poisson_sampling
        world = self.world
        batches = [] if poisson else batch_indices(self.train_ids, cfg.batch_size * world.size, self.rng)
        k = 1 if poisson else cfg.grad_accumulation_steps  # Poisson: micro_done counts steps
        units = self.schedule.plan.steps_per_epoch if poisson else len(batches)
        while self.micro_done < units:
            # termination conditions, checked at step boundaries only
            if self.step >= total_steps:
                return "max_steps"
            interrupted = self.interrupted["stop"]
            out_of_time = cfg.max_time_seconds is not None and self.elapsed >= cfg.max_time_seconds
            if world.distributed:  # every rank stops at the same step: the first rank to see a stop decides
                interrupted, out_of_time = world.any(interrupted), world.any(out_of_time)
            if interrupted:
                return "interrupted"
            if out_of_time:
                log.info("time limit of %ss reached at step %d", cfg.max_time_seconds, self.step)
                return "time_limit"
            if self.private is not None and self.private.budget_reached(self.step):
                log.info(
                    "privacy budget (target_epsilon %s) reached at step %d",
                    self.config.privacy.target_epsilon,
                    self.step,
                )
                return "privacy_budget"

            if hasattr(self.net, "teacher_forcing_ratio"):  # seq2seq: this step's chance of feeding the truth
                self.net.teacher_forcing_ratio = teacher_forcing_at(
                    self.step, total_steps, cfg.teacher_forcing_ratio, cfg.teacher_forcing_schedule
                )
            t0 = time.perf_counter()
            if poisson:  # this step's records (this rank's share), by length so micro-batches carry little padding
                drawn = sorted(self.private.sample(len(self.train_ids)), key=lambda i: len(self.train_ids[i]))
                mine = drawn[world.rank :: world.size]
                starts = range(0, len(mine), cfg.batch_size)
                micro_batches = [self.micro_batch(mine[j : j + cfg.batch_size], j, shard=False) for j in starts]
            else:
                chunk = batches[self.micro_done : self.micro_done + k]
                micro_batches = [self.micro_batch(idx, j) for j, idx in enumerate(chunk)]
                if self.private is not None:  # DP: a rank with none of a batch's records has no micro-batch of it
                    micro_batches = [mb for mb in micro_batches if mb is not None]
            lr = self.optimizer.param_groups[0]["lr"]
            if self.private is not None:
                stats = private_optimizer_step(
                    self.net, self.private, micro_batches, self.device, self.precision, world
                )
            else:
                stats = optimizer_step(
                    self.net, self.optimizer, micro_batches, self.device, cfg, self.precision, world, self.ddp
                )
            if stats.nonfinite:
                self.on_nonfinite(stats)
            self.step += 1
            self.micro_done += 1 if poisson else len(chunk)
            self.schedule.step()
            seconds = time.perf_counter() - t0
            self.skipped_steps += stats.skipped
            self.train_time += seconds
            if not stats.nonfinite:
                self.epoch_totals[0] += stats.loss_sum
                self.epoch_totals[1] += stats.correct
                self.epoch_totals[2] += stats.tokens
                self.tokens_seen += stats.tokens
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
            every = self.config.checkpoint.every_steps
            if every and self.step % every == 0 and self.micro_done < units:
                self.save_checkpoint()  # (an epoch's last step is checkpointed at the epoch's end)
            tokens = max(self.epoch_totals[2], 1)
            if self.step - self.first_step == SCHEDULE_CHECK_STEPS:
                self.warn_if_the_time_limit_cuts_the_schedule(total_steps)
            bar(
                self.step,
                total=self.expected_steps(total_steps),
                epoch=self.epoch,
                loss=f"{self.epoch_totals[0] / tokens:.4f}",
                rate=self.tokens_seen / max(self.train_time, 1e-9),
            )
        return None

    def micro_batch(self, idx: list[int], j: int, shard: bool = True):
        """Micro-batch j of this step from the records `idx`. Data-parallel, `idx` is the batch of all ranks
        (shard=False: already this rank's share, Poisson-sampled DP) and this rank takes records rank,
        rank + w, ...; a rank left with none runs one record with every target ignored, so that it joins the
        step's all-reduce with a zero gradient and zero tokens (under DP: None, no micro-batch; Opacus'
        reduce comes with the step, empty or not)."""
        world = self.world
        if not world.distributed:
            return self.batches.batch(self.train_ids, idx, key=(self.step, j))
        key = (self.step, j, world.rank)
        mine = idx[world.rank :: world.size] if shard else idx
        if mine:
            return self.batches.batch(self.train_ids, mine, key=key)
        if self.private is not None:
            return None
        inputs, targets, positions = self.batches.batch(self.train_ids, idx[:1], key=key)
        return inputs, torch.full_like(targets, IGNORE_INDEX), positions

    def warn_if_the_time_limit_cuts_the_schedule(self, total_steps: int) -> None:
        """A decaying LR schedule is planned over the run's steps; where train.max_time_seconds will
        stop the run well before them, say so (once, early): the LR would end far from decayed."""
        name = self.config.schedule.name
        end = self.expected_steps(total_steps)
        if name in NOT_DECAYING or end >= 0.9 * total_steps:
            return
        curve = lr_curve(self.config, self.schedule.plan, steps=end + 1)  # (the steps the run will take, not all)
        peak, at_end = max(curve), curve[-1]
        if peak <= 0 or at_end < 0.2 * peak:
            return
        log.warning(
            "at the rate so far train.max_time_seconds=%s stops the run near step %d of the %d the %s schedule "
            "is planned over: the LR will end at %d%% of its peak, not decayed; to fit the schedule to the time, "
            "set train.max_steps=%d (synthloom schedule CONFIG draws it)",
            self.config.train.max_time_seconds, end, total_steps, name, round(100 * at_end / peak), end,
        )  # fmt: skip

    def expected_steps(self, total_steps: int) -> int:
        """Where the run will end: its planned steps, or, under train.max_time_seconds, the steps the
        time left allows at the rate so far, if fewer (the progress bar's total and ETA)."""
        limit = self.config.train.max_time_seconds
        done, seconds = self.step - self.first_step, self.elapsed - self.start_elapsed
        if limit is None or done < 10 or seconds <= 0:
            return total_steps
        return min(total_steps, self.step + int(max(limit - self.elapsed, 0.0) * done / seconds))

    def on_nonfinite(self, stats: "StepStats") -> None:
        if self.config.train.nonfinite_loss == "skip":
            self.nonfinite_steps += 1
            log.warning(
                "step %d: the loss is %s; its update was skipped (%d so far)",
                self.step + 1,
                stats.loss_sum,
                self.nonfinite_steps,
            )
            return
        last = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was written yet"
        )
        raise self.world.mirrored(TrainingError(
            f"the loss became {stats.loss_sum} at step {self.step + 1} (epoch {self.epoch}); its update was not "
            f"applied and {last}. Lower optim.lr, keep train.max_grad_norm > 0, or set train.nonfinite_loss: skip; "
            "continue with --resume."
        ))

    # -- checkpoints
    def save_checkpoint(self) -> Path | None:
        """A checkpoint of this step boundary; data-parallel, rank 0 writes it (with every rank's RNG
        states) and the others return None."""
        weights = self.net.state_dict()
        bad = [name for name, t in weights.items() if not bool(torch.isfinite(t).all())]
        if bad:  # (the same weights on every rank: all of them stop here)
            raise self.world.mirrored(TrainingError(
                f"the weights hold NaN/inf at step {self.step} ({', '.join(bad[:3])}); not saving them. "
                f"The last good checkpoint is {self.last_checkpoint}."
            ))
        rng_ranks = self.world.gather(capture_rng()) if self.world.distributed else None
        if self.world.distributed:  # rank 0 writes; a failure there (a full disk) stops every rank, said once
            failure = None
            if self.world.main:
                try:
                    path = self._write_checkpoint(weights, rng_ranks)
                except BaseException as exc:  # noqa: BLE001  (re-raised below, on every rank)
                    failure = exc
            if self.world.any(failure is not None):
                if failure is not None:
                    raise failure
                raise self.world.mirrored(TrainingError("rank 0 could not write a checkpoint; its message says why"))
            if not self.world.main:
                self.last_checkpoint = self.work / CHECKPOINTS_DIR / f"step-{self.step:08d}"  # (rank 0's)
                return None
            return path
        return self._write_checkpoint(weights, None)

    def _write_checkpoint(self, weights: dict[str, torch.Tensor], rng_ranks: list | None) -> Path:
        state = self.state()
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        path = save_checkpoint(self.work, f"step-{self.step:08d}", weights, state)
        self.last_checkpoint = path
        if not self.config.checkpoint.save_every_epoch:
            rotate_checkpoints(self.work, self.config.checkpoint.keep_last)
        return path

    def state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_done": self.epoch_done,
            "micro_batches_done": self.micro_done,
            "epoch_totals": self.epoch_totals,
            "batch_rng": self.rng.getstate(),
            "batch_rng_epoch_start": self.epoch_rng,
            "rng": capture_rng(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "planned_steps": self.schedule.plan.total_steps,
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "es_best": self.es_best,
            "stale_epochs": self.stale_epochs,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.skipped_steps,
            "nonfinite_steps": self.nonfinite_steps,
            "train_time": self.train_time,
            "elapsed": self.elapsed,
            "steplog": self.steplog.state(),
            "privacy": self.private.state() if self.private is not None else None,
            "world_size": self.world.size,
        }

    def restore(self, checkpoint: Path, plan: StepPlan, loaded: tuple | None = None) -> None:
        weights, state = loaded if loaded is not None else load_checkpoint(checkpoint)
        self.net.load_state_dict(weights)
        same_plan = state["planned_steps"] == plan.total_steps
        if not same_plan:  # more (or fewer) steps: the schedule is re-planned and moved to this step
            log.warning(
                "resume: the run now has %d steps (was %d): the LR schedule is re-planned for them",
                plan.total_steps,
                state["planned_steps"],
            )
            for _ in range(state["step"]):
                self.schedule.step()
            lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        if same_plan:
            self.schedule.load_state_dict(state["schedule"])
        else:
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            if self.schedule.plateau is not None:
                self.schedule.plateau.load_state_dict(state["schedule"]["plateau"])
        if self.precision.scaler is not None and state["scaler"] is not None:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.epoch_done = state["step"], state["epoch"], state["epoch_done"]
        self.micro_done, self.epoch_totals = state["micro_batches_done"], list(state["epoch_totals"])
        self.rng.setstate(state["batch_rng"])  # the checkpoint keeps tuples as tuples
        self.epoch_rng = state["batch_rng_epoch_start"]
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.world.size:
            restore_rng(ranks[self.world.rank])  # each rank's own dropout draws, as before the stop
        else:
            restore_rng(state["rng"])
            if self.world.rank > 0:  # another number of processes: rank 0's states, and others of their own
                torch.manual_seed(self.config.train.seed + self.world.rank + self.step)
        if state.get("world_size", 1) != self.world.size:
            log.warning(
                "resume: the run was trained on %d process(es) and goes on on %d; its batches from here on differ",
                state.get("world_size", 1),
                self.world.size,
            )
        self.history = list(state["history"])
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.es_best, self.stale_epochs = state["es_best"], state["stale_epochs"]
        self.tokens_seen, self.skipped_steps = state["tokens_seen"], state["skipped_steps"]
        self.nonfinite_steps, self.train_time = state["nonfinite_steps"], state["train_time"]
        self.start = time.perf_counter() - state["elapsed"]  # the time limit counts the whole run
        evaluated = {(row["epoch"], row["step"]) for row in self.history}
        self.steplog.restore(state["steplog"], self.step, evaluated)
        if self.private is not None:
            self.private.restore(state["privacy"])
        self.last_checkpoint = checkpoint
        if self.best_epoch is not None:
            self.best_state = self._best_weights(checkpoint, state, weights)

    def _best_weights(self, checkpoint: Path, state: dict[str, Any], weights: dict[str, torch.Tensor]):
        best = checkpoint.parent / BEST_CHECKPOINT
        if state["epoch_done"] and state["epoch"] == self.best_epoch:  # taken at the end of the best epoch
            if not self.world.main:
                return weights
            try:
                held = load_checkpoint(best)[1]["epoch"]
            except ModelDirError:
                held = None
            if held != self.best_epoch:  # killed between this checkpoint and its copy to best: copy it now,
                copy_checkpoint(checkpoint, BEST_CHECKPOINT)  # or a later resume would find best stale
            return weights
        try:
            best_weights, best_state = load_checkpoint(best)
        except ModelDirError:
            best_state = None
        if best_state is None or best_state["epoch"] != self.best_epoch:
            raise TrainingError(f"--resume: {best} does not hold epoch {self.best_epoch}'s best weights")
        return best_weights

    # -- evaluate
    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.net.eval()
        loss_sum, correct, tokens = 0.0, 0, 0
        world = self.world
        for k, (inputs, targets, positions) in enumerate(self.batches.validation(self.config.train.batch_size)):
            if k % world.size != world.rank:  # data-parallel: each rank its share, summed below
                continue
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            with self.precision.autocast():
                loss, right = self.net.loss(inputs, targets, to_device(positions, self.device))
            loss_sum += float(loss)
            correct += int(right)
            tokens += int((targets != IGNORE_INDEX).sum())
        loss_sum, correct, tokens = world.sum([loss_sum, correct, tokens])
        return loss_sum / tokens, correct / tokens

    @torch.no_grad()
    def pair_metrics(self) -> dict[str, float]:
        """seq2seq: BLEU, chrF and exact match of greedy targets for the validation pairs' sources (the same
        on every rank: each decodes all of them with the same weights)."""
        from ..decoding import greedy, pair_metrics, split_pair

        self.net.eval()
        pairs = [split_pair(list(ids)) for ids in self.val_ids]
        longest = max(len(t) for _, t in pairs)
        sources = [s for s, _ in pairs]
        outs = greedy(self.net, sources, max_tokens=2 * longest + 2, batch_size=self.config.train.batch_size)
        decode = self.batches.tokenizer.decode
        return pair_metrics([decode(o) for o in outs], [decode(t) for _, t in pairs])

    # -- best weights and early stopping
    def track_best(self, state: EpochState) -> bool:
        """Keep the weights if this epoch is the best so far by checkpoint.monitor; says whether it was."""
        if not self.config.checkpoint.save_best:
            return False
        value = getattr(state, self.config.checkpoint.monitor)
        if value is None or not math.isfinite(value):
            return False
        if self.best_value is None or _better(value, self.best_value, self.config.checkpoint.monitor, 0.0):
            self.best_value, self.best_epoch = value, state.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            return True
        return False

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
    if METRIC_MODE[metric] == "max":
        return value > best + min_delta
    return value < best - min_delta
