"""The command line: config init/validate/show/schema, train, generate, and how user errors look.

Commands run in-process through `synthloom.cli.main` (output captured with capsys); one test
runs the installed `synthloom` console script end to end in a subprocess. A tiny CSV model is
trained once, through the CLI, for the whole module.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    HEADER,
    WORDS,
    assert_user_error,
    run,
    write_config,
    write_people_csv,
    write_word_lines,
)

from synthloom.cli import main
from synthloom.errors import ConfigError, DataError, ModelDirError, TrainingError

MODEL_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "history.csv",
    "summary.json",
    "steps.jsonl",
    "checkpoints",
    "train_digests.safetensors",
    "schema.json",
]


# --------------------------------------------------------------------------- helpers


def staging_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob(".*partial*"))


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny CSV model trained through `synthloom train`, shared by the generate tests."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    data = write_people_csv(root / "people.csv")
    model_dir = root / "model"
    config = write_config(root / "config.yaml", data, model_dir)
    assert main(["train", str(config), "--set", "train.epochs=20", "--no-progress"]) == 0
    return {"root": root, "data": data, "config": config, "model": model_dir}


@pytest.fixture
def data_csv(tmp_path) -> Path:
    return write_people_csv(tmp_path / "people.csv")


# --------------------------------------------------------------------------- config


def test_config_init_prints_commented_yaml_that_validates(tmp_path, capsys, data_csv):
    rc, out, err = run(capsys, "config", "init", data_csv, "--output-dir", tmp_path / "X", "--set", "train.epochs=3")
    assert rc == 0, err
    assert out.startswith("#")
    assert "  # " in out  # every key carries its description as a comment
    parsed = yaml.safe_load(out)
    assert parsed["output_dir"] == str(tmp_path / "X")
    assert parsed["data"]["path"] == str(data_csv)
    assert parsed["data"]["format"] is None  # derived keys stay null, so later edits re-derive them
    assert parsed["checkpoint"]["monitor"] is None
    assert parsed["train"]["epochs"] == 3  # --set applied

    config = tmp_path / "config.yaml"
    config.write_text(out, encoding="utf-8")
    rc, out, err = run(capsys, "config", "validate", config)
    assert rc == 0, err
    assert "valid" in out


def test_config_init_writes_what_it_read_of_the_data(tmp_path, capsys):
    """config init reads the data: the delimiter it found and each column's inferred type come out
    as comments, so a user sees them before training; a file training cannot use fails here."""
    data = tmp_path / "semi.csv"
    data.write_text("city;age;joined\n" + "".join(f"{c};{20 + i % 40};2024-01-{1 + i % 28:02d}\n"
                                                   for i, c in enumerate(["Lima", "Oslo", "Pune"] * 40)))  # fmt: skip
    rc, out, err = run(capsys, "config", "init", data, "--output-dir", tmp_path / "X")
    assert rc == 0, err
    read = out[out.index("# What config init read") :]
    assert "csv, delimiter ';', 120 rows, 3 columns" in read
    assert "city: categorical, 3 values" in read and "age: integer, 20 .. 59" in read and "joined: date" in read
    assert yaml.safe_load(out)["data"]["field_delimiter"] is None  # still derived at training time
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    rc, out, err = run(capsys, "config", "init", ragged, "--output-dir", tmp_path / "Y")
    assert_user_error(rc, out, err, DataError.exit_code, "ragged.csv", "line 3")


@pytest.mark.parametrize(
    "content, says",
    [(b"", "empty"), (b"a,b\n\x00\x01,2\n", "NUL"), (b"a,b\n1,2\n3\n", "line 3"), (b"a,b\n", "only a header")],
    ids=["empty", "binary", "ragged", "header-only"],
)
def test_config_validate_fails_on_data_training_cannot_use(tmp_path, capsys, content, says):
    data = tmp_path / "d.csv"
    data.write_bytes(content)
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "m")
    rc, out, err = run(capsys, "config", "validate", config)
    assert_user_error(rc, out, err, DataError.exit_code, "d.csv", says)


def test_config_validate_prints_the_column_types_training_infers(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "m")
    rc, out, err = run(capsys, "config", "validate", config)
    assert rc == 0, err
    assert "delimiter ','" in out and "age: integer" in out and "city: categorical" in out


def test_config_show_prints_resolved_values(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"output_dir: {tmp_path / 'm'}\ndata:\n  path: {tmp_path / 'table.csv'}\n", encoding="utf-8")
    rc, out, err = run(capsys, "config", "show", config, "--set", "generate.temperature=0.5")
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert "format: csv" in out
    assert shown["data"]["format"] == "csv"
    assert shown["data"]["field_delimiter"] == ","
    assert shown["checkpoint"]["monitor"] == shown["early_stopping"]["monitor"] == "val_loss"
    assert shown["generate"]["temperature"] == 0.5
    assert shown["model"]["kind"] == "lstm"

    rc, out, err = run(capsys, "config", "show", config, "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["data"]["format"] == "csv"


def test_config_schema_prints_json(capsys):
    rc, out, err = run(capsys, "config", "schema")
    assert rc == 0, err
    schema = json.loads(out)
    assert {"output_dir", "data", "model", "train", "generate"} <= set(schema["properties"])
    assert {"output_dir", "data"} <= set(schema["required"])


# --------------------------------------------------------------------------- train and generate


def test_train_writes_model_dir(tmp_path, capsys, data_csv):
    out_dir = tmp_path / "model"
    config = write_config(tmp_path / "config.yaml", data_csv, out_dir)
    rc, out, err = run(
        capsys, "train", config, "--set", "train.epochs=1", "--set", "model.hidden_size=16", "--no-progress"
    )
    assert rc == 0, err
    assert out == ""  # messages go to stderr
    assert "trained 1 epoch(s)" in err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(MODEL_FILES)

    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["model"]["hidden_size"] == 16 and saved["train"]["epochs"] == 1  # the --set values were used
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["columns"] == HEADER
    assert summary["epochs"] == 1
    history = list(csv.DictReader((out_dir / "history.csv").open()))
    assert len(history) == 1 and history[0]["epoch"] == "1"
    assert staging_dirs(tmp_path) == []


def test_generate_writes_csv_with_training_header(trained, tmp_path, capsys):
    out_csv = tmp_path / "out.csv"
    rc, out, err = run(capsys, "generate", trained["model"], "--num-records", 10, "--output", out_csv, "--seed", 1)
    assert rc == 0, err
    assert out == ""  # the data went to the file
    assert "generated 10 valid record(s)" in err
    rows = read_csv(out_csv.read_text(encoding="utf-8"))
    with trained["data"].open(newline="") as fh:
        assert rows[0] == next(csv.reader(fh)) == HEADER
    assert len(rows) == 11
    assert all(len(row) == len(HEADER) for row in rows[1:])
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temp file left beside it


def test_generate_to_stdout(trained, capsys):
    args = ("generate", trained["model"], "-n", 5, "--seed", 2, "--temperature", 0.8)
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    rows = read_csv(out)
    assert rows[0] == HEADER
    assert len(rows) == 6 and all(len(row) == len(HEADER) for row in rows)
    assert "generated 5 valid" in err and "generated" not in out
    # the same seed gives the same output
    rc, again, _ = run(capsys, *args)
    assert rc == 0 and again == out
    # --streams is the library's generate.streams: one stream, the same records as from Python
    rc, one, err = run(capsys, *args, "--streams", 1)
    assert rc == 0, err
    from synthloom import load_model

    python = load_model(trained["model"]).generate(5, seed=2, temperature=0.8, streams=1)
    assert read_csv(one)[1:] == [r.fields for r in python if r.valid]
    rc, _, err = run(capsys, *args, "--streams", 0)
    assert_user_error(rc, _, err, ConfigError.exit_code, "streams")


def test_generate_with_validator_file(trained, tmp_path, capsys):
    validator = tmp_path / "checks.py"
    validator.write_text(
        textwrap.dedent(
            """
            import csv

            def only_denver(text):
                return next(csv.reader([text]))[2] == "Denver"
            """
        )
    )
    rc, out, err = run(
        capsys, "generate", trained["model"], "-n", 6, "--seed", 3, "--validator", f"{validator}:only_denver"
    )
    assert rc == 0, err
    rows = read_csv(out)
    assert rows[0] == HEADER
    assert len(rows) == 7
    assert all(row[2] == "Denver" for row in rows[1:])
    # the validator rejected other records (the model also makes the other cities)
    summary = re.search(r"generated (\d+) valid record\(s\) \((\d+) invalid[,)]", err)
    assert summary, err
    assert int(summary.group(1)) == 6 and int(summary.group(2)) > 0


def test_sigterm_during_generate_writes_the_valid_records_made_so_far(trained, tmp_path, capsys):
    """kill (SIGTERM) stops generate as Ctrl-C does: the file holds the valid records sampled until
    then, the exit is non-zero with one line saying so, and SIGTERM's own handler is back after."""
    validator = tmp_path / "term.py"
    validator.write_text(
        textwrap.dedent(
            """
            import os, signal
            seen = []

            def term_after_50(text):
                seen.append(text)
                if len(seen) == 50:
                    os.kill(os.getpid(), signal.SIGTERM)
                return True
            """
        )
    )
    out_csv = tmp_path / "out.csv"
    before = signal.getsignal(signal.SIGTERM)
    rc, out, err = run(
        capsys, "generate", trained["model"], "-n", 100_000, "--seed", 1, "--streams", 1, "--batch-size", 16,
        "--no-privacy-filter", "--validator", f"{validator}:term_after_50", "-o", out_csv,
    )  # fmt: skip
    assert rc != 0 and "Traceback" not in err
    assert "interrupted after" in err and "were written" in err, err
    rows = read_csv(out_csv.read_text())
    assert rows[0] == HEADER and 49 <= len(rows) - 1 < 100_000  # (the 50th was being judged)
    assert signal.getsignal(signal.SIGTERM) == before


def test_generate_says_how_many_text_records_are_training_records(tmp_path, capsys):
    """A text model samples without the privacy filter; generate counts the records that are
    training records (ones the data holds once) and says so, matching a count made here."""
    from collections import Counter

    from conftest import write_word_lines

    data = write_word_lines(tmp_path / "lines.txt")
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "m", train={"epochs": 25})
    assert main(["train", str(config), "--no-progress"]) == 0
    rc, out, err = run(capsys, "generate", tmp_path / "m", "-n", 300, "--seed", 0)
    assert rc == 0, err
    once = {line for line, n in Counter(data.read_text().splitlines()).items() if n == 1}
    copies = sum(line in once for line in out.splitlines())
    assert copies > 0  # a small model of 150 short lines repeats some of them
    assert f"note: {copies} of them" in err and "--privacy-filter drops them" in err
    rc, out, err = run(capsys, "generate", tmp_path / "m", "-n", 50, "--seed", 0, "--privacy-filter")
    assert rc == 0 and "note:" not in err and not once & set(out.splitlines())
    # a report of its own: the same copy count, against the records the model trained on
    rc, out, err = run(capsys, "generate", tmp_path / "m", "-n", 300, "--seed", 0, "-o", tmp_path / "s.txt")
    assert rc == 0, err
    rc, _, err = run(capsys, "report", tmp_path / "m", tmp_path / "s.txt", "-o", tmp_path / "r.json")
    assert rc == 0 and "text similarity score" in err, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["kind"] == "text" and report["rows"]["synthetic"] == 300 and report["rows"]["holdout"] > 0
    written = (tmp_path / "s.txt").read_text().splitlines()
    in_data = sum(t in set(data.read_text().splitlines()) for t in written) / 300
    assert 0 < report["novelty"]["exact_copy_rate"] <= in_data  # training records: of the data, less the holdout
    assert 0 < report["score"] <= 100 and 0 <= report["dcr"]["closer_to_train_rate"] <= 1
    rc, _, err = run(capsys, "report", tmp_path / "m", tmp_path / "s.txt", "-o", tmp_path / "r.html")
    html_text = (tmp_path / "r.html").read_text()
    assert rc == 0 and "Synthetic text report" in html_text
    assert all(html.escape(x["synthetic"]) in html_text for x in report["examples"])
    rc, out, err = run(capsys, "report", tmp_path / "m", tmp_path / "none.txt", "-o", tmp_path / "r2.json")
    assert_user_error(rc, out, err, DataError.exit_code, "synthetic file not found")
    assert not (tmp_path / "r2.json").exists()


# --------------------------------------------------------------------------- user errors


def test_unknown_config_key_says_did_you_mean(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model", train={"epochz": 2})
    rc, out, err = run(capsys, "config", "validate", config)
    assert_user_error(rc, out, err, ConfigError.exit_code, "train.epochz", "did you mean 'epochs'")
    rc, out, err = run(capsys, "train", config)
    assert_user_error(rc, out, err, ConfigError.exit_code, "did you mean 'epochs'")
    assert not (tmp_path / "model").exists()


def test_missing_config_file(tmp_path, capsys):
    rc, out, err = run(capsys, "config", "validate", tmp_path / "nope.yaml")
    assert_user_error(rc, out, err, ConfigError.exit_code, "config file not found", "nope.yaml")
    rc, out, err = run(capsys, "train", tmp_path / "nope.yaml")
    assert_user_error(rc, out, err, ConfigError.exit_code, "config file not found")


def test_missing_data_file(tmp_path, capsys):
    config = write_config(tmp_path / "config.yaml", tmp_path / "missing.csv", tmp_path / "model")
    rc, out, err = run(capsys, "train", config)
    assert_user_error(rc, out, err, DataError.exit_code, "data file not found", "missing.csv")
    assert not (tmp_path / "model").exists()
    assert staging_dirs(tmp_path) == []


def test_empty_data_file(tmp_path, capsys):
    data = tmp_path / "empty.txt"
    data.write_text("")
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "model")
    rc, out, err = run(capsys, "train", config)
    assert_user_error(rc, out, err, DataError.exit_code, "empty")
    assert not (tmp_path / "model").exists()


def test_header_only_csv(tmp_path, capsys):
    data = tmp_path / "header.csv"
    data.write_text("name,age,city\n")
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "model")
    rc, out, err = run(capsys, "train", config)
    assert_user_error(rc, out, err, DataError.exit_code, "only a header")
    assert not (tmp_path / "model").exists()


def test_existing_output_dir_needs_overwrite(tmp_path, capsys, data_csv):
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("precious")
    (out_dir / "sub").mkdir()
    (out_dir / "sub" / "also.txt").write_text("also precious")
    config = write_config(tmp_path / "config.yaml", data_csv, out_dir)

    rc, out, err = run(capsys, "train", config, "--set", "train.epochs=1")
    assert_user_error(rc, out, err, ConfigError.exit_code, "already exists", "--overwrite")
    assert sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")) == ["keep.txt", "sub", "sub/also.txt"]
    assert (out_dir / "keep.txt").read_text() == "precious"
    assert (out_dir / "sub" / "also.txt").read_text() == "also precious"
    assert staging_dirs(tmp_path) == []

    # --overwrite replaces model dirs only: this one is not, so it is still refused, untouched
    rc, out, err = run(capsys, "train", config, "--set", "train.epochs=1", "--overwrite")
    assert_user_error(rc, out, err, ConfigError.exit_code, "not a synthloom model dir")
    assert (out_dir / "keep.txt").read_text() == "precious"

    # a model dir is replaced by --overwrite
    shutil.rmtree(out_dir)
    assert run(capsys, "train", config, "--set", "train.epochs=1", "--no-progress")[0] == 0
    first = (out_dir / "model.safetensors").read_bytes()
    rc, out, err = run(capsys, "train", config, "--set", "train.epochs=2", "--overwrite", "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(MODEL_FILES)
    assert (out_dir / "model.safetensors").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or old dir left


def test_generate_from_missing_model_dir(tmp_path, capsys):
    rc, out, err = run(capsys, "generate", tmp_path / "no-model", "-n", 3)
    assert_user_error(rc, out, err, ModelDirError.exit_code, "model dir not found", "no-model")


def test_bad_set_syntax(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    rc, out, err = run(capsys, "train", config, "--set", "train.epochs")
    assert_user_error(rc, out, err, ConfigError.exit_code, "KEY=VALUE", "train.epochs")
    rc, out, err = run(capsys, "config", "show", config, "--set", "=3")
    assert_user_error(rc, out, err, ConfigError.exit_code, "KEY=VALUE")
    assert not (tmp_path / "model").exists()


def test_failed_training_leaves_no_output_or_staging_dir(tmp_path, capsys):
    data = tmp_path / "ragged.csv"
    data.write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n")
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "model")
    rc, out, err = run(capsys, "train", config)
    assert_user_error(rc, out, err, DataError.exit_code, "line 3", "2 field(s), expected 3")
    assert not (tmp_path / "model").exists()
    assert staging_dirs(tmp_path) == []


def test_failure_during_training_removes_staging_dir(tmp_path, capsys, data_csv, monkeypatch):
    """A failure after the staging dir exists (here: an epoch callback gives up) removes it."""
    (tmp_path / "cli_failing_callback.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from synthloom import TrainingError

            def give_up(state):
                seen = len(list(Path({str(tmp_path)!r}).glob(".*partial*")))
                raise TrainingError(f"callback gave up at epoch {{state.epoch}}; staging dirs: {{seen}}")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(
        tmp_path / "config.yaml", data_csv, tmp_path / "model", train={"epoch_callback": "cli_failing_callback:give_up"}
    )
    rc, out, err = run(capsys, "train", config, "--no-progress")
    # the callback saw the staging dir while training ran...
    assert_user_error(rc, out, err, TrainingError.exit_code, "callback gave up at epoch 1; staging dirs: 1")
    # ...and it is gone now, with no output_dir
    assert not (tmp_path / "model").exists()
    assert staging_dirs(tmp_path) == []


# --------------------------------------------------------------------------- the real console script


def test_console_script_end_to_end(tmp_path):
    script = Path(sys.executable).parent / "synthloom"
    assert script.is_file(), "the synthloom console script is installed in the venv"
    data = write_word_lines(tmp_path / "lines.txt")
    config = write_config(tmp_path / "config.yaml", data, tmp_path / "model")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    train = subprocess.run(
        [str(script), "train", str(config), "--set", "train.epochs=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert train.returncode == 0, train.stderr
    assert "trained 1 epoch(s)" in train.stderr
    assert all((tmp_path / "model" / name).exists() for name in MODEL_FILES if name != "schema.json")  # text: none
    assert not (tmp_path / "model" / "schema.json").exists()

    gen = subprocess.run(
        [str(script), "generate", str(tmp_path / "model"), "--num-records", "5", "--seed", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stderr
    lines = gen.stdout.splitlines()
    assert len(lines) == 5
    assert all(line.strip() for line in lines)
    assert set("".join(lines)) <= set(" ".join(WORDS))
    assert "generated 5 valid record(s)" in gen.stderr
    assert "Traceback" not in gen.stderr + train.stderr

    # a user error from the real process: exit code and one line, no traceback
    bad = subprocess.run(
        [str(script), "generate", str(tmp_path / "nope")], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode == ModelDirError.exit_code
    assert bad.stderr.startswith("error: model dir not found")
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- output paths and usage errors


def test_generate_output_into_missing_directory_creates_it(trained, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "out.csv"
    rc, _, err = run(capsys, "generate", trained["model"], "-n", "3", "-o", out, "--seed", "1")
    assert rc == 0, err
    assert read_csv(out.read_text())[0] == HEADER


def test_generate_output_that_is_a_directory_fails_before_sampling(trained, tmp_path, capsys):
    target = tmp_path / "outdir"
    target.mkdir()
    rc, out, err = run(capsys, "generate", trained["model"], "-n", "3", "-o", target)
    assert_user_error(rc, out, err, 7, "is a directory")
    assert list(target.iterdir()) == [] and not list(tmp_path.glob(".outdir*"))


def test_validator_module_that_fails_to_load_is_a_usage_error(trained, tmp_path, capsys):
    bad = tmp_path / "bad_validator.py"
    bad.write_text("undefined_name + 1\n")
    rc, out, err = run(capsys, "generate", trained["model"], "-n", "1", "--validator", f"{bad}:check")
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "NameError" in err


def test_click_usage_errors_use_the_one_line_form(capsys):
    rc, out, err = run(capsys, "generate")
    assert rc == 2 and err.startswith("error: ") and "MODEL_DIR" in err and "Traceback" not in err


def test_generate_progress_bar_counts_valid_and_invalid(trained, capsys):
    rc, out, err = run(capsys, "generate", trained["model"], "-n", "4", "--seed", "1", "--progress")
    assert rc == 0 and "generate" in err and "4/4" in err and "invalid" in err
    assert len(read_csv(out)) == 5  # the header + 4 records: the bar never mixes into the data


def test_bad_generate_options_fail_before_any_work(tmp_path, capsys):
    rc, out, err = run(capsys, "generate", tmp_path / "no-model", "--temperature", "-1", "-o", tmp_path / "x" / "o.csv")
    assert_user_error(rc, out, err, ConfigError.exit_code, "temperature")
    assert not (tmp_path / "x").exists()  # nothing created for a run that cannot happen


def test_validator_module_next_to_the_user_is_found_by_name(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_checks_for_cli.py").write_text("def no_bob(text):\n    return 'bob' not in text\n")
    monkeypatch.chdir(tmp_path)  # as a user running `synthloom generate` beside their module
    rc, out, err = run(
        capsys, "generate", trained["model"], "-n", "8", "--seed", "3", "--validator", "my_checks_for_cli:no_bob"
    )
    assert rc == 0, err
    assert all("bob" not in row[0] for row in read_csv(out)[1:])
