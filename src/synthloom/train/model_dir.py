"""Writing a run's model dir (in its work dir; train() renames it into place).

summary = write_model_dir(work, config, data, net, loop, private, device, resumed)
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

from .. import __version__
from ..checkpoint import (
    CHECKPOINTS_DIR,
    DIGESTS_FILE,
    HISTORY_FILE,
    SCHEMA_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    save_config_json,
    save_digests,
    save_weights,
    write_json,
)
from ..config import TrainingConfig
from ..data import (
    decode_row,
)
from ..models.lora import ADAPTER_FILE, merged_state, split_state
from ..privacy import PRIVACY_FILE
from ..records import field_digests, training_digests, unique_records
from .loop import EpochState


def write_model_dir(work: Path, config: TrainingConfig, data, net, loop, private, device, resumed: bool) -> dict:
    """Every file of the model dir but the tokenizer (written first), into the run's work dir: the weights
    (best or last; LoRA merged or kept apart), config, history, schema, the privacy filter's digests or
    privacy.json, and summary.json, which it returns."""
    plan, tokenizer, records = data.plan, data.tokenizer, data.records
    train_texts, val_texts, train_ids, val_ids = data.train_texts, data.val_texts, data.train_ids, data.val_ids
    total_steps = plan.total_steps
    max_record_tokens = max(max(len(ids) for ids in part) for part in (train_ids, val_ids) if len(part)) + 1  # + <eor>
    n_params = sum(p.numel() for p in net.parameters())
    n_trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
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
    write_history(work / HISTORY_FILE, loop.history)
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
        "effective_batch_size": config.train.batch_size * config.train.grad_accumulation_steps * plan.world_size,
        "processes": plan.world_size,  # data-parallel (torchrun): the batch size is per process
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
        "resumed": resumed,
        "device": str(device),
        "precision": config.train.precision,
    }
    if private is not None:
        summary["privacy"] = {"epsilon": private.epsilon(), "delta": private.delta}
    write_json(work / SUMMARY_FILE, summary)
    return summary


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        names = [f for f in EpochState.__dataclass_fields__ if f != "stop"]
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)
