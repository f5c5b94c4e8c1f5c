"""The quality report: SDMetrics' QualityReport recomputed (checked by hand and against sdmetrics
itself), the dependency score, DCR against a holdout, the model's split recomputed, the CLI, and
the files it writes."""

from __future__ import annotations

import csv
import importlib
import json
import math
import random
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import assert_user_error, run, tiny_config, write_people_csv
from pytest import approx

import synthloom.report as report_module
from synthloom.data import encode_row
from synthloom.errors import DataError
from synthloom.report import SCORE_DEFINITION, build_report, model_split, read_table, render_html, write_report
from synthloom.schema import infer_schema, is_missing, parse_value

# x, y: integers; c, d: categorical (2 distinct values in 6 rows)
COLUMNS = ["x", "y", "c", "d"]
REAL = [
    ["0", "0", "a", "p"],
    ["2", "1", "a", "p"],
    ["4", "3", "a", "q"],
    ["6", "2", "b", "q"],
    ["8", "5", "b", "p"],
    ["10", "4", "b", "q"],
]
SYNTHETIC = [
    ["0", "0", "a", "p"],  # a copy of real row 1...
    ["0", "0", "a", "p"],  # ...twice: two duplicates, two training copies
    ["12", "3", "b", "q"],  # x outside the real range: valid
    ["6", "2", "a", "q"],
]


def shares(n_rows: int, bins: dict[int, int]) -> list[float]:
    """20 histogram shares from {bin: count}."""
    return [bins.get(b, 0) / n_rows for b in range(20)]


def pair(report: dict, a: str, b: str) -> dict:
    (found,) = [p for p in report["pairs"] if p["columns"] == [a, b]]
    return found


# --------------------------------------------------------------------------- SDMetrics' definitions, by hand


def test_the_tiny_table_by_hand():
    report = build_report(COLUMNS, REAL, SYNTHETIC)
    col = {c["name"]: c for c in report["columns"]}
    assert [c["kind"] for c in report["columns"]] == ["integer", "integer", "categorical", "categorical"]
    assert [(c["sdtype"], c["metric"]) for c in report["columns"]] == [
        ("numerical", "KSComplement"),
        ("numerical", "KSComplement"),
        ("categorical", "TVComplement"),
        ("categorical", "TVComplement"),
    ]
    # KS x: real 0,2,..,10, synthetic 0,0,6,12; the ECDFs differ most at 0: 1/6 vs 2/4
    # KS y: real 0..5, synthetic 0,0,2,3: 1/6 vs 2/4 at 0 (and 4/6 vs 1 at 3)
    # TV c: a 1/2, b 1/2 vs a 3/4, b 1/4 -> 1/4; d: p, q 1/2 on both sides -> 0
    assert [col[n]["score"] for n in COLUMNS] == approx([2 / 3, 2 / 3, 3 / 4, 1.0])
    shapes = (2 / 3 + 2 / 3 + 3 / 4 + 1) / 4
    assert report["quality"]["column_shapes"] == approx(shapes)

    # Pearson x-y. Real: deviations x -5,-3,-1,1,3,5; y -2.5,-1.5,.5,-.5,2.5,1.5 -> 31 / sqrt(70 * 17.5) = 31/35.
    # Synthetic: x -4.5,-4.5,7.5,1.5; y -1.25,-1.25,1.75,.75 -> 25.5 / sqrt(99 * 6.75)
    r_real, r_synth = 31 / 35, 25.5 / math.sqrt(99 * 6.75)
    xy = pair(report, "x", "y")
    assert (xy["metric"], xy["real_correlation"], xy["synthetic_correlation"]) == (
        "CorrelationSimilarity",
        approx(r_real),
        approx(r_synth),
    )
    assert xy["score"] == approx(1 - abs(r_real - r_synth) / 2)  # |r_real| > 0.5: it counts
    # c-d: real cells (a,p)=2 (a,q)=1 (b,p)=1 (b,q)=2 of 6, synthetic (a,p)=2 (a,q)=1 (b,q)=1 of 4
    cd = pair(report, "c", "d")
    tvd = 0.5 * (abs(2 / 6 - 2 / 4) + abs(1 / 6 - 1 / 4) + abs(1 / 6 - 0) + abs(2 / 6 - 1 / 4))
    v_real = math.sqrt((4 * 0.25 / 1.5) / (6 * (2 - 1)))  # chi2 = 4 * 0.5^2 / 1.5
    assert cd["metric"] == "ContingencySimilarity" and cd["real_association"] == approx(v_real) == approx(1 / 3)
    assert cd["score"] == approx(1 - tvd) == approx(0.75)  # V = 1/3 > 0.3: it counts
    # x-c and the other number-category pairs: each real x (and y) value in a bin of its own, V = 1
    counted = [p for p in report["pairs"] if p["score"] is not None]
    assert len(counted) == report["quality"]["pairs_counted"] == 6
    trends = sum(p["score"] for p in counted) / 6
    assert report["quality"]["column_pair_trends"] == approx(trends)
    assert report["quality"]["overall"] == approx((shapes + trends) / 2)
    assert report["score"] == approx(100 * (shapes + trends) / 2)
    assert report["score_definition"] == SCORE_DEFINITION and "SDMetrics QualityReport" in SCORE_DEFINITION

    # still there to look at: 20-bin histograms over the real range, statistics, categories
    assert col["x"]["histogram"]["edges"] == approx([0.5 * i for i in range(21)])
    assert col["x"]["histogram"]["real"] == approx(shares(6, {0: 1, 4: 1, 8: 1, 12: 1, 16: 1, 19: 1}))
    assert col["x"]["histogram"]["synthetic"] == approx(shares(4, {0: 2, 12: 1, 19: 1}))
    assert col["x"]["stats"]["synthetic"] == approx(
        {"count": 4, "mean": 4.5, "std": math.sqrt(99 / 4), "min": 0, "q25": 0, "median": 3, "q75": 7.5, "max": 12}
    )
    assert col["c"]["categories"] == [
        {"value": "a", "real": 0.5, "synthetic": 0.75},
        {"value": "b", "real": 0.5, "synthetic": 0.25},
    ]

    # copies and validity, in no score
    assert report["copies"]["exact_copy_rate"] == approx(2 / 4)
    assert report["copies"]["synthetic_duplicate_rate"] == approx(2 / 4)
    assert report["copies"]["real_duplicate_rate"] == 0.0 and report["copies"]["holdout_copy_rate"] is None
    assert report["validity"]["rate"] == 1.0
    assert report["privacy"]["note"] == "not differentially private" and report["privacy"]["epsilon"] is None
    assert "skipped" in report["dcr"] and "holdout" in report["dcr"]["skipped"]

    run = build_report(COLUMNS, REAL, SYNTHETIC, valid=4, invalid=1, epsilon=3.0, delta=1e-5)
    assert run["validity"]["rate"] == approx(4 / 5) and run["validity"]["schema_check_rate"] == 1.0
    assert run["score"] == report["score"]  # validity is in no score
    assert (run["privacy"]["epsilon"], run["privacy"]["delta"]) == (3.0, 1e-5)
    assert build_report(COLUMNS, REAL, SYNTHETIC, invalid=4)["validity"]["rate"] == approx(4 / 8)


def test_a_number_and_a_category_by_hand_each_table_binned_on_its_own_range():
    # real x 0, 1, 9, 10, missing: np.histogram_bin_edges gives edges 0, 1, ..., 10 and np.digitize
    # bins 1, 2, 10, 11 (the maximum is on the last edge) and 11 for the missing value too
    real = [["0", "a"], ["1", "a"], ["9", "b"], ["10", "b"], ["", "b"]]
    # synthetic x 0, 20, missing, 10: its own edges 0, 2, ..., 20: bins 1, 11, 11, 6
    synthetic = [["0", "a"], ["20", "b"], ["", "b"], ["10", "a"]]
    report = build_report(["x", "g"], real, synthetic)
    xg = pair(report, "x", "g")
    # joint shares: real (1,a) (2,a) (10,b) 1/5 each, (11,b) 2/5; synthetic (1,a) 1/4, (11,b) 2/4, (6,a) 1/4
    tvd = 0.5 * (abs(1 / 5 - 1 / 4) + 1 / 5 + 1 / 5 + abs(2 / 5 - 2 / 4) + 1 / 4)
    assert xg["metric"] == "ContingencySimilarity" and xg["real_association"] == approx(1.0)
    assert xg["score"] == approx(1 - tvd) == approx(0.6)
    x, g = report["columns"]
    # KS over the present values: real 0, 1, 9, 10 vs 0, 10, 20 differ most at 9 (3/4 vs 1/3)
    assert x["score"] == approx(1 - (3 / 4 - 1 / 3))
    assert g["score"] == approx(1 - 0.5 * (abs(2 / 5 - 2 / 4) + abs(3 / 5 - 2 / 4)))
    assert report["quality"]["overall"] == approx(((x["score"] + g["score"]) / 2 + 0.6) / 2)


def test_missing_values_are_left_out_of_shapes_and_a_synthetic_only_category_counts_one_millionth():
    real = [["a", "1"], ["a", "2"], ["a", "NA"], ["b", "4"], ["b", "5"], ["", "6"]]
    synthetic = [["a", "1"], ["z", "NA"], ["", "3"], ["", ""]]
    report = build_report(["g", "v"], real, synthetic)
    g, v = report["columns"]
    assert (g["kind"], v["kind"]) == ("categorical", "integer")
    assert g["missing_rate"] == approx({"real": 1 / 6, "synthetic": 2 / 4})
    # TVComplement: real counts a 3, b 2, z 1e-6 (synthetic-only); synthetic a 1/2, z 1/2
    total = 5 + 1e-6
    tv = abs(1 / 2 - 3 / total) + abs(0 - 2 / total) + abs(1 / 2 - 1e-6 / total)
    assert g["score"] == approx(1 - 0.5 * tv, abs=1e-12)
    # KSComplement of 1, 2, 4, 5, 6 vs 1, 3: they differ most at 3 (2/5 vs 1)
    assert v["score"] == approx(1 - 3 / 5)
    # the pair: missing is a category of its own, and a missing number shares bin 11 with the maximum
    gv = pair(report, "g", "v")
    assert gv["metric"] == "ContingencySimilarity" and gv["similarity"] is not None


def test_values_that_do_not_parse_are_missing_to_the_score_and_invalid_to_validity():
    real = [["1"], ["2"], ["3"], ["4"]]
    report = build_report(["n"], real, [["1"], ["abc"]])
    (n,) = report["columns"]
    assert n["invalid_rate"] == {"real": 0.0, "synthetic": 0.5}
    assert n["score"] == approx(1 - 3 / 4)  # KS of 1, 2, 3, 4 vs 1
    assert report["validity"]["rate"] == 0.5
    assert report["validity"]["examples"] == [{"row": 2, "problem": "n: 'abc' is not an integer"}]
    assert report["quality"]["column_pair_trends"] is None and report["quality"]["overall"] == n["score"]
    assert report["dependency"]["score"] is None and "no pairs" in report["dependency"]["note"]


def test_pairs_independent_in_the_real_data_are_left_out_of_pair_trends():
    # x and y uncorrelated in the real data (r = 0): the pair does not count; overall = Column Shapes
    real = [["1", "1"], ["2", "-1"], ["3", "-1"], ["4", "1"]]
    report = build_report(["x", "y"], real, [["1", "1"], ["2", "2"], ["3", "3"]])
    xy = pair(report, "x", "y")
    assert xy["real_correlation"] == approx(0.0) and xy["score"] is None
    assert xy["similarity"] == approx(1 - abs(0.0 - 1.0) / 2)  # without the threshold it would count
    quality = report["quality"]
    assert quality["column_pair_trends"] is None and quality["pairs_counted"] == 0
    assert quality["overall"] == quality["column_shapes"] and "no pair is dependent" in quality["note"]
    assert report["dependency"]["score"] is None  # nothing in the real data to lose
    # a constant synthetic column: SDMetrics gives the pair no score; the dependency score counts it lost
    strong = [[str(i), str(2 * i + (i % 3))] for i in range(30)]
    flat = build_report(["x", "y"], strong, [[str(i), "7"] for i in range(30)])
    xy = pair(flat, "x", "y")
    assert xy["score"] is None and xy["synthetic_correlation"] is None
    assert xy["similarity"] == approx(1 - xy["real_correlation"] / 2)
    assert flat["dependency"]["score"] == approx(xy["similarity"])


def test_text_is_left_out_of_the_score_and_described_by_length():
    real = [["a"], ["bb"], ["ccc"], ["dddd"], ["eeeee"], ["ffffff"]]
    synthetic = [["bb"], ["zz"], ["ccc"], [""]]
    report = build_report(["note"], real, synthetic)
    (note,) = report["columns"]
    assert note["kind"] == "text" and (note["sdtype"], note["metric"], note["score"]) == (None, None, None)
    assert report["quality"]["skipped_columns"] == ["note"]
    assert report["score"] is None and report["quality"]["overall"] is None
    assert note["verbatim_rate"] == approx(2 / 3)  # bb and ccc of the three present values
    assert note["length_histogram"]["synthetic"] == approx(shares(4, {4: 2, 8: 1}))
    assert report["validity"]["rate"] == 0.75  # the empty note: none in training
    assert report["pairs"] == [] and report["associations"]["columns"] == []
    html = render_html(report)
    assert html.count('class="column-plot"') == 1 and "not scored (text)" in html


def test_dates_are_compared_in_nanoseconds_and_shown_as_dates():
    real = [["2023-01-01", "2023-01-01 00:00:00"], ["2023-01-03", "2023-01-01 00:00:10"]]
    synthetic = [["2023-01-02", "2023-01-01 00:00:05"], ["2023-01-02", "2023-01-01 00:00:20"]]
    report = build_report(["d", "t"], real, synthetic)
    d, t = report["columns"]
    assert (d["sdtype"], t["sdtype"]) == ("datetime", "datetime")
    assert d["score"] == approx(0.5) and t["score"] == approx(0.5)  # KS: 1/2 vs 0 at the first date
    jan1 = 738521  # date(2023, 1, 1).toordinal()
    assert d["stats"]["real"]["mean"] == jan1 + 1 and t["stats"]["synthetic"]["max"] == 1672531220
    dt = pair(report, "d", "t")
    assert dt["real_correlation"] == approx(1.0)  # two points: a perfect line
    assert dt["score"] is None  # a constant synthetic date: CorrelationSimilarity gives no score
    html = render_html(report)
    assert "2023-01-02" in html and "2023-01-01 00:00:20" in html  # shown as dates, not ordinals


def test_a_private_schema_and_bad_arguments():
    private = infer_schema(COLUMNS, REAL)
    private.columns[2].categories = None  # as loaded from to_dict(include_categories=False)
    assert (
        build_report(COLUMNS, REAL, SYNTHETIC, schema=private)["score"]
        == build_report(COLUMNS, REAL, SYNTHETIC)["score"]
    )
    cases = [
        (dict(schema=infer_schema(["x", "y", "c", "e"], REAL)), "schema's columns"),
        (dict(invalid=-1), "invalid must be a count"),
        (dict(valid=True, invalid=1), "valid must be a count"),
        (dict(delta=1e-5), "delta without epsilon"),
        (dict(epsilon=0), "epsilon must be a finite number > 0"),
        (dict(epsilon=1.0, delta=1.5), r"delta must be a number in \[0, 1\)"),
        (dict(valid=0, invalid=0), "no records to rate"),
        (dict(holdout_rows=[]), "the holdout table has no rows"),
        (dict(holdout_rows=[["1", "2"]]), r"holdout row 1 has 2 field\(s\), expected 4"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DataError, match=message):
            build_report(COLUMNS, REAL, SYNTHETIC, **kwargs)
    with pytest.raises(DataError, match="the synthetic table has no rows"):
        build_report(COLUMNS, REAL, [])
    with pytest.raises(DataError, match=r"real row 2 has 3 field\(s\), expected 4"):
        build_report(COLUMNS, [REAL[0], REAL[1][:3]], SYNTHETIC)
    ragged = build_report(COLUMNS, REAL, SYNTHETIC + [["1", "2"]])  # a bad synthetic row is invalid, not fatal
    assert ragged["validity"]["rate"] == 0.8 and ragged["validity"]["examples"][0]["problem"].startswith("2 field")


# --------------------------------------------------------------------------- the same numbers as sdmetrics


SDTYPES = {"integer": "numerical", "float": "numerical", "date": "datetime", "datetime": "datetime"}


def sdmetrics_frame(schema, rows):
    """The table as a pandas DataFrame the way SDMetrics expects it: floats, datetime64, strings, NaN."""
    import numpy as np
    import pandas as pd

    data = {}
    for j, column in enumerate(schema.columns):
        values = []
        for row in rows:
            try:
                values.append(None if is_missing(column, row[j]) else parse_value(column, row[j]))
            except ValueError:
                values.append(None)
        if column.kind in ("integer", "float"):
            data[column.name] = pd.Series([np.nan if v is None else float(v) for v in values], dtype=float)
        elif column.kind in ("date", "datetime"):
            data[column.name] = pd.to_datetime(pd.Series([pd.NaT if v is None else pd.Timestamp(v) for v in values]))
        else:
            data[column.name] = pd.Series([np.nan if v is None else v for v in values], dtype=object)
    return pd.DataFrame(data)


def mixed_table(seed: int, n: int, dependent: bool = True) -> list[list[str]]:
    """Numbers (one dependent on another), a category that follows a number, an integer, a date and a
    datetime, a free-text note; missing values in most columns."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = rng.gauss(0, 1)
        y = 2 * x + rng.gauss(0, 0.5) if dependent else rng.gauss(0, 2)
        c = ("a" if x > 0 else "b") if rng.random() < 0.8 else rng.choice("abc")
        k = rng.randint(0, 5) + (3 if c == "a" else 0)
        day = f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        when = f"2023-01-01 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        rows.append(
            [
                f"{x:.3f}" if rng.random() > 0.1 else "",
                f"{y:.3f}",
                c if rng.random() > 0.05 else "",
                str(k),
                day if rng.random() > 0.1 else "",
                when,
                f"note {rng.randint(0, 999)}",
            ]
        )
    return rows


MIXED = ["x", "y", "c", "k", "day", "when", "note"]
REAL_MIXED = mixed_table(0, 400)
SYNTHETIC_TABLES = {
    "fresh draws": mixed_table(1, 300),
    "dependency lost": mixed_table(2, 250, dependent=False),
    "copies, an unseen category, an invalid number": REAL_MIXED[:60] + [["abc", "1", "zz", "7", "", "", ""]],
    "constant columns, a missing category": [["0.5", r[1], "", "3", r[4], r[5], r[6]] for r in mixed_table(3, 80)],
    "one row": mixed_table(4, 1),
}


@pytest.mark.parametrize("name", list(SYNTHETIC_TABLES))
def test_the_score_is_sdmetrics_quality_report(name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sdmetrics.reports.single_table import QualityReport
    except ImportError as exc:
        pytest.skip(f"sdmetrics is not installed ({exc}); pip install 'synthloom[test]'")
    synthetic = SYNTHETIC_TABLES[name]
    schema = infer_schema(MIXED, REAL_MIXED)
    assert [c.kind for c in schema.columns] == ["float", "float", "categorical", "integer", "date", "datetime", "text"]
    report = build_report(MIXED, REAL_MIXED, synthetic, schema=schema)
    metadata = {"columns": {c.name: {"sdtype": SDTYPES.get(c.kind, c.kind)} for c in schema.columns}}
    theirs = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.generate(
            sdmetrics_frame(schema, REAL_MIXED), sdmetrics_frame(schema, synthetic), metadata, verbose=False
        )
    properties = dict(zip(theirs.get_properties()["Property"], theirs.get_properties()["Score"]))

    def same(ours, their):
        return (ours is None and math.isnan(their)) or ours == approx(float(their), abs=1e-6)

    quality = report["quality"]
    assert same(quality["overall"], theirs.get_score())
    assert same(quality["column_shapes"], properties["Column Shapes"])
    assert same(quality["column_pair_trends"], properties["Column Pair Trends"])
    for _, row in theirs.get_details("Column Shapes").iterrows():  # and column by column, pair by pair
        (column,) = [c for c in report["columns"] if c["name"] == row["Column"]]
        assert same(column["score"], row["Score"]), row["Column"]
    details = theirs.get_details("Column Pair Trends")
    assert len(details) == len(report["pairs"]) == 15  # 6 scored columns; the note (text) is left out
    for _, row in details.iterrows():
        ours = pair(report, row["Column 1"], row["Column 2"])
        assert ours["metric"] == row["Metric"]
        counted = bool(row["Meets Threshold?"]) if not _isna(row["Meets Threshold?"]) else False
        assert same(ours["score"], row["Score"] if counted else float("nan")), ours["columns"]


def _isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


# --------------------------------------------------------------------------- the dependency score


def dependent_table(rng: random.Random, n: int) -> list[list[str]]:
    """y = 2x + noise; the rest independent: a uniform number, two categories, an integer."""
    rows = []
    for _ in range(n):
        x = rng.gauss(0, 1)
        rows.append(
            [f"{x:.4f}", f"{2 * x + rng.gauss(0, 0.3):.4f}", f"{rng.random():.4f}", rng.choice("abc"),
             rng.choice("pqrs"), str(rng.randint(0, 99))]
        )  # fmt: skip
    return rows


DEPENDENT = ["x", "y", "u", "g", "h", "k"]


def test_a_lost_dependency_shows_in_the_dependency_score():
    rng = random.Random(0)
    real = dependent_table(rng, 2000)
    ys = [row[1] for row in real]
    rng.shuffle(ys)
    shuffled = [row[:1] + [y] + row[2:] for row, y in zip(real, ys)]  # every marginal kept, y independent of x
    lost = build_report(DEPENDENT, real, shuffled)
    assert lost["quality"]["column_shapes"] == approx(1.0)  # the marginals are the real ones
    dep = lost["dependency"]
    assert dep["score"] < 0.8 and dep["score"] < dep["all_pairs_mean"] - 0.2  # 0.72 vs 0.96
    assert dep["top_losses"][0]["columns"] == ["x", "y"] and len(dep["top_losses"]) == 5
    assert dep["top_losses"][0]["real_strength"] > 0.95 and dep["top_losses"][0]["synthetic_strength"] < 0.1
    losses = [p["weighted_loss"] for p in dep["top_losses"]]
    assert losses == sorted(losses, reverse=True) and losses[0] > 10 * losses[1]
    xy = pair(lost, "x", "y")
    assert dep["score"] == approx(
        sum(p["real_strength"] * p["similarity"] for p in lost["pairs"])
        / sum(p["real_strength"] for p in lost["pairs"])
    )
    assert xy["similarity"] == approx(1 - abs(xy["real_correlation"] - xy["synthetic_correlation"]) / 2)

    kept = build_report(DEPENDENT, real, dependent_table(rng, 2000))["dependency"]  # fresh draws keep it
    assert kept["score"] > 0.9 and kept["score"] > dep["score"] + 0.2


# --------------------------------------------------------------------------- DCR


def test_dcr_tells_copies_of_training_rows_from_fresh_draws():
    rng = random.Random(1)
    train, holdout = dependent_table(rng, 400), dependent_table(rng, 400)
    copies = train[:]
    rng.shuffle(copies)
    copied = build_report(DEPENDENT, train, copies, holdout_rows=holdout)
    dcr = copied["dcr"]
    assert dcr["closer_to_train_rate"] > 0.99 and dcr["train_median"] == 0.0 < dcr["holdout_median"]
    assert dcr["rows"] == {"synthetic": 400, "train": 400, "holdout": 400}
    assert copied["copies"]["exact_copy_rate"] == 1.0 and copied["copies"]["holdout_copy_rate"] == 0.0

    fresh = build_report(DEPENDENT, train, dependent_table(rng, 400), holdout_rows=holdout)["dcr"]
    assert 0.4 < fresh["closer_to_train_rate"] < 0.6
    assert fresh["train_median"] == approx(fresh["holdout_median"], rel=0.2) and fresh["train_median"] > 0


def test_gower_distance_by_hand_and_the_dcr_sample_cap(monkeypatch):
    # x range 0..10 in training; c a category; a missing value is a category of its own
    train, holdout = [["0", "a"], ["10", "b"]], [["4", "a"], ["", "b"]]
    synthetic = [["5", "a"], ["", "b"], ["30", "a"]]
    dcr = build_report(["x", "c"], train, synthetic, holdout_rows=holdout)["dcr"]
    # to train: 5a -> (0.5 + 0) / 2 = .25, missing b -> (1 + 0) / 2 = .5, 30a -> (min(3, 1) + 0) / 2 = .5 (to 0a)
    # to holdout: 5a -> (.1 + 0) / 2 = .05, missing b -> 0, 30a -> (1 + 0) / 2 = .5 (a tie: half)
    assert (dcr["train_median"], dcr["holdout_median"]) == (approx(0.5), approx(0.05))
    assert dcr["closer_to_train_rate"] == approx(0.5 / 3)

    monkeypatch.setattr(report_module, "DCR_ROWS", 50)
    rng = random.Random(2)
    capped = build_report(DEPENDENT, dependent_table(rng, 300), dependent_table(rng, 120),
                          holdout_rows=dependent_table(rng, 80))["dcr"]  # fmt: skip
    assert capped["rows"] == {"synthetic": 50, "train": 50, "holdout": 50}
    assert "50 of the 120 synthetic rows" in capped["note"] and "seeded samples of 300 and 80" in capped["note"]


# --------------------------------------------------------------------------- the model's holdout, and the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model (its fields in data.leading_columns order) and the validation records training split off."""
    from synthloom import train

    train_module = importlib.import_module("synthloom.train.prepare")  # where prepare() splits the records

    tmp = tmp_path_factory.mktemp("report")
    data = write_people_csv(tmp / "people.csv")
    held: list[list[str]] = []
    split = train_module.split_records

    def spy(texts, validation_split, seed):
        out = split(texts, validation_split, seed)
        held.append(out[1])
        return out

    train_module.split_records = spy
    try:
        config = tiny_config(data, tmp / "model", data={"leading_columns": ["city"]}, train={"epochs": 1, "seed": 3})
        train(config, progress=False)
    finally:
        train_module.split_records = split
    return tmp, data, tmp / "model", held


def fresh_people(path: Path, seed: int, n: int = 80) -> Path:
    """More rows from the distribution of conftest's people table."""
    rng = random.Random(seed)
    cities = [("Boston", "MA"), ("Denver", "CO"), ("Austin", "TX"), ("Seattle", "WA")]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "age", "city", "state", "note"])
        for i in range(n):
            city, state = rng.choice(cities)
            w.writerow([rng.choice(["ann", "bob", "cy", "dee"]), rng.randint(20, 60), city, state,
                        "moved, new address" if i % 10 == 0 else ""])  # fmt: skip
    return path


def test_the_holdout_recomputed_is_what_training_held_out(trained):
    from synthloom.checkpoint import read_model_config

    tmp, data, model_dir, held = trained
    (validation_texts,) = held
    config = read_model_config(model_dir)
    split = model_split(config)
    columns, rows = read_table(data)
    assert split.columns == columns and len(split.train_rows) + len(split.holdout_rows) == len(rows)
    model_order = ["city"] + [c for c in columns if c != "city"]  # data.leading_columns first
    as_trained = [encode_row([row[columns.index(c)] for c in model_order], ",") for row in split.holdout_rows]
    assert as_trained == validation_texts and len(validation_texts) == 24  # 20 % of 120
    assert sorted(map(tuple, split.train_rows + split.holdout_rows)) == sorted(map(tuple, rows))
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["records"]["validation"] == len(split.holdout_rows)


def test_the_report_command_end_to_end(trained, capsys):
    tmp, data, model_dir, _ = trained
    synthetic = fresh_people(tmp / "synthetic.csv", seed=5)
    rc, out, err = run(capsys, "report", model_dir, synthetic, "-o", tmp / "r.json")
    assert rc == 0, err
    assert out == "" and "Traceback" not in err
    report = json.loads((tmp / "r.json").read_text())
    assert report["rows"] == {"real": 96, "synthetic": 80, "holdout": 24}  # the model's own split
    assert "the 96 rows the model trained on" in report["sources"]["real"]
    assert "train.seed=3" in report["sources"]["holdout"]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"quality score {report['score']:.1f} of 100 (SDMetrics QualityReport ")
    assert f"dependency score {report['dependency']['score']:.3f}" in line
    assert f"{100 * report['dcr']['closer_to_train_rate']:.1f} % of synthetic rows closer to a training row" in line
    assert 0.2 < report["dcr"]["closer_to_train_rate"] < 0.8 and report["dcr"]["rows"]["train"] == 24
    # the same numbers build_report gives for the split's rows
    split = model_split(json_config(model_dir))
    columns, synth_rows = read_table(synthetic)
    direct = build_report(columns, split.train_rows, synth_rows, holdout_rows=split.holdout_rows)
    assert report["quality"]["overall"] == approx(direct["quality"]["overall"])

    holdout = fresh_people(tmp / "holdout.csv", seed=6, n=50)
    rc, _, err = run(capsys, "report", model_dir, synthetic, "-o", tmp / "r.html", "--holdout", holdout)
    assert rc == 0, err
    page = (tmp / "r.html").read_text(encoding="utf-8")
    assert "DCR" in page and "closer to train" in page and "holdout" in page

    rc, _, err = run(capsys, "report", model_dir, synthetic, "-o", tmp / "h.json", "--holdout", holdout)
    with_file = json.loads((tmp / "h.json").read_text())
    assert with_file["rows"] == {"real": 120, "synthetic": 80, "holdout": 50}  # the whole table vs the file

    bad = tmp / "bad.csv"
    bad.write_text("name,age\nann,3\n")
    rc, out, err = run(capsys, "report", model_dir, synthetic, "-o", tmp / "x.json", "--holdout", bad)
    assert_user_error(rc, out, err, 3, "bad.csv", "are not the real table's")
    rc, out, err = run(capsys, "report", model_dir, synthetic, "-o", tmp / "x.json", "--holdout", tmp / "no.csv")
    assert_user_error(rc, out, err, 3, "table file not found", "no.csv")


def json_config(model_dir: Path):
    from synthloom.checkpoint import read_model_config

    return read_model_config(model_dir)


def test_without_a_validation_split_the_report_skips_dcr_and_says_why(tmp_path, capsys):
    from synthloom import train

    data = write_people_csv(tmp_path / "people.csv")
    train(tiny_config(data, tmp_path / "model", data={"validation_split": 0}, train={"epochs": 1}), progress=False)
    synthetic = fresh_people(tmp_path / "s.csv", seed=7, n=30)
    rc, _, err = run(capsys, "report", tmp_path / "model", synthetic, "-o", tmp_path / "r.json")
    assert rc == 0, err
    assert "DCR skipped (data.validation_split is 0" in err and "--holdout FILE" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert "validation_split is 0" in report["dcr"]["skipped"] and report["rows"]["holdout"] is None
    assert report["rows"]["real"] == 120 and report["score"] is not None


# --------------------------------------------------------------------------- reading tables


def test_read_table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffname,note\r\nann,"moved, new address"\r\n\r\nbob,""\r\n'.encode())
    assert read_table(path) == (["name", "note"], [["ann", "moved, new address"], ["bob", ""]])
    (tmp_path / "t.tsv").write_text("a\tb\n1\t2\n", encoding="utf-8")
    assert read_table(tmp_path / "t.tsv", delimiter="\t") == (["a", "b"], [["1", "2"]])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "table file not found"),
        (b"", "the file is empty"),
        (b"\n \n", "the file is empty"),
        (b"a,b\n", "only a header, no rows"),
        (b"a,b\n1,2\n3\n", r"line 3 has 1 field\(s\), expected 2"),
        (b'a,b\n1,"2\n', "malformed CSV"),
        (b"a,b\n\xff,1\n", "not valid UTF-8"),
    ],
)
def test_read_table_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_table(path)


# --------------------------------------------------------------------------- writing reports

HOSTILE = "<script>alert('x')</script>"


def hostile_report() -> dict:
    columns = ["age", HOSTILE, "city", "note", "when"]
    real = [
        [str(20 + i % 40), str(i % 3), f"<b>{i % 4}</b>", f"note & {i}", f"2023-01-{1 + i % 28:02d}"] for i in range(60)
    ]
    synthetic = [
        [str(25 + i % 30), str(i % 2), f"<b>{i % 5}</b>", f"note {i}", f"2023-02-{1 + i % 28:02d}"] for i in range(40)
    ]
    holdout = [
        [str(21 + i % 38), str(i % 3), f"<b>{i % 4}</b>", f"note & {i}", f"2023-01-{2 + i % 27:02d}"] for i in range(30)
    ]
    return build_report(columns, real, synthetic, holdout_rows=holdout, epsilon=2.5)


def test_the_json_report_round_trips(tmp_path):
    report = hostile_report()
    write_report(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # the temporary file is gone


def test_the_html_report_is_self_contained_escaped_and_has_one_plot_per_column(tmp_path):
    report = hostile_report()
    write_report(report, tmp_path / "out" / "r.html")
    html = (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script src" not in html.lower()
    assert "<script" not in html.lower() and "<b>1</b>" not in html  # names and values are escaped...
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "&lt;b&gt;1&lt;/b&gt;" in html
    assert html.count('class="column-plot"') == len(report["columns"]) == 5
    assert html.count('class="association-plot"') == 1
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)) == 6
    overall = report["quality"]["overall"]
    headline = f"{overall:.3f} ({100 * overall:.1f} %)"
    assert html.index(headline) < html.index("Column Pair Trends") < html.index("<h2>Dependencies")
    assert html.index("<h2>Dependencies") < html.index("<h2>Columns") < html.index("<h2>Privacy")
    assert "dependency score" in html and "class=losses" in html and "DCR skipped" not in html
    assert "ε = 2.5" in html and "exact copies" in html and "not itself differentially private" in html
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.html"]
    write_report(report, tmp_path / "r.HTM")  # the suffix in any case
    assert (tmp_path / "r.HTM").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_an_unknown_suffix_is_refused_before_writing(tmp_path):
    with pytest.raises(DataError, match=r"report .*r\.pdf: use a \.json, \.html, \.htm file"):
        write_report({"score": 1}, tmp_path / "r.pdf")
    assert list(tmp_path.iterdir()) == []


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


def test_the_html_report_renders_in_a_headless_browser(tmp_path):
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip(f"no headless browser on PATH ({', '.join(BROWSERS)})")
    page, shot = tmp_path / "r.html", tmp_path / "out.png"
    write_report(hostile_report(), page)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1200,2000"]
    subprocess.run([*cmd, page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 0
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05  # not one flat colour


def test_a_5000_by_15_report_with_dcr_is_built_and_written_in_seconds(tmp_path):
    def table(seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        rows = []
        for i in range(5000):
            a = rng.randint(18, 90)
            rows.append(
                [
                    str(a),
                    f"{a * 1.5 + rng.random():.2f}",
                    rng.choice("xyz"),
                    rng.choice(["US", "DE", ""]),
                    f"2023-01-{rng.randint(1, 28):02d}",
                ]
                + [
                    str(rng.randint(0, 9)),
                    rng.choice("abcdef"),
                    f"{rng.random():.3f}",
                    f"text {rng.randint(0, 10**6)}",
                    str(i % 2),
                ]
                * 2
            )
        return rows

    columns = [f"c{i}" for i in range(15)]
    real, synthetic, holdout = table(0), table(1), table(2)
    report = build_report(columns, real, synthetic, holdout_rows=holdout)
    write_report(report, tmp_path / "r.html")
    assert 90 < report["score"] <= 100 and report["columns"][0]["score"] > 0.8
    assert report["dependency"]["score"] > 0.9 and report["dcr"]["rows"]["synthetic"] == 5000


# --------------------------------------------------------------------------- the text report


def _names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    first = ["anna", "ben", "cleo", "dev", "emil", "faye", "gus", "hana"]
    last = ["berg", "cole", "diaz", "eng", "fox", "gray", "hale", "ito", "jung", "kahn"]
    return [f"{rng.choice(first)} {rng.choice(last)} {rng.randint(1, 999)}" for _ in range(n)]


def test_the_text_report_measures_match_hand_computed_values():
    from synthloom.text_report import build_text_report

    report = build_text_report(["a b", "a c"], ["a b", "x"], holdout=["a d", "q r"])
    shapes, novelty = report["shapes"], report["novelty"]
    # words: real a 2/4, b 1/4, c 1/4; synthetic a 1/3, b 1/3, x 1/3
    assert shapes["words"] == pytest.approx(1 - 0.5 * (1 / 6 + 1 / 12 + 1 / 4 + 1 / 3))
    assert shapes["words_per_record"] == pytest.approx(0.5)  # real lengths {2, 2}, synthetic {2, 1}
    assert shapes["word_bigrams"] == pytest.approx(0.5)  # real (a b), (a c); synthetic (a b)
    assert novelty["exact_copy_rate"] == 0.5 and novelty["unseen_words_rate"] == pytest.approx(1 / 3)
    assert novelty["holdout_unseen_words_rate"] == 0.75  # "d", "q", "r" are new, "a" is not
    # "a b" is 0 from training, 1/3 from "a d"; "x" is 3 edits (of 3 characters) from every record: a tie
    assert report["dcr"]["closer_to_train_rate"] == pytest.approx(0.75)  # "x": a tie, half
    assert report["score"] == pytest.approx(100 * sum(shapes.values()) / len(shapes))


def test_the_text_report_tells_copies_fresh_draws_and_garbage_apart():
    from synthloom.text_report import build_text_report

    train, holdout, fresh = _names(600, 0), _names(600, 1), _names(800, 2)  # DCR compares all 600 of each
    copies = build_text_report(train, train[:400], holdout=holdout)
    real = build_text_report(train, fresh, holdout=holdout)
    rng = random.Random(3)
    garbage = build_text_report(train, ["".join(rng.sample(t, len(t))) for t in fresh], holdout=holdout)
    assert copies["novelty"]["exact_copy_rate"] == 1.0 and real["novelty"]["exact_copy_rate"] < 0.05
    assert copies["dcr"]["closer_to_train_rate"] > 0.9  # a copier is closer to what it copied
    assert 0.3 < real["dcr"]["closer_to_train_rate"] < 0.7  # a fresh draw is not
    assert real["score"] > 93 and garbage["score"] < 75
    assert garbage["novelty"]["unseen_words_rate"] > 0.5 > real["novelty"]["unseen_words_rate"]
