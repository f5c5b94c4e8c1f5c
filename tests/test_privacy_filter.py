"""The privacy filter: generated records that are exact copies of training records are dropped
(on by default for tables), counted, and never returned; the model dir keeps salted digests of
the training records, not the records."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from synthloom import load_model, train
from synthloom.checkpoint import DIGESTS_FILE, read_digests
from synthloom.cli import main
from synthloom.config import validate_config
from synthloom.data import encode_row
from synthloom.records import COPY_EXPLANATION, is_training_copy, record_digest, training_digests

ROWS = [["ann", "31", "Boston"], ["bob", "42", "Denver"], ["cy", "27", "Austin"], ["dee", "55", "Seattle"]]


@pytest.fixture(scope="module")
def parrot(tmp_path_factory) -> Path:
    """A model that has memorised a 4-row table: it mostly reproduces its (unique) rows."""
    tmp = tmp_path_factory.mktemp("parrot")
    data = tmp / "rows.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "age", "city"])
        writer.writerows(ROWS)
    config = tiny_config(
        data,
        tmp / "model",
        optim={"lr": 0.02},
        train={"epochs": 100, "batch_size": 1},
        data={"validation_split": 0.0},
        early_stopping={"enabled": False},
    )
    return train(config, progress=False).output_dir


def training_texts() -> set[str]:
    return {encode_row(r, ",") for r in ROWS}


def test_the_filter_is_on_for_tables_and_off_for_text_by_default():
    csv_config = validate_config({"output_dir": "m", "data": {"path": "x.csv"}})
    text_config = validate_config({"output_dir": "m", "data": {"path": "x.txt"}})
    assert csv_config.generate.privacy_filter is True and text_config.generate.privacy_filter is False
    chosen = validate_config({"output_dir": "m", "data": {"path": "x.csv"}, "generate": {"privacy_filter": False}})
    assert chosen.generate.privacy_filter is False


def test_the_model_dir_keeps_salted_digests_not_the_records(parrot):
    raw = (parrot / DIGESTS_FILE).read_bytes()
    assert all(text.encode() not in raw for text in training_texts())
    digests, salt = read_digests(parrot)
    assert len(digests) == len(ROWS) and len(salt) == 16  # one per distinct record
    assert all(is_training_copy(text, digests, salt) for text in training_texts())
    assert not is_training_copy("eve,33,Boston", digests, salt)


def test_copies_are_dropped_counted_and_never_returned(parrot):
    model = load_model(parrot)
    records = model.generate(10, seed=0, temperature=1.5, max_invalid=10_000)
    valid = [r for r in records if r.valid]
    copies = [r for r in records if r.explanation == COPY_EXPLANATION]
    assert len(valid) == 10
    assert not {r.text for r in valid} & training_texts()
    assert copies, "the parrot model should reproduce some training rows"
    assert all(r.text == "" and r.fields is None for r in copies)  # training data is not handed back


def test_without_the_filter_the_copies_come_through(parrot):
    records = load_model(parrot).generate(20, seed=0, privacy_filter=False, max_invalid=10_000)
    assert {r.text for r in records if r.valid} & training_texts()
    assert not any(r.explanation == COPY_EXPLANATION for r in records)


def test_a_model_that_only_copies_fails_with_advice_about_copies(parrot):
    from synthloom import GenerationError

    with pytest.raises(GenerationError, match="were copies of training records.*--no-privacy-filter"):
        load_model(parrot).generate(50, seed=0, top_k=1, max_invalid=5)


def test_cli_reports_the_dropped_copies_and_can_turn_the_filter_off(parrot, tmp_path, capsys):
    out = tmp_path / "synthetic.csv"
    rc = main(["generate", str(parrot), "-n", "10", "--seed", "0", "--temperature", "1.5", "--max-invalid", "10000",
               "--output", str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "copies of training records, dropped" in err
    written = out.read_text().splitlines()[1:]
    assert len(written) == 10 and not set(written) & training_texts()
    rc = main(["generate", str(parrot), "-n", "20", "--seed", "0", "--no-privacy-filter", "--max-invalid", "10000",
               "--output", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0 and set(out.read_text().splitlines()[1:]) & training_texts()


def test_a_model_dir_without_digests_still_generates_and_says_so(parrot, tmp_path, caplog):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(parrot, old)
    (old / DIGESTS_FILE).unlink()
    records = load_model(old).generate(5, seed=0, max_invalid=10_000)
    assert sum(r.valid for r in records) == 5
    assert "no privacy filter" in caplog.text


def test_only_rows_the_data_holds_once_are_guarded():
    from synthloom.records import unique_records

    texts = ["ann,31,Boston", "bob,42,Denver", "ann,31,Boston", "cy,27,Austin"]
    assert sorted(unique_records(texts)) == ["bob,42,Denver", "cy,27,Austin"]  # ann's row is no one's alone


def test_digests_are_salted_per_model():
    a, b = record_digest("ann,31,Boston", b"salt-a"), record_digest("ann,31,Boston", b"salt-b")
    assert a != b
    digests = training_digests(["x", "y", "x"], b"s")
    assert digests.dtype == torch.int64 and len(digests) == 2 and bool((digests[1:] >= digests[:-1]).all())


# --------------------------------------------------------------------------- near copies


def test_fewest_differences_counts_fields_column_by_column():
    from synthloom.records import fewest_differences, field_digests

    matrix = field_digests([["ann", "31", "Boston"], ["bob", "42", "Denver"], ["ann", "31", "Boston"]], b"salt")
    assert matrix.shape == (2, 3)  # distinct rows only
    assert fewest_differences(["ann", "31", "Boston"], matrix, b"salt") == 0
    assert fewest_differences(["ann", "99", "Boston"], matrix, b"salt") == 1
    assert fewest_differences(["bob", "31", "Austin"], matrix, b"salt") == 2
    assert fewest_differences(["Boston", "31", "ann"], matrix, b"salt") == 2  # same values, other columns: differ
    assert fewest_differences(["x", "y", "z"], matrix, b"salt") == 3


def test_near_copies_are_dropped_counted_and_never_returned(parrot):
    from synthloom.checkpoint import read_field_digests
    from synthloom.records import NEAR_COPY_EXPLANATION, fewest_differences

    model = load_model(parrot)
    assert tuple(read_field_digests(parrot).shape) == (len(ROWS), 3)
    records = model.generate(10, seed=0, temperature=1.5, max_invalid=100_000, near_copy_fields=1)
    near = [r for r in records if (r.explanation or "").startswith(NEAR_COPY_EXPLANATION)]
    assert near and all(r.text == "" for r in near)
    assert all(": 1 of 3 fields differ" in r.explanation for r in near)  # exact ones are counted as copies
    for r in records:
        if r.valid:  # every kept record differs from each training row in 2 fields or more
            assert min(sum(a != b for a, b in zip(r.fields, row)) for row in ROWS) >= 2
    _, salt = read_digests(parrot)
    assert all(fewest_differences(r.fields, read_field_digests(parrot), salt) >= 2 for r in records if r.valid)


def test_near_copy_settings_that_cannot_work_are_refused(parrot, tmp_path):
    from synthloom import GenerationError

    model = load_model(parrot)
    with pytest.raises(GenerationError, match="3 of 3 fields would call every record a near copy"):
        model.generate(1, near_copy_fields=3)
    with pytest.raises(GenerationError, match="privacy filter, which is off"):
        model.generate(1, near_copy_fields=1, privacy_filter=False)
    lines = tmp_path / "l.txt"
    lines.write_text("a b\nc d\n" * 20)
    train(tiny_config(lines, tmp_path / "text", train={"epochs": 1}), progress=False)
    with pytest.raises(GenerationError, match="a table model only"):
        load_model(tmp_path / "text").generate(1, near_copy_fields=1, privacy_filter=True)
