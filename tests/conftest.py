"""Shared fixtures: tiny datasets and a tiny, fast config (CPU, seconds per test)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
import yaml

CITIES = [("Boston", "MA"), ("Denver", "CO"), ("Austin", "TX"), ("Seattle", "WA")]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and results stay repeatable
    yield


WORDS = ["red", "blue", "green", "cat", "dog", "runs", "sleeps"]
HEADER = ["name", "age", "city", "state", "note"]


def write_people_csv(path: Path) -> Path:
    """A small table with structure (state follows city) and a field that needs quoting."""
    rng = random.Random(1)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(120):
            city, state = rng.choice(CITIES)
            note = "moved, new address" if i % 10 == 0 else ""
            w.writerow([rng.choice(["ann", "bob", "cy", "dee"]), rng.randint(20, 60), city, state, note])
    return path


def write_word_lines(path: Path) -> Path:
    """150 short lines of words: a text dataset."""
    rng = random.Random(2)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(150)) + "\n")
    return path


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return write_people_csv(tmp_path / "people.csv")


@pytest.fixture
def text_path(tmp_path: Path) -> Path:
    return write_word_lines(tmp_path / "lines.txt")


def tiny_config(data_path: Path, output_dir: Path, **sections) -> dict:
    """A config dict for a model that trains in about a second."""
    cfg = {
        "output_dir": str(output_dir),
        "data": {"path": str(data_path)},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_dim": 16, "hidden_size": 32, "num_layers": 1, "dropout": 0.0},
        "optim": {"lr": 0.01},
        "train": {"epochs": 2, "batch_size": 16, "seed": 0},
        "generate": {"num_records": 20, "batch_size": 32},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(name, {}).update(values)
        else:
            cfg[name] = values
    return cfg


@pytest.fixture
def make_config(tmp_path: Path):
    def make(data_path: Path, **sections) -> dict:
        return tiny_config(data_path, tmp_path / "model", **sections)

    return make


# --------------------------------------------------------------------------- the CLI, in-process


def write_config(path: Path, data_path: Path, output_dir: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(data_path, output_dir, **sections)), encoding="utf-8")
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    """`synthloom ARGS` in-process: (exit code, stdout, stderr)."""
    from synthloom.cli import main

    capsys.readouterr()  # drop anything captured before
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str, exit_code: int, *fragments: str) -> None:
    """A user's mistake: non-zero exit, one 'error:' line on stderr, no traceback, no data on stdout."""
    assert rc == exit_code != 0, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.splitlines()[0]]
    assert "Traceback" not in err and "Traceback" not in out
    assert out == ""
    for fragment in fragments:
        assert fragment in err
