"""Resuming a run: which config changes a continuation may make, and the RNG states a
checkpoint carries so that a resumed run draws what the uninterrupted one would have.

    notes = check_resumable(saved_config_dict, config)   # ConfigError listing unsafe changes
    rng = capture_rng(); ...; restore_rng(rng)
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from .config import TrainingConfig, config_to_dict, validate_config
from .errors import ConfigError

# keys a continuation may change: how long to train, how to log, where to run, when to stop,
# what to keep, how to sample later. Anything else changes the model, the data, the tokenizer
# or the optimisation the checkpoint was made by.
SAFE_TO_CHANGE = (
    "overwrite",
    "train.epochs",
    "train.max_steps",
    "train.max_time_seconds",
    "train.logging_steps",
    "train.tensorboard",
    "train.epoch_callback",
    "train.num_threads",
    "train.device",
    "train.tf32",
    "early_stopping.enabled",
    "early_stopping.patience",
    "early_stopping.min_delta",
    "checkpoint.every_steps",
    "checkpoint.keep_last",
    "checkpoint.save_every_epoch",
    "generate.",
)


def check_resumable(saved: dict[str, Any], config: TrainingConfig) -> list[str]:
    """The safe changes (as 'key: old -> new'); raises ConfigError listing the unsafe ones."""
    try:  # a run saved before a key existed has that key's default, not "a change"
        saved = config_to_dict(validate_config(saved))
    except ConfigError:
        pass  # diff what it says; the changes listed tell the user what differs
    changes = _diff(saved, config_to_dict(config))
    unsafe = [
        c for c in changes if not any(c[0] == k or (k.endswith(".") and c[0].startswith(k)) for k in SAFE_TO_CHANGE)
    ]
    if unsafe:
        lines = "\n  ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in unsafe)
        raise ConfigError(
            f"--resume: the config changes what the checkpoint was trained with:\n  {lines}\n"
            "change them back, or train a new model (another output_dir, or --overwrite without --resume)"
        )
    return [f"{key}: {old!r} -> {new!r}" for key, old, new in changes]


def _diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in dict.fromkeys([*old, *new]):
            out += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [(path, old, new)]


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])  # the checkpoint keeps tuples as tuples
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return (kind, keys.tolist(), int(pos), int(has_gauss), float(cached))
