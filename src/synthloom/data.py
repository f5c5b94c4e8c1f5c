"""Reading records, splitting them, and turning them into padded training batches.

    records = read_records(config.data)            # text lines or CSV rows -> list of strings
    train, val = split_records(records.texts, 0.2, seed=42)
    for inputs, targets in iterate_batches(encoded, 64, rng, EOR_ID, PAD_ID): ...

A record is the unit of everything (design decision 1). A CSV row becomes one record:
its fields re-encoded as one CSV line (proper quoting, so fields holding the delimiter,
quotes or newlines survive), and decoded back with the csv module after sampling.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError

IGNORE_INDEX = -100  # targets at padding positions; cross_entropy skips them
PAD_ID, EOR_ID = 0, 1  # as tokenizers.PAD_ID, EOR_ID


@dataclass
class Records:
    """The records read from a file, with an account of what was left out."""

    texts: list[str]
    columns: list[str] | None = None  # csv header, in the file's order
    model_columns: list[str] | None = None  # the order the records hold their fields in (data.leading_columns first)
    num_fields: int | None = None  # csv: fields per row (with or without a header)
    skipped_empty: int = 0
    skipped_long: int = 0
    notes: list[str] = field(default_factory=list)


def read_records(cfg: DataConfig, table: "Table | None" = None) -> Records:
    """Read `cfg.path` as text lines or CSV rows (or take `table`, a DataFrame's columns and rows
    as strings); raise DataError with a clear reason otherwise."""
    if table is not None:
        records = table_records(table[0], table[1], cfg, "the DataFrame")
    elif cfg.target_path is not None:
        records = _parse_pair_files(cfg)
    elif cfg.format == "csv":
        records = _parse_csv(read_text(Path(cfg.path)), cfg)
    else:
        records = _parse_lines(read_text(Path(cfg.path)))
    if cfg.max_records is not None:
        records.texts = records.texts[: cfg.max_records]
    if cfg.column_order == "dependency" and records.model_columns and len(records.model_columns) > 2:
        _order_by_dependence(records, cfg)

    long = [i for i, t in enumerate(records.texts) if len(t) > cfg.max_record_chars]
    if long and cfg.long_records == "error":
        raise DataError(
            f"{cfg.path}: {len(long)} record(s) longer than data.max_record_chars={cfg.max_record_chars} "
            f"(first: record {long[0] + 1}, {len(records.texts[long[0]])} characters); raise the limit or set "
            "data.long_records: skip"
        )
    if long:
        drop = set(long)
        records.texts = [t for i, t in enumerate(records.texts) if i not in drop]
        records.skipped_long = len(long)
        records.notes.append(f"skipped {len(long)} record(s) longer than {cfg.max_record_chars} characters")
    if records.skipped_empty:
        records.notes.append(f"skipped {records.skipped_empty} empty line(s)")
    if not records.texts:
        raise DataError(
            f"{cfg.path}: no records to train on" + (f" ({'; '.join(records.notes)})" if records.notes else "")
        )
    return records


def _order_by_dependence(records: Records, cfg: DataConfig) -> None:
    """data.column_order: dependency: the records' fields re-ordered so that each column follows the one it
    depends on most (dependence.py), data.leading_columns still first."""
    from .dependence import dependency_order
    from .schema import infer_schema

    delimiter = cfg.field_delimiter or ","
    rows = [decode_row(t, delimiter) for t in records.texts]
    schema = infer_schema(records.model_columns, rows, overrides=cfg.column_types)
    order = dependency_order(rows, schema, leading=len(cfg.leading_columns))
    if order == list(range(len(order))):
        return
    records.texts = [encode_row([row[i] for i in order], delimiter) for row in rows]
    records.model_columns = [records.model_columns[i] for i in order]


def read_text(path: Path, what: str = "data") -> str:
    """A UTF-8 file's text (a BOM dropped), or a DataError saying why it cannot be read as records."""
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} path is a directory, not a file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}: contains NUL bytes (line {line}); is it a binary file?")
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is dropped
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid UTF-8 (byte {exc.start}, line {line}); re-encode the file as UTF-8"
        ) from None
    return text


def read_lines(path: Path, what: str) -> list[str]:
    """A text file's lines, blank ones kept (they align with another file's), without line endings."""
    lines = read_text(path, what).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start one
    return [line.removesuffix("\r") for line in lines]


def _parse_lines(text: str) -> Records:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last record; it does not start one
    texts, empty = [], 0
    for line in lines:
        line = line.removesuffix("\r")
        if line.strip():
            texts.append(line)
        else:
            empty += 1
    return Records(texts=texts, skipped_empty=empty)


PAIR_FILE_COLUMNS = ("source", "target")  # the columns a pair from two aligned text files is read into


def _parse_pair_files(cfg: DataConfig) -> Records:
    """seq2seq from two aligned text files: line i of data.path and line i of data.target_path make pair i,
    a record of the columns (source, target). A pair blank on both sides is skipped; a blank source or
    target alone stays (an empty text is a text)."""
    sources, targets = read_lines(Path(cfg.path), "sources"), read_lines(Path(cfg.target_path), "targets")
    if len(sources) != len(targets):
        raise DataError(
            f"{cfg.path} has {len(sources):,} line(s) and {cfg.target_path} {len(targets):,}: aligned files hold one "
            "target line for each source line"
        )
    texts, empty = [], 0
    for source, target in zip(sources, targets):
        if source.strip() or target.strip():
            texts.append(encode_row([source, target], ","))
        else:
            empty += 1
    columns = list(PAIR_FILE_COLUMNS)
    return Records(texts=texts, columns=columns, model_columns=columns, num_fields=2, skipped_empty=empty)


def pair_columns(cfg: DataConfig) -> tuple[list[str], str, str]:
    """seq2seq: (source columns, target column, the delimiter a record's fields are joined with)."""
    if cfg.target_path is not None:
        return [PAIR_FILE_COLUMNS[0]], PAIR_FILE_COLUMNS[1], ","
    return list(cfg.source_columns), cfg.target_column, cfg.field_delimiter


def _parse_csv(text: str, cfg: DataConfig) -> Records:
    delimiter = cfg.field_delimiter or ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    texts: list[str] = []
    columns: list[str] | None = None
    order: list[int] | None = None  # data.leading_columns: the fields' order in a record
    width = None
    empty = 0
    try:
        for row in reader:
            if row in ([], [""]):  # a blank line
                empty += 1
                continue
            if width is None:
                width = len(row)
                if cfg.header:
                    columns = row
                    repeated = sorted({c for c in row if row.count(c) > 1})
                    if repeated:
                        raise DataError(f"{cfg.path}: the header names {', '.join(map(repr, repeated))} more than once")
                    if cfg.leading_columns:
                        order = column_order(columns, cfg.leading_columns, str(cfg.path))
                    continue
            if len(row) != width:
                raise DataError(
                    f"{cfg.path}: line {reader.line_num} has {len(row)} field(s), expected {width} "
                    f"(as in the {'header' if cfg.header else 'first row'}); "
                    f"check quoting or data.field_delimiter={delimiter!r}"
                )
            texts.append(encode_row(row if order is None else [row[i] for i in order], delimiter))
    except csv.Error as exc:
        raise DataError(f"{cfg.path}: malformed CSV at line {reader.line_num}: {exc}") from None
    if not texts:
        what = "only a header" if columns is not None else "no rows"
        raise DataError(f"{cfg.path}: the CSV has {what}; there are no records to train on")
    model_columns = columns if order is None else [columns[i] for i in order]
    return Records(texts=texts, columns=columns, model_columns=model_columns, num_fields=width, skipped_empty=empty)


Table = tuple[list[str], list[list[str]]]  # (columns, rows of string fields): a DataFrame, read


def table_records(columns: list[str], rows: list[list[str]], cfg: DataConfig, where: str) -> Records:
    """A table given in memory (a DataFrame's columns and rows, as strings) as records, the way
    a CSV file's rows become records (one quoted line each, data.leading_columns first)."""
    delimiter = cfg.field_delimiter or ","
    columns = [str(c) for c in columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"{where}: column names must be distinct, got {columns}")
    order = column_order(columns, cfg.leading_columns, where) if cfg.leading_columns else None
    texts = [encode_row(row if order is None else [row[i] for i in order], delimiter) for row in rows]
    if not texts:
        raise DataError(f"{where}: no rows to train on")
    model_columns = columns if order is None else [columns[i] for i in order]
    return Records(texts=texts, columns=columns, model_columns=model_columns, num_fields=len(columns))


def column_order(columns: list[str], leading: list[str], where: str) -> list[int]:
    """Indices of `columns` with the `leading` ones first (in that order), the rest in theirs."""
    unknown = [c for c in leading if c not in columns]
    if unknown:
        raise DataError(f"data.leading_columns: {', '.join(map(repr, unknown))} not in {where}'s header {columns}")
    first = [columns.index(c) for c in leading]
    return first + [i for i in range(len(columns)) if i not in first]


def encode_row(fields: list[str], delimiter: str) -> str:
    """One CSV row as one record string (quoted where needed, no line terminator)."""
    text = delimiter.join(fields)
    if (len(fields) > 1 or text) and text.count(delimiter) == len(fields) - 1 and not _NEEDS_CSV.search(text):
        return text  # nothing to quote (no delimiter inside a field, no quote or newline): ~10x sooner
    buf = io.StringIO()
    # the csv module quotes a field holding \r or \n only when they occur in the line
    # terminator, so write with "\r\n" and strip it: embedded newlines then round-trip
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerow(fields)
    return buf.getvalue()[:-2]


def decode_row(record: str, delimiter: str) -> list[str]:
    """Parse one record string back into its fields; raises csv.Error if malformed."""
    if record and not _NEEDS_CSV.search(record):
        return record.split(delimiter)  # no quotes, no line breaks: what the csv module reads, ~10x sooner
    rows = list(csv.reader(io.StringIO(record, newline=""), delimiter=delimiter, strict=True))
    if len(rows) != 1:
        raise csv.Error(f"expected one row, found {len(rows)}")
    return rows[0]


_NEEDS_CSV = re.compile('["\r\n\0]')  # characters only the csv module handles right


# --------------------------------------------------------------------------- split


def pair_texts(texts: list[str], columns: list[str], cfg: DataConfig) -> list[tuple[str, str]]:
    """seq2seq: each csv record (its fields in `columns` order) -> (source, target): the source columns'
    values (one: the value; more: a csv line of them), the target column's value."""
    source_columns, target_column, delimiter = pair_columns(cfg)
    missing = [c for c in [*source_columns, target_column] if c not in columns]
    if missing:
        raise DataError(
            f"{cfg.path}: no column {', '.join(map(repr, missing))} for data.source_columns / data.target_column; "
            f"its columns: {', '.join(columns)}"
        )
    src = [columns.index(c) for c in source_columns]
    tgt = columns.index(target_column)
    out = []
    for text in texts:
        fields = decode_row(text, delimiter)
        source = fields[src[0]] if len(src) == 1 else encode_row([fields[i] for i in src], delimiter)
        out.append((source, fields[tgt]))
    return out


def split_records(texts: list[str], validation_split: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by record. Identical records always land on the same side, so the
    validation loss never scores a record the model trained on."""
    if validation_split == 0:
        return list(texts), []
    groups: dict[str, int] = {}
    for t in texts:
        groups[t] = groups.get(t, 0) + 1
    if len(groups) < 2:
        raise DataError(
            f"{len(texts)} record(s) with {len(groups)} distinct value(s): too few to hold out a validation split; "
            "set data.validation_split: 0"
        )
    uniques = list(groups)
    random.Random(seed).shuffle(uniques)
    want = max(1, round(len(texts) * validation_split))
    val_set: set[str] = set()
    taken = 0
    for u in uniques[:-1]:  # the last distinct record always stays in training
        if taken >= want:
            break
        val_set.add(u)
        taken += groups[u]
    train = [t for t in texts if t not in val_set]
    val = [t for t in texts if t in val_set]
    return train, val


# --------------------------------------------------------------------------- batches


def iterate_batches(
    encoded: list[list[int]], batch_size: int, rng: random.Random | None, eor_id: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Padded (inputs, targets) batches, one record per row: [EOR] + tokens -> tokens + [EOR].

    Records of similar length are batched together (shuffled pools sorted by length), so
    little compute goes to padding. rng=None keeps the order (for evaluation).
    """
    for idx in batch_indices(encoded, batch_size, rng):
        yield collate([encoded[i] for i in idx], eor_id, pad_id)


def batch_indices(encoded: list[list[int]], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    order = list(range(len(encoded)))
    if rng is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(encoded[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(seqs: list[list[int]], eor_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, s in enumerate(seqs):
        n = len(s)
        inputs[row, 0] = eor_id
        inputs[row, 1 : n + 1] = torch.tensor(s, dtype=torch.long)
        targets[row, :n] = inputs[row, 1 : n + 1]
        targets[row, n] = eor_id
    return inputs, targets


Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # inputs, targets (B, T); positions or None


class Batches:
    """The encoded training and validation records, and how a list of their indices becomes a
    batch: padded text records (collate), or field-token rows (fields.field_batch, with each row's
    columns shuffled when `shuffle_columns`, seeded by the batch's key so a resumed run draws the
    same orders)."""

    def __init__(
        self, train, val, tokenizer=None, shuffle_columns: bool = False, leading: int = 0, seed: int = 0,
        pairs: bool = False,
    ):  # fmt: skip
        self.train, self.val = train, val  # lists of id lists, or (N, S) arrays of slot ids (fields)
        self.tokenizer, self.shuffle, self.leading, self.seed = tokenizer, shuffle_columns, leading, seed
        self.pairs = pairs  # seq2seq: a record is source <eor> target; only the target part is predicted

    @property
    def fields(self) -> bool:
        return self.tokenizer is not None and self.tokenizer.kind == "fields"

    def batch(self, records, idx: list[int], key: tuple[int, ...] = ()) -> Batch:
        if self.pairs:
            seqs = [records[i] for i in idx]
            inputs, targets = collate(seqs, EOR_ID, PAD_ID)
            for row, seq in enumerate(seqs):  # the source and its separator: nothing to predict
                targets[row, : seq.index(EOR_ID) + 1] = IGNORE_INDEX
            return inputs, targets, None
        if not self.fields:
            return (*collate([records[i] for i in idx], EOR_ID, PAD_ID), None)
        from .fields import field_batch

        rng = np.random.default_rng((self.seed, *key)) if self.shuffle else None
        return field_batch(self.tokenizer, records[np.asarray(idx, dtype=np.int64)], self.leading, rng)

    def validation(self, batch_size: int) -> Iterator[Batch]:
        for k, idx in enumerate(batch_indices(self.val, batch_size, None)):
            yield self.batch(self.val, idx, key=(2**31, k))  # fixed orders: the same loss every epoch


def count_batches(n_records: int, batch_size: int) -> int:
    """Batches per epoch as iterate_batches makes them (pools may leave a partial batch each)."""
    pool = batch_size * 32
    full, rest = divmod(n_records, pool)
    return full * 32 + -(-rest // batch_size)
