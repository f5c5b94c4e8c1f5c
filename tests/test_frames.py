"""DataFrames in and out (issue 5): a DataFrame trains what the same CSV file trains; generated
records come back as a typed DataFrame in the table's column order."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd  # the test extra installs it: never skipped
import pytest
from conftest import tiny_config, write_people_csv
from safetensors.torch import load_file

from synthloom import DataError, GenerationError, load_model, train
from synthloom.frames import dataframe_table


def test_values_become_the_strings_a_csv_file_holds():
    df = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "x": [0.5, float("nan"), 2.0],
            "day": pd.to_datetime(["2024-01-02", None, "2024-03-04"]),
            "at": pd.to_datetime(["2024-01-02 05:06:07", "2024-01-02 00:00:00", None]),
            "s": ["a, b", None, 'say "hi"'],
            "flag": [True, False, True],
        }
    )
    columns, rows = dataframe_table(df)
    assert columns == ["n", "x", "day", "at", "s", "flag"]
    assert rows == [
        ["1", "0.5", "2024-01-02", "2024-01-02T05:06:07", "a, b", "True"],
        ["", "", "", "2024-01-02T00:00:00", "", "False"],
        ["3", "2.0", "2024-03-04", "", 'say "hi"', "True"],
    ]


def test_a_dataframe_trains_the_model_its_csv_file_trains(tmp_path):
    path = write_people_csv(tmp_path / "people.csv")
    df = pd.read_csv(path, keep_default_na=False, dtype=str)  # the same strings the file holds
    from_file = train(tiny_config(path, tmp_path / "file"), progress=False)
    config = tiny_config(path, tmp_path / "frame")
    del config["data"]  # data.path is optional with data=
    from_frame = train(config, data=df, progress=False)
    assert from_frame.history == [
        {**row, "elapsed_seconds": b["elapsed_seconds"]} for row, b in zip(from_file.history, from_frame.history)
    ]
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("file", "frame"))
    assert all(bool((a[k] == b[k]).all()) for k in a)
    saved = json.loads((tmp_path / "frame" / "config.json").read_text())
    assert saved["data"]["path"] == "DataFrame" and saved["data"]["format"] == "csv"
    stored = b"".join(p.read_bytes() for p in (tmp_path / "frame").rglob("*") if p.is_file())
    assert not any(",".join(row).encode() in stored for row in df.values.tolist())  # the table is not stored


def test_generate_dataframe_types_each_column_and_keeps_the_tables_order(tmp_path):
    rows = [
        {"day": dt.date(2024, 1, 1 + i % 28), "city": ["Oslo", "Lima"][i % 2], "temp": round(10 + i % 7 * 0.5, 1),
         "count": pd.NA if i % 9 == 0 else i % 5}
        for i in range(120)
    ]  # fmt: skip
    df = pd.DataFrame(rows).astype({"count": "Int64", "day": "datetime64[ns]"})
    config = tiny_config(
        tmp_path / "unused.csv",
        tmp_path / "model",
        data={"leading_columns": ["city"]},
        model={"embedding_dim": 24, "hidden_size": 64},
        train={"epochs": 10},
        early_stopping={"enabled": False},
    )
    train(config, data=df, progress=False)
    model = load_model(tmp_path / "model")
    # unseen_categories false: the tiny model may invent a city ('Oslo5'); only training cities pass
    out = model.generate_dataframe(20, seed=1, max_invalid=100_000, unseen_categories=False)
    assert list(out.columns) == ["day", "city", "temp", "count"] and len(out) == 20
    assert str(out["count"].dtype) == "Int64" and str(out["temp"].dtype) == "Float64"
    assert pd.api.types.is_datetime64_any_dtype(out["day"]) and isinstance(out["city"].dtype, pd.CategoricalDtype)
    assert set(out["city"].astype(str)) <= {"Oslo", "Lima"}
    seeded = model.generate_dataframe(seed_fields=[{"city": "Lima"}, {"city": "Oslo"}], seed=2, max_invalid=100_000)
    assert list(seeded["city"].astype(str)) == ["Lima", "Oslo"]


def test_what_is_not_a_usable_dataframe_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path / "x.csv", tmp_path / "m")
    with pytest.raises(DataError, match="expects a pandas DataFrame, got list"):
        train(config, data=[[1, 2]], progress=False)
    with pytest.raises(DataError, match="no rows"):
        train(config, data=pd.DataFrame({"a": []}), progress=False)
    with pytest.raises(DataError, match="column names must be distinct"):
        train(config, data=pd.DataFrame([[1, 2]], columns=["a", "a"]), progress=False)
    assert not (tmp_path / "m").exists()


def test_a_text_model_has_no_dataframe(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(f"line {i}" for i in range(40)) + "\n")
    train(tiny_config(lines, tmp_path / "m", train={"epochs": 1}), progress=False)
    with pytest.raises(GenerationError, match="needs a table model"):
        load_model(tmp_path / "m").generate_dataframe(1)


def test_numbers_parsed_at_once_equal_the_exact_path_and_leave_the_odd_ones_to_it():
    import pandas as pd

    from synthloom.frames import _numbers_at_once
    from synthloom.schema import ColumnSchema

    floats = ColumnSchema("x", "float", missing=["NA"])
    ints = ColumnSchema("n", "integer", missing=[""])
    got = _numbers_at_once(pd, ["1.5", "NA", "-2e3", ".25", "007"], floats)
    assert str(got.dtype) == "Float64" and got.isna().tolist() == [False, True, False, False, False]
    assert got[[0, 2, 3, 4]].tolist() == [1.5, -2000.0, 0.25, 7.0]
    n = _numbers_at_once(pd, ["3", "", "-12"], ints)
    assert str(n.dtype) == "Int64" and n.isna().tolist() == [False, True, False] and n[[0, 2]].tolist() == [3, -12]
    for odd, column in [(["inf"], floats), (["1_0"], floats), (["1e"], floats), (["1e400"], floats),
                        (["1.5"], ints), (["99999999999999999999"], ints), ([" 3"], ints)]:  # fmt: skip
        assert _numbers_at_once(pd, odd, column) is None  # the exact path decides: text, or Python ints
