"""The fit loop, top to bottom.

    result = train("config.yaml")                        # or a TrainingConfig, or a dict
    result = train(config, callback=lambda s: print(s.epoch, s.val_loss))

Phases: validate the config and check output_dir -> read and split records -> train the
tokenizer and encode -> build model and optimizer, count the steps -> epochs of
(forward, backward, clip, step) with time / step limits at step boundaries -> evaluate,
history, callback, early stopping, best weights, a checkpoint -> write the model dir in the
run's work dir and rename it into place. output_dir is never half-written; a failed run keeps
its work dir only when it holds a checkpoint to --resume from (docs/reliability.md).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    DIGESTS_FILE,
    HISTORY_FILE,
    SCHEMA_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    begin_run,
    check_output_dir,
    copy_checkpoint,
    end_run,
    latest_checkpoint,
    load_checkpoint,
    publish_model_dir,
    read_model_dir,
    rotate_checkpoints,
    save_checkpoint,
    save_config_json,
    save_digests,
    save_weights,
    work_dir,
    write_json,
)
from .config import METRIC_MODE, TrainConfig, TrainingConfig, load_config, validate_config
from .data import (
    IGNORE_INDEX,
    Batch,
    Batches,
    Records,
    batch_indices,
    decode_row,
    read_records,
    split_records,
)
from .errors import ConfigError, DataError, ModelDirError, TokenizerError, TrainingError
from .fields import FieldTokenizer
from .groups import GROUPS_FILE, train_groups
from .hooks import load_callable
from .models import build_model, resolve_device
from .models.lora import ADAPTER_FILE, add_lora, linear_names, merged_state, split_state
from .models.precision import cpu_has_native_bf16
from .optim import build_optimizer, check_optimizer_runs
from .privacy import PRIVACY_FILE, PrivateTraining, check_privacy_runtime, encoding_budget, make_private, plan_privacy
from .private_stats import PrivateStats
from .progress import progress_bar
from .records import field_digests, training_digests, unique_records
from .resume import capture_rng, check_resumable, restore_rng
from .schedules import NOT_DECAYING, StepPlan, build_schedule, lr_curve, plan_steps, resolve_for_records
from .schema import Schema, infer_schema
from .steplog import STEPS_FILE, StepLog
from .tokenizers import UNK_ID, Tokenizer, encode_all, load_tokenizer, slot_mask, train_tokenizer

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
    stop: bool = False


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
        from .frames import dataframe_table

        table = data if isinstance(data, tuple) else dataframe_table(data)  # (columns, rows): column groups
        config = _for_dataframe(config)
    config = as_config(config)
    if config.data.format == "csv" and config.data.max_columns_per_model:
        records = read_records(config.data, table)  # read once: the groups train from these records
        width = len(records.columns or []) or records.num_fields or 0
        if width > config.data.max_columns_per_model:
            if resume:
                raise ConfigError("--resume: a model of column groups cannot be resumed yet; train it again")
            published, stopped, epochs, summary = train_groups(config, records, callback, progress, train)
            return TrainResult(published, [], stopped, summary["steps"], epochs, None, summary)
    resumed_work = resume and latest_checkpoint(work_dir(config)) is not None
    if not resume or resumed_work:  # resuming a finished model dir replaces it: that is the point
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

    work = begin_run(config, resume)  # first: an unwritable place or a running training fails before any work
    try:
        with _stop_on_signals() as interrupted, _tf32(config.train.tf32):
            loop, summary = _fit(config, work, callbacks, device, progress, interrupted, resume, table)
        out = publish_model_dir(work, config, replace_own=resume and not resumed_work)
        work = None
    except OSError as exc:  # a full disk, a vanished dir: say where, and what is left
        last = latest_checkpoint(work)
        kept = f"; the last checkpoint, {last}, is kept for --resume" if last else ""
        raise TrainingError(
            f"writing {work} failed: {exc.strerror or exc}{kept}; {Path(config.output_dir)} was left as it was"
        ) from None
    finally:
        end_run(work)  # a failed run keeps its checkpoints (if any) for --resume
    log.info("stopped by %s after %d step(s); model dir: %s", loop.stopped_by, loop.step, out)
    return TrainResult(out, loop.history, loop.stopped_by, loop.step, loop.epoch, loop.best_epoch, summary)


def _fit(config, work, callbacks, device, progress, interrupted, resume, table) -> tuple["_FitLoop", dict[str, Any]]:
    """Records -> tokenizer -> model -> the fit loop -> every file of the model dir, in the work dir."""
    checkpoint = latest_checkpoint(work) if resume else None
    init = _init_model(config) if config.train.init_from is not None else None  # (config, tokenizer, weights)
    if init is not None:
        config = init[0]
    if checkpoint is not None:
        data = prepare(config, tokenizer=load_tokenizer(work), table=table)
        config = data.config  # what depends on the number of records, resolved
        saved = json.loads((work / CONFIG_FILE).read_text(encoding="utf-8"))
        for change in check_resumable(saved, config):
            log.info("resume: %s", change)
    else:
        data = prepare(config, tokenizer=init[1] if init is not None else None, table=table)
        config = data.config
        save_config_json(config, work)  # the run's config and tokenizer first: a resume checks against them
        data.tokenizer.save(work)
    plan = data.plan

    # -- model, optimizer, schedule; the number of steps was counted in prepare()
    net = build_model(config.model, data.tokenizer.vocab_size, slot_mask(data.tokenizer))
    if init is not None:
        _load_init_weights(net, init[2], config.train.init_from)
    if config.lora.enabled:
        _add_lora(net, config)
    net = net.to(device)
    private = None
    loaded = load_checkpoint(checkpoint) if checkpoint is not None else None  # (weights, state), read once
    if config.privacy.enabled:
        saved = loaded[1]["privacy"]["plan"] if loaded is not None else None
        privacy_plan = plan_privacy(config, len(data.train_ids), plan, saved)
        hooks = make_private(net)  # before the optimizer: the LSTM's parameters are new objects
    optimizer = build_optimizer(config.optim, net)
    if config.privacy.enabled:
        private = PrivateTraining(privacy_plan, optimizer, hooks, device, config.privacy.noise_seed)
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
    tokenizer, records, train_texts, val_texts = data.tokenizer, data.records, data.train_texts, data.val_texts
    train_ids, val_ids = data.train_ids, data.val_ids
    max_record_tokens = max(max(len(ids) for ids in part) for part in (train_ids, val_ids) if len(part)) + 1  # + <eor>

    # -- the fit
    loop = _FitLoop(config, net, optimizer, schedule, device, data.batches, callbacks, work, interrupted, private)
    if checkpoint is not None:
        loop.restore(checkpoint, plan, loaded)
        log.info("resumed from %s: step %d, epoch %d", checkpoint, loop.step, loop.epoch)
    columns = ["epoch {task.fields[epoch]}", "loss {task.fields[loss]}", "val {task.fields[val]}"]
    columns.append("{task.fields[rate]:,.0f} tok/s")
    if private is not None:
        columns.append("ε {task.fields[epsilon]:.3g}")
    fields = {"epoch": loop.epoch, "loss": "–", "val": "–", "rate": 0.0, "epsilon": 0.0}
    with loop.steplog, progress_bar(progress, total_steps, "train", *columns, **fields) as bar:
        loop.run(epochs, total_steps, bar)
    if loop.step == 0:
        raise TrainingError(f"training stopped ({loop.stopped_by}) before its first step; nothing was written")

    # -- the model dir: config, tokenizer, weights (best or last), history, summary
    weights = loop.best_state if (config.checkpoint.save_best and loop.best_state is not None) else net.state_dict()
    chosen = weights
    if config.lora.enabled and config.lora.save == "merged":  # a plain model: W + B A alpha / rank
        weights = merged_state(weights, config.lora.alpha / config.lora.rank)
    elif config.lora.enabled:  # the base weights under their plain names, the adapters beside them
        weights, adapter = split_state(weights)
        save_weights(adapter, work / ADAPTER_FILE)
    save_weights(weights, work / WEIGHTS_FILE)
    save_config_json(config, work)
    _write_history(work / HISTORY_FILE, loop.history)
    if data.schema is not None:  # a DP model dir keeps no category values or ranges: they are record values
        schema = data.schema.to_dict(include_categories=private is None, include_ranges=private is None)
        write_json(work / SCHEMA_FILE, schema)
    if private is None:  # (a DP model dir holds nothing of its records that the guarantee does not cover)
        salt = os.urandom(16)  # per model: digests of one model dir say nothing about another's
        fields = None
        if config.data.format == "csv":  # per field too: the near-copy filter compares tables field by field
            fields = field_digests((decode_row(t, config.data.field_delimiter) for t in records.texts), salt)
        save_digests(training_digests(unique_records(records.texts), salt), salt, work / DIGESTS_FILE, fields)
    else:
        encoding = data.private_stats.report() if data.private_stats is not None else None
        write_json(work / PRIVACY_FILE, private.report(encoding))
        if config.privacy.noise_seed is None:  # the checkpoints hold the noise generator's state: never published
            shutil.rmtree(work / CHECKPOINTS_DIR, ignore_errors=True)
    summary = {
        "synthloom_version": __version__,
        "vocab_size": tokenizer.vocab_size,
        "max_record_tokens": max_record_tokens,
        "columns": records.columns,
        "model_columns": records.model_columns,
        "num_fields": records.num_fields,
        "records": {
            "used": len(records.texts),
            "train": len(train_texts),
            "validation": len(val_texts),
            "skipped_long": records.skipped_long,
            "skipped_empty": records.skipped_empty,
        },
        "parameters": n_params,
        "trained_parameters": n_trained,
        "init_from": str(config.train.init_from) if config.train.init_from is not None else None,
        "steps_per_epoch": plan.steps_per_epoch,
        "micro_batches_per_epoch": plan.micro_batches_per_epoch,
        "effective_batch_size": config.train.batch_size * config.train.grad_accumulation_steps,
        "planned_steps": total_steps,
        "warmup_steps": plan.warmup_steps,
        "steps": loop.step,
        "epochs": loop.epoch,
        "stopped_by": loop.stopped_by,
        "weights_from_epoch": loop.best_epoch if chosen is loop.best_state else loop.epoch,
        "best": {"monitor": config.checkpoint.monitor, "epoch": loop.best_epoch, "value": loop.best_value},
        "train_seconds": round(loop.elapsed, 3),
        "step_seconds": round(loop.train_time, 3),  # of which in optimizer steps (forward, backward, update)
        "tokens_per_second": round(loop.tokens_seen / max(loop.train_time, 1e-9), 1),
        "skipped_steps": loop.skipped_steps,
        "nonfinite_steps": loop.nonfinite_steps,
        "resumed": checkpoint is not None,
        "device": str(device),
        "precision": config.train.precision,
    }
    if private is not None:
        summary["privacy"] = {"epsilon": private.epsilon(), "delta": private.delta}
    write_json(work / SUMMARY_FILE, summary)
    return loop, summary


@dataclass
class Prepared:
    """The records, split and encoded, with the tokenizer trained on them and the step plan."""

    config: TrainingConfig  # train.batch_size and train.epochs resolved for the records
    records: Records
    train_texts: list[str]
    val_texts: list[str]
    tokenizer: Tokenizer
    batches: Batches  # the encoded records (train, val) and how indices become a batch
    plan: StepPlan
    schema: Schema | None = None  # csv: each column's type, inferred from all the records
    private_stats: PrivateStats | None = None  # privacy.enabled: the noisy statistics the vocabularies came from

    @property
    def train_ids(self):
        return self.batches.train

    @property
    def val_ids(self):
        return self.batches.val


def prepare(config: TrainingConfig, tokenizer: Tokenizer | None = None, table=None) -> Prepared:
    """Read (or take `table`, a DataFrame's), split and encode the records (with `tokenizer`, or one
    trained on them) and plan the steps."""
    seed = config.train.seed
    records, train_texts, val_texts = _read_and_split(config, table)
    for note in records.notes:
        log.warning("%s: %s", config.data.path, note)
    config = resolve_for_records(config, len(train_texts))
    plan = plan_steps(config, len(train_texts))  # before the tokenizer: a schedule that cannot fit fails fast
    schema = None
    if config.data.format == "csv":
        names = records.model_columns or [f"column_{i + 1}" for i in range(records.num_fields or 0)]
        rows = [decode_row(t, config.data.field_delimiter) for t in records.texts]
        schema = infer_schema(names, rows, overrides=config.data.column_types)
        log.info("columns: %s", ", ".join(f"{c.name} ({c.kind})" for c in schema.columns))
    private_stats = None
    if config.tokenizer.kind == "fields":
        if tokenizer is None:
            if config.privacy.enabled:  # every statistic the vocabularies keep, from noisy counts
                epsilon, delta = encoding_budget(config, len(train_texts))
                noise_seed = config.privacy.noise_seed
                rng = np.random.default_rng(None if noise_seed is None else noise_seed + 3)
                private_stats = PrivateStats.for_schema(schema, epsilon, delta, rng)
            tokenizer = FieldTokenizer.train(
                schema, rows, config.tokenizer, seed=seed, dp=private_stats, bounds=config.data.column_bounds
            )
        for note in tokenizer.notes:
            log.info("tokenizer: %s", note)
        train_ids, train_texts = _encode_fields(tokenizer, train_texts, config, "train")
        val_ids, val_texts = _encode_fields(tokenizer, val_texts, config, "validation")
        if not len(train_ids):
            raise DataError(f"{config.data.path}: no training record fits the vocabularies of train.init_from")
    else:
        if tokenizer is None:
            tokenizer = train_tokenizer(
                config.tokenizer, records.texts, seed=seed, delimiter=config.data.field_delimiter
            )
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
    if getattr(config.model, "context_length", "n/a") != "n/a":  # a model with a context: fit it to the records
        config, kept = _fit_context(config, tokenizer, train_ids, val_ids)
        if kept is not None:
            train_ids, val_ids = [train_ids[i] for i in kept[0]], [val_ids[i] for i in kept[1]]
            records.skipped_long += len(train_texts) + len(val_texts) - len(kept[0]) - len(kept[1])
            train_texts, val_texts = [train_texts[i] for i in kept[0]], [val_texts[i] for i in kept[1]]
            plan = plan_steps(config, len(train_texts))
    log.info(
        "records: %d read, %d train, %d validation; tokenizer %s, vocabulary %d",
        len(records.texts),
        len(train_texts),
        len(val_texts),
        tokenizer.kind,
        tokenizer.vocab_size,
    )
    batches = Batches(
        train_ids,
        val_ids,
        tokenizer,
        shuffle_columns=config.data.column_order == "shuffle",
        leading=len(config.data.leading_columns),
        seed=seed,
    )
    return Prepared(config, records, train_texts, val_texts, tokenizer, batches, plan, schema, private_stats)


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
    if saved.model != config.model:
        log.info("train.init_from: the model section comes from %s (%s)", source, saved.model.kind)
    return config.model_copy(update={"model": saved.model}), tokenizer, weights


def _load_init_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source) -> None:
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:3]
        raise ConfigError(f"train.init_from: {source}'s weights do not fit: {'; '.join(details) or exc}") from None


def _add_lora(net: torch.nn.Module, config: TrainingConfig) -> None:
    cfg = config.lora
    names = add_lora(net, cfg.rank, cfg.alpha, cfg.dropout, cfg.target_modules)
    if not names:
        raise ConfigError(
            f"lora.target_modules: {cfg.target_modules} names no linear layer of this {config.model.kind}; "
            f"its linear layers: {', '.join(linear_names(net))}"
        )
    log.info("LoRA rank %d, alpha %g on %d layers: %s", cfg.rank, cfg.alpha, len(names), ", ".join(names))


def _fit_context(config: TrainingConfig, tokenizer: Tokenizer, train_ids, val_ids):
    """model.context_length: null -> the longest record's tokens + 1 (the start token); set, text records
    longer than it are skipped or refused (data.long_records), a table's row must fit whole. Returns the
    config and, when records were skipped, the indices kept of (train, validation); else None."""
    limit = config.model.context_length
    if tokenizer.kind == "fields":
        need = tokenizer.num_slots + 1
        if limit is not None and limit < need:
            raise ConfigError(
                f"model.context_length: a row of this table is {need} tokens with the start token, more than "
                f"{limit}; raise it or leave it null"
            )
        return config if limit is not None else _with_context(config, need), None
    longest = max(len(ids) for ids in [*train_ids, *val_ids]) + 1
    if limit is None:
        return _with_context(config, longest), None
    if longest <= limit:
        return config, None
    kept = tuple([i for i, ids in enumerate(part) if len(ids) + 1 <= limit] for part in (train_ids, val_ids))
    skipped = len(train_ids) + len(val_ids) - len(kept[0]) - len(kept[1])
    if config.data.long_records == "error":
        raise DataError(
            f"{config.data.path}: {skipped} record(s) are longer than model.context_length={limit} tokens (the "
            f"longest is {longest}); raise it, leave it null, or set data.long_records: skip"
        )
    if not kept[0]:
        raise DataError(f"{config.data.path}: no record fits model.context_length={limit} tokens")
    log.warning("skipped %d record(s) longer than model.context_length=%d tokens", skipped, limit)
    return config, kept


def _with_context(config: TrainingConfig, length: int) -> TrainingConfig:
    model = config.model.model_copy(update={"context_length": length})
    return config.model_copy(update={"model": model})


def _encode_fields(tokenizer: FieldTokenizer, texts: list[str], config: TrainingConfig, part: str):
    """(ids, the texts of the rows they hold). Rows that do not fit the vocabularies: a tokenizer of
    train.init_from was trained on other records, so they are skipped (counted); otherwise the tokenizer
    was trained on these rows and only a resume on changed data gets here: an error."""
    ids, bad = tokenizer.encode_rows([decode_row(t, config.data.field_delimiter) for t in texts])
    if bad and config.train.init_from is None:
        raise TokenizerError(
            f"{len(bad)} record(s) do not fit the tokenizer's vocabularies (first: {bad[0][1]}); "
            "did the data change since the run started? Train afresh instead of --resume"
        )
    if bad:
        log.warning(
            "%d %s record(s) do not fit the vocabularies of train.init_from's tokenizer, skipped (first: %s)",
            len(bad),
            part,
            bad[0][1],
        )
        drop = {r for r, _ in bad}
        texts = [t for r, t in enumerate(texts) if r not in drop]
    return ids, texts


def plan_run(config: TrainingConfig, records: Records | None = None) -> StepPlan:
    """The run's step plan from its records (read here, or as read_records gave them), split as
    training does (no tokenizer)."""
    records = records if records is not None else read_records(config.data)
    train_texts, _ = split_records(records.texts, config.data.validation_split, config.train.seed)
    return plan_steps(config, len(train_texts))


def _read_and_split(config: TrainingConfig, table=None) -> tuple[Records, list[str], list[str]]:
    records = read_records(config.data, table)
    train_texts, val_texts = split_records(records.texts, config.data.validation_split, config.train.seed)
    return records, train_texts, val_texts


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
) -> StepStats:
    """One optimizer update from its micro-batches. The loss is normalised over every token of the
    step (sum of token losses / tokens in all micro-batches), so k micro-batches of n records give
    the gradients of one batch of k*n, whatever the records' lengths."""
    tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets, _ in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = 0.0, 0
    for inputs, targets, positions in micro_batches:
        inputs, targets = inputs.to(device), targets.to(device)
        with precision.autocast():
            loss, right = net.loss(inputs, targets, _to(positions, device))  # summed token losses
        scaled = loss / tokens
        (precision.scaler.scale(scaled) if precision.scaler is not None else scaled).backward()
        loss_sum += loss.item()
        correct += int(right)
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
) -> StepStats:
    """One DP-SGD update from the step's sampled records (design decision 1): each record's loss is the
    mean of its token losses; its gradient is clipped to privacy.max_grad_norm; noise is added once,
    after the last micro-batch. grad_norm is the median per-record gradient norm before clipping."""
    tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets, _ in micro_batches)
    private.optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, norms = 0.0, 0, []
    for i, (inputs, targets, positions) in enumerate(micro_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        with precision.autocast():
            logits = net.logits(inputs, _to(positions, device))  # (B, T, V)
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
        if not math.isfinite(loss_sum):
            private.discard()
            private.end_step()  # its records were drawn: the step counts against the budget all the same
            return StepStats(loss_sum, tokens, correct, math.nan, False, nonfinite=True)
        norms.append(private.record_norms())
        private.add_micro_batch(last=i == len(micro_batches) - 1)
    if not micro_batches:
        private.empty_step()
    private.end_step()
    median = float(torch.cat(norms).median()) if norms else 0.0
    return StepStats(loss_sum, tokens, correct, median, False)


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
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
def _stop_on_signals() -> Iterator[dict[str, bool]]:
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


class _FitLoop:
    """The state of one fit: a small object so each phase below stays a short method. Its
    state at a step boundary is what a checkpoint holds (`state()`, `restore()`)."""

    def __init__(self, config, net, optimizer, schedule, device, batches, callbacks, work, interrupted, private=None):
        self.config, self.net, self.optimizer, self.schedule, self.device = config, net, optimizer, schedule, device
        self.private: PrivateTraining | None = private  # DP-SGD (privacy.enabled)
        self.precision = Precision.of(config.train.precision, device)
        self.steplog = StepLog(work, config.train.logging_steps, config.train.tensorboard)
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
            )
            row = asdict(state)
            del row["stop"]
            self.history.append(row)
            self.schedule.end_of_epoch(row)
            log.info(
                "epoch %d: loss %.4f acc %.4f%s%s",
                epoch,
                state.loss,
                state.accuracy,
                f" val_loss {val_loss:.4f} val_acc {val_acc:.4f}" if val_loss is not None else "",
                f" epsilon {epsilon:.4g} (delta {state.delta:.3g})" if epsilon is not None else "",
            )
            shown = {"val": "–" if val_loss is None else f"{val_loss:.4f}"}
            bar(self.step, **shown, **({} if epsilon is None else {"epsilon": epsilon}))
            new_best = self.track_best(state)
            for cb in self.callbacks:
                cb(state)
            reason = stop
            if reason is None and state.stop:
                reason = "callback"
            if reason is None and self.interrupted["stop"]:
                reason = "interrupted"
            if reason is None and self.early_stop(state):
                reason = "early_stopping"
            if stop is None:  # the epoch is complete: checkpoint it (and the best one)
                self.epoch_done = True
                path = self.save_checkpoint()
                if new_best:
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
        batches = [] if poisson else batch_indices(self.train_ids, cfg.batch_size, self.rng)
        k = 1 if poisson else cfg.grad_accumulation_steps  # Poisson: micro_done counts steps
        units = self.schedule.plan.steps_per_epoch if poisson else len(batches)
        while self.micro_done < units:
            # termination conditions, checked at step boundaries only
            if self.step >= total_steps:
                return "max_steps"
            if self.interrupted["stop"]:
                return "interrupted"
            if cfg.max_time_seconds is not None and self.elapsed >= cfg.max_time_seconds:
                log.info("time limit of %ss reached at step %d", cfg.max_time_seconds, self.step)
                return "time_limit"
            if self.private is not None and self.private.budget_reached(self.step):
                log.info(
                    "privacy budget (target_epsilon %s) reached at step %d",
                    self.config.privacy.target_epsilon,
                    self.step,
                )
                return "privacy_budget"

            t0 = time.perf_counter()
            if poisson:  # this step's records, by length so micro-batches carry little padding
                chunk = [sorted(self.private.sample(len(self.train_ids)), key=lambda i: len(self.train_ids[i]))]
                chunk = [chunk[0][j : j + cfg.batch_size] for j in range(0, len(chunk[0]), cfg.batch_size)]
            else:
                chunk = batches[self.micro_done : self.micro_done + k]
            micro_batches = [self.batches.batch(self.train_ids, idx, key=(self.step, j)) for j, idx in enumerate(chunk)]
            lr = self.optimizer.param_groups[0]["lr"]
            if self.private is not None:
                stats = private_optimizer_step(self.net, self.private, micro_batches, self.device, self.precision)
            else:
                stats = optimizer_step(self.net, self.optimizer, micro_batches, self.device, cfg, self.precision)
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
        raise TrainingError(
            f"the loss became {stats.loss_sum} at step {self.step + 1} (epoch {self.epoch}); its update was not "
            f"applied and {last}. Lower optim.lr, keep train.max_grad_norm > 0, or set train.nonfinite_loss: skip; "
            "continue with --resume."
        )

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        weights = self.net.state_dict()
        bad = [name for name, t in weights.items() if not bool(torch.isfinite(t).all())]
        if bad:
            raise TrainingError(
                f"the weights hold NaN/inf at step {self.step} ({', '.join(bad[:3])}); not saving them. "
                f"The last good checkpoint is {self.last_checkpoint}."
            )
        path = save_checkpoint(self.work, f"step-{self.step:08d}", weights, self.state())
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
        restore_rng(state["rng"])
        self.history = list(state["history"])
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.es_best, self.stale_epochs = state["es_best"], state["stale_epochs"]
        self.tokens_seen, self.skipped_steps = state["tokens_seen"], state["skipped_steps"]
        self.nonfinite_steps, self.train_time = state["nonfinite_steps"], state["train_time"]
        self.start = time.perf_counter() - state["elapsed"]  # the time limit counts the whole run
        self.steplog.restore(state["steplog"], self.step)
        if self.private is not None:
            self.private.restore(state["privacy"])
        self.last_checkpoint = checkpoint
        if self.best_epoch is not None:
            self.best_state = self._best_weights(checkpoint, state, weights)

    def _best_weights(self, checkpoint: Path, state: dict[str, Any], weights: dict[str, torch.Tensor]):
        best = checkpoint.parent / BEST_CHECKPOINT
        if state["epoch_done"] and state["epoch"] == self.best_epoch:  # taken at the end of the best epoch
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
        for inputs, targets, positions in self.batches.validation(self.config.train.batch_size):
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            with self.precision.autocast():
                loss, right = self.net.loss(inputs, targets, _to(positions, self.device))
            loss_sum += float(loss)
            correct += int(right)
            tokens += int((targets != IGNORE_INDEX).sum())
        return loss_sum / tokens, correct / tokens

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


# --------------------------------------------------------------------------- helpers


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


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        names = [f for f in EpochState.__dataclass_fields__ if f != "stop"]
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)
