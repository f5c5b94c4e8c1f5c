"""Wide tables as column groups (issue 5): grouping by association, one model per group chained by a
link column, rows joined back in the file's order, whole-row checks on the joined row."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from conftest import run, tiny_config

from synthloom import ConfigError, GenerationError, load_model, train
from synthloom.groups import GroupedModel, plan_groups
from synthloom.report import read_table
from synthloom.schema import infer_schema

COLUMNS = [f"k{i}" for i in range(12)]


def paired_rows(n: int, seed: int = 0) -> list[list[str]]:
    """k0..k5 then the same six again: column i and i + 6 always equal (strong cross-table pairs)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        half = [str(rng.randint(0, 9)) if i % 2 == 0 else rng.choice("uvwxyz") for i in range(6)]
        rows.append(half + half)
    return rows


@pytest.fixture(scope="module")
def grouped(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("groups")
    path = tmp / "wide.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS] + paired_rows(200))
    config = tiny_config(
        path,
        tmp / "model",
        data={"max_columns_per_model": 5},
        model={"embedding_dim": 16, "hidden_size": 64},
        train={"epochs": 30},
        early_stopping={"enabled": False},
    )
    result = train(config, progress=False)
    assert result.summary["groups"] and result.steps > 0
    return tmp / "model"


def test_columns_are_grouped_by_association_with_links_to_earlier_groups():
    rows = paired_rows(300)
    schema = infer_schema(COLUMNS, rows)
    groups = plan_groups(schema, rows, max_columns=5, first=["k1"])
    own = [c for g in groups for c in g.columns]
    assert sorted(own) == sorted(COLUMNS) and len(own) == len(set(own))  # every column once
    assert groups[0].model_columns[0] == "k1" and groups[0].leading == ["k1"]
    for k, g in enumerate(groups):
        assert len(g.model_columns) <= 5
        if k:  # one link column, taken from the groups before
            (link,) = g.leading
            assert link in {c for earlier in groups[:k] for c in earlier.columns} and link not in g.columns
    where = {c: k for k, g in enumerate(groups) for c in g.columns}
    for i in range(6):  # each column sits with its twin, or its twin is the group's link
        a, b = f"k{i}", f"k{i + 6}"
        assert where[a] == where[b] or a in groups[where[b]].leading or b in groups[where[a]].leading


def test_the_grouped_model_dir_and_its_joined_rows(grouped):
    spec = json.loads((grouped / "groups.json").read_text())
    assert len(spec) >= 3 and all(
        (grouped / f"group-{k:02d}" / "model.safetensors").is_file() for k in range(len(spec))
    )
    for name in ("config.json", "summary.json", "schema.json", "train_digests.safetensors"):
        assert (grouped / name).is_file(), name
    model = load_model(grouped)
    assert isinstance(model, GroupedModel) and model.columns == COLUMNS
    records = model.generate(20, seed=1, max_invalid=100_000)
    valid = [r for r in records if r.valid]
    assert len(valid) == 20 and all(len(r.fields) == 12 for r in valid)
    training = {tuple(row) for row in paired_rows(200)}
    assert not {tuple(r.fields) for r in valid} & training  # the privacy filter works on whole joined rows
    # grouping by association keeps twins together (or linked): they agree far above chance (1/10, 1/6)
    agree = sum(r.fields[i] == r.fields[i + 6] for r in valid for i in range(6)) / (6 * len(valid))
    assert agree > 0.4


def test_field_validators_and_seed_fields_work_across_groups(grouped):
    model = load_model(grouped)
    records = model.generate(8, seed=2, max_invalid=100_000, field_validators={"k11": lambda v: v != "z"})
    assert all(r.fields[11] != "z" for r in records if r.valid)
    seeded = model.generate(seed_fields=[{"k0": "1"}, {"k0": "3"}], seed=3, max_invalid=100_000)
    assert [r.fields[0] for r in seeded if r.valid] == ["1", "3"]
    with pytest.raises(GenerationError, match="num_records=5 with a list of 2 seed fields"):
        model.generate(5, seed_fields=[{"k0": "1"}, {"k0": "3"}])


def test_the_cli_generates_and_reports_a_grouped_model(capsys, grouped, tmp_path):
    out = tmp_path / "s.csv"
    rc, _, err = run(
        capsys, "generate", grouped, "--num-records", "5", "--seed", "1", "--max-invalid", "100000", "-o", out
    )
    assert rc == 0, err
    columns, rows = read_table(out)
    assert columns == COLUMNS and len(rows) == 5
    rc, _, err = run(capsys, "report", grouped, out, "-o", tmp_path / "r.json")
    assert rc == 0, err


def test_what_column_groups_refuse(tmp_path):
    path = tmp_path / "w.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS] + paired_rows(50))
    private = tiny_config(path, tmp_path / "m", data={"max_columns_per_model": 5},
                          privacy={"enabled": True, "noise_multiplier": 1.0})  # fmt: skip
    with pytest.raises(ConfigError, match="every group would spend the budget on every record"):
        train(private, progress=False)
    with pytest.raises(ConfigError, match="cannot be resumed yet"):
        train(tiny_config(path, tmp_path / "m", data={"max_columns_per_model": 5}), progress=False, resume=True)
    assert not (tmp_path / "m").exists()


def test_column_groups_of_field_tokens_train_and_sample_valid_joined_rows(tmp_path):
    """The default tokenizer (fields) across groups: later groups are seeded with their link
    column's sampled values, which their own vocabularies hold (a link value they cannot hold
    would be dropped and counted invalid)."""
    path = tmp_path / "wide.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS] + paired_rows(200))
    config = tiny_config(path, tmp_path / "model", tokenizer={"kind": "fields"}, data={"max_columns_per_model": 5},
                         train={"epochs": 5})  # fmt: skip
    result = train(config, progress=False)
    assert len(result.summary["groups"]) >= 2
    model = load_model(tmp_path / "model")
    records = model.generate(num_records=60, seed=1)
    valid = [r for r in records if r.valid]
    assert len(valid) == 60 and all(len(r.fields) == len(COLUMNS) for r in valid)
    for r in valid:  # each column from its own vocabulary: digits where the data has digits, letters elsewhere
        assert all((v in "0123456789") if i % 6 % 2 == 0 else (v in "uvwxyz") for i, v in enumerate(r.fields))


def test_a_time_limit_is_the_whole_grouped_runs_not_each_groups(tmp_path):
    path = tmp_path / "wide.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS] + paired_rows(200))
    config = tiny_config(path, tmp_path / "model", data={"max_columns_per_model": 5},
                         train={"epochs": 1, "max_time_seconds": 60.0})  # fmt: skip
    result = train(config, progress=False)
    groups = json.loads((tmp_path / "model" / "groups.json").read_text())
    parts = [tmp_path / "model" / f"group-{k:02d}" for k in range(len(groups))]
    limits = [json.loads((d / "config.json").read_text())["train"]["max_time_seconds"] for d in parts]
    spent = [json.loads((d / "summary.json").read_text())["train_seconds"] for d in parts]
    widths = [len(json.loads((d / "summary.json").read_text())["model_columns"]) for d in parts]  # links too
    assert len(limits) >= 2 and result.summary["groups"]
    assert limits[0] == pytest.approx(60.0 * widths[0] / sum(widths), rel=0.05)  # its share of the columns
    for k in range(1, len(limits)):  # the time left, never the whole limit again
        assert limits[k] <= (60.0 - sum(spent[:k])) * widths[k] / sum(widths[k:]) + 1e-6
