"""data.column_order: dependency: each column written right after the column it depends on most."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from synthloom import ConfigError, train
from synthloom.config import validate_config
from synthloom.dependence import dependence_matrix, dependency_order
from synthloom.generate import load_model
from synthloom.schema import infer_schema


def table(n: int = 600, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """plan -> price (determined), an independent colour, age -> age_group (determined), a noisy date pair."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plan = rng.choice(["basic", "plus", "pro"])
        age = rng.randint(18, 80)
        signup = rng.randint(1, 300)
        rows.append([
            plan, rng.choice(["red", "green", "blue", "black"]), str(age), f"2020-01-{1 + signup % 28:02d}",
            str({"basic": 10, "plus": 25, "pro": 60}[plan] + rng.randint(0, 2)), "young" if age < 40 else "old",
        ])  # fmt: skip
    return ["plan", "colour", "age", "day", "price", "age_group"], rows


def test_a_determined_column_is_written_right_after_its_source_and_leading_columns_stay_first():
    names, rows = table()
    schema = infer_schema(names, rows)
    order = [names[i] for i in dependency_order(rows, schema)]
    assert abs(order.index("price") - order.index("plan")) == 1
    assert abs(order.index("age_group") - order.index("age")) == 1
    assert sorted(order) == sorted(names)
    led = [names[i] for i in dependency_order(rows, schema, leading=2)]
    assert led[:2] == ["plan", "colour"] and led[2] == "price"  # (price: plan's, right after the leading ones)


def test_dependence_is_one_for_a_copy_and_near_zero_for_independent_columns():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 8, 5000), rng.integers(0, 8, 5000)
    m = dependence_matrix([x, x.copy(), y])
    assert m[0, 1] == pytest.approx(1.0) and m[0, 2] < 0.01 and m[0, 0] == 0 and m[2, 0] == m[0, 2]


def test_a_dependency_ordered_model_writes_in_its_order_and_gives_rows_in_the_files(tmp_path):
    names, rows = table(400)
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([names, *rows])
    cfg = {
        "output_dir": str(tmp_path / "m"),
        "data": {"path": str(path), "column_order": "dependency", "leading_columns": ["age"]},
        "model": {"embedding_dim": 16, "hidden_size": 32},
        "train": {"epochs": 2, "batch_size": 32},
    }
    train(cfg, progress=False)
    written = json.loads((tmp_path / "m" / "summary.json").read_text())["model_columns"]
    assert written[:2] == ["age", "age_group"] and sorted(written) == sorted(names)
    model = load_model(tmp_path / "m")
    records = model.generate(20, seed=0, seed_fields={"age": "30"}, max_invalid=10_000)
    fields = [r.fields for r in records if r.valid]
    assert fields and all(f[names.index("age")] == "30" for f in fields)  # the file's order, seeded
    with pytest.raises(ConfigError, match="dependency orders a table's columns"):
        validate_config(cfg | {"data": {"path": str(tmp_path / "t.txt"), "column_order": "dependency"}})
    with pytest.raises(ConfigError, match="data.column_order: under privacy.enabled"):
        validate_config(cfg | {"privacy": {"enabled": True, "noise_multiplier": 1.0}})
