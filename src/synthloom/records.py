"""Records out: the checks every generated record passes, and writing records to files.

record = check_record(text, ended=True, max_tokens=300, delimiter=",", columns=cols, validator=fn)
write_records(records, "synthetic.csv", columns=cols, delimiter=",")
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .data import decode_row, encode_row
from .errors import GenerationError

COPY_EXPLANATION = "an exact copy of a training record (privacy filter)"
NEAR_COPY_EXPLANATION = "a near copy of a training record (privacy filter)"  # + how near


@dataclass
class GeneratedRecord:
    """One sampled record. `fields` holds the parsed CSV fields for table models."""

    text: str
    valid: bool
    explanation: str | None = None  # why the record is invalid
    fields: list[str] | None = None
    seed: int | None = None  # with a list of seed fields: the index of the seed this record answers


def check_record(
    text: str,
    ended: bool,
    max_tokens: int,
    delimiter: str | None,
    num_fields: int | None,
    validator: Callable[[str], Any] | None,
) -> GeneratedRecord:
    """Built-in checks first (ended, not empty, CSV shape), then the user's validator.
    A validator accepts by returning anything but False; it rejects by returning False or
    raising (its message becomes the explanation)."""
    if not ended:
        return GeneratedRecord(text, False, f"reached max_tokens={max_tokens} before the end of the record")
    if not text.strip():
        return GeneratedRecord(text, False, "empty record")
    fields = None
    if delimiter is not None:
        try:
            fields = decode_row(text, delimiter)
        except csv.Error as exc:
            return GeneratedRecord(text, False, f"malformed CSV: {exc}")
        if num_fields is not None and len(fields) != num_fields:
            return GeneratedRecord(text, False, f"{len(fields)} field(s), expected {num_fields}", fields)
        text = encode_row(fields, delimiter)  # canonical quoting: e.g. a stray trailing newline is gone
    record = GeneratedRecord(text, True, None, fields)
    return user_check(record, validator) if validator is not None else record


def user_check(record: GeneratedRecord, validator: Callable[[str], Any]) -> GeneratedRecord:
    """The user's record validator on a record that passed every other check."""
    try:
        verdict = validator(record.text)
    except Exception as exc:  # the user's code: any exception means "invalid, because..."
        return GeneratedRecord(record.text, False, f"validator: {type(exc).__name__}: {exc}", record.fields)
    if verdict is False:
        return GeneratedRecord(record.text, False, "validator returned False", record.fields)
    return record


def run_field_checks(checks: list, fields: list[str]) -> str | None:
    """Per-field validators, (index, column, fn) each: the first problem, or None."""
    for index, column, fn in checks:
        try:
            verdict = fn(fields[index])
        except Exception as exc:  # the user's code
            return f"{column}: validator: {type(exc).__name__}: {exc}"
        if verdict is False:
            return f"{column}: validator returned False for {fields[index]!r}"
    return None


def record_digest(text: str, salt: bytes) -> int:
    """A salted 64-bit digest of a record's canonical text (what the privacy filter compares)."""
    return int.from_bytes(hashlib.sha256(salt + text.encode("utf-8")).digest()[:8], "little", signed=True)


def unique_records(texts: list[str]) -> list[str]:
    """The records that occur once: what the exact-copy filter guards. A record the data holds twice
    or more is no one's alone (sampling it is like the table's own duplicates), and where the space of
    rows is small (a few categorical columns) every possible row may be a common one."""
    counts = Counter(texts)
    return [t for t, n in counts.items() if n == 1]


def training_digests(texts: Iterable[str], salt: bytes) -> torch.Tensor:
    """The sorted digests of the training records: the model dir keeps these, never the records."""
    return torch.tensor(sorted({record_digest(t, salt) for t in texts}), dtype=torch.int64)


def is_training_copy(text: str, digests: torch.Tensor, salt: bytes) -> bool:
    """Whether `text` is a training record, by its digest among the sorted training digests."""
    d = record_digest(text, salt)
    table = digests.numpy()  # a view; numpy's scalar search costs ~1 us where torch's costs ~50
    i = int(np.searchsorted(table, d))
    return i < len(table) and int(table[i]) == d


def training_copies(texts: list[str], digests: torch.Tensor, salt: bytes) -> np.ndarray:
    """is_training_copy for many records at once: one search for all of them."""
    table = digests.numpy()  # a view
    if not len(table):
        return np.zeros(len(texts), dtype=bool)
    d = np.fromiter((record_digest(t, salt) for t in texts), dtype=np.int64, count=len(texts))
    i = np.searchsorted(table, d).clip(max=len(table) - 1)
    return table[i] == d


def field_digests(rows: Iterable[list[str]], salt: bytes) -> torch.Tensor:
    """(distinct rows, fields) salted digests of each field, column by column: what the near-copy
    filter compares a generated table record with, field by field (never the values)."""
    distinct = {tuple(row) for row in rows}
    return torch.tensor(
        [[record_digest(f"{i}\x1f{field}", salt) for i, field in enumerate(row)] for row in sorted(distinct)],
        dtype=torch.int64,
    ).reshape(len(distinct), -1)


def fewest_differences(fields: list[str], matrix: torch.Tensor, salt: bytes) -> int:
    """The fewest fields in which `fields` differs from any training row (0: an exact copy)."""
    if matrix.numel() == 0 or matrix.shape[1] != len(fields):
        return len(fields)
    row = torch.tensor([record_digest(f"{i}\x1f{field}", salt) for i, field in enumerate(fields)], dtype=torch.int64)
    return int((matrix != row).sum(1).min())


def format_records(records: Iterable[GeneratedRecord], columns: list[str] | None, delimiter: str | None) -> str:
    """Valid records as file content: CSV with its header for table models, else one per line."""
    buf = io.StringIO()
    if columns is not None and delimiter is not None:
        buf.write(encode_row(columns, delimiter) + "\n")
    for r in records:
        if r.valid:
            buf.write(r.text + "\n")
    return buf.getvalue()


def write_records(
    records: Iterable[GeneratedRecord], path: str | Path | None, columns: list[str] | None, delimiter: str | None
) -> None:
    """Write valid records to `path` (written whole, then renamed) or to stdout when path is None."""
    text = format_records(records, columns, delimiter)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = check_output_path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GenerationError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_output_path(path: str | Path) -> Path:
    """Fail before sampling, not after, if records could not be written to `path`.
    Missing parent directories are created."""
    path = Path(path)
    if path.is_dir():
        raise GenerationError(f"output {path} is a directory; give a file name, e.g. {path / 'synthetic.csv'}")
    probe = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()  # can we write there at all? (a read-only dir would otherwise lose the sampling)
        probe.unlink()
    except OSError as exc:
        raise GenerationError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
