"""Column types of a table, and a check that a generated record fits them.

    schema = infer_schema(columns, rows)                  # rows: lists of str, as csv.reader gives them
    schema = infer_schema(columns, rows, overrides={"zip": "categorical"})
    problem = check_fields(schema, ["41", "Boston", "2023-01-05"])   # None, or "age: 'abc' is not an integer"
    json.dumps(schema.to_dict(include_categories=False))  # differentially private runs: no category values

Kinds, tried in this order (the first that fits every non-missing value wins):

- integer: `[+-]?[0-9]+` without a leading zero ("02134" is a ZIP code: read as a number it
  would lose its zero, so such a column is categorical or text); 0/1 flags stay integers.
- float: a decimal or scientific number (same leading-zero rule), finite; ints mixed in.
- date / datetime: one format of DATE_FORMATS (in that order, the first that parses every
  value; so %Y-%m-%d-style beats %m/%d/%Y, which beats %d/%m/%Y when both parse all
  values), else "iso" (datetime.fromisoformat: fractional seconds, time zones; Python
  3.11+ also reads "Z" and any number of fraction digits, 3.10 only 3 or 6).
- categorical: few distinct values (<= 50 and <= half the non-missing values).
- text: everything else.

Missing values: an empty field is always missing. In a column that is otherwise integer,
float, date or datetime, the markers "NA", "N/A", "null", "NULL", "NaN", "nan", "None" are
missing too; in a categorical or text column they are ordinary values ("NA" may be
Namibia). Missing values never decide a kind. A column with missing values in training
allows them in generated records (`allow_missing`); one without rejects them.

Checking a generated record (`check_fields`) is the kind's parse, so it is looser than
inference: "007" is an integer there (and under an "integer" override), and any missing
marker in a typed column is a missing value. Observed ranges (`min`, `max`,
`max_length`) are information only: a generated value outside them is valid.

Speed: every check runs once per distinct value, and the date formats mirror
`datetime.strptime` for the directives used (%Y %m %d %H %M %S) as one compiled pattern
each, tried only while they still fit; 100k rows x 20 columns take a second or two.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Union

from .errors import DataError

KINDS = ("integer", "float", "categorical", "date", "datetime", "text")
TYPED_KINDS = ("integer", "float", "date", "datetime")
MISSING_MARKERS = ("", "NA", "N/A", "null", "NULL", "NaN", "nan", "None")
MAX_CATEGORIES = 50  # a categorical column has at most this many distinct values...
CATEGORY_SHARE = 0.5  # ...and at most this share of its non-missing values distinct

ISO = "iso"  # the format name for datetime.fromisoformat
DATE_FORMATS = (
    # dates: %Y-%m-%d-style first, then month-first before day-first
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
    # datetimes
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    ISO,  # last: ISO 8601 with fractional seconds and/or a time zone
)

Value = Union[int, float, date, datetime, str, None]

_INT_STRICT = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
INT_PATTERN = r"[+-]?[0-9]+"
_INT = re.compile(INT_PATTERN)
_FLOAT_STRICT = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
FLOAT_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_FLOAT = re.compile(FLOAT_PATTERN)


# --------------------------------------------------------------------------- the schema


@dataclass
class ColumnSchema:
    """One column: its kind and what training showed of it."""

    name: str
    kind: str
    allow_missing: bool = False  # did training have missing values in this column?
    missing: list[str] = field(default_factory=list)  # the missing markers training used, e.g. ["", "NA"]
    min: int | float | str | None = None  # numbers: the observed range; dates: ISO strings (information only)
    max: int | float | str | None = None
    format: str | None = None  # date / datetime: a DATE_FORMATS entry
    categories: list[str] | None = None  # categorical: sorted distinct values (None: not kept)
    max_length: int | None = None  # text: the longest value seen (information only)
    _categories_seen: tuple[Any, int, frozenset[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def category_set(self) -> frozenset[str]:
        """The categories as a set, built once (again only if `categories` is replaced or grows)."""
        cats = self.categories or []
        seen = self._categories_seen
        if seen is None or seen[0] is not cats or seen[1] != len(cats):
            seen = self._categories_seen = (cats, len(cats), frozenset(cats))
        return seen[2]

    def to_dict(self, include_categories: bool = True, include_ranges: bool = True) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "allow_missing": self.allow_missing,
            "missing": list(self.missing),
            "min": self.min if include_ranges else None,
            "max": self.max if include_ranges else None,
            "format": self.format,
            "categories": list(self.categories) if include_categories and self.categories is not None else None,
            "max_length": self.max_length if include_ranges else None,
        }


@dataclass
class Schema:
    """The columns of a table, in order."""

    columns: list[ColumnSchema]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __len__(self) -> int:
        return len(self.columns)

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self, include_categories: bool = True, include_ranges: bool = True) -> dict[str, Any]:
        """A JSON-able dict; `from_dict` gives this schema back exactly.

        include_categories=False drops the category values (differentially private
        training: the list of values would leak records); the unseen-category check is
        then unavailable. include_ranges=False drops min, max and max_length, which are
        record values too (the extremes)."""
        return {
            "version": 1,
            "columns": [c.to_dict(include_categories, include_ranges) for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        if not isinstance(d, dict) or not isinstance(d.get("columns"), list):
            raise DataError("schema: expected a dict with a 'columns' list")
        if d.get("version", 1) != 1:
            raise DataError(f"schema: unsupported version {d.get('version')!r} (this synthloom reads version 1)")
        columns = []
        for i, c in enumerate(d["columns"]):
            where = f"schema: columns[{i}]"
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise DataError(f"{where}: expected a dict with a string 'name'")
            kind = c.get("kind")
            if kind not in KINDS:
                raise DataError(f"{where} ({c['name']!r}): unknown kind {kind!r}; use one of {', '.join(KINDS)}")
            fmt = c.get("format")
            if kind in ("date", "datetime") and fmt not in DATE_FORMATS:
                raise DataError(f"{where} ({c['name']!r}): unknown date format {fmt!r}")
            missing = c.get("missing", [])
            categories = c.get("categories")
            if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
                raise DataError(f"{where} ({c['name']!r}): 'missing' must be a list of strings")
            if categories is not None and (
                not isinstance(categories, list) or not all(isinstance(v, str) for v in categories)
            ):
                raise DataError(f"{where} ({c['name']!r}): 'categories' must be a list of strings or null")
            columns.append(
                ColumnSchema(
                    name=c["name"],
                    kind=kind,
                    allow_missing=bool(c.get("allow_missing", bool(missing))),
                    missing=list(missing),
                    min=c.get("min"),
                    max=c.get("max"),
                    format=fmt,
                    categories=list(categories) if categories is not None else None,
                    max_length=c.get("max_length"),
                )
            )
        return cls(columns)


# --------------------------------------------------------------------------- date formats


class _DateFormat:
    """One strptime format as a compiled pattern (the same patterns strptime uses for
    these directives, ASCII digits) plus the date/datetime constructor, which rejects
    impossible days (2023-02-30) as strptime does."""

    _PATTERNS = {
        "Y": "([0-9]{4})",
        "m": "(1[0-2]|0[1-9]|[1-9])",
        "d": "(3[01]|[12][0-9]|0[1-9]|[1-9]| [1-9])",
        "H": "(2[0-3]|[01][0-9]|[0-9])",
        "M": "([0-5][0-9]|[0-9])",
        "S": "([0-5][0-9]|[0-9])",
    }

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.has_time = "%H" in fmt or fmt == ISO
        if fmt == ISO:
            self.regex = None
            return
        parts, order = [], []
        i = 0
        while i < len(fmt):
            if fmt[i] == "%":
                order.append(fmt[i + 1])
                parts.append(self._PATTERNS[fmt[i + 1]])
                i += 2
            else:
                parts.append(r"\s+" if fmt[i].isspace() else re.escape(fmt[i]))
                i += 1
        self.regex = re.compile("".join(parts))
        y, mo, d, h, mi, sec = (order.index(c) if c in order else None for c in "YmdHMS")
        if not self.has_time:
            self._build = lambda g: date(int(g[y]), int(g[mo]), int(g[d]))
        elif sec is None:
            self._build = lambda g: datetime(int(g[y]), int(g[mo]), int(g[d]), int(g[h]), int(g[mi]))
        else:
            self._build = lambda g: datetime(int(g[y]), int(g[mo]), int(g[d]), int(g[h]), int(g[mi]), int(g[sec]))

    def parse(self, text: str) -> date | datetime:
        """The value, or ValueError."""
        if self.regex is None:
            return datetime.fromisoformat(text)
        m = self.regex.fullmatch(text)
        if m is None:
            raise ValueError(text)
        return self._build(m.groups())

    def fits(self, text: str) -> bool:
        try:
            self.parse(text)
        except ValueError:
            return False
        return True


DATE_PARSERS = {fmt: _DateFormat(fmt) for fmt in DATE_FORMATS}


def describe_format(fmt: str) -> str:
    return "ISO 8601" if fmt == ISO else fmt


def date_key(value: date | datetime) -> float:
    """A date as its ordinal (days), a datetime as POSIX seconds (naive ones read as UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value.toordinal())


def _first_format(
    values: list[str], formats: list[_DateFormat]
) -> tuple[_DateFormat | None, list[date | datetime], str | None]:
    """The first of `formats` that parses every value and the parsed values, else (None, [],
    the value where the last candidate failed). Each value is tried only against the
    formats still standing, and parsed once per standing format."""
    parsed: dict[_DateFormat, list[date | datetime]] = {f: [] for f in formats}
    for v in values:
        for f in list(parsed):
            try:
                parsed[f].append(f.parse(v))
            except ValueError:
                del parsed[f]
        if not parsed:
            return None, [], v
    for f, out in parsed.items():
        return f, out, None
    return None, [], None


# --------------------------------------------------------------------------- inference


def infer_schema(columns: list[str], rows: list[list[str]], overrides: dict[str, str] | None = None) -> Schema:
    """Each column's kind from its string fields (see the module docstring for the rules).
    `overrides` maps a column name to the kind it must have; the values must fit it."""
    columns = list(columns)
    width = len(columns)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"row {i + 1} has {len(row)} field(s), expected {width} (one per column)")
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in columns]
    if unknown:
        raise DataError(
            f"schema overrides name unknown column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(map(repr, columns))}"
        )
    for name, kind in overrides.items():
        if kind not in KINDS:
            raise DataError(f"schema override for {name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    cols = list(zip(*rows)) if rows else [() for _ in columns]
    return Schema([_infer_column(name, col, overrides.get(name)) for name, col in zip(columns, cols)])


def _infer_column(name: str, col: tuple[str, ...], override: str | None) -> ColumnSchema:
    counts = Counter(col)  # distinct values in order of first occurrence: every check runs once per value
    present = [v for v in counts if v not in MISSING_MARKERS]  # what decides a typed kind
    markers = [m for m in MISSING_MARKERS if m in counts]
    if override is None:
        if present:
            typed = _typed_column(name, present, markers, strict=True)
            if typed is not None:
                return typed
        return _untyped_column(name, counts, kind=None)
    if override in TYPED_KINDS:
        typed = _typed_column(name, present, markers, strict=False, kind=override)
        if typed is None:
            bad = _first_unfit(present, override)
            row = col.index(bad) + 1
            raise DataError(
                f"column {name!r}: its values do not fit the override {override!r} "
                f"(first bad value: {bad!r}, row {row})"
            )
        return typed
    return _untyped_column(name, counts, kind=override)


def _typed_column(
    name: str, present: list[str], markers: list[str], strict: bool, kind: str | None = None
) -> ColumnSchema | None:
    """integer / float / date / datetime if every present value fits (kind=None: the first
    that does), else None."""
    column = ColumnSchema(name, "integer", allow_missing=bool(markers), missing=markers)
    if kind in (None, "integer"):
        regex = _INT_STRICT if strict else _INT
        if all(regex.fullmatch(v) for v in present):
            numbers = [int(v) for v in present]
            column.min, column.max = (min(numbers), max(numbers)) if numbers else (None, None)
            return column
    if kind in (None, "float"):
        regex = _FLOAT_STRICT if strict else _FLOAT
        if all(regex.fullmatch(v) for v in present):
            numbers = [float(v) for v in present]
            if all(math.isfinite(x) for x in numbers):
                column.kind = "float"
                column.min, column.max = (min(numbers), max(numbers)) if numbers else (None, None)
                return column
    if kind in (None, "date", "datetime"):
        formats = [f for f in DATE_PARSERS.values() if kind is None or f.has_time == (kind == "datetime")]
        fmt, values, _ = _first_format(present, formats)
        if fmt is not None:
            column.kind = "datetime" if fmt.has_time else "date"
            column.format = fmt.fmt
            if values:
                key = date_key if fmt.fmt == ISO else None  # ISO may mix naive and aware datetimes
                column.min = min(values, key=key).isoformat()
                column.max = max(values, key=key).isoformat()
            return column
    return None


def _first_unfit(present: list[str], kind: str) -> str:
    if kind in ("date", "datetime"):
        formats = [f for f in DATE_PARSERS.values() if f.has_time == (kind == "datetime")]
        return _first_format(present, formats)[2] or present[0]
    column = ColumnSchema("", kind)
    for v in present:
        try:
            _parse(column, v)
        except ValueError:
            return v
    return present[0]


def _untyped_column(name: str, counts: Counter, kind: str | None) -> ColumnSchema:
    values = [v for v in counts if v != ""]
    n = sum(counts[v] for v in values)
    if kind is None:
        few = bool(values) and len(values) <= MAX_CATEGORIES and len(values) <= CATEGORY_SHARE * n
        kind = "categorical" if few else "text"
    missing = [""] if "" in counts else []
    column = ColumnSchema(name, kind, allow_missing=bool(missing), missing=missing)
    if kind == "categorical":
        column.categories = sorted(values)
    else:
        column.max_length = max((len(v) for v in values), default=0)
    return column


# --------------------------------------------------------------------------- checking and parsing


def is_missing(column: ColumnSchema, text: str) -> bool:
    """Empty, a marker the column used in training, or (typed kinds) any missing marker."""
    return text == "" or text in column.missing or (column.kind in TYPED_KINDS and text in MISSING_MARKERS)


def _parse(column: ColumnSchema, text: str) -> Value:
    """The value of a non-missing field, or ValueError with the explanation as its message."""
    kind = column.kind
    if kind == "integer":
        if _INT.fullmatch(text):
            return int(text)
        raise ValueError(f"{column.name}: {text!r} is not an integer")
    if kind == "float":
        if _FLOAT.fullmatch(text):
            x = float(text)
            if math.isfinite(x):
                return x
        raise ValueError(f"{column.name}: {text!r} is not a number")
    if kind in ("date", "datetime"):
        fmt = DATE_PARSERS[column.format or ISO]
        try:
            return fmt.parse(text)
        except ValueError:
            raise ValueError(f"{column.name}: {text!r} is not a {kind} like {describe_format(fmt.fmt)}") from None
    return text


def parse_value(column: ColumnSchema, text: str) -> Value:
    """int, float, date, datetime or str by the column's kind; None for a missing value.
    Raises ValueError (the same explanation check_fields gives) for a value that does not fit."""
    if is_missing(column, text):
        return None
    return _parse(column, text)


def check_fields(schema: Schema, fields: list[str], check_categories: bool = False) -> str | None:
    """None when a generated record's fields fit the schema, else why not (the first problem).

    check_categories: a categorical value must be one seen in training (only for columns
    whose categories are known; a schema saved without them skips this check)."""
    if len(fields) != len(schema.columns):
        return f"{len(fields)} field(s), expected {len(schema.columns)}"
    for column, text in zip(schema.columns, fields):
        if is_missing(column, text):
            if not column.allow_missing:
                return f"{column.name}: missing value (none in training)"
            continue
        try:
            _parse(column, text)
        except ValueError as exc:
            return str(exc)
        if check_categories and column.kind == "categorical" and column.categories is not None:
            if text not in column.category_set():
                return f"{column.name}: unseen category {text!r}"
    return None


def numeric_key(column: ColumnSchema) -> Callable[[Value], float]:
    """How a parsed value becomes a number for statistics: numbers as they are, dates as
    ordinals (days), datetimes as POSIX seconds (naive ones read as UTC)."""
    if column.kind in ("date", "datetime"):
        return date_key
    return float
