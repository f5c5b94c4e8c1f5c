"""The model dir and the training checkpoints in it: written atomically, read back safely.

    work = begin_run(config, resume=False)   # .NAME.partial beside output_dir, locked
    save_checkpoint(work, "step-00000120", weights, state)   # state: optimizer, schedule, counters, RNGs
    publish_model_dir(work, config)          # rename into output_dir at the end
    config, tokenizer, weights, summary = read_model_dir("model/")

A run writes into its work dir `.NAME.partial` beside output_dir (same filesystem, so
publishing is a rename); an interrupted run leaves it, with its checkpoints, for
`--resume`. Each checkpoint is written to a temporary dir and renamed into place, so a
checkpoint either exists whole or not at all. A lock file names the process that owns
the work dir; a lock whose process is gone is taken over.

Nothing here unpickles: tensors are safetensors, everything else JSON (and the
sentencepiece protobuf). File names are fixed constants, never taken from the dir.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainingConfig, config_to_dict, validate_config
from .errors import ConfigError, DataError, ModelDirError, TrainingError
from .models.lora import ADAPTER_FILE, adapted_state, merged_state
from .schema import Schema
from .tokenizers import Tokenizer, load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.csv"
SCHEMA_FILE = "schema.json"  # csv models: each column's type (schema.py)
CHECKPOINTS_DIR = "checkpoints"
DIGESTS_FILE = "train_digests.safetensors"  # salted digests of the training records (privacy filter)
BEST_CHECKPOINT = "best"
LOCK_FILE = "training.lock"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "trainer_state.json"


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


def work_dir(config: TrainingConfig) -> Path:
    out = Path(config.output_dir).absolute()
    return out.parent / f".{out.name}.partial"


def begin_run(config: TrainingConfig, resume: bool) -> Path:
    """The locked work dir for this run: fresh, or, with `resume`, the interrupted run's (or a
    copy of a finished output_dir's checkpoints). Refuses to clobber another run's work."""
    out = Path(config.output_dir).absolute()
    work = work_dir(config)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot create {out.parent} ({exc.strerror})") from None
    if work.exists():
        _check_lock(work)
        last = latest_checkpoint(work)
        if resume and last is not None:
            _take_lock(work)
            return work
        if not config.overwrite and last is not None:
            raise ConfigError(
                f"output_dir: an interrupted training of {out} left checkpoints in {work} (last: {last.name}); "
                "continue it with --resume (train(config, resume=True)), or start over with --overwrite"
            )
        shutil.rmtree(work)  # no checkpoint worth keeping, or overwrite asked to start over
    elif resume and latest_checkpoint(out) is None:
        raise ConfigError(f"--resume: nothing to resume: neither {work} nor {out} holds a checkpoint")
    try:
        if resume:  # a finished run, continued: its model dir stays as it is until the new one is ready
            shutil.copytree(out, work, ignore=shutil.ignore_patterns(LOCK_FILE))
        else:
            work.mkdir()
    except FileExistsError:
        raise ConfigError(f"output_dir: another training is starting in {work}; wait for it or stop it") from None
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot create a directory in {out.parent} ({exc.strerror})") from None
    work.chmod(0o777 & ~_umask())
    _take_lock(work)
    return work


def _check_lock(work: Path) -> None:
    lock = work / LOCK_FILE
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no lock (or a torn one): nobody owns the dir
    if owner.get("host") == socket.gethostname() and _alive(int(owner.get("pid", -1))):
        if owner.get("pid") == os.getpid():
            return
        raise ConfigError(
            f"output_dir: another training (pid {owner['pid']}, started {owner.get('started', '?')}) is writing "
            f"{work}; wait for it or stop it"
        )
    if owner.get("host") != socket.gethostname():
        raise ConfigError(
            f"output_dir: {work} is locked by pid {owner.get('pid')} on {owner.get('host')}; if that training is "
            f"gone, delete {lock}"
        )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _take_lock(work: Path) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(work / LOCK_FILE, owner)


def release_lock(work: Path) -> None:
    (work / LOCK_FILE).unlink(missing_ok=True)


def end_run(work: Path | None) -> None:
    """After a failed run: keep the work dir if it holds a checkpoint to resume from, else remove it."""
    if work is None:
        return
    if latest_checkpoint(work) is not None:
        release_lock(work)
    else:
        shutil.rmtree(work, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_model_dir(staging: Path, config: TrainingConfig, replace_own: bool = False) -> Path:
    """Move the finished work dir to output_dir. An old model dir is set aside first and
    removed only once the new one is in place; if the move fails, the old one comes back.
    `replace_own`: the run resumed output_dir's own model, which it may replace."""
    out = Path(config.output_dir).absolute()
    try:
        _check_replaceable(out, config.model_copy(update={"overwrite": True}) if replace_own else config)
    except ConfigError as exc:  # checked again: the dir may have been filled during training
        raise TrainingError(f"{exc} The trained model is kept in {staging}.") from None
    release_lock(staging)
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


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _save_tensors({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp)
    tmp.chmod(0o666 & ~_umask())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(work: Path, name: str, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """A resumable checkpoint under checkpoints/NAME: the weights, and the training state
    (optimizer, schedule, RNGs, counters: its tensors in safetensors, the rest JSON). Written
    whole or not at all; one of the same name is replaced only once the new one is complete."""
    root = work / CHECKPOINTS_DIR
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        save_weights(weights, tmp / WEIGHTS_FILE)
        state_json, state_tensors = flatten_state(state, "state")
        _save_tensors(state_tensors, tmp / STATE_TENSORS_FILE)
        write_json(tmp / STATE_FILE, state_json)
        _swap_into_place(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished dir to `final`; an existing one is set aside first, removed after."""
    tmp.chmod(0o777 & ~_umask())
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete step checkpoint (by step), not counting the best one."""
    root = directory / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: p.name, default=None)


def rotate_checkpoints(work: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (never the best one)."""
    root = work / CHECKPOINTS_DIR
    steps = sorted(p for p in root.iterdir() if p.name.startswith("step-") and p.is_dir())
    for old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".*.tmp-*"):  # a save killed halfway
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, training state) of a checkpoint dir, never unpickled."""
    try:
        weights = load_file(str(path / WEIGHTS_FILE))
        tensors = load_file(str(path / STATE_TENSORS_FILE))
        state = unflatten_state(json.loads((path / STATE_FILE).read_text(encoding="utf-8")), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelDirError(f"checkpoint {path} cannot be read ({exc})") from None
    return weights, state


def copy_checkpoint(source: Path, name: str) -> None:
    """Copy a checkpoint to checkpoints/NAME (the best one), atomically like a save."""
    root = source.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        for item in source.iterdir():
            shutil.copy2(item, tmp / item.name)
        _swap_into_place(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def flatten_state(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Nested dicts/lists/tuples with tensors -> (JSON-able structure, {key: tensor})."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().contiguous().cpu().clone()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {
                "__dict__": [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())
                ]
            }
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot checkpoint a {type(value).__name__} at {path}")

    return walk(obj, prefix), tensors


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    return obj


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    seen: set[int] = set()
    for name, t in tensors.items():  # tied weights (a transformer's embedding and head): each saved whole,
        if t.untyped_storage().data_ptr() in seen:  # as safetensors refuses shared memory; loading ties them again
            tensors[name] = t.clone()
        seen.add(t.untyped_storage().data_ptr())
    try:
        save_file(tensors, str(path))
    except SafetensorError as exc:  # safetensors reports a full disk (or any I/O error) as its own type
        path.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {exc}") from None


def save_digests(digests: torch.Tensor, salt: bytes, path: Path, fields: torch.Tensor | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tensors = {"digests": digests} | ({"fields": fields} if fields is not None else {})
    save_file(tensors, str(tmp), metadata={"salt": salt.hex()})
    os.replace(tmp, path)


def read_digests(directory: Path) -> tuple[torch.Tensor, bytes] | None:
    """The training records' digests and their salt, or None for a model dir without them."""
    path = Path(directory) / DIGESTS_FILE
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            salt = bytes.fromhex((fh.metadata() or {})["salt"])
            return fh.get_tensor("digests"), salt
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"{path}: corrupted ({exc})") from None


def read_field_digests(directory: Path) -> torch.Tensor | None:
    """A table model's per-field digests of its training rows (the near-copy filter), if kept."""
    path = Path(directory) / DIGESTS_FILE
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return fh.get_tensor("fields") if "fields" in fh.keys() else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{path}: corrupted ({exc})") from None


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
        config = validate_config(read_json(directory / CONFIG_FILE))
    except ConfigError as exc:
        raise ModelDirError(f"{directory / CONFIG_FILE}: not a valid config: {exc}") from None
    summary = read_json(directory / SUMMARY_FILE)
    tokenizer = load_tokenizer(directory)
    weights = _read_weights(directory / WEIGHTS_FILE)
    adapter = _read_weights(directory / ADAPTER_FILE) if (directory / ADAPTER_FILE).is_file() else None
    if adapter is not None:  # LoRA kept apart (lora.save: separate): applied here, so the model is a plain one
        weights = merged_state(adapted_state(weights, adapter), config.lora.alpha / config.lora.rank)
    return config, tokenizer, weights, summary


def weights_mismatch(exc: RuntimeError) -> str:
    """torch's load_state_dict error on one line: its first few mismatches (after torch's header)."""
    details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:3]
    return "; ".join(details) or str(exc)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot load weights ({exc})") from None


def read_model_config(directory: Path) -> TrainingConfig:
    """A model dir's config.json, validated (what the report and grouped models read)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"{directory}: not a model dir (no {CONFIG_FILE})")
    try:
        return validate_config(read_json(path))
    except ConfigError as exc:
        raise ModelDirError(f"{path}: not a valid config: {exc}") from None


def read_schema(directory: Path) -> Schema | None:
    """A csv model's column types (schema.json); None for a text model or one trained before schemas."""
    file = Path(directory) / SCHEMA_FILE
    if not file.is_file():
        return None
    try:
        return Schema.from_dict(read_json(file))
    except DataError as exc:
        raise ModelDirError(f"{file}: corrupted ({exc})") from None


def read_json(path: Path) -> Any:
    """A model dir's JSON file; ModelDirError when it is corrupted."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: corrupted ({exc})") from None
