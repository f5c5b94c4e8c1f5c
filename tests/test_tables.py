"""Tables end to end (issue 5): column types saved and checked, field validators, seed fields with a
chosen column order, output in the file's order, and the quality report command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import CITIES, HEADER, assert_user_error, run, tiny_config, write_people_csv

from synthloom import DataError, GenerationError, load_model, train
from synthloom.data import decode_row
from synthloom.report import read_table
from synthloom.schema import check_fields

STATES = dict(CITIES)


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    return write_people_csv(tmp_path_factory.mktemp("data") / "people.csv")


@pytest.fixture(scope="module")
def led_model(people, tmp_path_factory) -> Path:
    """A model that writes city and state first (data.leading_columns), trained long enough to be usable."""
    out = tmp_path_factory.mktemp("models") / "led"
    config = tiny_config(
        people,
        out,
        data={"leading_columns": ["city", "state"]},
        model={"embedding_dim": 24, "hidden_size": 64},
        train={"epochs": 12, "batch_size": 16},
        early_stopping={"enabled": False},
    )
    train(config, progress=False)
    return out


def test_the_model_dir_keeps_each_columns_type(led_model):
    schema = json.loads((led_model / "schema.json").read_text())
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    assert kinds == {"city": "categorical", "state": "categorical", "name": "categorical", "age": "integer",
                     "note": "categorical"}  # fmt: skip
    assert [c["name"] for c in schema["columns"]] == ["city", "state", "name", "age", "note"]  # the model's order
    summary = json.loads((led_model / "summary.json").read_text())
    assert summary["columns"] == HEADER and summary["model_columns"] == ["city", "state", "name", "age", "note"]


def test_records_come_out_in_the_files_column_order_and_pass_the_type_checks(led_model):
    model = load_model(led_model)
    # unseen_categories false: a valid record's city is one of the training cities, wherever it sits
    records = model.generate(num_records=15, seed=1, max_invalid=5000, unseen_categories=False)
    valid = [r for r in records if r.valid]
    assert len(valid) == 15
    for r in valid:
        assert r.fields == decode_row(r.text, ",") and len(r.fields) == len(HEADER)
        name, age, city, state, note = r.fields
        int(age)  # the type check passed: an integer
        assert city in STATES  # the file's order: city third, not first
    assert model.columns == HEADER


def test_a_field_that_does_not_parse_as_its_type_makes_the_record_invalid(led_model):
    model = load_model(led_model)
    hot = dict(num_records=10, seed=3, temperature=2.5, max_invalid=100_000)
    checked = model.generate(**hot)
    type_errors = [r.explanation for r in checked if not r.valid and "is not an integer" in (r.explanation or "")]
    assert type_errors and all(e.startswith("age: ") for e in type_errors)
    assert all(check_fields(model.schema, [r.fields[HEADER.index(c)] for c in model.model_columns]) is None
               for r in checked if r.valid)  # fmt: skip
    unchecked = model.generate(**hot, check_types=False)
    assert any(not r.fields[1].lstrip("-").isdigit() for r in unchecked if r.valid)  # what the check keeps out


def test_unseen_categories_can_be_rejected(led_model):
    model = load_model(led_model)
    records = model.generate(num_records=10, seed=4, temperature=2.0, max_invalid=100_000, unseen_categories=False)
    assert any("unseen category" in (r.explanation or "") for r in records if not r.valid)
    for r in records:
        if r.valid:
            assert r.fields[2] in STATES and r.fields[3] in STATES.values()


def test_field_validators_see_one_field_each(led_model):
    model = load_model(led_model)
    records = model.generate(
        num_records=10, seed=5, max_invalid=100_000, field_validators={"age": lambda v: int(v) >= 40}
    )
    assert all(int(r.fields[1]) >= 40 for r in records if r.valid)
    assert any((r.explanation or "").startswith("age: validator returned False") for r in records if not r.valid)
    with pytest.raises(GenerationError, match="unknown column"):
        model.generate(num_records=1, field_validators={"height": lambda v: True})


def test_one_seed_for_every_record(led_model):
    model = load_model(led_model)
    records = model.generate(num_records=12, seed=6, max_invalid=100_000, seed_fields={"city": "Austin", "state": "TX"})
    valid = [r for r in records if r.valid]
    assert len(valid) == 12
    assert all(r.fields[2] == "Austin" and r.fields[3] == "TX" for r in valid)


def test_a_list_of_seeds_gives_one_record_per_seed_in_order(led_model):
    model = load_model(led_model)
    seeds = [{"city": c, "state": s} for c, s in CITIES] * 2 + [{"city": "Denver", "state": "TX"}]  # an unseen pair
    records = model.generate(seed=7, max_invalid=100_000, seed_fields=seeds)
    valid = [r for r in records if r.valid]
    assert [r.seed for r in valid] == list(range(len(seeds)))
    for r, seed in zip(valid, seeds):
        assert (r.fields[2], r.fields[3]) == (seed["city"], seed["state"])  # a seeded column always equals its seed
    # a num_records that disagrees with the list is refused, not silently ignored; the same number is fine
    with pytest.raises(GenerationError, match=r"num_records=3 with a list of 9 seed fields"):
        model.generate(3, seed=7, seed_fields=seeds)
    again = model.generate(len(seeds), seed=7, max_invalid=100_000, seed_fields=seeds)
    assert [r.text for r in again] == [r.text for r in records]


def test_seeds_must_be_the_models_leading_columns(led_model):
    model = load_model(led_model)
    with pytest.raises(GenerationError, match=r"train with data.leading_columns: \['name'\]"):
        model.generate(num_records=1, seed_fields={"name": "ann"})
    with pytest.raises(GenerationError, match="leading columns"):
        model.generate(num_records=1, seed_fields={"state": "MA"})  # second, not first
    with pytest.raises(GenerationError, match="seed 2 names"):
        model.generate(seed_fields=[{"city": "Boston", "state": "MA"}, {"city": "Boston"}])


def test_an_unknown_leading_column_is_a_data_error(people, tmp_path):
    with pytest.raises(DataError, match=r"data.leading_columns: 'zip' not in"):
        train(tiny_config(people, tmp_path / "m", data={"leading_columns": ["zip"]}), progress=False)


def test_column_types_override_the_inferred_ones(people, tmp_path):
    config = tiny_config(people, tmp_path / "m", data={"column_types": {"age": "categorical"}}, train={"epochs": 1})
    train(config, progress=False)
    kinds = {c["name"]: c["kind"] for c in json.loads((tmp_path / "m" / "schema.json").read_text())["columns"]}
    assert kinds["age"] == "categorical"
    bad = tiny_config(people, tmp_path / "m2", data={"column_types": {"city": "integer"}})
    with pytest.raises(DataError, match="city"):
        train(bad, progress=False)


def test_a_private_model_dir_keeps_no_category_values_or_ranges(people, tmp_path):
    config = tiny_config(people, tmp_path / "dp", privacy={"enabled": True, "noise_multiplier": 1.0})
    train(config, progress=False)
    for column in json.loads((tmp_path / "dp" / "schema.json").read_text())["columns"]:
        assert column.get("categories") is None and column.get("min") is None and column.get("max") is None


# --------------------------------------------------------------------------- the CLI


def test_generate_with_a_csv_of_seeds_and_report(capsys, people, led_model, tmp_path):
    seeds = tmp_path / "seeds.csv"
    with seeds.open("w", newline="") as fh:
        csv.writer(fh).writerows([["city", "state"], ["Boston", "MA"], ["Seattle", "WA"], ["Boston", "MA"]])
    out = tmp_path / "synthetic.csv"
    rc, _, err = run(capsys, "generate", led_model, "--seed-fields", seeds, "--seed", "1", "--max-invalid", "100000",
                     "-o", out)  # fmt: skip
    assert rc == 0, err
    columns, rows = read_table(out)
    assert columns == HEADER
    assert [(r[2], r[3]) for r in rows] == [("Boston", "MA"), ("Seattle", "WA"), ("Boston", "MA")]

    rc, _, err = run(capsys, "report", led_model, out, "-o", tmp_path / "report.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert "quality score" in err and 0 <= report["score"] <= 100
    assert [c["name"] for c in report["columns"]] == HEADER

    rc, out_text, err = run(capsys, "generate", led_model, "--seed-field", "name=ann", "--num-records", "2")
    assert_user_error(rc, out_text, err, 7, "leading columns")


def test_report_needs_the_real_table(capsys, people, led_model, tmp_path):
    synthetic = tmp_path / "s.csv"
    synthetic.write_text(people.read_text())
    rc, out, err = run(capsys, "report", led_model, synthetic, "-o", tmp_path / "r.html", "--real", tmp_path / "no.csv")
    assert_user_error(rc, out, err, 3, "table file not found", "no.csv")
    rc, out, err = run(capsys, "report", led_model, synthetic, "-o", tmp_path / "r.pdf")
    assert rc != 0 and "Traceback" not in err


def test_a_wide_table_trains_generates_valid_records_and_reports(capsys, tmp_path):
    """52 columns end to end: no width limit anywhere (record length, schema, checks, report)."""
    import random

    rng = random.Random(0)
    columns = [f"c{i:02d}" for i in range(52)]
    path = tmp_path / "wide.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for _ in range(150):  # each value carries its column's number: a tiny model learns the width fast
            writer.writerow([f"{i:02d}{rng.choice('ab')}" for i in range(52)])
    out = tmp_path / "model"
    config = tiny_config(
        path,
        out,
        model={"embedding_dim": 16, "hidden_size": 64},
        train={"epochs": 20, "batch_size": 16},
        early_stopping={"enabled": False},
    )
    train(config, progress=False)
    records = load_model(out).generate(num_records=5, seed=0, batch_size=256, max_invalid=10_000)
    valid = [r for r in records if r.valid]
    assert len(valid) == 5 and all(len(r.fields) == 52 for r in valid)
    synthetic = tmp_path / "s.csv"
    with synthetic.open("w", newline="") as fh:
        csv.writer(fh).writerows([columns] + [r.fields for r in valid])
    rc, _, err = run(capsys, "report", out, synthetic, "-o", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["columns"]) == 52 and report["validity"]["rate"] == 1.0


# --------------------------------------------------------------------------- found in review


def test_a_header_naming_a_column_twice_is_a_data_error(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1,x,2\n3,y,4\n")
    with pytest.raises(DataError, match="the header names 'a' more than once"):
        train(tiny_config(path, tmp_path / "m", data={"leading_columns": ["b"]}), progress=False)


def test_a_seed_the_model_could_never_continue_is_refused_before_sampling(led_model):
    model = load_model(led_model)
    with pytest.raises(GenerationError, match="seed 2: city is missing, and it never is in training"):
        model.generate(seed_fields=[{"city": "Boston", "state": "MA"}, {"city": "", "state": "MA"}])


def test_seed_values_from_pandas_read_as_training_saw_them():
    import datetime as dt

    import pandas as pd

    from synthloom.seeds import as_text

    assert [as_text(v) for v in (pd.NA, pd.NaT, float("nan"), None)] == ["", "", "", ""]
    assert as_text(pd.Timestamp("2023-01-05 10:00")) == "2023-01-05T10:00:00"
    assert as_text(dt.date(2023, 1, 5)) == "2023-01-05" and as_text(7) == "7" and as_text("x") == "x"


def test_integers_beyond_int64_come_back_as_python_ints(tmp_path):
    from synthloom.frames import records_dataframe
    from synthloom.records import GeneratedRecord
    from synthloom.schema import infer_schema

    big = str(2**70)
    schema = infer_schema(["id"], [[big], ["5"]])
    out = records_dataframe([GeneratedRecord(big, True, None, [big])], ["id"], schema)
    assert out["id"].tolist() == [2**70]


def test_resume_accepts_a_run_saved_before_newer_keys_existed(people, tmp_path):
    config = tiny_config(people, tmp_path / "m", train={"epochs": 1})
    train(config, progress=False)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("leading_columns", "column_types", "max_columns_per_model"):
        del saved["data"][key]
    del saved["privacy"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    config["train"]["epochs"] = 2
    assert train(config, progress=False, resume=True).epochs == 2
