"""The quality report: how close a synthetic table is to the real one, as JSON or one HTML file.

    columns, real = read_table("train.csv")
    _, synthetic = read_table("synthetic.csv")
    report = build_report(columns, real, synthetic, epsilon=3.0, delta=1e-5)
    write_report(report, "report.html")            # or "report.json"
    print(report["score"], report["score_definition"])

Every number can be checked by hand:

- column similarity = 1 - total variation distance (TVD = half the sum of |real share -
  synthetic share|) between the real and synthetic distributions of a column. The
  distribution is over all rows: numbers and dates in 20 equal bins spanning the REAL
  column's range (synthetic values outside it count in the end bins), categorical
  values (each distinct value its own category), text lengths in 20 bins; plus
  "missing", plus "invalid" (synthetic values that do not parse as the column's kind).
- associations, over the non-text columns, for each table: numeric-numeric |Pearson r|,
  categorical-categorical Cramér's V = sqrt(chi2 / (n * (min(rows, cols) - 1))) of the
  contingency table of the values present (no bias correction), numeric-categorical the
  correlation ratio eta = sqrt(between-group / total sum of squares). Dates count as
  numbers (days; datetimes in seconds). A row missing either value is left out of that
  pair; a constant column (or fewer than 2 rows) has association 0. Association
  similarity = 1 - mean |real - synthetic| over the pairs; 1.0 with fewer than two
  non-text columns (the report says so).
- validity rate: valid / (valid + invalid) from the generation run when `invalid` is
  given (valid = `valid`, else the synthetic rows), else the share of synthetic rows
  that pass `check_fields(schema, row)`.
- duplicate rate: the share of synthetic rows equal to another synthetic row; training-copy
  rate: the share of synthetic rows equal to a real row.
- SCORE_DEFINITION, verbatim in the report.

The report is computed from the real data (category frequencies, ranges): it is a
diagnostic for the data owner, not itself differentially private.
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
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .data import read_text
from .errors import DataError
from .schema import ColumnSchema, Schema, check_fields, infer_schema, is_missing, numeric_key, parse_value

SCORE_DEFINITION = "score = 100 * (0.4 * mean column similarity + 0.4 * association similarity + 0.2 * validity rate)"
BINS = 20
TOP_CATEGORIES = 20
REPORT_SUFFIXES = (".json", ".html", ".htm")
DPI = 80
NUMERIC_KINDS = ("integer", "float", "date", "datetime")
UNITS = {"date": "days (proleptic Gregorian ordinal)", "datetime": "seconds since 1970-01-01 UTC"}
_INVALID = object()  # a synthetic (or real) value that does not parse as its column's kind


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


# --------------------------------------------------------------------------- building


def build_report(
    columns: list[str],
    real_rows: list[list[str]],
    synthetic_rows: list[list[str]],
    *,
    schema: Schema | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    valid: int | None = None,
    invalid: int | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict (see the module docstring for every definition).

    schema: the column kinds (default: inferred from the real rows). valid / invalid:
    the generation run's counts of kept and rejected records, when known. epsilon / delta:
    the differential-privacy budget the model was trained with, if any."""
    columns = list(columns)
    if not columns:
        raise DataError("the table has no columns")
    if not real_rows:
        raise DataError("the real table has no rows")
    if not synthetic_rows:
        raise DataError("the synthetic table has no rows; nothing to compare")
    for i, row in enumerate(real_rows):
        if len(row) != len(columns):
            raise DataError(f"real row {i + 1} has {len(row)} field(s), expected {len(columns)}")
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
    parsed = [
        (_parse_column(col, [r[j] for r in real_rows]), _parse_column(col, [r[j] for r in shaped]))
        for j, col in enumerate(schema.columns)
    ]
    column_reports = [_column_report(col, real, synth) for col, (real, synth) in zip(schema.columns, parsed)]
    associations = _associations(schema, parsed)
    mean_similarity = sum(c["similarity"] for c in column_reports) / len(column_reports)
    score = 100 * (0.4 * mean_similarity + 0.4 * associations["similarity"] + 0.2 * validity["rate"])

    real_set = {tuple(r) for r in real_rows}
    synth_counts = Counter(tuple(r) for r in synthetic_rows)
    n = len(synthetic_rows)
    duplicates = {
        "duplicate_rate": sum(c for c in synth_counts.values() if c > 1) / n,
        "training_copy_rate": sum(c for row, c in synth_counts.items() if row in real_set) / n,
        "definition": "duplicate rate: share of synthetic rows equal to another synthetic row; "
        "training-copy rate: share of synthetic rows equal to a real row",
    }
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
    return {
        "version": 1,
        "score": score,
        "score_definition": SCORE_DEFINITION,
        "score_parts": {
            "mean_column_similarity": mean_similarity,
            "association_similarity": associations["similarity"],
            "validity_rate": validity["rate"],
        },
        "rows": {"real": len(real_rows), "synthetic": n},
        "validity": validity,
        "duplicates": duplicates,
        "privacy": privacy,
        "columns": column_reports,
        "associations": associations,
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


def _tvd(p: list[float], q: list[float]) -> float:
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


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


def _column_report(column: ColumnSchema, real: list[Any], synth: list[Any]) -> dict[str, Any]:
    n_real, n_synth = len(real), len(synth)
    real_missing, real_invalid = _shares(n_real, real)
    synth_missing, synth_invalid = _shares(n_synth, synth)
    out: dict[str, Any] = {
        "name": column.name,
        "kind": column.kind,
        "missing_rate": {"real": real_missing, "synthetic": synth_missing},
        "invalid_rate": {"real": real_invalid, "synthetic": synth_invalid},
    }
    tail_real, tail_synth = [real_missing, real_invalid], [synth_missing, synth_invalid]
    real_present = [v for v in real if v is not None and v is not _INVALID]
    synth_present = [v for v in synth if v is not None and v is not _INVALID]

    if column.kind in NUMERIC_KINDS:
        x, y = np.asarray(real_present, dtype=float), np.asarray(synth_present, dtype=float)
        hist = _histogram(x, y, n_real, n_synth)
        out["unit"] = UNITS.get(column.kind)
        out["stats"] = {"real": _stats(x), "synthetic": _stats(y)}
        out["histogram"] = hist
        out["similarity"] = 1 - _tvd(hist["real"] + tail_real, hist["synthetic"] + tail_synth)
    elif column.kind == "categorical":
        rc, sc = Counter(real_present), Counter(synth_present)
        values = sorted(set(rc) | set(sc))
        p = [rc[v] / n_real for v in values] + tail_real
        q = [sc[v] / n_synth if n_synth else 0.0 for v in values] + tail_synth
        out["similarity"] = 1 - _tvd(p, q)
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
        hist = _histogram(x, y, n_real, n_synth)
        out["length_stats"] = {"real": _stats(x), "synthetic": _stats(y)}
        out["length_histogram"] = hist
        seen = set(real_present)
        out["verbatim_rate"] = sum(v in seen for v in synth_present) / len(synth_present) if synth_present else None
        out["similarity"] = 1 - _tvd(hist["real"] + tail_real, hist["synthetic"] + tail_synth)
    out["similarity"] = min(1.0, max(0.0, out["similarity"]))
    return out


# --------------------------------------------------------------------------- associations


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return min(1.0, abs(float(dx @ dy)) / math.sqrt(sxx * syy))


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
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
        return _pearson(x, y)
    if not num_a and not num_b:
        return _cramers_v(x, y)
    return _eta(x, y) if num_a else _eta(y, x)


def _associations(schema: Schema, parsed: list[tuple[list[Any], list[Any]]]) -> dict[str, Any]:
    picked = [j for j, c in enumerate(schema.columns) if c.kind != "text"]
    names = [schema.columns[j].name for j in picked]
    out: dict[str, Any] = {
        "columns": names,
        "definition": "numeric-numeric |Pearson r|, categorical-categorical Cramér's V (no bias correction), "
        "numeric-categorical correlation ratio eta; dates count as numbers; rows missing either value are left out",
    }
    matrices = {}
    for side in (0, 1):
        arrays = [_as_array(schema.columns[j], parsed[j][side]) for j in picked]
        k = len(picked)
        m = [[1.0 if i == j else 0.0 for j in range(k)] for i in range(k)]
        for i in range(k):
            for j in range(i + 1, k):
                kind_i, kind_j = schema.columns[picked[i]].kind, schema.columns[picked[j]].kind
                m[i][j] = m[j][i] = _association(kind_i, arrays[i], kind_j, arrays[j])
        matrices["real" if side == 0 else "synthetic"] = m
    out.update(matrices)
    pairs = [(i, j) for i in range(len(picked)) for j in range(i + 1, len(picked))]
    if pairs:
        diff = sum(abs(matrices["real"][i][j] - matrices["synthetic"][i][j]) for i, j in pairs) / len(pairs)
        out["similarity"] = 1 - diff
        out["note"] = f"1 - mean |real - synthetic| over {len(pairs)} pair(s) of non-text columns"
    else:
        out["similarity"] = 1.0
        out["note"] = "fewer than 2 non-text columns: no pairs to compare, association similarity is 1.0"
    return out


def association_matrix(schema: Schema, rows: list[list[str]]) -> list[list[float]]:
    """The report's association between every two columns of `rows` (text columns: 0 with all others)."""
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


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """The report as JSON (.json, indent 2) or one self-contained HTML file (.html, .htm),
    written whole to a temporary file and renamed."""
    path = check_report_path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    else:
        text = render_html(report)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- HTML

_CSS = """
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
    fig.colorbar(image, cax=cax, label="association (0 to 1)")
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


def _column_section(col: dict[str, Any]) -> str:
    kind = col["kind"]
    parts = [
        f"<div class=column><h3>{_esc(col['name'])}</h3>",
        f"<p>{_esc(kind)} · similarity <b>{col['similarity']:.3f}</b> · missing {_pct(col['missing_rate']['real'])} "
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


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, plots as inline PNG) from a report dict."""
    validity, dup, privacy, assoc = report["validity"], report["duplicates"], report["privacy"], report["associations"]
    parts_ = report["score_parts"]
    if privacy["differentially_private"]:
        eps = f"ε = {privacy['epsilon']:g}" + (f", δ = {privacy['delta']:g}" if privacy["delta"] is not None else "")
    else:
        eps = "not differentially private"
    summary = [
        ("rows", f"{report['rows']['real']:,} real, {report['rows']['synthetic']:,} synthetic"),
        ("validity rate", f"{_pct(validity['rate'])} ({validity['source']})"),
        ("schema check pass rate", _pct(validity["schema_check_rate"])),
        ("duplicate rate", _pct(dup["duplicate_rate"])),
        ("training-copy rate", _pct(dup["training_copy_rate"])),
        ("mean column similarity", f"{parts_['mean_column_similarity']:.3f}"),
        ("association similarity", f"{parts_['association_similarity']:.3f}"),
        ("privacy", f"{eps} — {privacy['note']}" if privacy["differentially_private"] else eps),
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>synthloom quality report: {report['score']:.1f}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Synthetic data quality report</h1>",
        f'<div class="score">{report["score"]:.1f} / 100</div>',
        f'<p class="definition">{_esc(report["score_definition"])}</p>',
        "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary) + "</table>",
    ]
    if validity["examples"]:
        items = "".join(f"<li>row {e['row']}: {_esc(e['problem'])}</li>" for e in validity["examples"])
        out.append(f"<p class=note>Schema check failures (first {len(validity['examples'])}):</p><ul>{items}</ul>")
    out.append("<h2>Columns</h2>")
    out.append(
        "<table><tr><th>column</th><th>kind</th><th>similarity</th><th>missing real</th>"
        "<th>missing synthetic</th><th>invalid synthetic</th></tr>"
        + "".join(
            f"<tr><td>{_esc(c['name'])}</td><td>{_esc(c['kind'])}</td><td class=num>{c['similarity']:.3f}</td>"
            f"<td class=num>{_pct(c['missing_rate']['real'])}</td><td class=num>{_pct(c['missing_rate']['synthetic'])}"
            f"</td><td class=num>{_pct(c['invalid_rate']['synthetic'])}</td></tr>"
            for c in report["columns"]
        )
        + "</table>"
    )
    out.append(
        "<p class=note>similarity = 1 - total variation distance between the real and synthetic distributions "
        "(20 bins over the real range for numbers, dates and text lengths; categories; plus missing and invalid "
        "as their own categories). Shares are of all rows.</p>"
    )
    out.append('<div class="columns">')
    out.extend(_column_section(c) for c in report["columns"])
    out.append("</div>")
    out.append("<h2>Associations</h2>")
    out.append(f"<p>association similarity <b>{assoc['similarity']:.3f}</b>: {_esc(assoc['note'])}</p>")
    out.append(f"<p class=note>{_esc(assoc['definition'])}</p>")
    if len(assoc["columns"]) >= 2:
        out.append(
            f'<img class="association-plot" alt="association matrices, real and synthetic" '
            f'src="data:image/png;base64,{_plot_associations(assoc)}">'
        )
    out.append(
        f"<h2>Privacy</h2><p>{_esc(eps)}. {_esc(privacy['note'])}.</p>"
        if privacy["differentially_private"]
        else "<h2>Privacy</h2><p>not differentially private.</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
