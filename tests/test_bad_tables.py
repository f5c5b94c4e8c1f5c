"""Awkward tables with field tokens (the csv default): each works, with every sampled row valid, or
stops with one clear error naming the column."""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

import pytest

from synthloom import TokenizerError, load_model, train

TINY = {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}


def write(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def fit_and_sample(tmp_path: Path, header: list[str], rows: list[list], n: int = 200, **data) -> list[list[str]]:
    path = write(tmp_path / "t.csv", header, rows)
    out = tmp_path / "model"
    config = {"output_dir": str(out), "data": {"path": str(path), **data}, "model": TINY, "train": {"epochs": 2}}
    train(config, progress=False)
    records = load_model(out).generate(num_records=n, seed=1)
    valid = [r for r in records if r.valid]
    assert len(valid) == n
    assert all("privacy filter" in r.explanation for r in records if not r.valid)  # valid by construction otherwise
    return [r.fields for r in valid]


def test_a_column_with_one_value_and_one_all_missing(tmp_path):
    rng = random.Random(0)
    rows = [["same", "", rng.choice("abc"), rng.randint(0, 9)] for _ in range(300)]
    out = fit_and_sample(tmp_path, ["k", "empty", "c", "n"], rows)
    assert {r[0] for r in out} == {"same"} and {r[1] for r in out} == {""}
    assert {r[2] for r in out} <= set("abc") and all(0 <= int(r[3]) <= 9 for r in out)


def test_ten_thousand_distinct_categories(tmp_path):
    rng = random.Random(1)
    rows = [[f"id-{i:05d}", rng.choice(["x", "y"])] for i in range(10_000)]
    out = fit_and_sample(tmp_path, ["id", "g"], rows, column_types={"id": "categorical"})
    seen = {r[0] for r in rows}
    assert all(r[0] in seen for r in out)  # every value a real one: all rare, sampled back by frequency


def test_ids_as_free_text_come_out_in_the_ids_shape(tmp_path):
    rows = [[f"C-{i:06d}", i % 3] for i in range(2000)]
    out = fit_and_sample(tmp_path, ["id", "g"], rows)
    assert all(set(r[0]) <= set("C-0123456789") and len(r[0]) <= 8 for r in out)  # the column's own characters


def test_mixed_types_in_one_column(tmp_path):
    rng = random.Random(2)
    rows = [[rng.choice(["12", "n/a", "3.5", "seven", "2020-01-01"]), rng.randint(0, 3)] for _ in range(400)]
    out = fit_and_sample(tmp_path, ["mixed", "n"], rows)
    assert {r[0] for r in out} <= {"12", "n/a", "3.5", "seven", "2020-01-01"}


def test_a_numeric_column_with_huge_outliers_and_heavy_tails_stays_in_range(tmp_path):
    rng = random.Random(3)
    rows = [[round(rng.gauss(50, 5), 1), round(rng.paretovariate(1.2), 3)] for _ in range(1000)]
    rows += [[1e9, 1.0], [-1e9, 2.0]]
    out = fit_and_sample(tmp_path, ["x", "tail"], rows, n=400)
    xs, tails = [float(r[0]) for r in out], [float(r[1]) for r in out]
    assert all(-1e9 <= x <= 1e9 for x in xs) and sum(30 <= x <= 70 for x in xs) > 0.9 * len(xs)
    assert all(1.0 <= t <= max(r[1] for r in rows) for t in tails)


def test_dates_in_mixed_formats_are_text_and_come_back_as_training_like_text(tmp_path):
    rng = random.Random(4)
    start = date(2020, 1, 1)
    rows = []
    for _ in range(400):
        d = start + timedelta(days=rng.randint(0, 300))
        rows.append([d.isoformat() if rng.random() < 0.5 else d.strftime("%d/%m/%Y"), rng.randint(0, 1)])
    out = fit_and_sample(tmp_path, ["when", "flag"], rows)
    assert all(set(r[0]) <= set("0123456789-/") for r in out)  # text of the column's own pieces


def test_a_one_column_table(tmp_path):
    rng = random.Random(5)
    out = fit_and_sample(tmp_path, ["x"], [[rng.choice(["a", "b", "c"])] for _ in range(200)])
    assert {r[0] for r in out} <= {"a", "b", "c"}


def test_a_200_column_table(tmp_path):
    rng = random.Random(6)
    header = [f"c{i}" for i in range(200)]
    rows = [[rng.randint(0, 5) if i % 2 else rng.choice("xyz") for i in range(200)] for _ in range(300)]
    out = fit_and_sample(tmp_path, header, rows, n=50)
    assert all(len(r) == 200 for r in out)


def test_free_text_under_privacy_is_one_clear_error_naming_the_column(tmp_path):
    pytest.importorskip("opacus")
    rng = random.Random(7)
    rows = [[f"note {rng.randint(0, 10**6)} about {rng.choice(['a', 'b'])}", rng.randint(0, 3)] for _ in range(500)]
    path = write(tmp_path / "t.csv", ["note", "n"], rows)
    config = {"output_dir": str(tmp_path / "m"), "data": {"path": str(path)}, "model": TINY, "train": {"epochs": 1},
              "privacy": {"enabled": True, "target_epsilon": 4}}  # fmt: skip
    with pytest.raises(TokenizerError, match="'note' is free text"):
        train(config, progress=False)
