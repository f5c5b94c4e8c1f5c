"""Training, top to bottom: `train()` and the run it makes.

    result = train("config.yaml")                        # or a TrainingConfig, or a dict
    result = train(config, callback=lambda s: print(s.epoch, s.val_loss))

Phases: validate the config and check output_dir -> read and split records, train the tokenizer
and encode (prepare.py) -> build model and optimizer, count the steps -> epochs of steps
(step.py: forward, backward, clip, update) with time / step limits at step boundaries, then
evaluate, history, callback, early stopping, best weights, a checkpoint (loop.py) -> write the
model dir in the run's work dir (model_dir.py) and rename it into place. output_dir is never
half-written; a failed run keeps its work dir only when it holds a checkpoint to --resume from
(docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import (
    CONFIG_FILE,
    begin_run,
    check_output_dir,
    end_run,
    latest_checkpoint,
    load_checkpoint,
    publish_model_dir,
    read_model_dir,
    save_config_json,
    weights_mismatch,
    work_dir,
)
from ..config import TrainingConfig, load_config, validate_config
from ..data import (
    read_records,
)
from ..distributed import World, data_parallel, join, leave, world_size_from_env
from ..errors import ConfigError, ModelDirError, TrainingError
from ..groups import GROUPS_FILE, train_groups
from ..hooks import load_callable
from ..models import build_model, resolve_device
from ..models.lora import add_lora, linear_names
from ..optim import build_optimizer
from ..privacy import PrivateTraining, make_private, plan_privacy
from ..progress import progress_bar
from ..resume import check_resumable
from ..schedules import build_schedule
from ..steplog import STEPS_FILE
from ..tokenizers import Tokenizer, load_tokenizer, slot_mask
from .loop import EpochState, FitLoop, stop_on_signals
from .model_dir import write_model_dir
from .prepare import Prepared, plan_run, prepare
from .step import (
    Precision,
    StepStats,
    check_runtime,
    clip_gradients,
    optimizer_step,
    private_optimizer_step,
    tf32_setting,
)

__all__ = [
    "train",
    "TrainResult",
    "EpochState",
    "Prepared",
    "prepare",
    "plan_run",
    "Precision",
    "StepStats",
    "check_runtime",
    "clip_gradients",
    "optimizer_step",
    "private_optimizer_step",
    "as_config",
]

log = logging.getLogger("synthloom")


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict[str, Any]]
    stopped_by: str  # epochs | max_steps | early_stopping | time_limit | callback | interrupted | privacy_budget
    steps: int
    epochs: int
    best_epoch: int | None
    summary: dict[str, Any] = field(default_factory=dict)


def train(
    config: TrainingConfig | dict | str | Path,
    *,
    callback: Callable[[EpochState], Any] | None = None,
    progress: bool | None = None,
    resume: bool = False,
    data: Any = None,
) -> TrainResult:
    """Train a model as `config` says and write its model dir. Returns what happened.
    resume=True continues the interrupted run of this output_dir from its last checkpoint
    (or a finished one's, to train it further). data: a pandas DataFrame to train on instead
    of the file at data.path (which may then be left out: it names the table in the config)."""
    # -- validate everything before any work
    table = None
    if data is not None:
        from ..frames import dataframe_table

        table = data if isinstance(data, tuple) else dataframe_table(data)  # (columns, rows): column groups
        config = _for_dataframe(config)
    config = as_config(config)
    if config.data.format == "csv" and config.data.max_columns_per_model:
        records = read_records(config.data, table)  # read once: the groups train from these records
        width = len(records.columns or []) or records.num_fields or 0
        if width > config.data.max_columns_per_model:
            if world_size_from_env() > 1:
                raise ConfigError(
                    "data.max_columns_per_model: a model of column groups trains on one process; "
                    f"this table has {width} columns: raise data.max_columns_per_model, or train without torchrun"
                )
            if resume:
                raise ConfigError("--resume: a model of column groups cannot be resumed yet; train it again")
            published, stopped, epochs, summary = train_groups(config, records, callback, progress, train)
            return TrainResult(published, [], stopped, summary["steps"], epochs, None, summary)
    device = resolve_device(config.train.device, "train.device")
    world, device = join(device)  # torchrun: this process's rank, and its GPU
    try:
        with _quiet_unless_main(world):
            return _train(config, callback, progress, resume, table, device, world)
    finally:
        leave(world)


def _train(config, callback, progress, resume, table, device, world: World) -> TrainResult:
    resumed_work = world.broadcast(resume and latest_checkpoint(work_dir(config)) is not None)
    if not resume or resumed_work:  # resuming a finished model dir replaces it: that is the point
        world.on_main(lambda: check_output_dir(config))
    callbacks = [cb for cb in (callback, load_callable(config.train.epoch_callback, "train.epoch_callback")) if cb]
    check_runtime(config, device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # first: an unwritable place or a running training fails before any work (data-parallel: rank 0 makes it)
    work = world.on_main(lambda: begin_run(config, resume)) or work_dir(config)
    try:
        with stop_on_signals() as interrupted, tf32_setting(config.train.tf32):
            loop, summary = _fit(config, work, callbacks, device, progress, interrupted, resume, table, world)
        publish = lambda: publish_model_dir(work, config, replace_own=resume and not resumed_work)  # noqa: E731
        out = world.broadcast(world.on_main(publish))
        work = None
    except OSError as exc:  # a full disk, a vanished dir: say where, and what is left
        last = latest_checkpoint(work)
        kept = f"; the last checkpoint, {last}, is kept for --resume" if last else ""
        raise TrainingError(
            f"writing {work} failed: {exc.strerror or exc}{kept}; {Path(config.output_dir)} was left as it was"
        ) from None
    finally:
        if world.main:
            end_run(work)  # a failed run keeps its checkpoints (if any) for --resume
    log.info("stopped by %s after %d step(s); model dir: %s", loop.stopped_by, loop.step, out)
    return TrainResult(out, loop.history, loop.stopped_by, loop.step, loop.epoch, loop.best_epoch, summary)


class _quiet_unless_main:
    """Data-parallel ranks other than 0 log errors only: rank 0 says what the run does."""

    def __init__(self, world: World):
        self.world, self.level = world, None

    def __enter__(self):
        if not self.world.main:
            self.level = log.level
            log.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        if self.level is not None:
            log.setLevel(self.level)


def _fit(config, work, callbacks, device, progress, interrupted, resume, table, world) -> tuple["FitLoop", dict]:
    """Records -> tokenizer -> model -> the fit loop -> every file of the model dir, in the work dir.
    Data-parallel: rank 0 trains the tokenizer and writes the run's config; the others read them back."""
    checkpoint = latest_checkpoint(work) if resume else None
    init = _init_model(config) if config.train.init_from is not None else None  # (config, tokenizer, weights)
    if init is not None:
        config = init[0]
    if checkpoint is not None:
        data = prepare(config, tokenizer=load_tokenizer(work), table=table, world=world.size)
        config = data.config  # what depends on the number of records, resolved
        saved = json.loads((work / CONFIG_FILE).read_text(encoding="utf-8"))
        for change in check_resumable(saved, config):
            log.info("resume: %s", change)
    else:

        def first() -> Prepared:
            data = prepare(config, tokenizer=init[1] if init is not None else None, table=table, world=world.size)
            save_config_json(data.config, work)  # the run's config and tokenizer first: a resume checks against them
            data.tokenizer.save(work)
            return data

        data = world.on_main(first) or prepare(config, tokenizer=load_tokenizer(work), table=table, world=world.size)
        config = data.config
    plan = data.plan

    # -- model, optimizer, schedule; the number of steps was counted in prepare()
    net = build_model(config.model, data.tokenizer.vocab_size, slot_mask(data.tokenizer))
    if init is not None:
        _load_init_weights(net, init[2], config.train.init_from)
    if config.lora.enabled:
        _add_lora(net, config)
    net = net.to(device)
    world.sync_parameters(net)  # rank 0's initial weights everywhere
    if world.rank > 0:
        torch.manual_seed(config.train.seed + world.rank)  # each rank its own dropout draws
    private = None
    loaded = load_checkpoint(checkpoint) if checkpoint is not None else None  # (weights, state), read once
    if config.privacy.enabled:
        saved = loaded[1]["privacy"]["plan"] if loaded is not None else None
        privacy_plan = plan_privacy(config, len(data.train_ids), plan, saved)
        hooks = make_private(net)  # before the optimizer: the LSTM's parameters are new objects
    optimizer = build_optimizer(config.optim, net)
    if config.privacy.enabled:
        private = PrivateTraining(privacy_plan, optimizer, hooks, device, config.privacy.noise_seed, world)
    schedule = build_schedule(config, optimizer, plan)
    n_params = sum(p.numel() for p in net.parameters())
    n_trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log.info(
        "model %s, %s parameters%s, device %s, %s",
        config.model.kind,
        f"{n_params:,}",
        f" ({n_trained:,} of them trained: LoRA adapters)" if n_trained < n_params else "",
        device,
        config.train.precision,
    )
    log.info("plan: %s", plan.describe(config))
    if private is not None:
        log.info("privacy: %s", private.plan.describe())
    log.info("per-step log: %s (renamed with the model dir at the end)", work / STEPS_FILE)
    total_steps, epochs = plan.total_steps, plan.epochs

    # -- the fit
    ddp = None if private is not None else data_parallel(net, world, device)  # (DP: Opacus reduces the gradients)
    loop = FitLoop(
        config, net, optimizer, schedule, device, data.batches, callbacks, work, interrupted, private, world, ddp
    )
    if checkpoint is not None:
        loop.restore(checkpoint, plan, loaded)
        log.info("resumed from %s: step %d, epoch %d", checkpoint, loop.step, loop.epoch)
    columns = ["epoch {task.fields[epoch]}", "loss {task.fields[loss]}", "val {task.fields[val]}"]
    columns.append("{task.fields[rate]:,.0f} tok/s")
    if private is not None:
        columns.append("ε {task.fields[epsilon]:.3g}")
    fields = {"epoch": loop.epoch, "loss": "–", "val": "–", "rate": 0.0, "epsilon": 0.0}
    shown = progress if world.main else False
    with loop.steplog, progress_bar(shown, total_steps, "train", *columns, **fields) as bar:
        loop.run(epochs, total_steps, bar)
    loop.ddp = ddp = None  # (distributed.leave ends the process group: nothing may hold it after)
    if loop.step == 0:
        raise TrainingError(f"training stopped ({loop.stopped_by}) before its first step; nothing was written")
    write = lambda: write_model_dir(work, config, data, net, loop, private, device, checkpoint is not None)  # noqa: E731
    return loop, world.broadcast(world.on_main(write))


def _init_model(config: TrainingConfig) -> tuple[TrainingConfig, Tokenizer, dict[str, torch.Tensor]]:
    """train.init_from: the run's config with that model dir's model section, its tokenizer and weights."""
    source = Path(config.train.init_from)
    if (source / GROUPS_FILE).is_file():
        raise ConfigError(f"train.init_from: {source} is a model of column groups; start from one model dir")
    try:
        saved, tokenizer, weights, _ = read_model_dir(source)
    except ModelDirError as exc:
        raise ConfigError(f"train.init_from: {exc}") from None
    if saved.tokenizer.kind != config.tokenizer.kind:
        raise ConfigError(
            f"train.init_from: {source} was trained on {saved.tokenizer.kind} tokens, this run asks for "
            f"{config.tokenizer.kind}; set tokenizer.kind: {saved.tokenizer.kind}"
        )
    if saved.tokenizer.share_vocab != config.tokenizer.share_vocab:
        raise ConfigError(
            f"train.init_from: {source} has tokenizer.share_vocab: {str(saved.tokenizer.share_vocab).lower()} "
            f"(its tokenizer comes with it); set the same"
        )
    if saved.model != config.model:
        log.info("train.init_from: the model section comes from %s (%s)", source, saved.model.kind)
    # validated again whole: the checks across sections (LoRA on a tied head) must see this model section
    raw = config.model_dump(mode="json") | {"model": saved.model.model_dump(mode="json")}
    return validate_config(raw), tokenizer, weights


def _load_init_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source) -> None:
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"train.init_from: {source}'s weights do not fit: {weights_mismatch(exc)}") from None


def _add_lora(net: torch.nn.Module, config: TrainingConfig) -> None:
    cfg = config.lora
    names = add_lora(net, cfg.rank, cfg.alpha, cfg.dropout, cfg.target_modules)
    if not names:
        raise ConfigError(
            f"lora.target_modules: {cfg.target_modules} names no linear layer of this {config.model.kind}; "
            f"its linear layers: {', '.join(linear_names(net))}"
        )
    log.info("LoRA rank %d, alpha %g on %d layers: %s", cfg.rank, cfg.alpha, len(names), ", ".join(names))


def _for_dataframe(config: TrainingConfig | dict | str | Path) -> TrainingConfig | dict:
    """A config trained on a DataFrame: csv records; data.path only names the table."""
    raw = as_config(config).model_dump(mode="json") if not isinstance(config, dict) else json.loads(json.dumps(config))
    data = raw.setdefault("data", {}) or {}
    raw["data"] = data
    if data.get("format") not in (None, "csv"):
        raise ConfigError("data.format: a DataFrame is a table: use csv (or leave it null)")
    data.setdefault("path", "DataFrame")
    data["format"] = "csv"
    data.setdefault("field_delimiter", ",")
    return raw


def as_config(config: TrainingConfig | dict | str | Path) -> TrainingConfig:
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, TrainingConfig):  # re-validate: fields may have been assigned since
        return validate_config(config.model_dump(mode="json"))
    return validate_config(config)
