"""The model dir: written whole into a staging dir, then renamed into place; read back safely.

    staging = begin_model_dir(config)        # checks output_dir before any work is done
    save_weights(net.state_dict(), staging / WEIGHTS_FILE)
    publish_model_dir(staging, config)       # rename into output_dir
    config, tokenizer, weights, summary = read_model_dir("model/")

Nothing here unpickles: weights are safetensors, everything else JSON (and the
sentencepiece protobuf). File names are fixed constants, never taken from the dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainingConfig, config_to_dict, validate_config
from .errors import ConfigError, ModelDirError, TrainingError
from .tokenizers import Tokenizer, load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.csv"
CHECKPOINTS_DIR = "checkpoints"


def check_output_dir(config: TrainingConfig) -> None:
    """Refuse, before any work, to write where it would destroy something."""
    _check_replaceable(Path(config.output_dir), config)


def _check_replaceable(out: Path, config: TrainingConfig) -> None:
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output_dir: {out} exists and is not a directory")
        if not (out.is_dir() and any(out.iterdir())):
            return
    except PermissionError:
        raise ConfigError(f"output_dir: {out} cannot be read (permission denied)") from None
    if not config.overwrite:
        raise ConfigError(
            f"output_dir: {out} already exists and is not empty; set overwrite: true (CLI: --overwrite) to replace it"
        )
    # overwrite replaces a model dir, never any other directory (`output_dir: .` must not wipe a project)
    if not all((out / name).is_file() for name in (CONFIG_FILE, SUMMARY_FILE)):
        raise ConfigError(
            f"output_dir: {out} is not a synthloom model dir (no {CONFIG_FILE} and {SUMMARY_FILE}); "
            "overwrite only replaces model dirs: choose another output_dir or empty this one yourself"
        )
    if Path(config.data.path).resolve().is_relative_to(out.resolve()):
        raise ConfigError(
            f"output_dir: {out} holds the training data {config.data.path}; overwriting it would delete the data"
        )


def begin_model_dir(config: TrainingConfig) -> Path:
    """A fresh staging dir beside output_dir (same filesystem, so publishing is a rename)."""
    out = Path(config.output_dir).absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot create a directory in {out.parent} ({exc.strerror})") from None
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model dir is a normal dir
    return staging


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_model_dir(staging: Path, config: TrainingConfig) -> Path:
    """Move the finished staging dir to output_dir. An old model dir is set aside first and
    removed only once the new one is in place; if the move fails, the old one comes back."""
    out = Path(config.output_dir).absolute()
    try:
        _check_replaceable(out, config)  # again: the dir may have been filled during training
    except ConfigError as exc:
        raise TrainingError(f"{exc} The trained model is kept in {staging}.") from None
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        else:
            out.rmdir()
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def discard_staging(staging: Path | None) -> None:
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    tmp.chmod(0o666 & ~_umask())
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_config_json(config: TrainingConfig, directory: Path) -> None:
    write_json(directory / CONFIG_FILE, config_to_dict(config))


def read_model_dir(path: str | Path) -> tuple[TrainingConfig, Tokenizer, dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a trained model needs, read from its dir, validated, never unpickled."""
    directory = Path(path)
    if not directory.exists():
        raise ModelDirError(f"model dir not found: {directory}")
    if not directory.is_dir():
        raise ModelDirError(f"not a model dir (not a directory): {directory}")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, SUMMARY_FILE) if not (directory / f).is_file()]
    if missing:
        raise ModelDirError(f"{directory}: not a complete model dir, missing {', '.join(missing)}")
    try:
        config = validate_config(_read_json(directory / CONFIG_FILE))
    except ConfigError as exc:
        raise ModelDirError(f"{directory / CONFIG_FILE}: not a valid config: {exc}") from None
    summary = _read_json(directory / SUMMARY_FILE)
    tokenizer = load_tokenizer(directory)
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{directory / WEIGHTS_FILE}: cannot load weights ({exc})") from None
    return config, tokenizer, weights, summary


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: corrupted ({exc})") from None
