"""pandas DataFrames in and out (the 'pandas' extra), beside CSV files.

    result = train(config, data=df)                        # the DataFrame instead of data.path
    synthetic = load_model("model").generate_dataframe(1000)   # typed columns, the table's order

In: every value becomes the string a CSV file would hold (missing values, None / NaN / NaT /
pd.NA, become empty fields; datetimes ISO 8601, dates alone when every time is midnight), so a
DataFrame and the same table read from a CSV file train the same model. Nothing of the
DataFrame is stored. Out: each column gets the type the model's schema gives it: integer ->
Int64, float -> Float64, date / datetime -> datetime64, categorical -> category, text ->
string; missing values are <NA>. Keep integer columns with missing values as pandas' Int64
(not float64, where 3 becomes "3.0") to have them come back as integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import Table
from .errors import DataError
from .records import GeneratedRecord
from .schema import FLOAT_PATTERN, INT_PATTERN, MISSING_MARKERS, Schema, parse_value


def pandas():
    try:
        import pandas as pd
    except ImportError:
        raise DataError("DataFrames need pandas: pip install 'synthloom[pandas]'") from None
    return pd


def dataframe_table(df: Any) -> Table:
    """A DataFrame's column names and rows as strings, as a CSV file would hold them."""
    pd = pandas()
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data= expects a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise DataError("the DataFrame has no rows (or no columns) to train on")
    columns = [str(c) for c in df.columns]
    texts = [_column_strings(pd, df.iloc[:, i]) for i in range(df.shape[1])]
    return columns, [list(row) for row in zip(*texts)]


def _column_strings(pd, series) -> list[str]:
    missing = series.isna().tolist()
    if pd.api.types.is_datetime64_any_dtype(series):
        present = series.dropna()
        dates_only = bool((present == present.dt.normalize()).all()) and present.dt.tz is None
        shown = series.dt.strftime("%Y-%m-%d") if dates_only else series.map(lambda v: v.isoformat())
        return ["" if gone else str(v) for v, gone in zip(shown.tolist(), missing)]
    return ["" if gone else str(v) for v, gone in zip(series.tolist(), missing)]


def records_dataframe(records: list[GeneratedRecord], columns: list[str], schema: Schema | None) -> Any:
    """The valid records as a DataFrame with `columns` (the table's order), typed by `schema`."""
    pd = pandas()
    rows = [r.fields for r in records if r.valid and r.fields is not None]
    data = {}
    for i, name in enumerate(columns):
        values = [row[i] for row in rows]
        column = schema.column(name) if schema is not None and name in schema.names else None
        data[name] = _typed(pd, values, column)
    return pd.DataFrame(data, columns=columns)


def _typed(pd, values: list[str], column):
    if column is None:
        return pd.array(values, dtype="string")
    try:
        parsed = _parsed(pd, values, column)
    except ValueError:  # generated without type checks: keep the text
        return pd.array(values, dtype="string")
    if column.kind == "integer":
        if isinstance(parsed, pd.api.extensions.ExtensionArray):
            return parsed
        try:
            return pd.array(parsed, dtype="Int64")
        except (OverflowError, TypeError):  # beyond int64: Python ints
            return pd.array(parsed, dtype=object)
    if column.kind == "float":
        return parsed
    if column.kind in ("date", "datetime"):
        return pd.to_datetime(pd.Series(parsed, dtype=object), utc=_has_zone(parsed))
    if column.kind == "categorical":
        categories = column.categories or sorted({v for v in parsed if v is not None})
        unseen = sorted({v for v in parsed if v is not None} - set(categories))
        return pd.Categorical(parsed, categories=list(categories) + unseen)
    return pd.array(parsed, dtype="string")


def _parsed(pd, values: list[str], column) -> Any:
    """The column's values parsed as parse_value does (ValueError where one does not fit):
    numbers at once, with pandas (an Int64 / Float64 array; a list where an integer is beyond
    int64), any other kind one distinct value at a time."""
    if column.kind in ("integer", "float"):
        fast = _numbers_at_once(pd, values, column)
        if fast is not None:
            return fast
        series = pd.Series(values, dtype=object)
        missing = series.isin(set(MISSING_MARKERS) | set(column.missing)).to_numpy()
        present = series[~missing]
        pattern = INT_PATTERN if column.kind == "integer" else FLOAT_PATTERN
        if not pd.Series(pd.unique(present), dtype=object).str.fullmatch(pattern).all():
            raise ValueError(f"{column.name}: a value is not a number")
        try:
            numbers = pd.to_numeric(present)
        except (ValueError, OverflowError):  # integers beyond 64 bits: one at a time, below
            numbers = pd.Series([], dtype=object)
        if column.kind == "float" and numbers.dtype.kind in "fiu":
            if not bool(np.isfinite(numbers.to_numpy(dtype=float)).all()):
                raise ValueError(f"{column.name}: a value is beyond a float's range")
            out = pd.array(np.full(len(values), np.nan), dtype="Float64")
            out[~missing] = numbers.to_numpy(dtype=float)
            out[missing] = pd.NA
            return out
        if numbers.dtype.kind == "i":
            out = pd.array(np.zeros(len(values), dtype=np.int64), dtype="Int64")
            out[~missing] = numbers.to_numpy()
            out[missing] = pd.NA
            return out
    memo: dict[str, Any] = {}
    return [memo[v] if v in memo else memo.setdefault(v, parse_value(column, v)) for v in values]


NUMBER_CHARS = frozenset("0123456789+-.eE")


def _numbers_at_once(pd, values: list[str], column) -> Any:
    """The common case of _parsed, in numpy: every present value made of digits, signs, a point and
    an exponent only, and numpy's parse of them all succeeds (one such string that the number
    patterns refuse, as "1e" or "1.5" for an integer, fails that parse too) and stays finite.
    Each distinct string is parsed once (a sample repeats its values: ~2x sooner on 10,000 rows).
    None: anything else, left to the exact path."""
    codes, distinct = pd.factorize(np.asarray(values, dtype=object))
    if len(codes) and codes.min() < 0:  # (a None among the strings)
        return None
    distinct = distinct.tolist()
    markers = set(MISSING_MARKERS) | set(column.missing)
    gone = np.fromiter((v in markers for v in distinct), dtype=bool, count=len(distinct))
    present = [v for v, g in zip(distinct, gone) if not g]
    if not set("".join(present)) <= NUMBER_CHARS:
        return None
    integer = column.kind == "integer"
    try:
        numbers = np.array(present, dtype=np.int64 if integer else np.float64)
    except (ValueError, OverflowError):
        return None
    if not integer and not bool(np.isfinite(numbers).all()):
        return None
    parsed = np.zeros(len(distinct), dtype=numbers.dtype)
    parsed[~gone] = numbers
    data, missing = parsed[codes], gone[codes]
    return pd.arrays.IntegerArray(data, missing) if integer else pd.arrays.FloatingArray(data, missing)


def _has_zone(values: list) -> bool:
    return any(getattr(v, "tzinfo", None) is not None for v in values)
