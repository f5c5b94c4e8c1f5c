"""Field-level tokens for tables: each column's value from that column's own vocabulary.

    tok = FieldTokenizer.train(schema, rows, config.tokenizer)     # rows: lists of str, model order
    ids = tok.encode_rows(rows)                  # (N, S) int64: one token per slot, S slots a row
    rows = tok.decode_rows(ids, rng)             # the field strings back
    tok.save(model_dir); tok = load_tokenizer(model_dir)

A row is a fixed sequence of S *slots*; each slot belongs to one column and has its own
vocabulary, a contiguous range of token ids, so the model's output at a slot is masked to that
range (`allowed_mask`) and every sampled row decodes to fields of the right types. How each kind
of column becomes slots (what is kept, what is lost: docs/tables.md):

- categorical (and text columns whose frequent values cover most rows): one slot, one token per
  category seen in at least `tokenizer.rare_category_threshold` records, one per missing marker,
  and one shared <rare> token for the rarer categories. <rare> decodes to one of those rare
  categories, drawn by its training frequency: the marginal is kept, but a rare value's links to
  the row's other fields are not learnt, so a row around a unique value cannot be reproduced.
- integer / float: the value is an integer count of the column's unit (10^e: the data's decimals,
  coarser only when the range holds more than ~10^8 units) from the smallest value; slot 1 is its
  quantile bin (a value holding more than a bin's share of rows is a bin of its own; a bin spans
  the smallest to the largest value in it, so gaps and the range are kept), or a missing marker;
  then up to three base-100 slots for the offset inside the bin. A bin of one distinct value decodes
  to that value's own text; a bin wider than 100^3 units is cut into 100^3 cells and a value drawn
  uniformly within its cell. Nothing outside [min, max] can come out.
- date / datetime: one slot per component that varies (year, month, day, hour, minute, second,
  milliseconds, microseconds), the first also holding the missing markers; a day past the end of
  its month decodes to the month's last day, so no impossible date comes out; written back in the
  column's format, with its zero padding.
- text: the column's own subword pieces (sentencepiece BPE trained on that column, or characters),
  as many slots as its longest value has pieces, a shorter value closed by <end-of-field>; the
  slots after it are filler (PAD in, no target).

Slots of one possible token (a constant column, a digit that never varies) are left out of the
row: they carry nothing. Token ids: 0 <pad>, 1 <eor> (the row's start and end), 2 <unk> (unused),
then the slots' ranges one after another (a text column's slots share one range).
"""

from __future__ import annotations

import base64
import calendar
import difflib
import io
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TokenizerConfig
from .errors import DataError, ModelDirError, TokenizerError
from .schema import DATE_PARSERS, ISO, MISSING_MARKERS, ColumnSchema, Schema, is_missing

PAD_ID, EOR_ID, UNK_ID = 0, 1, 2
FIRST_ID = 3
TOKENIZER_JSON = "tokenizer.json"
BASE = 100  # a numeric offset slot holds two decimal digits of the offset inside its bin
MAX_OFFSET_SLOTS = 3  # so a bin is exact up to BASE**3 units wide
UNIT_DIGITS = 8  # the unit is at least range / 10^8: 17-digit float artefacts are not kept
CACHE_LIMIT = 200_000  # decoded texts kept per column (numbers, dates): most samples repeat values
TEXT_COVERAGE = 0.8  # a text column is encoded as categories when its frequent values cover this share
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- categories


@dataclass
class CategoryCodec:
    """One slot: [missing markers..., categories..., <rare>?]."""

    name: str
    missing: list[str]  # missing markers, each its own token (exact round trip)
    categories: list[str]
    rare: list[str] = field(default_factory=list)  # rarer categories, sampled back through <rare>
    rare_counts: list[int] = field(default_factory=list)
    has_rare: bool = False  # a <rare> token exists (rare categories were seen, or DP hid them)
    kind: str = "category"

    @property
    def sizes(self) -> list[int]:
        return [len(self.missing) + len(self.categories) + int(self.has_rare)]

    def __post_init__(self) -> None:
        self._index = {v: i for i, v in enumerate(self.missing + self.categories)}
        self._values = self.missing + self.categories
        self._rare_set = frozenset(self.rare)

    @property
    def rare_token(self) -> int | None:
        return len(self._values) if self.has_rare else None

    def encode(self, value: str) -> list[int]:
        i = self._index.get(value)
        if i is not None:
            return [i]
        if self.has_rare:
            return [len(self._values)]
        raise ValueError(f"{self.name}: {value!r} is not a category of this column")

    def can_encode(self, value: str) -> bool:
        return value in self._index or (self.has_rare and (value in self._rare_set or not self.rare))

    def decode(self, local: np.ndarray, rng: np.random.Generator) -> list[str]:
        values = self._values
        codes = local[:, 0].tolist()
        out = [values[c] if c < len(values) else None for c in codes]
        if self.has_rare and any(v is None for v in out):
            where = [i for i, v in enumerate(out) if v is None]
            if self.rare:
                p = np.asarray(self.rare_counts, dtype=float)
                draws = rng.choice(len(self.rare), size=len(where), p=p / p.sum())
                for i, d in zip(where, draws.tolist()):
                    out[i] = self.rare[d]
            else:  # DP: the rare values are unknown (sampling masks <rare> out; a seed may still hold it)
                for i in where:
                    out[i] = self.missing[0] if self.missing else ""
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "missing": self.missing,
            "categories": self.categories,
            "rare": self.rare,
            "rare_counts": self.rare_counts,
            "has_rare": self.has_rare,
        }


def _category_codec(column: ColumnSchema, values: list[str], threshold: int, dp: Any | None) -> CategoryCodec:
    counts = Counter(values)
    if dp is not None:  # noisy counts with a threshold: which values exist (missing markers too) is private
        categories = dp.frequent_values(counts, threshold, f"{column.name}: categories")
        return CategoryCodec(column.name, [], categories, has_rare=True)  # <rare>: never sampled (unknown values)
    missing = [m for m in column.missing if m in counts] if column.kind != "text" else []
    for m in missing:
        del counts[m]
    categories = sorted(v for v, n in counts.items() if n >= threshold)
    rare = sorted(v for v, n in counts.items() if n < threshold)
    return CategoryCodec(column.name, missing, categories, rare, [counts[v] for v in rare], has_rare=bool(rare))


# --------------------------------------------------------------------------- numbers


@dataclass
class NumberCodec:
    """Slot 1: [missing markers..., bins...]; then offset slots (base 100) within the bin.

    A value is n * 10^exponent, n an integer; k = n - origin counts units from the smallest value.
    Bin b holds k in [lows[b], highs[b]]; texts[b] is its one value's own text (single-value bins)."""

    name: str
    missing: list[str]
    exponent: int
    origin: int
    lows: list[int]
    highs: list[int]
    texts: list[str | None]
    style: str  # fixed | fixed:D | trim | trim1: how decimals are written (see _number_text)
    offset_sizes: list[int]  # the offset slots' vocabulary sizes (most significant first)
    clip: bool = False  # differentially private ranges: a value outside is clipped to them, not refused
    bounded: bool = False  # data.column_bounds: a value outside them is clipped to them (missing markers as ever)
    kind: str = "number"

    @property
    def sizes(self) -> list[int]:
        return [len(self.missing) + len(self.lows)] + list(self.offset_sizes)

    def __post_init__(self) -> None:
        self._lows = np.asarray(self.lows, dtype=np.int64)
        self._highs = np.asarray(self.highs, dtype=np.int64)
        self._missing_index = {m: i for i, m in enumerate(self.missing)}
        self._cells = BASE ** len(self.offset_sizes)  # offsets a bin can tell apart exactly
        # k -> text: a single-value bin's value as the data wrote it, then values as they are decoded
        self._cache: dict[int, str] = {lo: t for lo, t in zip(self.lows, self.texts) if t is not None}

    def units(self, value: str) -> int:
        """The value as units from the origin (it must parse as a number)."""
        return _to_units(value, self.exponent) - self.origin

    def encode(self, value: str) -> list[int]:
        if value in self._missing_index:
            return [self._missing_index[value]] + [0] * len(self.offset_sizes)
        if value.strip() in MISSING_MARKERS:
            if self.clip and self.missing:  # a private vocabulary without this marker: the first one
                return [0] + [0] * len(self.offset_sizes)
            if not self.clip or not self.lows:
                raise ValueError(f"{self.name}: missing value {value!r}, never missing in training")
            value = self.value_text(self.lows[0])
        k = self.units(value)
        if self.clip or self.bounded:
            k = min(max(k, self.lows[0]), self.highs[-1])
        if k < self.lows[0] or k > self.highs[-1]:
            lo, hi = self.value_text(self.lows[0]), self.value_text(self.highs[-1])
            raise ValueError(f"{self.name}: {value!r} is outside the training range [{lo}, {hi}]")
        b = int(np.searchsorted(self._lows, k, side="right")) - 1
        k = min(k, self.highs[b])  # between two bins (a gap in the data): the lower bin's top
        return [len(self.missing) + b] + self._offset_tokens(k - self.lows[b], self.highs[b] - self.lows[b] + 1)

    def _offset_tokens(self, offset: int, width: int) -> list[int]:
        if not self.offset_sizes:
            return []
        scale = max(1, -(-width // self._cells))  # a bin wider than the cells: each cell `scale` units
        cell = offset // scale
        out = []
        for i in range(len(self.offset_sizes)):
            out.append((cell // BASE ** (len(self.offset_sizes) - 1 - i)) % BASE)
        return out

    def encode_many(self, values: list[str]) -> np.ndarray:
        out = np.zeros((len(values), len(self.sizes)), dtype=np.int64)
        for i, v in enumerate(values):
            out[i] = self.encode(v)
        return out

    def decode(self, local: np.ndarray, rng: np.random.Generator) -> list[str]:
        first = local[:, 0] - len(self.missing)  # (N,) bin, or < 0 for a missing marker
        is_missing_row = first < 0
        b = np.clip(first, 0, len(self.lows) - 1)
        lows, highs = self._lows[b], self._highs[b]
        width = highs - lows + 1
        k = lows.copy()
        if self.offset_sizes:
            cell = np.zeros(len(local), dtype=np.int64)
            for i in range(len(self.offset_sizes)):
                cell = cell * BASE + local[:, 1 + i]
            scale = np.maximum(1, -(-width // self._cells))
            inner = rng.integers(0, np.iinfo(np.int64).max, size=len(local)) % scale  # uniform within a cell
            k = lows + np.minimum(cell * scale + inner, width - 1)
        cache, text = self._cache, self.value_text
        distinct, where = np.unique(k, return_inverse=True)
        texts = []
        for kk in distinct.tolist():  # a value's text, written once per distinct value
            t = cache.get(kk)
            if t is None:
                t = text(kk)
                if len(cache) < CACHE_LIMIT:
                    cache[kk] = t
            texts.append(t)
        out = np.array(texts, dtype=object)[where.reshape(-1)].tolist()
        if is_missing_row.any():
            for i in np.flatnonzero(is_missing_row).tolist():
                out[i] = self.missing[int(local[i, 0])]
        return out

    def value_text(self, k: int) -> str:
        return _number_text(self.origin + k, self.exponent, self.style)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "missing": self.missing,
            "exponent": self.exponent,
            "origin": self.origin,
            "lows": self.lows,
            "highs": self.highs,
            "texts": self.texts,
            "style": self.style,
            "offset_sizes": self.offset_sizes,
            "clip": self.clip,
            "bounded": self.bounded,
        }


def decimals_needed(text: str) -> int:
    """Digits after the point that the text's value needs: trailing zeros are how it is written, not
    its grid (1.50 -> 1, 93.0 -> 0 as pandas writes integers beside missing values; 1e-05 -> 5)."""
    t = text.strip().lower()
    exp = 0
    if "e" in t:
        t, _, e = t.partition("e")
        exp = int(e)
    frac = t.partition(".")[2].rstrip("0")
    return max(0, len(frac) - exp)


def _to_units(text: str, exponent: int) -> int:
    """round(value / 10^exponent) exactly, from the text (no binary float rounding)."""
    t = text.strip().lower()
    exp = 0
    if "e" in t:
        t, _, e = t.partition("e")
        exp = int(e)
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    whole, _, frac = t.partition(".")
    digits = int((whole or "0") + frac) if (whole or frac) else 0
    shift = exp - len(frac) - exponent  # value = digits * 10^(exp - len(frac)) = units * 10^exponent
    if shift >= 0:
        return sign * digits * 10**shift
    q, r = divmod(digits, 10**-shift)
    if 2 * r >= 10**-shift:  # half up, on the magnitude
        q += 1
    return sign * q


def _number_text(n: int, exponent: int, style: str) -> str:
    """n * 10^exponent written with the column's style: fixed (always -exponent decimals), fixed:D
    (always D decimals, D > -exponent: 93.0, 1.50 on a grid of 0.1), trim (trailing zeros dropped,
    and the point when nothing follows), trim1 (at least one decimal)."""
    written = int(style[6:]) if style.startswith("fixed:") else None
    if exponent >= 0:
        text = str(n * 10**exponent)
        if written:
            return f"{text}.{'0' * written}"
        return text + ".0" if style == "trim1" else text
    d = -exponent
    sign = "-" if n < 0 else ""
    digits = str(abs(n)).rjust(d + 1, "0")
    whole, frac = digits[:-d], digits[-d:]
    if written:
        frac = frac.ljust(written, "0")
    elif style != "fixed":
        frac = frac.rstrip("0")
        if not frac and style == "trim1":
            frac = "0"
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def _number_style(texts: list[str], exponent: int) -> str:
    plain = [t for t in texts if "e" not in t.lower()]
    if not plain:
        return "trim"
    widths = {len(t.partition(".")[2]) if "." in t else 0 for t in plain}
    if len(widths) == 1 and (width := widths.pop()) > 0:  # every value with the same decimals
        return "fixed" if width == -exponent else f"fixed:{width}" if width > -exponent else "trim1"
    if all("." in t for t in plain):
        return "trim1"
    return "trim"


def plan_bins(units: np.ndarray, max_bins: int) -> tuple[list[int], list[int]]:
    """Quantile bins over the unit counts: (lows, highs), bin b = [lows[b], highs[b]], each bounded by
    values that occur. With at most max_bins distinct values each is a bin; otherwise the smallest
    and largest values are bins of their own, the other bins take about an equal share of the rows,
    and a value holding at least a share (a point mass: 90 % zeros) is a bin of its own, the remaining
    bins sharing the rest, so it does not swallow its neighbours."""
    values, counts = np.unique(units, return_counts=True)
    if len(values) <= max_bins:
        return values.tolist(), values.tolist()
    # the smallest and the largest value are bins of their own: the model then learns them as outcomes
    # (and samples the range's ends about as often as the data has them)
    lows, highs = [int(values[0])], [int(values[0])]
    values, counts, last = values[1:-1], counts[1:-1], int(values[-1])
    remaining, bins_left, i = int(counts.sum()), max_bins - 2, 0
    while i < len(values):
        target = remaining / bins_left if bins_left > 1 else math.inf
        start, taken = i, 0
        while i < len(values):
            if taken and counts[i] >= target:  # a point mass starts a bin of its own
                break
            taken += int(counts[i])
            i += 1
            if taken >= target:
                break
        lows.append(int(values[start]))
        highs.append(int(values[i - 1]))
        remaining -= taken
        bins_left = max(1, bins_left - 1)
    return lows + [last], highs + [last]


def _number_codec(
    column: ColumnSchema, values: list[str], max_bins: int, dp: Any | None, bounds: tuple[float, float] | None = None
) -> NumberCodec:
    missing = [m for m in column.missing if m in set(values)]
    present = [v for v in values if not is_missing(column, v)]
    if bounds is not None and dp is None:  # values outside the bounds as the bound itself
        texts = (_bound_text(bounds[0], column.kind), _bound_text(bounds[1], column.kind))
        present = [v if bounds[0] <= (x := float(v)) <= bounds[1] else texts[x > bounds[1]] for v in present]
    if not present and dp is None:  # all missing: the markers alone
        return NumberCodec(column.name, missing or [""], 0, 0, [], [], [], "trim", [])
    if dp is not None:
        summary = dp.number_summary(column, values, max_bins, bounds)
        missing, decimals = summary.missing, summary.decimals
        span = summary.high - summary.low
        exponent = -decimals if span <= 0 else max(-decimals, math.floor(math.log10(span)) - UNIT_DIGITS)
        origin = _to_units(repr(summary.low), exponent)
        top = _to_units(repr(summary.high), exponent) - origin
        lows = sorted({0} | {min(max(_to_units(repr(q), exponent) - origin, 0), top) for q in summary.quantiles})
        if summary.zero and 0 <= -origin < top:  # 0 as a bin of its own (calm wind: 0, not 0.0000002)
            lows = sorted(set(lows) | {-origin, -origin + 1})
        highs = [nxt - 1 for nxt in lows[1:]] + [top]
        texts: list[str | None] = [None] * len(lows)
        style = "fixed" if decimals > 0 else "trim"
    else:
        decimals = max(decimals_needed(v) for v in set(present))
        floats = np.array([float(v) for v in present])
        lo_val, hi_val = float(floats.min()), float(floats.max())
        span = hi_val - lo_val
        exponent = -decimals
        if span > 0:
            exponent = max(exponent, math.floor(math.log10(span)) - UNIT_DIGITS)
        units = np.array([_to_units(v, exponent) for v in present], dtype=np.int64)
        origin = int(units.min())
        lows, highs = plan_bins(units - origin, max_bins)
        # a bin of one value writes that value as the data did (its most common spelling)
        spelled: dict[int, Counter] = {}
        single = {lo for lo, hi in zip(lows, highs) if lo == hi}
        for v, k in zip(present, (units - origin).tolist()):
            if k in single:
                spelled.setdefault(k, Counter())[v.strip()] += 1
        texts = [
            spelled[lo].most_common(1)[0][0] if lo == hi and lo in spelled else None for lo, hi in zip(lows, highs)
        ]
        style = _number_style(present, exponent)
    widest = max(hi - lo + 1 for lo, hi in zip(lows, highs))
    offset_sizes: list[int] = []
    if widest > 1:
        slots = min(MAX_OFFSET_SLOTS, math.ceil(math.log(widest, BASE) - 1e-9))
        cells = min(widest, BASE**slots)
        offset_sizes = [min(BASE, -(-cells // BASE ** (slots - 1 - i))) if i == 0 else BASE for i in range(slots)]
    private, bounded = dp is not None, bounds is not None
    return NumberCodec(
        column.name, missing, exponent, origin, lows, highs, texts, style, offset_sizes, private, bounded
    )


def _bound_text(bound: float, kind: str) -> str:
    return str(int(bound)) if kind == "integer" else repr(float(bound))


# --------------------------------------------------------------------------- dates


COMPONENTS = ("year", "month", "day", "hour", "minute", "second", "millisecond", "microsecond")


@dataclass
class DateCodec:
    """One slot per varying component; the first slot also holds the missing markers."""

    name: str
    kind_of: str  # date | datetime
    format: str  # a DATE_FORMATS entry (ISO: datetime.fromisoformat)
    missing: list[str]
    components: list[str]  # the varying ones, in COMPONENTS order
    lows: list[int]  # each varying component's smallest value
    highs: list[int]
    constants: dict[str, int]  # the components that never vary
    padded: bool  # strptime formats: zero-padded month/day/hour/... (as the data wrote them)
    iso_sep: str = "T"
    iso_timespec: str = "seconds"
    tz_suffixes: list[str] = field(default_factory=list)  # ISO: the zone suffixes ('' naive), one slot if several
    clip: bool = False  # differentially private ranges: a value outside them is clipped, not refused
    first: list[int] | None = None  # the smallest and largest value's components (COMPONENTS order): the
    last: list[int] | None = None  # range a decoded value is kept within (None under DP)
    kind: str = "date"

    @property
    def sizes(self) -> list[int]:
        sizes = [hi - lo + 1 for lo, hi in zip(self.lows, self.highs)]
        if sizes:
            sizes[0] += len(self.missing)
        else:
            sizes = [len(self.missing) + 1] if self.missing else []
        if len(self.tz_suffixes) > 1:
            sizes.append(len(self.tz_suffixes))
        return sizes

    def __post_init__(self) -> None:
        self._missing_index = {m: i for i, m in enumerate(self.missing)}
        self._fmt = DATE_PARSERS[self.format]
        self._cache: dict[tuple[int, ...], str] = {}

    def _parts(self, value: date | datetime) -> dict[str, int]:
        parts = {"year": value.year, "month": value.month, "day": value.day}
        if isinstance(value, datetime):
            parts |= {
                "hour": value.hour,
                "minute": value.minute,
                "second": value.second,
                "millisecond": value.microsecond // 1000,
                "microsecond": value.microsecond % 1000,
            }
        return parts

    def encode(self, text: str) -> list[int]:
        n_slots = len(self.sizes)
        if text in self._missing_index:
            return [self._missing_index[text]] + [0] * (n_slots - 1)
        try:
            value = self._fmt.parse(text.strip())  # ValueError for a text that is not such a date
        except ValueError:
            if not (self.clip and self.missing):
                raise
            return [0] * n_slots  # a private vocabulary without this marker: the first one
        parts = self._parts(value)
        if self.clip:
            parts = {**parts, **self.constants}
        out = []
        for i, (name, lo, hi) in enumerate(zip(self.components, self.lows, self.highs)):
            v = min(max(parts[name], lo), hi) if self.clip else parts[name]
            if not lo <= v <= hi:
                raise ValueError(f"{self.name}: {text!r} has {name} {v}, outside the training range [{lo}, {hi}]")
            out.append(v - lo + (len(self.missing) if i == 0 else 0))
        if not self.components and self.missing:
            out.append(len(self.missing))  # the one non-missing value
        for name, v in self.constants.items():
            if parts.get(name, 0) != v:
                raise ValueError(f"{self.name}: {text!r} has {name} {parts.get(name)}, always {v} in training")
        if len(self.tz_suffixes) > 1:
            suffix = _tz_suffix(text.strip(), self.iso_sep)
            if suffix not in self.tz_suffixes:
                if not self.clip:
                    raise ValueError(f"{self.name}: {text!r} has a time zone never seen in training")
                suffix = self.tz_suffixes[0]
            out.append(self.tz_suffixes.index(suffix))
        return out

    def decode(self, local: np.ndarray, rng: np.random.Generator) -> list[str]:
        out = []
        cache = self._cache
        for row in map(tuple, local.tolist()):
            text = cache.get(row)
            if text is None:
                text = self._decode_one(row)
                if len(cache) < CACHE_LIMIT:
                    cache[row] = text
            out.append(text)
        return out

    def _decode_one(self, row: tuple[int, ...]) -> str:
        n_missing = len(self.missing)
        if n_missing and row and row[0] < n_missing:
            return self.missing[row[0]]
        parts = dict(self.constants)
        for i, (name, lo) in enumerate(zip(self.components, self.lows)):
            parts[name] = row[i] - (n_missing if i == 0 else 0) + lo
        parts["day"] = min(parts.get("day", 1), calendar.monthrange(parts["year"], parts["month"])[1])
        if self.first is not None:  # components each in range can still combine to a value outside it
            key = [parts.get(c, 0) for c in COMPONENTS]
            bound = self.first if key < self.first else self.last if key > self.last else None
            if bound is not None:
                parts |= dict(zip(COMPONENTS, bound))
        suffix = ""
        if self.tz_suffixes:
            suffix = self.tz_suffixes[row[-1]] if len(self.tz_suffixes) > 1 else self.tz_suffixes[0]
        return self._render(parts, suffix)

    def _render(self, p: dict[str, int], tz: str) -> str:
        if self.format == ISO:
            micro = p.get("millisecond", 0) * 1000 + p.get("microsecond", 0)
            if self.kind_of == "date":
                return date(p["year"], p["month"], p["day"]).isoformat()
            value = datetime(p["year"], p["month"], p["day"], p.get("hour", 0), p.get("minute", 0), p.get("second", 0))
            return _iso_text(value.replace(microsecond=micro), self.iso_sep, self.iso_timespec, tz)
        return _strftime(self.format, p, self.padded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "kind_of": self.kind_of,
            "format": self.format,
            "missing": self.missing,
            "components": self.components,
            "lows": self.lows,
            "highs": self.highs,
            "constants": self.constants,
            "padded": self.padded,
            "iso_sep": self.iso_sep,
            "iso_timespec": self.iso_timespec,
            "tz_suffixes": self.tz_suffixes,
            "clip": self.clip,
            "first": self.first,
            "last": self.last,
        }


_DIRECTIVES = {"Y": "year", "m": "month", "d": "day", "H": "hour", "M": "minute", "S": "second"}


def _strftime(fmt: str, p: dict[str, int], padded: bool) -> str:
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%":
            d = fmt[i + 1]
            v = p.get(_DIRECTIVES[d], 0)
            out.append(f"{v:04d}" if d == "Y" else (f"{v:02d}" if padded else str(v)))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


def _iso_text(value: datetime, sep: str, timespec: str, suffix: str) -> str:
    return value.replace(tzinfo=None).isoformat(sep, timespec) + suffix


def _tz_suffix(text: str, sep: str) -> str:
    """The time zone part of an ISO text ('' when naive): 'Z' or the '+HH:MM' after the time."""
    if text.endswith("Z"):
        return "Z"
    time_part = text.split(sep, 1)[1] if sep in text[10:11] else text[10:]
    for mark in ("+", "-"):
        if mark in time_part:
            return mark + time_part.split(mark, 1)[1]
    return ""


CALENDAR = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}


def _private_date_codec(column: ColumnSchema, values: list[str], dp) -> DateCodec:
    """Under DP: the years from a noisy histogram, every other component its whole calendar range."""
    fmt = column.format or ISO
    parser = DATE_PARSERS[fmt]
    years = []
    for v in values:
        try:
            years.append(None if is_missing(column, v) else parser.parse(v.strip()).year)
        except ValueError:
            years.append(None)
    missing, first, last = dp.date_summary(column, values, years)
    names = ["year", "month", "day"]
    if column.kind == "datetime":
        names += [n for n, d in (("hour", "%H"), ("minute", "%M"), ("second", "%S")) if fmt == ISO or d in fmt]
    ranges = {"year": (first, last), **CALENDAR}
    codec = DateCodec(column.name, column.kind, fmt, missing, [], [], [], {}, True, clip=True)
    for name in names:
        lo, hi = ranges[name]
        if lo == hi:
            codec.constants[name] = lo
        else:
            codec.components += [name]
            codec.lows += [lo]
            codec.highs += [hi]
    if fmt == ISO:
        codec.iso_sep, codec.iso_timespec = "T", "seconds"
        suffixes = Counter(_tz_suffix(v.strip(), "T" if "T" in v else " ") for v in values if not is_missing(column, v))
        kept = dp.frequent_values(suffixes, 1, f"{column.name}: time zones")
        codec.tz_suffixes = kept if kept != [""] else []
    codec.__post_init__()
    return codec


def _date_codec(column: ColumnSchema, values: list[str], dp=None) -> DateCodec:
    if dp is not None:
        return _private_date_codec(column, values, dp)
    fmt = column.format or ISO
    parser = DATE_PARSERS[fmt]
    missing = [m for m in column.missing if m in set(values)]
    present = sorted({v.strip() for v in values if not is_missing(column, v)})
    parsed = [parser.parse(v) for v in present]
    codec = DateCodec(column.name, column.kind, fmt, missing, [], [], [], {}, True)
    if not parsed:
        return codec
    parts = [codec._parts(v) for v in parsed]
    names = [c for c in COMPONENTS if c in parts[0]]
    keys = [[p.get(c, 0) for c in COMPONENTS] for p in parts]
    codec.first, codec.last = min(keys), max(keys)
    for name in names:
        seen = [p[name] for p in parts]
        lo, hi = min(seen), max(seen)
        if lo == hi:
            codec.constants[name] = lo
        else:
            codec.components.append(name)
            codec.lows.append(lo)
            codec.highs.append(hi)
    if fmt == ISO:
        sample = present[0]
        codec.iso_sep = sample[10] if len(sample) > 10 and sample[10] in "T " else "T"
        suffixes = [_tz_suffix(v, codec.iso_sep) for v in present]
        codec.tz_suffixes = sorted(set(suffixes)) if set(suffixes) != {""} else []
        for spec in ("minutes", "seconds", "milliseconds", "microseconds"):  # the one the data was written with
            codec.iso_timespec = spec
            if all(_iso_text(v, codec.iso_sep, spec, s) == t for v, s, t in zip(parsed, suffixes, present)):
                break
    else:
        codec.padded = not any(_unpadded(v) for v in present)
    codec.__post_init__()
    return codec


def _unpadded(text: str) -> bool:
    """Whether a date text writes a one-digit number without its leading zero (1/5/2023)."""
    import re

    return bool(re.search(r"(?<![0-9])[1-9](?![0-9])", text))


# --------------------------------------------------------------------------- text


@dataclass
class TextCodec:
    """`length` slots (the longest training value's pieces) of the column's own pieces, closed by
    <end-of-field> (local id 0) unless they fill every slot; the slots after it are filler (PAD in,
    no target), so no value comes out longer than the longest one in training."""

    name: str
    length: int  # slots: the longest training value's pieces + 1
    pieces: list[str] | None = None  # char pieces (no sentencepiece model)
    model_proto: bytes | None = None  # a per-column sentencepiece BPE model
    kind: str = "text"

    def __post_init__(self) -> None:
        self._sp = None
        if self.model_proto is not None:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
            self._n = self._sp.get_piece_size() - FIRST_ID  # its specials (pad, eos, unk) are not used
        else:
            self._char = {c: i + 1 for i, c in enumerate(self.pieces or [])}
            self._n = len(self.pieces or [])

    @property
    def vocab(self) -> int:
        return self._n + 1  # + <end-of-field>

    @property
    def sizes(self) -> list[int]:
        return [self.vocab] * self.length

    def pieces_of(self, value: str) -> list[int]:
        """Local ids (1..) of the value's pieces, without the end."""
        if self._sp is not None:
            ids = self._sp.encode(value)
            if any(i < FIRST_ID for i in ids):
                raise ValueError(f"{self.name}: {value!r} holds characters never seen in this column")
            return [i - FIRST_ID + 1 for i in ids]
        try:
            return [self._char[c] for c in value]
        except KeyError as exc:
            raise ValueError(f"{self.name}: {value!r} holds {exc.args[0]!r}, never seen in this column") from None

    def encode(self, value: str) -> list[int]:
        ids = self.pieces_of(value)
        if len(ids) > self.length:
            raise ValueError(f"{self.name}: {value!r} is longer than any value in training ({self.length} pieces)")
        if len(ids) < self.length:  # a value as long as the longest ends with the slots, without the end token
            ids.append(0)
        return ids + [-1] * (self.length - len(ids))  # -1: filler

    def decode(self, local: np.ndarray, rng: np.random.Generator) -> list[str]:
        out = []
        for row in local.tolist():
            end = row.index(0) if 0 in row else len(row)
            ids = [i for i in row[:end] if i > 0]
            if self._sp is not None:
                out.append(self._sp.decode([i - 1 + FIRST_ID for i in ids]))
            else:
                out.append("".join(self.pieces[i - 1] for i in ids))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "length": self.length,
            "pieces": self.pieces,
            "model": base64.b64encode(self.model_proto).decode("ascii") if self.model_proto is not None else None,
        }


def _text_codec(column: ColumnSchema, values: list[str], cfg: TokenizerConfig, seed: int) -> TextCodec:
    distinct = sorted(set(values))
    chars = sorted(set().union(*map(set, distinct))) if distinct else []
    proto = None
    longest_chars = max((len(v) for v in distinct), default=0)
    if longest_chars > 8 and len(distinct) >= 20:  # subwords pay off on longer values
        proto = _train_sentencepiece(distinct, cfg, seed, column.name)
    codec = TextCodec(column.name, 1, pieces=None if proto else chars, model_proto=proto)
    codec.length = max((len(codec.pieces_of(v)) for v in distinct), default=0)
    return codec


def _train_sentencepiece(values: list[str], cfg: TokenizerConfig, seed: int, name: str) -> bytes | None:
    import sentencepiece as spm

    sample = (
        values
        if len(values) <= cfg.max_training_records
        else random.Random(seed).sample(values, cfg.max_training_records)
    )
    chars = len(set().union(*map(set, sample)))
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=proto,
            vocab_size=max(chars + FIRST_ID + 1, min(cfg.vocab_size, 8 * chars, 4 * len(sample))),
            model_type="bpe",
            character_coverage=1.0,
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            eos_id=EOR_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=False,
            max_sentence_length=max(4192, max(len(t.encode()) for t in sample) + 1),
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError:
        return None  # too little text for subwords: characters
    return proto.getvalue()


# --------------------------------------------------------------------------- patterned text


PART = re.compile(r"[0-9]+|[^\W\d_]+|.", re.S)  # a text's parts: digit runs, letter runs, any other character
LETTER = re.compile(r"[^\W\d_]")
MAX_DIGITS = 15  # a longer digit run (a card number) is a code: as a number its units would not fit int64
CASES = {"same": lambda t: t, "lower": str.lower, "upper": str.upper}


def _parts(text: str) -> list[str]:
    return PART.findall(text)


def _shape(parts: list[str]) -> tuple[str, ...]:
    """A text's shape: 'D' for a digit run, 'W' for a letter run, other characters as themselves."""
    return tuple("D" if "0" <= p[0] <= "9" else "W" if LETTER.match(p) else p for p in parts)  # (not isdigit: "²")


@dataclass
class DigitsCodec:
    """A code of fixed width (a ZIP code, a zero-padded id): one slot per digit position, over the
    digits seen at that position (a position that never varies is left out of the row). A code's
    digits are a hierarchy (a ZIP code's first three say the region), not a quantity: the model
    learns them position by position, as the data has them."""

    name: str
    digits: list[str]  # per position, the digits seen there, ascending ("0123456789", "0", ...)
    kind: str = "digits"

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.digits]

    def encode(self, text: str) -> list[int]:
        if len(text) != len(self.digits):
            raise ValueError(f"{self.name}: {text!r} is not {len(self.digits)} digits")
        out = []
        for ch, seen in zip(text, self.digits):
            i = seen.find(ch)
            if i < 0:
                raise ValueError(f"{self.name}: {text!r}: digit {ch!r} never seen at its position")
            out.append(i)
        return out

    def decode(self, local: np.ndarray, rng: np.random.Generator) -> list[str]:
        columns = [np.array(list(seen))[np.clip(local[:, i], 0, len(seen) - 1)] for i, seen in enumerate(self.digits)]
        return ["".join(row) for row in zip(*columns)] if columns else [""] * len(local)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "digits": self.digits}


@dataclass
class PatternCodec:
    """A text column whose every value has one shape (`C-000294`, `2366 Pine Blvd`,
    `james.davis2@gmail.com`, a ZIP code `02184`): each varying part has a codec of its own, a
    zero-padded digit run a code (digit by digit), another digit run a number, a letter run a
    category, and a part that always equals another column's value (in the same case, lower or upper
    case) is not sampled but copied from that column when the row is decoded. Parts that never vary
    are literals. So a sampled value always has the column's shape, and an e-mail address always
    holds the row's names.

    `parts[i]`: {"literal": text} | {"codec": j, "digits": bool} | {"copy": column, "case": name};
    `codecs[j]` a DigitsCodec (a zero-padded digit run), NumberCodec (another digit run) or
    CategoryCodec (a letter run); `missing`: the empty value, sampled by a first slot
    (empty or not) where training had empty values."""

    name: str
    parts: list[dict[str, Any]]
    codecs: list[Any]
    missing: list[str] = field(default_factory=list)
    kind: str = "pattern"

    def __post_init__(self) -> None:
        self._widths = [len(c.sizes) for c in self.codecs]

    @property
    def copies(self) -> list[int]:
        """The columns this one copies parts of (decoded before it)."""
        return [p["copy"] for p in self.parts if "copy" in p]

    @property
    def sizes(self) -> list[int]:
        head = [len(self.missing) + 1] if self.missing else []
        return head + [n for c in self.codecs for n in c.sizes]

    def _split(self, value: str) -> list[str]:
        parts = _parts(value)
        if len(parts) == len(self.parts) and all(
            text == spec["literal"] if "literal" in spec else kind == ("D" if spec.get("digits") else "W")
            for spec, text, kind in zip(self.parts, parts, _shape(parts))
        ):
            return parts
        raise ValueError(f"{self.name}: {value!r} does not have the column's shape")

    def encode(self, value: str) -> list[int]:
        if value in self.missing:
            return [self.missing.index(value)] + [0] * (len(self.sizes) - 1)
        parts = self._split(value)
        out = [len(self.missing)] if self.missing else []
        for p, text in zip(self.parts, parts):
            if "codec" in p:
                codec = self.codecs[p["codec"]]
                out.extend(codec.encode(str(int(text)) if codec.kind == "number" else text))
        return out

    def decode(
        self, local: np.ndarray, rng: np.random.Generator, row_values: list[list[str] | None] | None = None
    ) -> list[str]:
        n = len(local)
        start = 1 if self.missing else 0
        decoded, at = [], start
        for codec, w in zip(self.codecs, self._widths):
            decoded.append(codec.decode(local[:, at : at + w], rng))
            at += w
        pieces: list[list[str]] = []
        for p in self.parts:
            if "literal" in p:
                pieces.append([p["literal"]] * n)
            elif "codec" in p:
                pieces.append(decoded[p["codec"]])
            else:
                source = row_values[p["copy"]] if row_values is not None else None
                if source is None:
                    raise ValueError(f"{self.name}: copies column {p['copy']}, which was not decoded")
                case = CASES[p["case"]]
                pieces.append([case(v) for v in source])
        out = ["".join(row) for row in zip(*pieces)] if pieces else [""] * n
        if self.missing:
            for i in np.flatnonzero(local[:, 0] < len(self.missing)).tolist():
                out[i] = self.missing[int(local[i, 0])]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "parts": self.parts,
            "codecs": [c.to_dict() for c in self.codecs],
            "missing": self.missing,
        }


def _pattern_codec(column: ColumnSchema, values: list[str], threshold: int, max_bins: int) -> PatternCodec | None:
    """A PatternCodec when every non-empty value has one shape of several parts (or is one digit run
    zero-padded to a fixed width), every digit run is a code or a number and every varying letter run's
    frequent values cover most rows; else None (the column stays text). Copies are found later
    (`_find_copies`), when every column's values are at hand."""
    missing = [""] if "" in values else []
    present = [v for v in values if v != ""]
    if not present:
        return None
    split = [_parts(v) for v in present]
    shape = _shape(split[0])
    if not shape or any(_shape(p) != shape for p in split):
        return None
    columns = list(zip(*split))
    parts: list[dict[str, Any]] = []
    codecs: list[Any] = []
    for i, (kind, texts) in enumerate(zip(shape, columns)):
        distinct = set(texts)
        if len(distinct) == 1 or kind not in ("D", "W"):
            if len(distinct) != 1:  # another character that varies: not one shape
                return None
            parts.append({"literal": texts[0]})
            continue
        part_name = f"{column.name}[{i}]"
        if kind == "D":
            widths = {len(t) for t in distinct}
            padded = any(len(t) > 1 and t[0] == "0" for t in distinct) or min(widths) > MAX_DIGITS
            if padded and len(widths) > 1:  # "007" beside "12": neither a code nor a number
                return None
            if padded:  # a code: its digits position by position
                codec = DigitsCodec(part_name, ["".join(sorted({t[k] for t in distinct})) for k in range(widths.pop())])
            else:  # a quantity (a house number, a counter): the number codec's bins and offsets
                codec = _number_codec(ColumnSchema(part_name, "integer"), [str(int(t)) for t in texts], max_bins, None)
            parts.append({"codec": len(codecs), "digits": True})
        else:
            counts = Counter(texts)
            if sum(c for c in counts.values() if c >= threshold) < TEXT_COVERAGE * len(texts):
                return None  # a free-text word (a surname in an address): subwords do it better
            codec = _category_codec(ColumnSchema(part_name, "categorical"), list(texts), threshold, None)
            parts.append({"codec": len(codecs)})
        codecs.append(codec)
    if not codecs:
        return None
    if len(shape) == 1 and codecs[0].kind != "digits":
        return None  # one plain number or word: not a pattern (the schema would have said integer)
    return PatternCodec(column.name, parts, codecs, missing)


def _find_copies(codec: PatternCodec, values, table, sources: list[int]) -> PatternCodec:
    """The codec with each letter part that equals another column's value in every training row
    (same case, lower or upper) made a copy of that column: it is then exact, not learnt. values:
    the column's training values; table[c]: column c's (sequences of str)."""
    rows = [i for i, v in enumerate(values) if v not in codec.missing]
    if not rows:
        return codec
    split = [_parts(values[i]) for i in rows]
    parts, codecs, changed = [], [], False
    for i, p in enumerate(codec.parts):
        if "codec" not in p or p.get("digits"):
            if "codec" in p:
                parts.append({**p, "codec": len(codecs)})
                codecs.append(codec.codecs[p["codec"]])
            else:
                parts.append(p)
            continue
        texts = [s[i] for s in split]
        found = None
        for c in sources:
            source = table[c]
            for case, fn in CASES.items():
                if all(fn(source[r]) == t for r, t in zip(rows, texts)):
                    found = {"copy": c, "case": case}
                    break
            if found:
                break
        if found:
            parts.append(found)
            changed = True
        else:
            parts.append({**p, "codec": len(codecs)})
            codecs.append(codec.codecs[p["codec"]])
    if not changed:
        return codec
    return PatternCodec(codec.name, parts, codecs, codec.missing)


# --------------------------------------------------------------------------- the tokenizer

Codec = Any  # CategoryCodec | NumberCodec | DateCodec | TextCodec | PatternCodec


@dataclass
class Slot:
    column: int  # the column's index in the model's order
    base: int  # the token id of the slot's local id 0
    size: int  # local ids 0..size-1
    part: int  # which of the column's kept slots (0, 1, ...)


class FieldTokenizer:
    """Each column's values from its own vocabulary; a row is a fixed sequence of slots."""

    kind = "fields"

    def __init__(self, columns: list[str], codecs: list[Codec], notes: list[str] | None = None):
        self.columns = list(columns)
        self.codecs = codecs
        self.notes = list(notes or [])
        self.slots: list[Slot] = []
        self._kept: list[list[int]] = []  # per column: which of its codec's local slots are kept (size > 1)
        next_id = FIRST_ID
        for c, codec in enumerate(codecs):
            kept = [i for i, s in enumerate(codec.sizes) if s > 1]
            self._kept.append(kept)
            if isinstance(codec, TextCodec):  # all its slots share one range
                base = next_id
                next_id += codec.vocab
                for part in range(len(kept)):
                    self.slots.append(Slot(c, base, codec.vocab, part))
                continue
            for part, i in enumerate(kept):
                size = codec.sizes[i]
                self.slots.append(Slot(c, next_id, size, part))
                next_id += size
        self._vocab_size = next_id
        self.column_slots: list[list[int]] = [[] for _ in codecs]  # slot indices of each column
        for s, slot in enumerate(self.slots):
            self.column_slots[slot.column].append(s)

    # -- sizes
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    def allowed_mask(self) -> torch.Tensor:
        """(S + 1, V) bool: the tokens slot s may hold; the last row (after the row) only <eor>."""
        mask = torch.zeros(self.num_slots + 1, self.vocab_size, dtype=torch.bool)
        for s, slot in enumerate(self.slots):
            mask[s, slot.base : slot.base + slot.size] = True
        mask[self.num_slots, EOR_ID] = True
        return mask

    def slot_column(self) -> np.ndarray:
        return np.array([slot.column for slot in self.slots], dtype=np.int64)

    # -- rows <-> ids
    def encode_fields(self, fields: list[str]) -> list[int]:
        """One row's token ids, S of them (PAD for text filler); ValueError for a value the
        vocabularies cannot hold."""
        if len(fields) != len(self.codecs):
            raise ValueError(f"{len(fields)} field(s), expected {len(self.codecs)}")
        out = []
        for c, (codec, value) in enumerate(zip(self.codecs, fields)):
            out.extend(self._column_ids(c, codec.encode(value)))
        return out

    def _column_ids(self, c: int, local: list[int]) -> list[int]:
        slots = self.column_slots[c]
        ids = []
        for s, i in zip(slots, self._kept[c]):
            v = local[i]
            ids.append(PAD_ID if v < 0 else self.slots[s].base + v)
        return ids

    def encode_column(self, c: int, value: str) -> list[int]:
        """The token ids of one column's value (for seed fields); ValueError if it cannot be held."""
        return self._column_ids(c, self.codecs[c].encode(value))

    def encode_rows(self, rows: list[list[str]]) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """(N, S) ids of the rows that fit, and (row index, why) for each row that does not."""
        out = np.zeros((len(rows), self.num_slots), dtype=np.int64)
        bad: list[tuple[int, str]] = []
        keep = np.ones(len(rows), dtype=bool)
        for c, codec in enumerate(self.codecs):
            slots = self.column_slots[c]
            if not slots:
                continue
            bases = np.array([self.slots[s].base for s in slots], dtype=np.int64)
            kept = self._kept[c]
            cache: dict[str, list[int] | str] = {}  # value -> its local ids, or why it cannot be held
            for r, row in enumerate(rows):
                if not keep[r]:
                    continue
                local = cache.get(row[c])
                if local is None:
                    try:
                        full = codec.encode(row[c])
                        local = cache[row[c]] = [full[i] for i in kept]
                    except ValueError as exc:
                        local = cache[row[c]] = str(exc)
                if isinstance(local, str):
                    keep[r] = False
                    bad.append((r, local))
                    continue
                out[r, slots] = local
            region = out[:, slots]
            filler = region < 0
            region = region + bases
            region[filler] = PAD_ID
            out[:, slots] = region
        bad.sort()
        return out[keep], bad

    def decode_rows(
        self, ids: np.ndarray, rng: np.random.Generator, slot_order: np.ndarray | None = None
    ) -> list[list[str]]:
        """Rows of field strings from (N, S) ids in slot order (or in `slot_order`: the slot each
        column of `ids` holds)."""
        if slot_order is not None:
            canonical = np.zeros_like(ids)
            canonical[:, slot_order] = ids
            ids = canonical
        n = len(ids)
        columns: list[list[str] | None] = [None] * len(self.codecs)
        copying = [c for c, codec in enumerate(self.codecs) if codec.kind == "pattern" and codec.copies]
        for c in [c for c in range(len(self.codecs)) if c not in copying] + copying:  # copied columns first
            codec = self.codecs[c]
            local = np.zeros((n, len(codec.sizes)), dtype=np.int64)
            for s, i in zip(self.column_slots[c], self._kept[c]):
                raw = ids[:, s]
                v = raw - self.slots[s].base
                local[:, i] = np.where(raw == PAD_ID, -1, v)
            columns[c] = codec.decode(local, rng, columns) if c in copying else codec.decode(local, rng)
        return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(n)]

    # -- files
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": FORMAT_VERSION,
            "columns": self.columns,
            "codecs": [codec.to_dict() for codec in self.codecs],
            "notes": self.notes,
        }

    def save(self, directory: Path) -> None:
        (Path(directory) / TOKENIZER_JSON).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "FieldTokenizer":
        if d.get("version") != FORMAT_VERSION:
            raise ModelDirError(f"{where}: unsupported field tokenizer version {d.get('version')!r}")
        try:
            codecs = [_codec_from_dict(c) for c in d["codecs"]]
            return cls(list(d["columns"]), codecs, d.get("notes"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{where}: corrupted field tokenizer ({type(exc).__name__}: {exc})") from None

    # -- training
    @classmethod
    def train(
        cls,
        schema: Schema,
        rows: list[list[str]],
        cfg: TokenizerConfig,
        seed: int = 0,
        dp: Any | None = None,
        bounds: dict[str, tuple[float, float]] | None = None,
    ) -> "FieldTokenizer":
        """Each column's codec from its values (under DP, from `dp`'s private statistics). `bounds`:
        number column -> (low, high) its values keep to (data.column_bounds)."""
        bounds = check_bounds(schema, bounds or {})
        codecs, notes = [], []
        cols = list(zip(*rows)) if rows else [() for _ in schema.columns]
        if dp is not None:  # every number column's private range first (integer ends share one reserve)
            dp.survey(schema, cols, bounds)
        for column, values in zip(schema.columns, cols):
            values = list(values)
            codecs.append(_column_codec(column, values, cfg, seed, dp, notes, bounds.get(column.name)))
        sources = [c for c, codec in enumerate(codecs) if codec.kind in ("category", "text")]
        for c, codec in enumerate(codecs):  # parts that copy another column's value
            if codec.kind == "pattern":
                codecs[c] = _find_copies(codec, cols[c], cols, [s for s in sources if s != c])
        if not any(codec.sizes and max(codec.sizes) > 1 for codec in codecs):
            raise TokenizerError("every column holds a single value: there is nothing to learn")
        return cls(schema.names, codecs, notes)


IGNORE_INDEX = -100  # as data.IGNORE_INDEX: targets cross_entropy skips


def field_batch(
    tokenizer: FieldTokenizer, ids: np.ndarray, leading: int = 0, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, positions), each (B, S + 1), from (B, S) rows of slot ids: inputs
    [<eor>] + row, targets row + [<eor>] (text filler: no target), positions the slot each step
    predicts. With `rng`, each row's columns come in a random order (the first `leading` columns
    first, in their order; a column's own slots stay together and in order)."""
    b, s = ids.shape
    if rng is None:
        order = np.tile(np.arange(s), (b, 1))
        rows = ids
    else:
        keys = rng.random((b, len(tokenizer.codecs)))
        keys[:, :leading] = np.arange(leading) - leading  # below every random key, in order
        order = np.argsort(keys[:, tokenizer.slot_column()], axis=1, kind="stable")  # (B, S)
        rows = np.take_along_axis(ids, order, axis=1)
    rows = torch.from_numpy(np.ascontiguousarray(rows))
    start = torch.full((b, 1), EOR_ID, dtype=torch.long)
    inputs = torch.cat([start, rows], dim=1)
    targets = torch.cat([rows.masked_fill(rows == PAD_ID, IGNORE_INDEX), start], dim=1)
    positions = torch.cat([torch.from_numpy(np.ascontiguousarray(order)), torch.full((b, 1), s)], dim=1)
    return inputs, targets, positions


def check_bounds(schema: Schema, bounds: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """data.column_bounds checked against the columns: each names a number column (DataError otherwise);
    an integer column's bounds rounded inward to whole numbers."""
    kinds = {c.name: c.kind for c in schema.columns}
    out = {}
    for name, (low, high) in bounds.items():
        if name not in kinds:
            close = difflib.get_close_matches(name, list(kinds), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the columns are {', '.join(map(repr, kinds))}"
            raise DataError(f"data.column_bounds names unknown column {name!r}{hint}")
        if kinds[name] not in ("integer", "float"):
            raise DataError(
                f"data.column_bounds: column {name!r} is {kinds[name]}; bounds apply to integer and float columns"
            )
        if kinds[name] == "integer":
            low, high = math.ceil(low), math.floor(high)
            if low > high:
                raise DataError(f"data.column_bounds: column {name!r} is integer and [{low}, {high}] holds none")
        out[name] = (low, high)
    return out


def _column_codec(
    column: ColumnSchema, values: list[str], cfg: TokenizerConfig, seed: int, dp, notes, bounds=None
) -> Codec:
    threshold = cfg.rare_category_threshold
    if column.kind in ("integer", "float"):
        return _number_codec(column, values, cfg.numeric_bins, dp, bounds)
    if column.kind in ("date", "datetime"):
        return _date_codec(column, values, dp)
    if column.kind == "categorical":
        return _category_codec(column, values, threshold, dp)
    # text: categories when the frequent values cover most rows (names, cities), else subwords
    counts = Counter(values)
    covered = sum(n for n in counts.values() if n >= threshold)
    if dp is None and covered >= TEXT_COVERAGE * len(values):
        notes.append(f"{column.name}: text encoded as categories (its frequent values cover most rows)")
        return _category_codec(column, values, threshold, None)
    if dp is not None:
        raise TokenizerError(
            f"column {column.name!r} is free text; its subword vocabulary cannot be learnt with differential "
            f"privacy yet: drop the column or give it data.column_types: {{{column.name}: categorical}}"
        )
    pattern = _pattern_codec(column, values, threshold, cfg.numeric_bins)
    if pattern is not None:
        notes.append(f"{column.name}: text of one shape, each varying part its own field")
        return pattern
    return _text_codec(column, values, cfg, seed)


def _codec_from_dict(d: dict[str, Any]) -> Codec:
    kind = d["kind"]
    if kind == "category":
        return CategoryCodec(
            d["name"],
            list(d["missing"]),
            list(d["categories"]),
            list(d["rare"]),
            list(d["rare_counts"]),
            bool(d["has_rare"]),
        )
    if kind == "number":
        return NumberCodec(
            d["name"],
            list(d["missing"]),
            int(d["exponent"]),
            int(d["origin"]),
            list(d["lows"]),
            list(d["highs"]),
            list(d["texts"]),
            d["style"],
            list(d["offset_sizes"]),
            clip=bool(d.get("clip", False)),
            bounded=bool(d.get("bounded", False)),
        )
    if kind == "date":
        if d["format"] not in DATE_PARSERS:
            raise ValueError(f"unknown date format {d['format']!r}")
        return DateCodec(
            d["name"],
            d["kind_of"],
            d["format"],
            list(d["missing"]),
            list(d["components"]),
            list(d["lows"]),
            list(d["highs"]),
            dict(d["constants"]),
            bool(d["padded"]),
            d["iso_sep"],
            d["iso_timespec"],
            list(d["tz_suffixes"]),
            clip=bool(d.get("clip", False)),
            first=d.get("first"),
            last=d.get("last"),
        )
    if kind == "digits":
        return DigitsCodec(d["name"], list(d["digits"]))
    if kind == "pattern":
        return PatternCodec(
            d["name"], [dict(p) for p in d["parts"]], [_codec_from_dict(c) for c in d["codecs"]], list(d["missing"])
        )
    if kind == "text":
        proto = base64.b64decode(d["model"]) if d.get("model") else None
        return TextCodec(d["name"], int(d["length"]), d.get("pieces"), proto)
    raise ValueError(f"unknown codec kind {kind!r}")


def load_field_tokenizer(meta: dict[str, Any], where: str) -> FieldTokenizer:
    return FieldTokenizer.from_dict(meta, where)
