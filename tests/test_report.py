"""The quality report: every number checked by hand on tiny tables, and the files it writes."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import time

import pytest
from pytest import approx

from synthloom.errors import DataError
from synthloom.report import SCORE_DEFINITION, build_report, read_table, render_html, write_report
from synthloom.schema import infer_schema

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
    ["12", "3", "b", "q"],  # x outside the real range: valid, counted in the top bin
    ["6", "2", "a", "q"],
]


def shares(n_rows: int, bins: dict[int, int]) -> list[float]:
    """20 histogram shares from {bin: count}."""
    return [bins.get(b, 0) / n_rows for b in range(20)]


def test_the_tiny_table_by_hand():
    report = build_report(COLUMNS, REAL, SYNTHETIC)
    col = {c["name"]: c for c in report["columns"]}
    assert [c["kind"] for c in report["columns"]] == ["integer", "integer", "categorical", "categorical"]

    # x: 20 bins of width 0.5 over the real range [0, 10]: 0 -> bin 0, 2 -> 4, 4 -> 8, 6 -> 12, 8 -> 16,
    # 10 (the top edge) -> 19; synthetic 0, 0 -> bin 0, 12 (outside) -> 19, 6 -> 12
    assert col["x"]["histogram"]["edges"] == approx([0.5 * i for i in range(21)])
    assert col["x"]["histogram"]["real"] == approx(shares(6, {0: 1, 4: 1, 8: 1, 12: 1, 16: 1, 19: 1}))
    assert col["x"]["histogram"]["synthetic"] == approx(shares(4, {0: 2, 12: 1, 19: 1}))
    tvd_x = 0.5 * (abs(1 / 6 - 2 / 4) + 1 / 6 + 1 / 6 + abs(1 / 6 - 1 / 4) + 1 / 6 + abs(1 / 6 - 1 / 4))
    assert tvd_x == approx(0.5)
    # y: width 0.25 over [0, 5]: real 0,1,3,2,5,4 -> bins 0,4,12,8,19,16; synthetic 0,0,3,2 -> 0,0,12,8
    assert col["y"]["histogram"]["synthetic"] == approx(shares(4, {0: 2, 12: 1, 8: 1}))
    tvd_y = 0.5 * (abs(1 / 6 - 2 / 4) + 1 / 6 + abs(1 / 6 - 1 / 4) + abs(1 / 6 - 1 / 4) + 1 / 6 + 1 / 6)
    # c: real a 1/2, b 1/2; synthetic a 3/4, b 1/4.  d: p 1/2, q 1/2 in both
    tvd_c = 0.5 * (abs(1 / 2 - 3 / 4) + abs(1 / 2 - 1 / 4))
    tvd_d = 0.0
    similarities = [1 - tvd_x, 1 - tvd_y, 1 - tvd_c, 1 - tvd_d]
    assert [col[n]["similarity"] for n in COLUMNS] == approx(similarities)
    assert similarities == approx([0.5, 0.5, 0.75, 1.0])
    assert col["c"]["categories"] == [
        {"value": "a", "real": 0.5, "synthetic": 0.75},
        {"value": "b", "real": 0.5, "synthetic": 0.25},
    ]

    # x stats: real 0..10 step 2 (numpy's linear quartiles), synthetic 0, 0, 6, 12; population std
    assert col["x"]["stats"]["real"] == approx(
        {"count": 6, "mean": 5, "std": math.sqrt(70 / 6), "min": 0, "q25": 2.5, "median": 5, "q75": 7.5, "max": 10}
    )
    assert col["x"]["stats"]["synthetic"] == approx(
        {"count": 4, "mean": 4.5, "std": math.sqrt(99 / 4), "min": 0, "q25": 0, "median": 3, "q75": 7.5, "max": 12}
    )

    # Pearson x-y. Real: deviations x -5,-3,-1,1,3,5; y -2.5,-1.5,.5,-.5,2.5,1.5 -> 31 / sqrt(70 * 17.5) = 31/35.
    # Synthetic: x -4.5,-4.5,7.5,1.5; y -1.25,-1.25,1.75,.75 -> 25.5 / sqrt(99 * 6.75)
    r_real, r_synth = 31 / 35, 25.5 / math.sqrt(99 * 6.75)
    # Cramér's V c-d. Real: cells (a,p)=2 (a,q)=1 (b,p)=1 (b,q)=2, all expected 1.5: chi2 = 4 * 0.25 / 1.5
    v_real = math.sqrt((4 * 0.25 / 1.5) / (6 * (2 - 1)))
    # Synthetic: (a,p)=2 (a,q)=1 (b,q)=1 (b,p)=0; expected 1.5, 1.5, 0.5, 0.5
    chi2_synth = 0.25 / 1.5 + 0.25 / 1.5 + 0.25 / 0.5 + 0.25 / 0.5
    v_synth = math.sqrt(chi2_synth / (4 * (2 - 1)))
    assert (v_real, v_synth) == approx((1 / 3, math.sqrt(1 / 3)))
    # eta = sqrt(between-group SS / total SS). Real x by c: groups {0,2,4} {6,8,10}, means 2, 8, grand 5
    eta_real = {
        ("x", "c"): math.sqrt((3 * 3**2 + 3 * 3**2) / 70),
        ("x", "d"): math.sqrt((3 * (5 / 3) ** 2 * 2) / 70),  # p {0,2,8}, q {4,6,10}
        ("y", "c"): math.sqrt((3 * (7 / 6) ** 2 * 2) / 17.5),  # a {0,1,3}, b {2,5,4}
        ("y", "d"): math.sqrt((3 * 0.5**2 * 2) / 17.5),  # p {0,1,5}, q {3,2,4}
    }
    eta_synth = {
        ("x", "c"): math.sqrt((3 * 2.5**2 + 7.5**2) / 99),  # a {0,0,6}, b {12}; grand 4.5
        ("x", "d"): math.sqrt((2 * 4.5**2 + 2 * 4.5**2) / 99),  # p {0,0}, q {12,6}
        ("y", "c"): 7 / 9,  # a {0,0,2}, b {3}: (3 * (7/12)^2 + (7/4)^2) / 6.75 = 49/81
        ("y", "d"): math.sqrt((4 * 1.25**2) / 6.75),  # p {0,0}, q {3,2}
    }
    assoc = report["associations"]
    assert assoc["columns"] == COLUMNS
    idx = {n: i for i, n in enumerate(COLUMNS)}
    for (a, b), value in [(("x", "y"), r_real), (("c", "d"), v_real), *eta_real.items()]:
        assert assoc["real"][idx[a]][idx[b]] == approx(value) == assoc["real"][idx[b]][idx[a]]
    for (a, b), value in [(("x", "y"), r_synth), (("c", "d"), v_synth), *eta_synth.items()]:
        assert assoc["synthetic"][idx[a]][idx[b]] == approx(value)
    assert [assoc["real"][i][i] for i in range(4)] == [1.0] * 4
    diffs = [abs(r_real - r_synth), abs(v_real - v_synth)] + [abs(eta_real[k] - eta_synth[k]) for k in eta_real]
    association_similarity = 1 - sum(diffs) / 6
    assert assoc["similarity"] == approx(association_similarity)

    assert report["duplicates"]["duplicate_rate"] == approx(2 / 4)
    assert report["duplicates"]["training_copy_rate"] == approx(2 / 4)
    assert report["validity"]["rate"] == 1.0  # x = 12 is outside the observed range: still valid
    mean_similarity = (0.5 + 0.5 + 0.75 + 1.0) / 4
    expected = 100 * (0.4 * mean_similarity + 0.4 * association_similarity + 0.2 * 1.0)
    assert report["score"] == approx(expected)
    assert report["score_parts"] == approx(
        {"mean_column_similarity": 0.6875, "association_similarity": association_similarity, "validity_rate": 1.0}
    )
    assert report["score_definition"] == SCORE_DEFINITION
    assert SCORE_DEFINITION == (
        "score = 100 * (0.4 * mean column similarity + 0.4 * association similarity + 0.2 * validity rate)"
    )
    assert report["privacy"]["note"] == "not differentially private" and report["privacy"]["epsilon"] is None

    # the generation run's counts replace the schema check: 4 kept, 1 rejected
    run = build_report(COLUMNS, REAL, SYNTHETIC, valid=4, invalid=1, epsilon=3.0, delta=1e-5)
    assert run["validity"]["rate"] == approx(4 / 5) and run["validity"]["schema_check_rate"] == 1.0
    assert run["score"] == approx(expected - 100 * 0.2 * (1 - 4 / 5))
    assert (run["privacy"]["epsilon"], run["privacy"]["delta"]) == (3.0, 1e-5)
    assert build_report(COLUMNS, REAL, SYNTHETIC, invalid=4)["validity"]["rate"] == approx(4 / 8)


def test_missing_values_are_a_category_and_leave_their_rows_out_of_associations():
    real = [["a", "1"], ["a", "2"], ["b", "NA"], ["b", "4"], ["", "5"], ["a", "6"]]
    synthetic = [["a", "1"], ["", "NA"], ["", "3"], ["b", "9"]]
    report = build_report(["g", "v"], real, synthetic)
    g, v = report["columns"]
    assert (g["kind"], v["kind"]) == ("categorical", "integer")
    assert g["missing_rate"] == approx({"real": 1 / 6, "synthetic": 2 / 4})
    assert v["missing_rate"] == approx({"real": 1 / 6, "synthetic": 1 / 4})
    # g: a 3/6, b 2/6, missing 1/6 vs a 1/4, b 1/4, missing 2/4
    assert g["similarity"] == approx(1 - 0.5 * (abs(3 / 6 - 1 / 4) + abs(2 / 6 - 1 / 4) + abs(1 / 6 - 2 / 4)))
    # v: width 0.25 over [1, 6]: real 1,2,4,5,6 -> bins 0,4,12,16,19 + missing; synthetic 1,3,9 -> 0,8,19 + missing
    tvd_v = 0.5 * (abs(1 / 6 - 1 / 4) + 1 / 6 + 1 / 4 + 1 / 6 + 1 / 6 + abs(1 / 6 - 1 / 4) + abs(1 / 6 - 1 / 4))
    assert v["similarity"] == approx(1 - tvd_v) == approx(0.5)
    # eta of v by g over the rows holding both. Real: a {1,2,6}, b {4}; grand 13/4
    eta_real = math.sqrt((3 * (3 - 13 / 4) ** 2 + (4 - 13 / 4) ** 2) / (2.25**2 + 1.25**2 + 0.75**2 + 2.75**2))
    # synthetic: only (a, 1) and (b, 9) hold both: each group one value, eta = 1
    assoc = report["associations"]
    assert assoc["real"][0][1] == approx(eta_real) and assoc["synthetic"][0][1] == approx(1.0)
    assert assoc["similarity"] == approx(1 - abs(eta_real - 1.0))
    assert report["validity"]["rate"] == 1.0  # both columns had missing values in training


def test_values_that_do_not_parse_are_invalid_in_the_distribution_and_the_validity_rate():
    real = [["1"], ["2"], ["3"], ["4"]]
    report = build_report(["n"], real, [["1"], ["abc"]])
    (n,) = report["columns"]
    assert n["invalid_rate"] == {"real": 0.0, "synthetic": 0.5}
    # real 1,2,3,4 in bins 0,6,13,19 (width 0.15); synthetic 1 in bin 0 (1/2), invalid 1/2
    assert n["similarity"] == approx(1 - 0.5 * (abs(1 / 4 - 1 / 2) + 3 * (1 / 4) + 1 / 2))
    assert report["validity"]["rate"] == 0.5
    assert report["validity"]["examples"] == [{"row": 2, "problem": "n: 'abc' is not an integer"}]
    assert report["associations"]["similarity"] == 1.0
    assert report["associations"]["note"].startswith("fewer than 2 non-text columns")


def test_categories_show_the_top_20_and_the_rest_as_other():
    real = [[f"c{i:02d}"] for i in range(25) for _ in range(25 - i)]  # c00 25 times ... c24 once: 325 rows
    synthetic = [["c00"], ["c24"], ["zzz"], ["c01"]]
    (col,) = build_report(["cat"], real, synthetic)["columns"]
    assert col["kind"] == "categorical"
    assert [c["value"] for c in col["categories"]] == [f"c{i:02d}" for i in range(20)]
    assert col["categories"][0] == {"value": "c00", "real": approx(25 / 325), "synthetic": 0.25}
    assert col["other"] == approx({"real": (5 + 4 + 3 + 2 + 1) / 325, "synthetic": 2 / 4})  # c24 and zzz
    assert col["unseen_rate"] == 0.25 and col["distinct"] == {"real": 25, "synthetic": 4}
    real_share = {f"c{i:02d}": (25 - i) / 325 for i in range(25)}
    synth_share = {"c00": 0.25, "c24": 0.25, "zzz": 0.25, "c01": 0.25}
    tvd = 0.5 * sum(abs(real_share.get(v, 0) - synth_share.get(v, 0)) for v in set(real_share) | set(synth_share))
    assert col["similarity"] == approx(1 - tvd)


def test_text_is_compared_by_length_and_verbatim_copies():
    real = [["a"], ["bb"], ["ccc"], ["dddd"], ["eeeee"], ["ffffff"]]
    synthetic = [["bb"], ["zz"], ["ccc"], [""]]
    report = build_report(["note"], real, synthetic)
    (note,) = report["columns"]
    assert note["kind"] == "text"
    assert note["verbatim_rate"] == approx(2 / 3)  # bb and ccc of the three present values
    # lengths 1..6 in bins 0,4,8,12,16,19; synthetic 2,2,3 -> 4,4,8 and one missing
    assert note["length_histogram"]["synthetic"] == approx(shares(4, {4: 2, 8: 1}))
    tvd = 0.5 * (1 / 6 + abs(1 / 6 - 2 / 4) + abs(1 / 6 - 1 / 4) + 3 * (1 / 6) + 1 / 4)
    assert note["similarity"] == approx(1 - tvd) == approx(1 / 3)
    assert report["validity"]["rate"] == 0.75  # the empty note: none in training
    assert report["associations"]["similarity"] == 1.0 and report["associations"]["columns"] == []

    # a real column without values: one bin over the synthetic lengths, next to "missing"
    empty = build_report(["note"], [[""], [""]], [["ab"], [""]])
    (note,) = empty["columns"]
    assert note["length_histogram"]["real"] == [0.0] and note["length_histogram"]["synthetic"] == [0.5]
    assert note["similarity"] == approx(1 - 0.5 * (abs(0 - 0.5) + abs(1 - 0.5)))
    assert render_html(empty).count('class="column-plot"') == 1


def test_dates_are_numbers_in_days_and_datetimes_in_seconds():
    real = [["2023-01-01", "2023-01-01 00:00:00"], ["2023-01-03", "2023-01-01 00:00:10"]]
    synthetic = [["2023-01-02", "2023-01-01 00:00:05"], ["2023-01-02", "2023-01-01 00:00:20"]]
    report = build_report(["d", "t"], real, synthetic)
    d, t = report["columns"]
    jan1 = 738521  # date(2023, 1, 1).toordinal()
    assert d["stats"]["real"]["mean"] == jan1 + 1 and d["stats"]["real"]["std"] == 1.0
    assert t["stats"]["real"]["min"] == 1672531200 and t["stats"]["synthetic"]["max"] == 1672531220
    assert d["unit"].startswith("days") and t["unit"].startswith("seconds")
    assert report["associations"]["real"][0][1] == approx(1.0)  # two points: a perfect line
    assert report["associations"]["synthetic"][0][1] == 0.0  # a constant date column: no association
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
    return build_report(columns, real, synthetic, epsilon=2.5)


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
    assert html.index(f"{report['score']:.1f} / 100") < html.index(SCORE_DEFINITION) < html.index("<h2>Columns")
    assert "ε = 2.5" in html and "duplicate rate" in html and "training-copy rate" in html
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


def test_a_5000_by_15_report_is_built_and_written_in_seconds(tmp_path):
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
    real, synthetic = table(0), table(1)
    began = time.perf_counter()
    report = build_report(columns, real, synthetic)
    write_report(report, tmp_path / "r.html")
    elapsed = time.perf_counter() - began
    assert 0 < report["score"] <= 100 and report["columns"][0]["similarity"] > 0.8
    assert elapsed < 12, elapsed  # about 2 s here; matplotlib is most of it
