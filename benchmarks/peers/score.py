"""Score a synthetic table against the real one: SDMetrics' QualityReport, validity, copies, DCR.

    benchmarks/.venvs/sdmetrics/bin/python benchmarks/peers/score.py TRAIN.csv HOLDOUT.csv SYNTH.csv
        [--metadata auto|METADATA.json] [--seed 0] [--dcr-rows 5000]

Prints one JSON line. Run with the sdmetrics venv (benchmarks/peers/setup.sh sdmetrics); the
script needs only pandas, numpy and sdmetrics, and knows nothing of the engine that made SYNTH.

Reading. Every CSV is read the same way, pandas' defaults (`NA`, an empty field and pandas'
other NA strings are missing, NaN), then each column is put in the form its kind (from the
real training table) dictates: numerical -> float (a value that does not parse -> NaN, and the
row invalid), datetime -> datetime64 (tz-naive UTC), categorical -> a canonical string (a
number-valued category as its number: `1`, `1.0` and ` 1` are one category).

Metadata (`--metadata auto`, the default): each column's sdtype is detected from the real
training table, and low-cardinality columns are made categorical whatever their dtype:
a column with at most 10 distinct values, or a text column (not parseable as numbers), is
categorical, unless every value of a text column parses as a date/time (datetime); any other
column is numerical. No column is treated as an id or PII (SDMetrics would skip those).
This is what SDV's `Metadata.detect_from_dataframe` followed by those two corrections gives;
it is done here so that the scorer's venv needs no SDV (and no torch). `--metadata FILE`
takes an SDV single-table metadata JSON instead ({"columns": ...} or {"tables": {...}}).

Measures:
- quality, column_shapes, column_pair_trends: QualityReport's overall score and its two
  properties, synthetic vs the real TRAIN table (what the engine saw); worst_shapes and
  worst_pairs name the three lowest of each (NaN scores, e.g. a constant column, left out).
- valid_pct: synthetic rows whose every value is of its column's kind: a numerical value parses
  as a number (an integer if the real column holds integers only) within the real min..max; a
  categorical value is one the real table (train + holdout) has; a datetime parses and lies within
  the real range; a missing value only where the real column has missing values.
- exact_copy_pct: synthetic rows equal (all columns, after the reading above) to a training row.
- real_duplicate_pct: training rows equal to another training row: a table with many
  duplicates lets an engine "copy" by chance. holdout_copy_pct: holdout rows equal to a
  training row, the copy rate of fresh draws from the real distribution: the fair yardstick.
- DCR (distance to closest record), Gower distance: the mean over columns of |a - b| / range
  (range of the real training column, each term capped at 1) for numerical and datetime columns
  and of a 0/1 mismatch for categorical ones; a missing value is a category of its own (missing
  vs missing 0, missing vs a value 1). Train and holdout rows are compared at equal size: a seeded
  sample of as many training rows as there are holdout rows; at most --dcr-rows synthetic rows
  (seeded sample). dcr_train_median / dcr_holdout_median: the median over synthetic rows of the
  distance to the closest row of each; dcr_closer_to_train_pct: synthetic rows closer to a training
  row than to every holdout row (a tie counts half): about 50 % when the engine does not memorise.
  It is a test at equal sizes, not a copy detector: with a 20 % holdout the training sample is a
  quarter of the training rows, so an engine that only replays training rows reads about 62 %
  (measured: 61 % for the penguins training part scored as its own synthetic table); verbatim
  copies are what exact_copy_pct counts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
import time
import warnings

import numpy as np
import pandas as pd

CATEGORICAL_MAX_DISTINCT = 10


def read_csv(path: str) -> pd.DataFrame:
    """Every CSV the same way: pandas' default NA handling, nothing else guessed."""
    return pd.read_csv(path, low_memory=False)


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def _datetime(series: pd.Series) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    return out.dt.tz_localize(None)


def _seconds(series: pd.Series) -> pd.Series:
    return (series - pd.Timestamp(0)).dt.total_seconds()


def _parses_as_numbers(series: pd.Series) -> bool:
    present = series.dropna()
    return pd.api.types.is_numeric_dtype(series) or (len(present) > 0 and _numeric(present).notna().all())


def detect_metadata(real: pd.DataFrame) -> dict:
    columns = {}
    for name in real.columns:
        col = real[name]
        present = col.dropna()
        if _parses_as_numbers(col):
            kind = "categorical" if present.nunique() <= CATEGORICAL_MAX_DISTINCT else "numerical"
        elif len(present) and present.nunique() > CATEGORICAL_MAX_DISTINCT and _datetime(present).notna().all():
            kind = "datetime"
        else:
            kind = "categorical"
        columns[name] = {"sdtype": kind}
    return {"columns": columns}


def load_metadata(arg: str, real: pd.DataFrame) -> dict:
    if arg == "auto":
        return detect_metadata(real)
    with open(arg) as f:
        meta = json.load(f)
    if "tables" in meta:  # SDV's multi-table form holding one table
        (meta,) = meta["tables"].values()
    return {"columns": {name: {"sdtype": spec["sdtype"]} for name, spec in meta["columns"].items()}}


def _canonical_category(series: pd.Series, numeric: bool) -> pd.Series:
    """Categories as strings, numbers in one spelling (1, 1.0 -> "1"); NaN stays NaN."""
    if numeric:
        num = _numeric(series)
        text = series.astype("string").str.strip()
        as_number = num.map(lambda v: format(v, ".15g") if not math.isnan(v) else None)
        out = as_number.where(num.notna(), text)  # unparseable text kept as itself (an unseen category)
    else:
        out = series.astype("string").str.strip()
    return out.astype(object).where(series.notna(), np.nan)


def normalise(frame: pd.DataFrame, meta: dict, numeric_categories: set[str]) -> pd.DataFrame:
    out = {}
    for name, spec in meta["columns"].items():
        col = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        if spec["sdtype"] == "numerical":
            out[name] = _numeric(col)
        elif spec["sdtype"] == "datetime":
            out[name] = _datetime(col)
        else:
            out[name] = _canonical_category(col, name in numeric_categories)
    return pd.DataFrame(out, index=frame.index)


def validity(raw: pd.DataFrame, synth: pd.DataFrame, real: pd.DataFrame, meta: dict) -> tuple[np.ndarray, dict]:
    """Per synthetic row: every value of its column's kind (see the module docstring)."""
    ok = np.ones(len(synth), dtype=bool)
    failures = {}
    for name, spec in meta["columns"].items():
        if name not in raw:
            ok[:] = False
            failures[name] = len(synth)
            continue
        values, was_missing = synth[name], raw[name].isna().to_numpy()
        parsed = values.notna().to_numpy()
        real_col = real[name].dropna()
        if spec["sdtype"] == "numerical":
            in_range = ((values >= real_col.min()) & (values <= real_col.max())).to_numpy()
            good = parsed & in_range
            if (real_col == np.round(real_col)).all():
                good &= (values == np.round(values)).to_numpy()
        elif spec["sdtype"] == "datetime":
            good = parsed & ((values >= real_col.min()) & (values <= real_col.max())).to_numpy()
        else:
            good = values.isin(set(real_col)).to_numpy()
        allowed_missing = real[name].isna().any()
        good = np.where(was_missing, allowed_missing, good)
        failures[name] = int((~good).sum())
        ok &= good
    return ok, {k: v for k, v in failures.items() if v}


def row_keys(frame: pd.DataFrame) -> pd.Series:
    """One hashable key a row (NaN and NaT as one marker) for exact-match counts."""
    parts = []
    for name in frame.columns:
        col = frame[name]
        parts.append(col.astype(object).where(col.notna(), "\x00NA"))
    return pd.Series(list(zip(*parts)), index=frame.index) if parts else pd.Series([], dtype=object)


def gower_encode(frame: pd.DataFrame, meta: dict, train: pd.DataFrame, codes: dict):
    """Numerical block scaled by the training range (NaN kept) and categorical codes (NaN -> -1)."""
    num_cols = [c for c, s in meta["columns"].items() if s["sdtype"] in ("numerical", "datetime")]
    cat_cols = [c for c, s in meta["columns"].items() if s["sdtype"] == "categorical"]
    nums = []
    for c in num_cols:
        col, ref = frame[c], train[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            col, ref = _seconds(col), _seconds(ref)
        lo, hi = ref.min(), ref.max()
        span = hi - lo if hi > lo else 1.0
        nums.append(((col - lo) / span).to_numpy(dtype=float))
    cats = []
    for c in cat_cols:
        mapping = codes.setdefault(c, {})
        cats.append(np.array([-1 if pd.isna(v) else mapping.setdefault(v, len(mapping)) for v in frame[c]]))
    num = np.stack(nums, axis=1) if nums else np.zeros((len(frame), 0))
    cat = np.stack(cats, axis=1) if cats else np.zeros((len(frame), 0), dtype=int)
    return num, cat


def closest_distance(a: tuple, b: tuple, chunk: int = 256) -> np.ndarray:
    """For each row of a, the Gower distance to its closest row of b."""
    (an, ac), (bn, bc) = a, b
    width = an.shape[1] + ac.shape[1]
    b_nan = np.isnan(bn)
    b_val = np.where(b_nan, 0.0, bn)
    best = np.empty(len(an))
    for start in range(0, len(an), chunk):
        xn, xc = an[start : start + chunk], ac[start : start + chunk]
        x_nan = np.isnan(xn)
        diff = np.minimum(np.abs(np.where(x_nan, 0.0, xn)[:, None, :] - b_val[None, :, :]), 1.0)
        one_missing = x_nan[:, None, :] ^ b_nan[None, :, :]
        both_missing = x_nan[:, None, :] & b_nan[None, :, :]
        total = np.where(one_missing, 1.0, np.where(both_missing, 0.0, diff)).sum(axis=2)
        total += (xc[:, None, :] != bc[None, :, :]).sum(axis=2)
        best[start : start + chunk] = total.min(axis=1) / max(width, 1)
    return best


def quality(train: pd.DataFrame, synth: pd.DataFrame, meta: dict) -> dict:
    from sdmetrics.reports import QualityReport

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate({"table": train}, {"table": synth}, {"tables": {"table": meta}}, verbose=False)
    props = dict(zip(report.get_properties()["Property"], report.get_properties()["Score"]))
    shapes = report.get_details("Column Shapes").dropna(subset=["Score"]).sort_values("Score")
    pairs = report.get_details("Column Pair Trends").dropna(subset=["Score"]).sort_values("Score")
    return {
        "quality": round(float(report.get_score()), 4),
        "column_shapes": round(float(props["Column Shapes"]), 4),
        "column_pair_trends": round(float(props["Column Pair Trends"]), 4),
        "worst_shapes": [[r["Column"], round(float(r["Score"]), 3)] for _, r in shapes.head(3).iterrows()],
        "worst_pairs": [
            [f"{r['Column 1']}~{r['Column 2']}", round(float(r["Score"]), 3)] for _, r in pairs.head(3).iterrows()
        ],
    }


def score(train_path: str, holdout_path: str, synth_path: str, metadata: str, seed: int, dcr_rows: int) -> dict:
    start = time.perf_counter()
    train_raw, holdout_raw, synth_raw = read_csv(train_path), read_csv(holdout_path), read_csv(synth_path)
    meta = load_metadata(metadata, train_raw)
    numeric_categories = {c for c in train_raw.columns if _parses_as_numbers(train_raw[c])}
    train = normalise(train_raw, meta, numeric_categories)
    holdout = normalise(holdout_raw, meta, numeric_categories)
    synth = normalise(synth_raw, meta, numeric_categories)
    result = {
        "synthetic_rows": len(synth),
        "sdtypes": {
            k: sum(s["sdtype"] == k for s in meta["columns"].values()) for k in ("numerical", "categorical", "datetime")
        },
    }
    missing = [c for c in meta["columns"] if c not in synth_raw]
    extra = [c for c in synth_raw.columns if c not in meta["columns"]]
    if missing or extra:
        result["column_mismatch"] = {"missing": missing, "extra": extra}
    if len(synth) == 0:
        return result | {"error": "the synthetic table has no rows"}

    ok, failures = validity(synth_raw, synth, pd.concat([train, holdout], ignore_index=True), meta)
    result["valid_pct"] = round(100 * ok.mean(), 2)
    result["invalid_by_column"] = failures

    result |= quality(train, synth, meta)

    train_keys, holdout_keys, synth_keys = row_keys(train), row_keys(holdout), row_keys(synth)
    train_set = set(train_keys)
    result["exact_copy_pct"] = round(100 * synth_keys.isin(train_set).mean(), 2)
    result["real_duplicate_pct"] = round(100 * train_keys.duplicated(keep=False).mean(), 2)
    result["holdout_copy_pct"] = round(100 * holdout_keys.isin(train_set).mean(), 2)
    result["synthetic_duplicate_pct"] = round(100 * synth_keys.duplicated(keep=False).mean(), 2)

    rng = np.random.default_rng(seed)
    n_ref = min(len(train), len(holdout))
    train_ref = train.iloc[np.sort(rng.choice(len(train), n_ref, replace=False))]
    holdout_ref = holdout.iloc[np.sort(rng.choice(len(holdout), n_ref, replace=False))]
    synth_dcr = (
        synth if len(synth) <= dcr_rows else synth.iloc[np.sort(rng.choice(len(synth), dcr_rows, replace=False))]
    )
    codes: dict = {}
    enc_syn = gower_encode(synth_dcr, meta, train, codes)
    d_train = closest_distance(enc_syn, gower_encode(train_ref, meta, train, codes))
    d_holdout = closest_distance(enc_syn, gower_encode(holdout_ref, meta, train, codes))
    closer = np.where(d_train < d_holdout, 1.0, np.where(d_train == d_holdout, 0.5, 0.0))
    result |= {
        "dcr_train_median": round(float(np.median(d_train)), 4),
        "dcr_holdout_median": round(float(np.median(d_holdout)), 4),
        "dcr_closer_to_train_pct": round(100 * float(closer.mean()), 2),
        "dcr_rows": {"synthetic": len(synth_dcr), "train": n_ref, "holdout": n_ref},
        "dcr_distance": "gower",
        "scorer": f"sdmetrics {importlib.metadata.version('sdmetrics')}",
        "score_s": round(time.perf_counter() - start, 1),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("holdout")
    ap.add_argument("synthetic")
    ap.add_argument("--metadata", default="auto", help="auto (detect, see above) or an SDV metadata JSON file")
    ap.add_argument("--seed", type=int, default=0, help="seed of the DCR samples")
    ap.add_argument("--dcr-rows", type=int, default=5000, help="synthetic rows sampled for DCR (default: %(default)s)")
    args = ap.parse_args()
    try:
        result = score(args.train, args.holdout, args.synthetic, args.metadata, args.seed, args.dcr_rows)
    except Exception as exc:  # one JSON line whatever happens, for the orchestrator
        result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)
        raise
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
