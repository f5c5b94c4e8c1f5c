"""The field tokenizer under differential privacy (private_stats.py): every statistic the vocabularies
keep comes from noisy counts, the thresholds bound what a single record can add, and privacy.json
totals the encoding's epsilon and delta with DP-SGD's."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from synthloom import load_model, train
from synthloom.config import TokenizerConfig
from synthloom.errors import ConfigError, DataError
from synthloom.fields import FieldTokenizer
from synthloom.private_stats import ZERO_CELL, PrivateStats, _core, _rho_for
from synthloom.schema import infer_schema

pytest.importorskip("opacus")


def stats(schema, epsilon=1.0, delta=1e-6, seed=0) -> PrivateStats:
    return PrivateStats.for_schema(schema, epsilon, delta, np.random.default_rng(seed))


@pytest.mark.parametrize("epsilon, delta", [(0.1, 1e-6), (1.0, 1e-5), (4.0, 1e-8)])
def test_rho_converts_back_to_the_epsilon_asked_for(epsilon, delta):
    rho = _rho_for(epsilon, delta)
    assert rho + 2 * math.sqrt(rho * math.log(1 / delta)) == pytest.approx(epsilon, rel=1e-9)


def test_sigma_grows_with_the_histograms_a_record_touches():
    one = infer_schema(["c"], [["a"], ["b"]] * 50)
    five = infer_schema(
        list("abcde"), [["x", "1", "2.5", "y", "2020-01-01"], ["z", "2", "3.5", "w", "2021-02-03"]] * 50
    )
    s1, s5 = stats(one), stats(five)
    w = 1 + 1 / 9  # a number's or date's values, and how they are written (noise 3 x sigma)
    # (an integer's: its range's end numbers too; a float's: its end cells' parts)
    assert s5.histograms == pytest.approx(1 + (w + 1) + (w + 1) + 1 + w)
    assert s5.sigma == pytest.approx(s1.sigma * math.sqrt(s5.histograms / s1.histograms))
    bounded = PrivateStats.for_schema(five, 1.0, 1e-6, np.random.default_rng(0), bounded=frozenset({"b"}))
    assert bounded.histograms == pytest.approx(s5.histograms - 1)  # public bounds: no range to estimate
    bounded = PrivateStats.for_schema(five, 1.0, 1e-6, np.random.default_rng(0), bounded=frozenset({"c"}))
    assert bounded.histograms == pytest.approx(s5.histograms - 1)  # (nor end parts to read)


def test_a_private_integer_range_ends_at_the_real_ends_not_its_grid_cells():
    """Ages 24..34 (a survey's cohort) and school years up to 18, a few thousand rows: the log grid's end
    cells hold 23 and 19 too; the end numbers' own noisy counts end the ranges at 24..34 and 18, inside
    the real range (a sparse tail hidden in the noise, school years below 8 here, is cut, as before)."""
    rng = np.random.default_rng(5)
    ages = rng.integers(24, 35, 3000)
    educ = np.clip(np.round(rng.normal(14, 3, 3000)), 1, 18)
    rows = [[str(a), str(int(e))] for a, e in zip(ages, educ)]
    schema = infer_schema(["age", "educ"], rows)
    for seed in range(10):
        tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, 1.0, seed=seed))
        age, school = tok.codecs
        assert (int(age.value_text(age.lows[0])), int(age.value_text(age.highs[-1]))) == (24, 34)
        assert educ.min() <= int(school.value_text(school.lows[0])) <= 9
        assert int(school.value_text(school.highs[-1])) == 18


def test_a_value_held_by_one_record_passes_the_threshold_no_more_often_than_delta_allows():
    schema = infer_schema(["c"], [["a"]] * 10)
    s = PrivateStats.for_schema(schema, 1.0, 0.2, np.random.default_rng(1))  # a large delta: measurable
    tau = s.tau()
    kept = sum(s.rng.normal(1.0, s.sigma) >= tau for _ in range(20_000)) / 20_000
    assert kept <= 0.1 + 0.01  # delta_threshold = delta / 2, one thresholded histogram


def test_private_categories_keep_the_frequent_values_and_never_a_unique_one():
    rng = random.Random(0)
    rows = [[rng.choice(["red"] * 60 + ["blue"] * 39 + ["green"])] for _ in range(3000)]
    rows.append(["only-once"])
    schema = infer_schema(["colour"], rows)
    for seed in range(20):
        tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, seed=seed))
        codec = tok.codecs[0]
        assert {"red", "blue"} <= set(codec.categories)
        assert "only-once" not in codec.categories and codec.rare == [] and codec.has_rare


def test_private_numeric_ranges_cover_the_bulk_and_clip_the_rest():
    rng = np.random.default_rng(2)
    ages = [str(int(a)) for a in np.clip(rng.normal(40, 12, 4000), 17, 90)] + ["5000"]  # one outlier
    spend = [f"{x:.2f}" for x in rng.lognormal(3, 1, 4001)]
    rows = [list(r) for r in zip(ages, spend)]
    schema = infer_schema(["age", "spend"], rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, epsilon=2.0))
    age, money = tok.codecs
    top = age.value_text(age.highs[-1])
    assert float(age.value_text(age.lows[0])) <= 20 and 70 <= float(top) < 100  # the outlier is not in the range
    assert money.exponent == -2 and money.style == "fixed"  # two decimals, as the data writes them
    ids, bad = tok.encode_rows(rows)
    assert bad == []  # out-of-range values are clipped, not refused
    back = tok.decode_rows(ids, np.random.default_rng(0))
    assert max(int(r[0]) for r in back) <= int(float(top))
    assert len(age.lows) > 10 and all(a < b for a, b in zip(age.lows, age.lows[1:]))  # quantile bins, ascending


def test_the_integer_ends_share_one_reserve_and_0_1_flags_take_none_of_it():
    """Five 0/1 flags and an age column: the flags' ends are exact cells (0 and 1), so only the ages' end
    numbers are counted, with the whole reserve (min(4, integer columns) histograms' worth): noise sigma / 2."""
    rng = np.random.default_rng(6)
    rows = [[str(int(rng.random() < 0.3)) for _ in range(5)] + [str(rng.integers(24, 35))] for _ in range(3000)]
    schema = infer_schema([f"flag{i}" for i in range(5)] + ["age"], rows)
    s = stats(schema)
    assert s.end_slots == 4 and s.histograms == pytest.approx(6 * (1 + 1 / 9) + 4)
    FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=s)
    ends = [h for h in s.spent if "at its range's ends" in h["histogram"]]
    assert [h["histogram"].split(":")[0] for h in ends] == ["age"]
    assert ends[0]["noise_std"] == pytest.approx(s.sigma / 2)  # one histogram has all 4: 1 / (1/2)^2


def ranges(rows, names, epsilon=1.0, seeds=range(8)):
    """Each seed's private range of every column, as (low, high) floats."""
    schema = infer_schema(names, rows)
    out = []
    for seed in seeds:
        tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, epsilon, seed=seed))
        out.append([(float(c.value_text(c.lows[0])), float(c.value_text(c.highs[-1]))) for c in tok.codecs])
    return out


def test_a_sparse_column_whose_cells_each_hide_in_the_noise_still_gets_a_range_from_their_sums():
    """700 gust speeds spread over 16-40 (the rest of 3,000 rows missing): no eighth-octave cell stands out
    of noise sigma ~19 on its own (40-100 values each), which used to refuse the column; the cells' sums over
    blocks of them do, and the range lies inside the data, holding most of it."""
    rng = np.random.default_rng(7)
    gust = np.round(rng.uniform(16, 40, 700), 2)
    rows = [[f"{g:.2f}"] for g in gust] + [[""]] * 2300
    for ((low, high),) in ranges(rows, ["gust"]):
        assert 16 <= low < 20 and 30 < high <= 40 * 2 ** (1 / 8)  # (at most the end cell's edge past the data)
        assert np.mean((gust >= low) & (gust <= high)) > 0.6


def test_a_private_integer_range_runs_over_the_cells_no_whole_number_can_fall_in():
    """Days of the month, 3,000 rows (~100 a day, each below the bar on its own): between 1 and 8 the log
    grid has 24 cells and 7 whole numbers, and the empty cells between them no longer stop the range's
    widening at the first gap (it ended near day 5, cutting 14 % of the rows)."""
    rng = np.random.default_rng(8)
    day = rng.integers(1, 32, 3000)
    for ((low, high),) in ranges([[str(d)] for d in day], ["day"]):
        assert 1 <= low <= 2 and 30 <= high <= 31


def test_a_float_of_narrow_relative_spread_gets_a_range_and_bins_inside_its_values():
    """Air pressure, 985-1042 (normal 1017 +- 7.5): two eighth-octave cells, 939-1024 and 1024-1117, hold all
    of it. Their parts' counts end the range inside the data (it ran 939-1117, and its bins spread evenly
    over it: two thirds of them empty), and the bins follow the values; a sparse end cell beside the data (a
    log wage's 7.34-8.0, a handful of rows) ends at its inner edge instead of running past them."""
    rng = np.random.default_rng(9)
    pressure = np.clip(np.round(rng.normal(1017, 7.5, 3000), 1), 985, 1042)
    wage = np.clip(rng.normal(6.2, 0.42, 3000), 4.6, 7.78)
    rows = [[f"{p:.1f}", f"{w:.5f}"] for p, w in zip(pressure, wage)]
    schema = infer_schema(["pressure", "lwage"], rows)
    for seed in range(8):
        tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, seed=seed))
        codec, lwage = tok.codecs
        low, high = float(codec.value_text(codec.lows[0])), float(codec.value_text(codec.highs[-1]))
        assert 985 <= low < 1000 and 1030 < high <= 1042
        edges = [float(codec.value_text(k)) for k in codec.lows]
        inside = pressure[(pressure >= low) & (pressure <= high)]
        held = np.bincount(np.searchsorted(edges, inside, side="right") - 1, minlength=len(edges))
        assert (held == 0).mean() < 0.2
        assert float(lwage.value_text(lwage.highs[-1])) <= 7.78 and float(lwage.value_text(lwage.lows[0])) >= 4.6


def test_a_private_number_with_many_zeros_keeps_0_a_value_of_its_own():
    """Wind speeds, a fifth of them 0 (calm), written with 5 decimals: under DP the bins are quantiles of noisy
    cells, and 0 shared its bin with the next values, so the model wrote calm as 0.00002; the cell around 0 holds
    0 only, so 0 is a bin of its own and decodes to 0 exactly."""
    rng = np.random.default_rng(10)
    speed = np.where(rng.random(3000) < 0.2, 0.0, rng.gamma(3, 3.5, 3000))
    rows = [[f"{v:.5f}".rstrip("0").rstrip(".") or "0"] for v in speed]
    schema = infer_schema(["wind_speed"], rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema))
    codec = tok.codecs[0]
    assert codec.value_text(codec.lows[0]) == "0.00000" and codec.highs[0] == codec.lows[0]
    back = [float(r[0]) for r in tok.decode_rows(tok.encode_rows(rows)[0], np.random.default_rng(0))]
    assert sum(v == 0 for v in back) == sum(v == 0 for v in speed)  # every calm reading comes back as 0


def test_a_lone_noise_spike_far_from_the_data_does_not_stretch_the_range_over_octaves():
    """1,500 values in five cells near 1,000 and one cell at -2^40 whose noise reached 5.8 sigma: above the bar
    a cell must top, and above 5 % of the real mass, so the range ran from -10^12 (card's wage came out
    -3.4e17..939 in one of 40 noise seeds, every bin of it wasted); a group that far must top what noise
    reaches with probability 1e-6. The cell around 0, one cell named in advance, keeps the lower bar."""
    sigma, noisy = 25.0, np.zeros(2 * ZERO_CELL + 1)
    data = ZERO_CELL + 240 + np.arange(5)  # (eighth octaves above 2^-20: ~2^10)
    noisy[data] = 300.0
    noisy[ZERO_CELL - 400] = 5.8 * sigma
    span, mass = _core(noisy, sigma, zero=ZERO_CELL)
    assert span.tolist() == [data[0], data[-1]] and mass[ZERO_CELL - 400] == 0
    noisy[ZERO_CELL - 400], noisy[ZERO_CELL] = 0.0, 5.8 * sigma  # 0: a point mass apart from the rest (calm wind)
    span, _ = _core(noisy, sigma, zero=ZERO_CELL)
    assert span.tolist() == [ZERO_CELL, data[-1]]


def test_a_private_integer_column_of_billions_counts_only_its_end_cells_outermost_numbers():
    """Populations around 4 x 10^9: an end cell of the log grid holds ~10^8 whole numbers, and all of them were
    put in a set before END_INTEGERS were kept (MemoryError); now at most END_INTEGERS per cell are counted."""
    rng = np.random.default_rng(11)
    pop = rng.lognormal(22, 0.5, 3000).astype(np.int64)
    [(low, high)] = ranges([[str(p)] for p in pop], ["population"], seeds=[0])[0]
    assert pop.min() * 0.5 <= low <= np.quantile(pop, 0.05) and np.quantile(pop, 0.95) <= high <= pop.max() * 1.2


def test_private_dates_take_years_from_noise_and_the_calendar_for_the_rest():
    rng = random.Random(3)
    rows = [[f"{rng.randint(2015, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"] for _ in range(3000)]
    schema = infer_schema(["d"], rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=stats(schema, epsilon=2.0))
    codec = tok.codecs[0]
    assert codec.components == ["year", "month", "day"]
    assert 2014 <= codec.lows[0] <= 2015 and 2020 <= codec.highs[0] <= 2021
    assert codec.lows[1:] == [1, 1] and codec.highs[1:] == [12, 31]  # not read from the data


def write_table(path: Path, n: int = 1500) -> Path:
    rng = random.Random(4)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plan", "spend", "joined"])
        for _ in range(n):
            plan = rng.choice(["basic", "plus", "premium"])
            base = {"basic": 10, "plus": 40, "premium": 100}[plan]
            w.writerow([plan, f"{base + rng.uniform(0, 9):.2f}", f"20{rng.randint(18, 22)}-0{rng.randint(1, 9)}-15"])
    return path


def test_a_private_table_model_totals_both_epsilons_in_privacy_json_and_gives_only_valid_rows(tmp_path):
    data = write_table(tmp_path / "t.csv")
    out = tmp_path / "model"
    config = {
        "output_dir": str(out),
        "data": {"path": str(data)},
        "model": {"embedding_dim": 16, "hidden_size": 32, "num_layers": 1},
        "train": {"epochs": 2, "batch_size": 64},
        "privacy": {"enabled": True, "target_epsilon": 4.0, "noise_seed": 7},
    }
    train(config, progress=False)
    report = json.loads((out / "privacy.json").read_text())
    enc, sgd = report["encoding"], report["dp_sgd"]
    assert enc["epsilon"] == pytest.approx(1.0)  # a quarter of the target, by default
    assert report["epsilon"] == pytest.approx(enc["epsilon"] + sgd["epsilon"])
    assert report["delta"] == pytest.approx(enc["delta"] + sgd["delta"]) and report["delta"] <= 1e-5
    assert report["epsilon"] <= 4.0 + 1e-9 and sgd["target_epsilon"] == pytest.approx(3.0)
    # (the float's end cells' parts: a reserve of one histogram's worth)
    assert enc["histograms"] == pytest.approx(1 + 2 * (1 + 1 / 9) + 1) and enc["sigma"] > 0 and enc["spent"]
    model = load_model(out)
    records = model.generate(num_records=300, seed=1)
    assert len(records) == 300 and all(r.valid for r in records)
    plans = Counter(r.fields[0] for r in records)
    assert set(plans) <= {"basic", "plus", "premium"}
    for r in records:
        assert 0.0 <= float(r.fields[1]) < 1000 and r.fields[2][:2] == "20"


def test_dp_switched_on_over_a_config_init_config_is_accepted(tmp_path, capsys):
    from conftest import run

    data = write_table(tmp_path / "t.csv", 200)
    rc, out, err = run(capsys, "config", "init", data, "--output-dir", tmp_path / "m")
    assert rc == 0, err
    path = tmp_path / "config.yaml"
    path.write_text(out)
    from synthloom.config import load_config

    config = load_config(path, ["privacy.enabled=true", "privacy.target_epsilon=4"])
    assert config.early_stopping.enabled is False and config.checkpoint.save_best is False
    assert config.train.max_grad_norm == 0.0
    with pytest.raises(Exception, match="early_stopping.enabled"):  # set by hand against DP: still refused
        load_config(path, ["privacy.enabled=true", "privacy.target_epsilon=4", "early_stopping.enabled=true"])


def test_public_bounds_are_a_private_columns_range_exactly_and_cost_no_range_estimate():
    rng = np.random.default_rng(5)
    ages = [str(int(a)) for a in rng.integers(24, 35, 3000)]  # 24..34, as a survey's design fixes them
    wages = [f"{x:.2f}" for x in rng.uniform(1.0, 50.0, 3000)]
    rows = [list(r) for r in zip(ages, wages)]
    schema = infer_schema(["age", "wage"], rows)
    s = stats(schema, epsilon=2.0)
    bounds = {"age": (24, 34), "wage": (0.0, 60.0)}
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), dp=s, bounds=bounds)
    age, wage = tok.codecs
    assert (age.value_text(age.lows[0]), age.value_text(age.highs[-1])) == ("24", "34")
    assert float(wage.value_text(wage.lows[0])) == 0.0 and float(wage.value_text(wage.highs[-1])) == 60.0
    assert s.report()["public_bounds"] == {"age": [24, 34], "wage": [0.0, 60.0]}
    assert s.histograms == stats(schema, epsilon=2.0).histograms  # the same noise: one histogram per number
    back = tok.decode_rows(tok.encode_rows(rows)[0], np.random.default_rng(0))
    assert {int(r[0]) for r in back} <= set(range(24, 35)) and all(0.0 <= float(r[1]) <= 60.0 for r in back)
    # every sampled bin lies within the bounds, whatever the model draws
    ids = np.stack([slot.base + rng.integers(0, slot.size, 2000) for slot in tok.slots], axis=1)
    drawn = tok.decode_rows(ids, np.random.default_rng(1))
    assert all(24 <= int(r[0]) <= 34 and 0.0 <= float(r[1]) <= 60.0 for r in drawn)


def test_bounds_without_privacy_clip_training_values_and_name_bad_columns():
    rows = [[str(v), "x" if v % 2 else "y"] for v in range(-5, 200)]
    schema = infer_schema(["amount", "c"], rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), bounds={"amount": (0, 99.5)})
    n = tok.codecs[0]
    assert (n.value_text(n.lows[0]), n.value_text(n.highs[-1])) == ("0", "99")  # whole numbers inside
    ids, bad = tok.encode_rows(rows)
    assert bad == []  # clipped, not refused
    assert {int(r[0]) for r in tok.decode_rows(ids, np.random.default_rng(0))} <= set(range(100))
    with pytest.raises(DataError, match="'c' is categorical"):
        FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), bounds={"c": (0, 1)})
    with pytest.raises(DataError, match="unknown column 'amont'.*did you mean 'amount'"):
        FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), bounds={"amont": (0, 1)})


def test_a_private_model_with_public_bounds_samples_inside_them_and_says_so_in_privacy_json(tmp_path):
    data = write_table(tmp_path / "t.csv")
    out = tmp_path / "model"
    config = {
        "output_dir": str(out),
        "data": {"path": str(data), "column_bounds": {"spend": [10, 109]}},
        "model": {"embedding_dim": 16, "hidden_size": 32, "num_layers": 1},
        "train": {"epochs": 1, "batch_size": 64},
        "privacy": {"enabled": True, "target_epsilon": 4.0, "noise_seed": 7},
    }
    train(config, progress=False)
    report = json.loads((out / "privacy.json").read_text())
    assert report["encoding"]["public_bounds"] == {"spend": [10, 109]}
    assert any("column_bounds" in line for line in report["not_covered"])
    records = load_model(out).generate(num_records=300, seed=1)
    assert all(r.valid and 10.0 <= float(r.fields[1]) <= 109.0 for r in records)


@pytest.mark.parametrize(
    "bounds, message",
    [({"spend": [5, 1]}, "low <= high"), ({"spend": [0, float("inf")]}, "finite"), ({"plan": [0, 1]}, "categorical")],
)
def test_bad_column_bounds_are_named(tmp_path, bounds, message):
    data = write_table(tmp_path / "t.csv", n=50)
    config = {"output_dir": str(tmp_path / "m"), "data": {"path": str(data), "column_bounds": bounds}}
    with pytest.raises((ConfigError, DataError), match=message):
        train(config, progress=False)


def test_bounds_without_privacy_clip_values_but_still_refuse_a_missing_marker_training_never_had():
    rows = [[str(v)] for v in range(0, 300)]
    schema = infer_schema(["n"], rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields"), bounds={"n": (10, 200)})
    codec = tok.codecs[0]
    assert codec.bounded and not codec.clip
    assert codec.encode("500") == codec.encode("200") and codec.encode("-3") == codec.encode("10")
    with pytest.raises(ValueError, match="never missing in training"):
        codec.encode("NA")  # not silently the lowest value
