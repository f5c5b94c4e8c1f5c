"""The quality report: how close a synthetic table is to the real one, as JSON or one HTML file.

    columns, real = read_table("train.csv")             # the rows the model trained on
    _, synthetic = read_table("synthetic.csv")
    _, holdout = read_table("holdout.csv")              # real rows it never trained on (for DCR)
    report = build_report(columns, real, synthetic, holdout_rows=holdout, epsilon=3.0, delta=1e-5)
    write_report(report, "report.html")                 # or "report.json"
    report["quality"]["overall"], report["dependency"]["score"], report["dcr"]["closer_to_train_rate"]

The quality score is SDMetrics' single-table QualityReport (sdmetrics 0.32) recomputed with
numpy alone: synthloom does not need sdmetrics, and tests/test_report.py checks that the two
agree to 1e-6 where sdmetrics is installed. docs/tables.md ("The quality report") has every
definition; in short:

- sdtypes from the schema: integer, float -> numerical; date, datetime -> datetime (as
  nanoseconds since 1970-01-01 UTC, as pandas holds them); categorical -> categorical; text ->
  left out (SDMetrics skips text, id and PII columns). Missing is what the schema calls missing;
  a value that does not parse as its column's kind counts as missing too (as a reader that
  coerces would see it). Synthetic rows with the wrong number of fields are left out.
- Column Shapes: the mean over columns of KSComplement (numerical, datetime: 1 - the two-sample
  Kolmogorov-Smirnov statistic of the present values, numbers rounded to 14 decimals) or
  TVComplement (categorical: 1 - the total variation distance of the present values'
  frequencies, a synthetic-only category counted 1e-6 times in the real column). A column
  without present values on a side has no score and is left out of the mean.
- Column Pair Trends: the mean over the pairs that are dependent in the real data (QualityReport's
  thresholds: |Pearson r| > 0.5, Cramér's V > 0.3) of CorrelationSimilarity (two numerical or
  datetime columns: 1 - |r_real - r_synthetic| / 2, over the rows holding both values; no score
  when a column is constant in either table) or ContingencySimilarity (otherwise: 1 - the total
  variation distance between the joint frequencies over all rows; a missing category is a value
  of its own; a number is replaced by its bin, np.digitize over np.histogram_bin_edges' 10 bins
  of the same table's own present values, so the maximum and a missing number share bin 11).
- overall = the mean of the two property scores (the one there is, when the other has none).
- dependency score: every pair's similarity (the same metrics, no threshold) weighted by the
  pair's strength in the real data (|r|; Cramér's V of the real contingency table above), so a
  strong real dependency the synthetic table lost moves it and independent pairs barely count.
- DCR (distance to closest record), Gower distance as benchmarks/peers/score.py: synthetic rows
  against equal-sized seeded samples of the training rows and of the holdout rows.
- validity is reported on its own (generation counts or the schema check), in no score.

The report is computed from the real data (category frequencies, ranges, distances to real
rows): it is a diagnostic for the data owner, not itself differentially private.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .data import decode_row, read_records, read_text, split_records
from .errors import DataError
from .schema import ColumnSchema, Schema, check_fields, infer_schema, is_missing, numeric_key, parse_value

SDMETRICS_VERSION = "0.32"
SCORE_DEFINITION = (
    "score = 100 x SDMetrics QualityReport overall score (sdmetrics 0.32 definitions) "
    "= 100 x mean(Column Shapes, Column Pair Trends)"
)
# synthloom's kinds as SDMetrics sdtypes; text has none: left out, as SDMetrics leaves out text, id and PII
SDTYPES = {
    "integer": "numerical",
    "float": "numerical",
    "date": "datetime",
    "datetime": "datetime",
    "categorical": "categorical",
}
CORRELATION_THRESHOLD = 0.5  # QualityReport: a numerical pair counts when the real |r| exceeds this
ASSOCIATION_THRESHOLD = 0.3  # ... and another pair when the real Cramér's V exceeds this
KS_DECIMALS = 14  # KSComplement rounds numbers to sys.float_info.dig - 1 decimals
TV_REGULARIZATION = 1e-6  # TVComplement's count of a synthetic-only category in the real column
DCR_ROWS = 5000  # most synthetic rows, and most rows of each reference sample, in the DCR test
DCR_SEED = 0
TOP_LOSSES = 5
BINS = 20
TOP_CATEGORIES = 20
REPORT_SUFFIXES = (".json", ".html", ".htm")
DPI = 80
NUMERIC_KINDS = ("integer", "float", "date", "datetime")
DATE_KINDS = ("date", "datetime")
UNITS = {"date": "days (proleptic Gregorian ordinal)", "datetime": "seconds since 1970-01-01 UTC"}
_INVALID = object()  # a synthetic (or real) value that does not parse as its column's kind
_EPOCH = datetime(1970, 1, 1)
_INT64 = 2**63 - 1

QUALITY_DEFINITION = (
    "SDMetrics QualityReport (0.32): overall = mean(Column Shapes, Column Pair Trends). Column Shapes = mean over "
    "columns of KSComplement (numerical, datetime) or TVComplement (categorical), missing values left out. Column "
    "Pair Trends = mean, over the pairs dependent in the real data (|Pearson r| > 0.5 or Cramér's V > 0.3), of "
    "CorrelationSimilarity 1 - |r_real - r_synthetic| / 2 (numerical/datetime pairs, rows holding both values) or "
    "ContingencySimilarity 1 - TVD of the joint frequencies (other pairs; missing is a category, numbers in 10 "
    "equal bins of their own table's range). Text columns are left out."
)
DEPENDENCY_DEFINITION = (
    "dependency score = sum(w * s) / sum(w) over the pairs of non-text columns: s = the pair's similarity "
    "(CorrelationSimilarity or ContingencySimilarity, no threshold; a synthetic correlation that is undefined, "
    "e.g. a constant synthetic column, counts as 0), w = the pair's strength in the real data (|Pearson r| for "
    "numerical/datetime pairs, Cramér's V of the real contingency table otherwise; 0 where undefined). "
    "Weighted loss of a pair = w * (1 - s)."
)
DCR_DEFINITION = (
    "Gower distance (benchmarks/peers/score.py): the mean over columns of |a - b| / range of the training column "
    "(each term at most 1) for numbers and dates, and of a 0/1 mismatch for categories and text; a missing value "
    "is a category of its own. Each synthetic row's distance to its closest row of a training sample and of a "
    "holdout sample of the same size (seeded samples); closer-to-train rate = the share of synthetic rows closer "
    "to a training row than to every holdout row, a tie counting half: about 50 % when the model does not memorise."
)


# --------------------------------------------------------------------------- reading


def read_table(path: str | Path, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """A CSV file with a header as (columns, rows of string fields); UTF-8, an optional BOM.
    Blank lines are skipped; every row must have as many fields as the header."""
    path = Path(path)
    text = read_text(path, "table")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    columns: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for row in reader:
            if row in ([], [""]):
                continue
            if columns is None:
                columns = row
                continue
            if len(row) != len(columns):
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} field(s), expected {len(columns)} "
                    f"(as in the header); check quoting or the delimiter {delimiter!r}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV at line {reader.line_num}: {exc}") from None
    if not rows:
        raise DataError(f"{path}: the table has only a header, no rows")
    return columns or [], rows


@dataclass
class Split:
    """A model's training split of a table, recomputed: the rows it trained on and the ones it held out."""

    columns: list[str]
    train_rows: list[list[str]]
    holdout_rows: list[list[str]]


def model_split(config: Any, path: str | Path | None = None) -> Split:
    """The rows a csv model trained on and the ones it held out for validation, recomputed exactly
    as training split them: the table read as `data` says (max_records, long records skipped, the
    fields in data.leading_columns order), split by data.validation_split with train.seed, and
    the fields put back in the file's column order. `path`: the table (default data.path)."""
    data = config.data if path is None else config.data.model_copy(update={"path": Path(path)})
    records = read_records(data)
    train_texts, val_texts = split_records(records.texts, data.validation_split, config.train.seed)
    columns = records.columns or [f"column_{i + 1}" for i in range(records.num_fields or 0)]
    order = [(records.model_columns or columns).index(c) for c in columns]
    delimiter = data.field_delimiter or ","

    def rows(texts: list[str]) -> list[list[str]]:
        return [[fields[i] for i in order] for fields in (decode_row(t, delimiter) for t in texts)]

    return Split(columns, rows(train_texts), rows(val_texts))


# --------------------------------------------------------------------------- the columns, as the measures read them


@dataclass
class _Column:
    """One column of one table. x: numbers as float64 (dates: ns since 1970) with NaN where
    missing, or category codes (shared by the tables, -1 missing); ns: a date column's exact
    int64 nanoseconds (None when a value is beyond pandas' range)."""

    x: np.ndarray
    present: np.ndarray
    ns: np.ndarray | None = None
    _bins: tuple[np.ndarray, bool] | None = None

    def distinct(self) -> int:
        return int(np.unique(self.x[self.present]).size)

    def contingency_codes(self, sdtype: str) -> tuple[np.ndarray, bool]:
        """ColumnPairTrends' discrete form, and whether SDMetrics could make it: a category's code
        (missing: a code of its own); a number's bin, np.digitize over np.histogram_bin_edges (10
        bins) of this table's own values. Where numpy cannot make 10 bins (one huge value, e.g. a
        single date in nanoseconds) SDMetrics gives the column's pairs no score; the similarity
        here then puts every present value in bin 1 (missing: 11)."""
        if self._bins is None:
            if sdtype == "categorical":
                self._bins = (self.x + 1, True)
            else:
                try:
                    edges = np.histogram_bin_edges(self.x[self.present])
                    self._bins = (np.digitize(self.x, edges).astype(np.int64), True)
                except ValueError:
                    self._bins = (np.where(self.present, 1, 11).astype(np.int64), False)
        return self._bins


def _ns(value: date | datetime) -> int:
    """Nanoseconds since 1970-01-01 (an aware datetime in UTC), as pandas' datetime64[ns]."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        delta = value - _EPOCH
    else:
        delta = value - _EPOCH.date()
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _number(column: ColumnSchema, text: str) -> float | int | None:
    if is_missing(column, text):
        return None
    try:
        value = parse_value(column, text)
    except ValueError:
        return None  # does not parse: missing to the measures (validity counts it)
    return _ns(value) if column.kind in DATE_KINDS else float(value)


def _encode(column: ColumnSchema, texts: list[str], vocab: dict[str, int]) -> _Column:
    n = len(texts)
    if column.kind in NUMERIC_KINDS:
        cache: dict[str, float | int | None] = {}
        values = [cache[t] if t in cache else cache.setdefault(t, _number(column, t)) for t in texts]
        present = np.array([v is not None for v in values], dtype=bool)
        x = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        ns = None
        if column.kind in DATE_KINDS and all(v is None or -_INT64 <= v <= _INT64 for v in values):
            ns = np.array([0 if v is None else v for v in values], dtype=np.int64)
        return _Column(x, present, ns)
    codes = np.fromiter(
        (-1 if is_missing(column, t) else vocab.setdefault(t, len(vocab)) for t in texts), dtype=np.int64, count=n
    )
    return _Column(codes, codes >= 0)


def _encode_tables(schema: Schema, tables: list[list[list[str]]]) -> list[list[_Column]]:
    """Each table's columns (category codes shared by all the tables)."""
    out: list[list[_Column]] = [[] for _ in tables]
    for j, column in enumerate(schema.columns):
        vocab: dict[str, int] = {}
        for t, rows in enumerate(tables):
            out[t].append(_encode(column, [row[j] for row in rows], vocab))
    return out


# --------------------------------------------------------------------------- SDMetrics' metrics


def ks_complement(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """1 - the two-sample Kolmogorov-Smirnov statistic (scipy's ks_2samp), None if a side is empty."""
    if real.size == 0 or synthetic.size == 0:
        return None
    a, b = np.sort(real), np.sort(synthetic)
    both = np.concatenate([a, b])
    diff = np.searchsorted(a, both, side="right") / a.size - np.searchsorted(b, both, side="right") / b.size
    return 1.0 - max(float(np.clip(-diff.min(), 0, 1)), float(diff.max()))


def tv_complement(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """1 - total variation distance of two columns' category codes (>= 0), as SDMetrics'
    TVComplement: a synthetic-only category counts TV_REGULARIZATION times in the real column."""
    if real.size == 0 or synthetic.size == 0:
        return None
    k = int(max(real.max(), synthetic.max())) + 1
    r = np.bincount(real, minlength=k).astype(float)
    s = np.bincount(synthetic, minlength=k).astype(float)
    r[(s > 0) & (r == 0)] += TV_REGULARIZATION
    keep = r > 0
    return 1.0 - 0.5 * float(np.abs(s[keep] / s.sum() - r[keep] / r.sum()).sum())


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r of paired values, None when it is undefined (fewer than 2 pairs, a constant side)."""
    if x.size < 2 or (x == x[0]).all() or (y == y[0]).all():
        return None
    dx, dy = x - x.mean(), y - y.mean()
    return max(-1.0, min(1.0, float(dx @ dy) / math.sqrt(float(dx @ dx) * float(dy @ dy))))


def _cramers_v_table(table: np.ndarray) -> float | None:
    """Cramér's V of a contingency table (scipy.stats.contingency.association, no correction)."""
    if min(table.shape) < 2:
        return None
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (n * (min(table.shape) - 1)))


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The table of counts of two code columns, over the codes each holds."""
    _, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    rows = int(ia.max()) + 1 if ia.size else 0
    return np.bincount(ia * ub.size + ib, minlength=rows * ub.size).reshape(rows, ub.size).astype(float)


def _joint_tvd(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray]) -> float:
    width = int(max(real[1].max(), synthetic[1].max())) + 1
    keys_r, n_r = np.unique(real[0] * width + real[1], return_counts=True)
    keys_s, n_s = np.unique(synthetic[0] * width + synthetic[1], return_counts=True)
    keys = np.union1d(keys_r, keys_s)
    p, q = np.zeros(keys.size), np.zeros(keys.size)
    p[np.searchsorted(keys, keys_r)] = n_r / real[0].size
    q[np.searchsorted(keys, keys_s)] = n_s / synthetic[0].size
    return 0.5 * float(np.abs(p - q).sum())


def _pair(sdtype_a: str, a: tuple[_Column, _Column], sdtype_b: str, b: tuple[_Column, _Column]) -> dict[str, Any]:
    """One pair: SDMetrics' metric and score under the QualityReport's threshold (None when it
    does not count), the similarity without the threshold, and the real and synthetic strengths."""
    continuous = ("numerical", "datetime")
    (ar, as_), (br, bs) = a, b
    if sdtype_a in continuous and sdtype_b in continuous:
        keep_r, keep_s = ar.present & br.present, as_.present & bs.present
        r_real = _pearson(ar.x[keep_r], br.x[keep_r])
        r_synth = _pearson(as_.x[keep_s], bs.x[keep_s])
        constant = any(c.distinct() == 1 for c in (ar, br, as_, bs))  # CorrelationSimilarity refuses these
        counted = not constant and r_real is not None and r_synth is not None and abs(r_real) > CORRELATION_THRESHOLD
        similarity = None if r_real is None else 1 - abs(r_real - (r_synth or 0.0)) / 2
        return {
            "metric": "CorrelationSimilarity",
            "score": 1 - abs(r_real - r_synth) / 2 if counted else None,  # type: ignore[operator]
            "similarity": similarity,
            "real_correlation": r_real,
            "synthetic_correlation": r_synth,
            "real_strength": abs(r_real) if r_real is not None else 0.0,
            "synthetic_strength": abs(r_synth) if r_synth is not None else 0.0,
        }
    (ca_r, ok_ar), (cb_r, ok_br) = ar.contingency_codes(sdtype_a), br.contingency_codes(sdtype_b)
    (ca_s, ok_as), (cb_s, ok_bs) = as_.contingency_codes(sdtype_a), bs.contingency_codes(sdtype_b)
    real, synth = (ca_r, cb_r), (ca_s, cb_s)
    v_real = _cramers_v_table(_contingency(*real))
    v_synth = _cramers_v_table(_contingency(*synth)) if synth[0].size else None
    similarity = 1 - _joint_tvd(real, synth) if synth[0].size else None
    binned = ok_ar and ok_br and ok_as and ok_bs
    counted = binned and v_real is not None and v_real > ASSOCIATION_THRESHOLD and similarity is not None
    return {
        "metric": "ContingencySimilarity",
        "score": similarity if counted else None,
        "similarity": similarity,
        "real_association": v_real,
        "synthetic_association": v_synth,
        "real_strength": v_real if v_real is not None else 0.0,
        "synthetic_strength": v_synth if v_synth is not None else 0.0,
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def quality_scores(schema: Schema, real: list[_Column], synthetic: list[_Column]) -> dict[str, Any]:
    """Column Shapes, Column Pair Trends, overall (SDMetrics' QualityReport), and every pair's
    numbers for the dependency score."""
    sdtypes = [SDTYPES.get(c.kind) for c in schema.columns]
    shapes: list[dict[str, Any]] = []
    for column, sdtype, r, s in zip(schema.columns, sdtypes, real, synthetic):
        if sdtype is None:
            shapes.append({"column": column.name, "sdtype": None, "metric": None, "score": None})
            continue
        if sdtype == "categorical":
            metric, score = "TVComplement", tv_complement(r.x[r.present], s.x[s.present])
        elif column.kind in DATE_KINDS:
            metric = "KSComplement"
            pick = (lambda c: c.ns[c.present]) if r.ns is not None and s.ns is not None else (lambda c: c.x[c.present])
            score = ks_complement(pick(r), pick(s))
        else:
            metric = "KSComplement"
            score = ks_complement(np.round(r.x[r.present], KS_DECIMALS), np.round(s.x[s.present], KS_DECIMALS))
        shapes.append({"column": column.name, "sdtype": sdtype, "metric": metric, "score": score})
    pairs = []
    picked = [j for j, t in enumerate(sdtypes) if t is not None]
    for i, j in combinations(picked, 2):
        pair = _pair(sdtypes[i], (real[i], synthetic[i]), sdtypes[j], (real[j], synthetic[j]))
        loss = pair["real_strength"] * (1 - pair["similarity"]) if pair["similarity"] is not None else 0.0
        pairs.append({"columns": [schema.columns[i].name, schema.columns[j].name], **pair, "weighted_loss": loss})
    column_shapes = _mean([c["score"] for c in shapes])
    column_pair_trends = _mean([p["score"] for p in pairs])
    return {
        "overall": _mean([column_shapes, column_pair_trends]),
        "column_shapes": column_shapes,
        "column_pair_trends": column_pair_trends,
        "column_shape_details": shapes,
        "pairs": pairs,
    }


def _dependency(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    weighted = [p for p in pairs if p["similarity"] is not None and p["real_strength"] > 0]
    total = sum(p["real_strength"] for p in weighted)
    similar = [p["similarity"] for p in pairs if p["similarity"] is not None]
    out: dict[str, Any] = {
        "score": sum(p["real_strength"] * p["similarity"] for p in weighted) / total if total > 0 else None,
        "definition": DEPENDENCY_DEFINITION,
        "pairs": len(weighted),
        "total_weight": total,
        "all_pairs_mean": sum(similar) / len(similar) if similar else None,
        "all_pairs_mean_definition": "the unweighted mean of the same similarities over every pair (no threshold)",
        "top_losses": [
            {
                k: p[k]
                for k in ("columns", "metric", "real_strength", "synthetic_strength", "similarity", "weighted_loss")
            }
            for p in sorted(weighted, key=lambda p: -p["weighted_loss"])[:TOP_LOSSES]
            if p["weighted_loss"] > 0
        ],
    }
    if not pairs:
        out["note"] = "fewer than 2 non-text columns: no pairs"
    elif total <= 0:
        out["note"] = "no pair is dependent in the real data: nothing to lose, no dependency score"
    return out


def _strength_matrices(names: list[str], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    matrices = {}
    for side in ("real", "synthetic"):
        m = [[1.0 if i == j else 0.0 for j in range(k)] for i in range(k)]
        for p in pairs:
            i, j = index[p["columns"][0]], index[p["columns"][1]]
            m[i][j] = m[j][i] = float(p[f"{side}_strength"])
        matrices[side] = m
    return {
        "columns": names,
        "definition": "pair strength: |Pearson r| for two numerical/datetime columns, Cramér's V of SDMetrics' "
        "contingency table (missing a category, numbers in 10 bins) otherwise; text columns left out",
        **matrices,
    }


# --------------------------------------------------------------------------- privacy: copies and DCR


def _row_keys(columns: list[_Column]) -> list[tuple]:
    """One hashable key a row: each value as the measures read it (missing: None)."""
    if not columns:
        return []
    parts = [[None if not p else v for v, p in zip(c.x.tolist(), c.present.tolist())] for c in columns]
    return list(zip(*parts))


def _copies(train: list[_Column], synth: list[_Column], holdout: list[_Column] | None, n_synth: int) -> dict:
    train_keys, synth_keys = _row_keys(train), _row_keys(synth)
    train_counts, synth_counts = Counter(train_keys), Counter(synth_keys)
    out: dict[str, Any] = {
        "exact_copy_rate": sum(c for k, c in synth_counts.items() if k in train_counts) / n_synth,
        "real_duplicate_rate": sum(c for c in train_counts.values() if c > 1) / len(train_keys),
        "synthetic_duplicate_rate": sum(c for c in synth_counts.values() if c > 1) / n_synth,
        "holdout_copy_rate": None,
        "definition": "exact copy: a synthetic row equal (every column, values as parsed) to a training row; real "
        "duplicate rate: training rows equal to another training row (a table full of duplicates lets a model "
        "'copy' by chance); holdout copy rate: holdout rows equal to a training row, the copy rate of fresh draws "
        "from the real distribution; synthetic duplicate rate: synthetic rows equal to another synthetic row",
    }
    if holdout is not None:
        keys = _row_keys(holdout)
        out["holdout_copy_rate"] = sum(k in train_counts for k in keys) / len(keys)
    return out


def _gower_blocks(schema: Schema, cols: list[_Column], train: list[_Column], rows: np.ndarray):
    """(numbers scaled by the training column's range, NaN kept; category codes, -1 missing) of `rows`."""
    nums, cats = [], []
    for column, c, t in zip(schema.columns, cols, train):
        if column.kind in NUMERIC_KINDS:
            ref = t.x[t.present]
            if ref.size == 0:
                nums.append(np.full(rows.size, np.nan))
                continue
            lo, hi = float(ref.min()), float(ref.max())
            nums.append((c.x[rows] - lo) / (hi - lo if hi > lo else 1.0))
        else:
            cats.append(c.x[rows])
    return nums, cats


def closest_distances(a: tuple[list, list], b: tuple[list, list], chunk: int = 512) -> np.ndarray:
    """For each row of a, the Gower distance to its closest row of b (score.py's closest_distance)."""
    (a_num, a_cat), (b_num, b_cat) = a, b
    width = max(len(a_num) + len(a_cat), 1)
    n_a = a_num[0].size if a_num else a_cat[0].size
    n_b = b_num[0].size if b_num else b_cat[0].size
    b_missing = [np.isnan(x) for x in b_num]
    b_values = [np.where(m, 0.0, x) for x, m in zip(b_num, b_missing)]
    best = np.empty(n_a)
    for start in range(0, n_a, chunk):
        stop = min(start + chunk, n_a)
        total = np.zeros((stop - start, n_b))
        for x, bv, bm in zip(a_num, b_values, b_missing):
            xs = x[start:stop]
            xm = np.isnan(xs)
            d = np.minimum(np.abs(np.where(xm, 0.0, xs)[:, None] - bv[None, :]), 1.0)
            one = xm[:, None] ^ bm[None, :]
            d[one] = 1.0
            d[xm[:, None] & bm[None, :]] = 0.0
            total += d
        for x, bc in zip(a_cat, b_cat):
            total += x[start:stop, None] != bc[None, :]
        best[start:stop] = total.min(axis=1) / width
    return best


def _dcr(schema: Schema, train: list[_Column], holdout: list[_Column], synth: list[_Column]) -> dict[str, Any]:
    n_train, n_holdout, n_synth = train[0].x.size, holdout[0].x.size, synth[0].x.size
    rng = np.random.default_rng(DCR_SEED)
    n_ref = min(n_train, n_holdout, DCR_ROWS)
    train_ref = np.sort(rng.choice(n_train, n_ref, replace=False))
    holdout_ref = np.sort(rng.choice(n_holdout, n_ref, replace=False))
    synth_rows = np.arange(n_synth) if n_synth <= DCR_ROWS else np.sort(rng.choice(n_synth, DCR_ROWS, replace=False))
    enc = _gower_blocks(schema, synth, train, synth_rows)
    d_train = closest_distances(enc, _gower_blocks(schema, train, train, train_ref))
    d_holdout = closest_distances(enc, _gower_blocks(schema, holdout, train, holdout_ref))
    closer = np.where(d_train < d_holdout, 1.0, np.where(d_train == d_holdout, 0.5, 0.0))
    capped = []
    if n_synth > DCR_ROWS:
        capped.append(f"a seeded sample of {DCR_ROWS:,} of the {n_synth:,} synthetic rows")
    if n_ref < max(n_train, n_holdout):
        capped.append(
            f"{n_ref:,} training and {n_ref:,} holdout rows (seeded samples of {n_train:,} and {n_holdout:,})"
        )
    return {
        "train_median": float(np.median(d_train)),
        "holdout_median": float(np.median(d_holdout)),
        "closer_to_train_rate": float(closer.mean()),
        "rows": {"synthetic": int(synth_rows.size), "train": n_ref, "holdout": n_ref},
        "distance": "gower",
        "seed": DCR_SEED,
        "definition": DCR_DEFINITION,
        "note": ("compared: " + "; ".join(capped)) if capped else "compared: every synthetic row, equal-sized samples",
    }


# --------------------------------------------------------------------------- building


def build_report(
    columns: list[str],
    real_rows: list[list[str]],
    synthetic_rows: list[list[str]],
    *,
    schema: Schema | None = None,
    holdout_rows: list[list[str]] | None = None,
    holdout_note: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    valid: int | None = None,
    invalid: int | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict (see the module docstring and docs/tables.md).

    real_rows: the rows the model trained on (or the real table); holdout_rows: real rows it
    never trained on, for DCR (None: DCR is skipped, holdout_note says why). schema: the column
    kinds (default: inferred from the real rows). valid / invalid: the generation run's counts of
    kept and rejected records, when known. epsilon / delta: the differential-privacy budget the
    model was trained with, if any. sources: where the tables came from (shown as given)."""
    columns = list(columns)
    if not columns:
        raise DataError("the table has no columns")
    if not real_rows:
        raise DataError("the real table has no rows")
    if not synthetic_rows:
        raise DataError("the synthetic table has no rows; nothing to compare")
    for what, rows in (("real", real_rows), ("holdout", holdout_rows or [])):
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise DataError(f"{what} row {i + 1} has {len(row)} field(s), expected {len(columns)}")
    if holdout_rows is not None and not holdout_rows:
        raise DataError("the holdout table has no rows")
    for name, value in (("valid", valid), ("invalid", invalid)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DataError(f"{name} must be a count (an int >= 0), got {value!r}")
    if epsilon is None and delta is not None:
        raise DataError("delta without epsilon: give the privacy budget's epsilon too")
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise DataError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if delta is not None and not (isinstance(delta, (int, float)) and 0 <= delta < 1):
        raise DataError(f"delta must be a number in [0, 1), got {delta!r}")
    if schema is None:
        schema = infer_schema(columns, real_rows)
    if schema.names != columns:
        raise DataError(f"the schema's columns {schema.names} are not the table's columns {columns}")

    validity = _validity(schema, synthetic_rows, valid, invalid)
    shaped = [row for row in synthetic_rows if len(row) == len(columns)]  # others are invalid, counted there
    tables = [real_rows, shaped] + ([holdout_rows] if holdout_rows is not None else [])
    encoded = _encode_tables(schema, tables)
    real, synth = encoded[0], encoded[1]
    holdout = encoded[2] if holdout_rows is not None else None

    quality = quality_scores(schema, real, synth)
    pairs = quality.pop("pairs")
    shapes = {c["column"]: c for c in quality.pop("column_shape_details")}
    n_counted = sum(p["score"] is not None for p in pairs)
    quality.update(
        {
            "definition": QUALITY_DEFINITION,
            "implementation": f"synthloom's numpy implementation of the sdmetrics {SDMETRICS_VERSION} "
            "QualityReport definitions (no sdmetrics needed)",
            "thresholds": {"real_correlation": CORRELATION_THRESHOLD, "real_association": ASSOCIATION_THRESHOLD},
            "pairs_counted": n_counted,
            "pairs": len(pairs),
            "skipped_columns": [c.name for c in schema.columns if SDTYPES.get(c.kind) is None],
        }
    )
    if quality["column_pair_trends"] is None:
        quality["note"] = (
            "no pair is dependent enough in the real data to count (|r| > 0.5, Cramér's V > 0.3): "
            "overall = Column Shapes, as SDMetrics does; see the dependency score"
        )
    parsed = [
        (_parse_column(col, [r[j] for r in real_rows]), _parse_column(col, [r[j] for r in shaped]))
        for j, col in enumerate(schema.columns)
    ]
    column_reports = [_column_report(col, r, s, shapes[col.name]) for col, (r, s) in zip(schema.columns, parsed)]
    names = [c.name for c in schema.columns if SDTYPES.get(c.kind) is not None]

    n = len(synthetic_rows)
    if holdout is not None and shaped:
        dcr: dict[str, Any] = _dcr(schema, real, holdout, synth)
    else:
        reason = holdout_note or "no holdout: DCR needs real rows the model never trained on"
        dcr = {"skipped": reason if shaped else "no synthetic row has the table's fields", "definition": DCR_DEFINITION}
    if epsilon is None:
        privacy = {
            "differentially_private": False,
            "epsilon": None,
            "delta": None,
            "note": "not differentially private",
        }
    else:
        privacy = {
            "differentially_private": True,
            "epsilon": float(epsilon),
            "delta": None if delta is None else float(delta),
            "note": "the model was trained with differential privacy; this report is computed from the real data "
            "and is not itself private",
        }
    overall = quality["overall"]
    return {
        "version": 2,
        "score": None if overall is None else 100 * overall,
        "score_definition": SCORE_DEFINITION,
        "quality": quality,
        "dependency": _dependency(pairs),
        "rows": {
            "real": len(real_rows),
            "synthetic": n,
            "holdout": None if holdout_rows is None else len(holdout_rows),
        },
        "sources": dict(sources or {}),
        "validity": validity,
        "copies": _copies(real, synth, holdout, n),
        "dcr": dcr,
        "privacy": privacy,
        "columns": column_reports,
        "pairs": pairs,
        "associations": _strength_matrices(names, pairs),
        "schema": schema.to_dict(include_categories=False, include_ranges=False),
    }


def _validity(schema: Schema, rows: list[list[str]], valid: int | None, invalid: int | None) -> dict[str, Any]:
    problems = [(i, p) for i, row in enumerate(rows) if (p := check_fields(schema, row)) is not None]
    checked = 1 - len(problems) / len(rows)
    out: dict[str, Any] = {
        "rate": checked,
        "source": "share of synthetic rows that pass the schema check",
        "schema_check_rate": checked,
        "valid": valid,
        "invalid": invalid,
        "examples": [{"row": i + 1, "problem": p} for i, p in problems[:5]],
        "note": "reported on its own, in no score: a saved synthetic table holds the valid rows only",
    }
    if invalid is not None:
        valid = valid if valid is not None else len(rows)
        if valid + invalid == 0:
            raise DataError("valid + invalid is 0: no records to rate")
        out["rate"] = valid / (valid + invalid)
        out["source"] = "generation run: valid / (valid + invalid)"
    return out


def _parse_column(column: ColumnSchema, texts: list[str]) -> list[Any]:
    """Each field's value: a float for numbers and dates, a str otherwise, None when
    missing, _INVALID when it does not parse."""
    key = numeric_key(column) if column.kind in NUMERIC_KINDS else None
    out: list[Any] = []
    for text in texts:
        if is_missing(column, text):
            out.append(None)
            continue
        try:
            value = parse_value(column, text)
        except ValueError:
            out.append(_INVALID)
            continue
        out.append(key(value) if key is not None else value)
    return out


def _shares(n_rows: int, values: list[Any]) -> tuple[float, float]:
    missing = sum(v is None for v in values)
    invalid = sum(v is _INVALID for v in values)
    return missing / n_rows if n_rows else 0.0, invalid / n_rows if n_rows else 0.0


def _stats(x: np.ndarray) -> dict[str, float] | None:
    if x.size == 0:
        return None
    q = np.percentile(x, [0, 25, 50, 75, 100])
    return {
        "count": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "max": float(q[4]),
    }


def _histogram(real: np.ndarray, synth: np.ndarray, n_real: int, n_synth: int) -> dict[str, Any]:
    """Shares of all rows in BINS equal bins over the real range (values outside: end bins).
    A real column without values has one bin, over the synthetic range."""
    bins = BINS if real.size else 1
    ref = real if real.size else synth
    lo, hi = (float(ref.min()), float(ref.max())) if ref.size else (0.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, bins + 1)

    def shares(x: np.ndarray, n: int) -> list[float]:
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        counts = np.bincount(idx, minlength=bins)
        return [float(c) / n for c in counts] if n else [0.0] * bins

    return {"edges": [float(e) for e in edges], "real": shares(real, n_real), "synthetic": shares(synth, n_synth)}


def _column_report(column: ColumnSchema, real: list[Any], synth: list[Any], shape: dict[str, Any]) -> dict[str, Any]:
    """What a column looks like on both sides (for people: histograms, frequencies, statistics)
    and its Column Shapes score."""
    n_real, n_synth = len(real), len(synth)
    real_missing, real_invalid = _shares(n_real, real)
    synth_missing, synth_invalid = _shares(n_synth, synth)
    out: dict[str, Any] = {
        "name": column.name,
        "kind": column.kind,
        "sdtype": shape["sdtype"],
        "metric": shape["metric"],
        "score": shape["score"],
        "missing_rate": {"real": real_missing, "synthetic": synth_missing},
        "invalid_rate": {"real": real_invalid, "synthetic": synth_invalid},
    }
    if shape["sdtype"] is None:
        out["note"] = "text: left out of the quality score, as SDMetrics leaves out text, id and PII columns"
    real_present = [v for v in real if v is not None and v is not _INVALID]
    synth_present = [v for v in synth if v is not None and v is not _INVALID]

    if column.kind in NUMERIC_KINDS:
        x, y = np.asarray(real_present, dtype=float), np.asarray(synth_present, dtype=float)
        out["unit"] = UNITS.get(column.kind)
        out["stats"] = {"real": _stats(x), "synthetic": _stats(y)}
        out["histogram"] = _histogram(x, y, n_real, n_synth)
    elif column.kind == "categorical":
        rc, sc = Counter(real_present), Counter(synth_present)
        top = sorted(rc, key=lambda v: (-rc[v], v))[:TOP_CATEGORIES]
        out["categories"] = [
            {"value": v, "real": rc[v] / n_real, "synthetic": sc[v] / n_synth if n_synth else 0.0} for v in top
        ]
        top_set = set(top)
        out["other"] = {
            "real": sum(c for v, c in rc.items() if v not in top_set) / n_real,
            "synthetic": sum(c for v, c in sc.items() if v not in top_set) / n_synth if n_synth else 0.0,
        }
        out["distinct"] = {"real": len(rc), "synthetic": len(sc)}
        out["unseen_rate"] = sum(c for v, c in sc.items() if v not in rc) / n_synth if n_synth else 0.0
    else:  # text
        x = np.asarray([len(v) for v in real_present], dtype=float)
        y = np.asarray([len(v) for v in synth_present], dtype=float)
        out["length_stats"] = {"real": _stats(x), "synthetic": _stats(y)}
        out["length_histogram"] = _histogram(x, y, n_real, n_synth)
        seen = set(real_present)
        out["verbatim_rate"] = sum(v in seen for v in synth_present) / len(synth_present) if synth_present else None
    return out


# --------------------------------------------------------------------------- associations for column groups

# synthloom.groups places correlated columns together by these measures (|Pearson r|, Cramér's V of the
# values present, the correlation ratio eta); the report's own pair measures are SDMetrics' above.


def _abs_pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return min(1.0, abs(float(dx @ dy)) / math.sqrt(sxx * syy))


def _cramers_v_codes(a: np.ndarray, b: np.ndarray) -> float:
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    r, c = int(a.max()) + 1, int(b.max()) + 1
    if min(r, c) < 2:
        return 0.0
    table = np.bincount(a * c + b, minlength=r * c).reshape(r, c).astype(float)
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return min(1.0, math.sqrt(chi2 / (n * (min(r, c) - 1))))


def _eta(x: np.ndarray, groups: np.ndarray) -> float:
    _, g = np.unique(groups, return_inverse=True)
    dx = x - x.mean()
    total = float(dx @ dx)
    if total <= 0:
        return 0.0
    sizes = np.bincount(g)
    means = np.bincount(g, weights=x) / sizes
    between = float((sizes * (means - x.mean()) ** 2).sum())
    return min(1.0, math.sqrt(max(0.0, between) / total))


def _as_array(column: ColumnSchema, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(values, present mask): floats for numbers, integer codes for categories."""
    present = np.array([v is not None and v is not _INVALID for v in values], dtype=bool)
    if column.kind in NUMERIC_KINDS:
        arr = np.array([v if p else 0.0 for v, p in zip(values, present)], dtype=float)
    else:
        codes: dict[str, int] = {}
        arr = np.array([codes.setdefault(v, len(codes)) if p else -1 for v, p in zip(values, present)], dtype=int)
    return arr, present


def _association(kind_a: str, a: tuple[np.ndarray, np.ndarray], kind_b: str, b: tuple[np.ndarray, np.ndarray]) -> float:
    keep = a[1] & b[1]
    if keep.sum() < 2:
        return 0.0
    x, y = a[0][keep], b[0][keep]
    num_a, num_b = kind_a in NUMERIC_KINDS, kind_b in NUMERIC_KINDS
    if num_a and num_b:
        return _abs_pearson(x, y)
    if not num_a and not num_b:
        return _cramers_v_codes(x, y)
    return _eta(x, y) if num_a else _eta(y, x)


def association_matrix(schema: Schema, rows: list[list[str]]) -> list[list[float]]:
    """|Pearson r|, Cramér's V or eta between every two columns of `rows`, rows missing either value left
    out (text columns: 0 with all others); what synthloom.groups groups columns by."""
    arrays = [_as_array(c, _parse_column(c, [row[j] for row in rows])) for j, c in enumerate(schema.columns)]
    k = len(arrays)
    m = [[1.0 if i == j else 0.0 for j in range(k)] for i in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            a, b = schema.columns[i], schema.columns[j]
            if a.kind != "text" and b.kind != "text":
                m[i][j] = m[j][i] = _association(a.kind, arrays[i], b.kind, arrays[j])
    return m


# --------------------------------------------------------------------------- writing


def check_report_path(path: str | Path) -> Path:
    """Refuse, before any work, a suffix write_report cannot write."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise DataError(f"report {path}: use a {', '.join(REPORT_SUFFIXES)} file")
    if path.is_dir():
        raise DataError(f"report {path} is a directory; give a file name, e.g. {path / 'report.html'}")
    return path


def write_report(report: dict[str, Any], path: str | Path, render: Any = None) -> None:
    """The report as JSON (.json, indent 2) or one self-contained HTML file (.html, .htm, made by
    `render`, default render_html), written whole to a temporary file and renamed."""
    path = check_report_path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    else:
        text = (render or render_html)(report)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1150px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.score { font-size: 3rem; font-weight: 700; margin: 0.5rem 0; }
code, .definition { background: #f4f4f4; padding: 0.1rem 0.3rem; border-radius: 3px; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.columns { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1rem; }
.column { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem; }
.column h3 { margin: 0 0 0.3rem; word-break: break-all; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9rem; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.4g}"


def _display(kind: str, x: float | None, spread: bool = False) -> str:
    """A number as the user wrote it: dates back to dates, spreads in days."""
    if x is None:
        return "–"
    if kind == "date":
        return f"{x:.1f} days" if spread else date.fromordinal(int(round(x))).isoformat()
    if kind == "datetime":
        if spread:
            return f"{x / 86400:.2f} days"
        return datetime.fromtimestamp(x, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return _num(x)


def _plot_label(text: Any, width: int = 28) -> str:
    """Text for matplotlib: one line, no mathtext, not too long."""
    s = " ".join(str(text).split())
    if len(s) > width:
        s = s[: width - 1] + "…"
    return s.replace("$", r"\$")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a glyph missing from the font
        fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, **margins: float) -> Any:
    # the Agg canvas directly: no pyplot, no window, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)  # fixed margins: a layout engine costs more than the plot
    fig.subplots_adjust(**{"left": 0.11, "right": 0.98, "bottom": 0.2, "top": 0.95, **margins})
    FigureCanvasAgg(fig)
    return fig


def _plot_histogram(col: dict[str, Any], hist: dict[str, Any], xlabel: str) -> str:
    edges = hist["edges"]
    dates = col["kind"] in ("date", "datetime")
    fig = _figure(6.2, 2.8, bottom=0.3 if dates else 0.2)
    ax = fig.add_subplot()
    ax.stairs(hist["real"], edges, fill=True, alpha=0.5, label="real", color="tab:blue")
    ax.stairs(hist["synthetic"], edges, linewidth=2, label="synthetic", color="tab:orange")
    if dates:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        kind = col["kind"]

        def tick(x: float, _: Any) -> str:
            try:
                return _display(kind, x)[:10]
            except (ValueError, OverflowError, OSError):  # a tick outside the calendar
                return ""

        ax.xaxis.set_major_formatter(FuncFormatter(tick))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(axis="x", labelrotation=20)
    if len(hist["real"]) == 1:
        ax.text(0.5, 0.5, "no values in the real column", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def _plot_categories(col: dict[str, Any]) -> str:
    labels = [_plot_label(c["value"]) for c in col["categories"]]
    real = [c["real"] for c in col["categories"]]
    synth = [c["synthetic"] for c in col["categories"]]
    extras = [("(other)", col["other"]), ("(missing)", col["missing_rate"]), ("(invalid)", col["invalid_rate"])]
    for label, shares in extras:
        if shares["real"] or shares["synthetic"]:
            labels.append(label)
            real.append(shares["real"])
            synth.append(shares["synthetic"])
    height = 1.0 + 0.22 * max(3, len(labels))
    left = min(0.45, 0.04 + 0.0115 * max(len(label) for label in labels))
    fig = _figure(6.2, height, left=left, bottom=0.55 / height, top=1 - 0.1 / height)
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y - 0.2, real, height=0.4, label="real", color="tab:blue")
    ax.barh(y + 0.2, synth, height=0.4, label="synthetic", color="tab:orange")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def _plot_associations(assoc: dict[str, Any]) -> str:
    """The two matrices side by side on one colour scale (0 to 1); axes placed in inches so
    that long column names always fit."""
    names = [_plot_label(n, 18) for n in assoc["columns"]]
    k = len(names)
    label = 0.35 + 0.06 * max(len(n) for n in names)  # room for the tick labels
    side = min(5.5, 1.2 + 0.3 * k)  # each square matrix
    width, height = 2 * (label + side) + 1.0, side + label + 0.35
    fig = _figure(width, height)
    image = None
    for n, key in enumerate(("real", "synthetic")):
        left = label + n * (label + side)
        ax = fig.add_axes((left / width, label / height, side / width, side / height))
        m = np.array(assoc[key], dtype=float)
        image = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(key, fontsize=10)
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    color = "w" if m[i, j] < 0.6 else "k"
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6, color=color)
    cax = fig.add_axes(((2 * (label + side) + 0.2) / width, label / height, 0.15 / width, side / height))
    fig.colorbar(image, cax=cax, label="pair strength (0 to 1)")
    return _png(fig)


def _stats_rows(stats: dict[str, Any], kind: str, prefix: str = "") -> str:
    rows = []
    for key in ("mean", "std", "min", "q25", "median", "q75", "max"):
        cells = []
        for side in ("real", "synthetic"):
            s = stats[side]
            cells.append("–" if s is None else _display(kind, s[key], spread=key == "std"))
        rows.append(
            f"<tr><th>{prefix}{key}</th><td class=num>{_esc(cells[0])}</td><td class=num>{_esc(cells[1])}</td></tr>"
        )
    return "".join(rows)


def _score(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _column_section(col: dict[str, Any]) -> str:
    kind = col["kind"]
    scored = f"{col['metric']} <b>{_score(col['score'])}</b>" if col["sdtype"] else "not scored (text)"
    parts = [
        f"<div class=column><h3>{_esc(col['name'])}</h3>",
        f"<p>{_esc(kind)} · {scored} · missing {_pct(col['missing_rate']['real'])} "
        f"real / {_pct(col['missing_rate']['synthetic'])} synthetic · invalid synthetic "
        f"{_pct(col['invalid_rate']['synthetic'])}</p>",
    ]
    if kind in NUMERIC_KINDS:
        png = _plot_histogram(col, col["histogram"], "value")
        table = _stats_rows(col["stats"], kind)
    elif kind == "categorical":
        png = _plot_categories(col)
        table = (
            f"<tr><th>distinct values</th><td class=num>{col['distinct']['real']}</td>"
            f"<td class=num>{col['distinct']['synthetic']}</td></tr>"
            f"<tr><th>unseen in real</th><td></td><td class=num>{_pct(col['unseen_rate'])}</td></tr>"
            + "".join(
                f"<tr><td>{_esc(c['value'])}</td><td class=num>{_pct(c['real'])}</td>"
                f"<td class=num>{_pct(c['synthetic'])}</td></tr>"
                for c in col["categories"]
            )
            + f"<tr><td>(other)</td><td class=num>{_pct(col['other']['real'])}</td>"
            f"<td class=num>{_pct(col['other']['synthetic'])}</td></tr>"
        )
    else:
        png = _plot_histogram(col, col["length_histogram"], "length (characters)")
        table = _stats_rows(col["length_stats"], "integer", prefix="length ") + (
            f"<tr><th>seen verbatim in real</th><td></td><td class=num>{_pct(col['verbatim_rate'])}</td></tr>"
        )
    parts.append(
        f'<img class="column-plot" alt="real vs synthetic: {_esc(col["name"])}" src="data:image/png;base64,{png}">'
    )
    parts.append(f"<table><tr><th></th><th>real</th><th>synthetic</th></tr>{table}</table></div>")
    return "\n".join(parts)


def _rows_table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, plots as inline PNG) from a report dict."""
    quality, dep, dcr, copies = report["quality"], report["dependency"], report["dcr"], report["copies"]
    validity, privacy, assoc = report["validity"], report["privacy"], report["associations"]
    if privacy["differentially_private"]:
        eps = f"ε = {privacy['epsilon']:g}" + (f", δ = {privacy['delta']:g}" if privacy["delta"] is not None else "")
    else:
        eps = "not differentially private"
    overall = quality["overall"]
    headline = "–" if overall is None else f"{overall:.3f} ({100 * overall:.1f} %)"
    scored_columns = sum(c["score"] is not None for c in report["columns"])
    rows = report["rows"]
    dcr_text = (
        f"{_pct(dcr['closer_to_train_rate'])} of synthetic rows closer to a training row than to any holdout row"
        if "skipped" not in dcr
        else f"skipped: {dcr['skipped']}"
    )
    summary = [
        ("Column Shapes", f"{_score(quality['column_shapes'])} (mean over {scored_columns} column(s))"),
        (
            "Column Pair Trends",
            f"{_score(quality['column_pair_trends'])} (mean over the {quality['pairs_counted']} of "
            f"{quality['pairs']} pair(s) dependent in the real data)",
        ),
        ("dependency score", f"{_score(dep['score'])} (every pair unweighted: {_score(dep['all_pairs_mean'])})"),
        ("DCR", dcr_text),
        (
            "exact copies",
            f"{_pct(copies['exact_copy_rate'])} of synthetic rows equal a training row (the training rows' own "
            f"duplicate rate: {_pct(copies['real_duplicate_rate'])}"
            + (
                f"; holdout rows equal to a training row: {_pct(copies['holdout_copy_rate'])}"
                if copies["holdout_copy_rate"] is not None
                else ""
            )
            + ")",
        ),
        ("validity rate", f"{_pct(validity['rate'])} ({validity['source']}; in no score)"),
        (
            "rows",
            f"{rows['real']:,} real, {rows['synthetic']:,} synthetic"
            + (f", {rows['holdout']:,} holdout" if rows["holdout"] is not None else ""),
        ),
        ("privacy", f"{eps} — {privacy['note']}" if privacy["differentially_private"] else eps),
    ]
    summary += [(f"{k} table", v) for k, v in report.get("sources", {}).items()]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>synthloom quality report: {headline}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Synthetic data quality report</h1>",
        "<p>SDMetrics QualityReport score (sdmetrics 0.32 definitions, 0 to 1)</p>",
        f'<div class="score">{_esc(headline)}</div>',
        f'<p class="definition">{_esc(report["score_definition"])}</p>',
        _rows_table(summary),
        "<h2>Quality</h2>",
        f"<p class=note>{_esc(quality['definition'])}</p>",
    ]
    if quality.get("note"):
        out.append(f"<p>{_esc(quality['note'])}</p>")
    out.append("<h2>Dependencies</h2>")
    out.append(
        f"<p>dependency score <b>{_score(dep['score'])}</b>"
        + (f": {_esc(dep['note'])}" if dep.get("note") else "")
        + "</p>"
    )
    out.append(f"<p class=note>{_esc(dep['definition'])}</p>")
    if dep["top_losses"]:
        out.append(
            f"<p>The {len(dep['top_losses'])} pair(s) with the biggest weighted loss:</p>"
            "<table class=losses><tr><th>pair</th><th>metric</th><th>real strength</th><th>synthetic strength</th>"
            "<th>similarity</th><th>weighted loss</th></tr>"
            + "".join(
                f"<tr><td>{_esc(' ~ '.join(p['columns']))}</td><td>{_esc(p['metric'])}</td>"
                f"<td class=num>{p['real_strength']:.3f}</td><td class=num>{p['synthetic_strength']:.3f}</td>"
                f"<td class=num>{_score(p['similarity'])}</td><td class=num>{p['weighted_loss']:.3f}</td></tr>"
                for p in dep["top_losses"]
            )
            + "</table>"
        )
    if len(assoc["columns"]) >= 2:
        out.append(f"<p class=note>{_esc(assoc['definition'])}</p>")
        out.append(
            f'<img class="association-plot" alt="pair strengths, real and synthetic" '
            f'src="data:image/png;base64,{_plot_associations(assoc)}">'
        )
    out.append("<h2>Columns</h2>")
    out.append(
        "<table><tr><th>column</th><th>kind</th><th>sdtype</th><th>metric</th><th>score</th><th>missing real</th>"
        "<th>missing synthetic</th><th>invalid synthetic</th></tr>"
        + "".join(
            f"<tr><td>{_esc(c['name'])}</td><td>{_esc(c['kind'])}</td><td>{_esc(c['sdtype'] or '–')}</td>"
            f"<td>{_esc(c['metric'] or 'left out')}</td><td class=num>{_score(c['score'])}</td>"
            f"<td class=num>{_pct(c['missing_rate']['real'])}</td><td class=num>{_pct(c['missing_rate']['synthetic'])}"
            f"</td><td class=num>{_pct(c['invalid_rate']['synthetic'])}</td></tr>"
            for c in report["columns"]
        )
        + "</table>"
    )
    out.append(
        "<p class=note>The plots and statistics describe each column (20 bins over the real range for numbers, "
        "dates and text lengths; shares of all rows); the score is the column's Column Shapes metric.</p>"
    )
    out.append('<div class="columns">')
    out.extend(_column_section(c) for c in report["columns"])
    out.append("</div>")
    out.append("<h2>Privacy</h2>")
    if "skipped" in dcr:
        out.append(f"<p>DCR skipped: {_esc(dcr['skipped'])}.</p>")
    else:
        out.append(
            _rows_table(
                [
                    ("closer to train", f"{_pct(dcr['closer_to_train_rate'])} (about 50 % without memorisation)"),
                    ("median DCR to training rows", f"{dcr['train_median']:.4f}"),
                    ("median DCR to holdout rows", f"{dcr['holdout_median']:.4f}"),
                    (
                        "rows compared",
                        f"{dcr['rows']['synthetic']:,} synthetic, {dcr['rows']['train']:,} training, "
                        f"{dcr['rows']['holdout']:,} holdout ({dcr['note']})",
                    ),
                ]
            )
        )
    out.append(f"<p class=note>{_esc(dcr['definition'])}</p>")
    out.append(
        _rows_table(
            [
                ("exact copies of training rows", _pct(copies["exact_copy_rate"])),
                ("training rows' own duplicate rate", _pct(copies["real_duplicate_rate"])),
                ("holdout rows equal to a training row", _pct(copies["holdout_copy_rate"])),
                ("synthetic duplicate rate", _pct(copies["synthetic_duplicate_rate"])),
            ]
        )
    )
    out.append(f"<p class=note>{_esc(copies['definition'])}</p>")
    out.append(
        f"<p>{_esc(eps)}. {_esc(privacy['note'])}.</p>"
        if privacy["differentially_private"]
        else "<p>not differentially private.</p>"
    )
    out.append(
        "<p class=note>This report is computed from the real data (frequencies, ranges, distances to real rows): "
        "it is a diagnostic for the data owner and not itself differentially private.</p>"
    )
    out.append("<h2>Validity</h2>")
    out.append(
        _rows_table(
            [
                ("validity rate", f"{_pct(validity['rate'])} ({validity['source']})"),
                ("schema check pass rate", _pct(validity["schema_check_rate"])),
            ]
        )
    )
    out.append(f"<p class=note>{_esc(validity['note'])}</p>")
    if validity["examples"]:
        items = "".join(f"<li>row {e['row']}: {_esc(e['problem'])}</li>" for e in validity["examples"])
        out.append(f"<p class=note>Schema check failures (first {len(validity['examples'])}):</p><ul>{items}</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
