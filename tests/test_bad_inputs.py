"""The bad-input matrix: every way a user can hand synthloom broken data, config or model dirs.

Each case prepares one bad input under tmp_path and returns the CLI arguments that meet it. The
command runs in-process through `synthloom.cli.main` and must end as a user's error: the class's
exit code (non-zero), exactly one `error:` line on stderr, no traceback, nothing on stdout, the
expected words in the message, and nothing already written lost (the whole tmp_path tree, a
pre-existing model dir in output_dir included, is byte-identical afterwards, so no staging dir
is left behind either). A few inputs are fine and must train (a BOM, CRLF line endings, long
records skipped, fewer records than a batch): those cases say what the model dir must show.
A few cases also run through the installed console script, to prove no traceback reaches a
real terminal.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import write_config
from safetensors import SafetensorError
from test_cli import staging_dirs

from synthloom.cli import main
from synthloom.errors import ConfigError, DataError, ModelDirError, TrainingError

EXIT_OS_ERROR = 1  # cli.main: an OSError (the machine said no) is one line and exit 1

CSV_HEADER = "name,age,city"
CSV_ROWS = [
    f"{n},{20 + i % 40},{c}" for i, (n, c) in enumerate(zip(["ann", "bob", "cy", "dee"] * 8, ["Boston", "Austin"] * 16))
]
TEXT_LINES = [f"the {w} cat runs {i % 5}" for i, w in enumerate(["red", "blue", "green"] * 10)]


def exit_code_of(error: type[Exception]) -> int:
    return EXIT_OS_ERROR if issubclass(error, OSError) else error.exit_code


# --------------------------------------------------------------------------- the cases


@dataclass
class Env:
    """What a case may touch: its own tmp dir, the module's trained model (copy it, never edit it)."""

    tmp: Path
    trained: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def out(self) -> Path:  # every train case's output_dir
        return self.tmp / "model"

    def train_args(self, data_path: Path, /, *, pre_existing: bool = True, **sections) -> list[str]:
        """`synthloom train CONFIG` on `data_path`, 1 epoch. With pre_existing, output_dir already holds
        a model dir and the config says overwrite: true, so a failure that destroyed it would show."""
        if pre_existing:
            shutil.copytree(self.trained, self.out)
        sections.setdefault("overwrite", pre_existing)
        sections["train"] = {"epochs": 1, **sections.get("train", {})}
        return ["train", write_config(self.tmp / "config.yaml", data_path, self.out, **sections)]


@dataclass
class Case:
    id: str
    prepare: Callable[[Env], list]  # makes the bad input in env.tmp, returns the CLI args
    error: type[Exception] | None  # None: the input is fine and the command must succeed
    words: tuple[str, ...] = ()  # in the error message; "{tmp}" stands for the case's tmp dir
    check: Callable[[Env], None] | None = None  # success cases: what the model dir must show
    xfail: str | None = None  # "BUG: ..." for a case that exposes a bug in synthloom

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.id, marks=marks)


def train_on(name: str, content: bytes | str | Callable[[], bytes] | None, **kwargs) -> Callable[[Env], list]:
    """A case that trains on a file `name` holding `content` (None: the file is not created)."""

    def prepare(env: Env) -> list:
        data = env.tmp / name
        body = content() if callable(content) else content
        if isinstance(body, str):
            data.write_bytes(body.encode("utf-8"))
        elif isinstance(body, bytes):
            data.write_bytes(body)
        return env.train_args(data, **kwargs)

    return prepare


def train_with(**kwargs) -> Callable[[Env], list]:
    """A case with good data and a bad config (sections merged into the tiny config)."""
    return train_on("people.csv", csv_text(), **kwargs)


def csv_text(rows: list[str] = CSV_ROWS, newline: str = "\n") -> str:
    return newline.join([CSV_HEADER, *rows]) + newline


def text_lines(lines: list[str] = TEXT_LINES, newline: str = "\n") -> str:
    return newline.join(lines) + newline


def binary_blob() -> bytes:
    rng = random.Random(7)
    blob = bytearray(rng.randbytes(4096))
    blob[100] = 0  # random bytes hold NULs anyway; make sure
    return bytes(blob)


def ten_mb_line() -> bytes:
    return b"x" * (10 * 1024 * 1024) + b"\n"


def config_file(text: str | None) -> Callable[[Env], list]:
    """A case whose config file itself is broken (None: it does not exist)."""

    def prepare(env: Env) -> list:
        shutil.copytree(env.trained, env.out)  # a model dir the failed run must not touch
        path = env.tmp / "config.yaml"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        return ["train", path]

    return prepare


def generate_from(tamper: Callable[[Path], None], to_file: bool = False) -> Callable[[Env], list]:
    """`synthloom generate` on a copy of the trained model dir, tampered with. With to_file,
    --output names a file that already exists and must survive the failure."""

    def prepare(env: Env) -> list:
        model = env.tmp / "model"
        shutil.copytree(env.trained, model)
        tamper(model)
        args = ["generate", model, "--num-records", "3", "--seed", "1", "--no-progress"]
        if to_file:
            existing = env.tmp / "synthetic.csv"
            existing.write_text("written,before,this run\n", encoding="utf-8")
            args += ["--output", existing]
        return args

    return prepare


def edit_config_json(**model_keys) -> Callable[[Path], None]:
    def tamper(model: Path) -> None:
        path = model / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["model"].update(model_keys)
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    return tamper


def truncate(name: str) -> Callable[[Path], None]:
    def tamper(model: Path) -> None:
        path = model / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return tamper


def remove(name: str) -> Callable[[Path], None]:
    return lambda model: (model / name).unlink()


def full_disk_on_save(exc: Exception) -> Callable[[Env], list]:
    """The safetensors writer fails during the final save of a run that would replace a model dir."""

    def prepare(env: Env) -> list:
        def no_space(*args, **kwargs):
            raise exc

        env.monkeypatch.setattr("synthloom.checkpoint.save_file", no_space)
        return train_with()(env)  # pre-existing model dir, overwrite: true

    return prepare


# what the model dirs of the cases that must succeed show
def summary(env: Env) -> dict:
    return json.loads((env.out / "summary.json").read_text(encoding="utf-8"))


def vocabulary(env: Env) -> list[str]:
    return json.loads((env.out / "tokenizer.json").read_text(encoding="utf-8"))["chars"]


def check_bom(env: Env) -> None:
    columns = summary(env)["columns"]
    assert columns == CSV_HEADER.split(","), f"the BOM leaked into the header: {columns!r}"
    assert "\ufeff" not in vocabulary(env)


def check_crlf(n_records: int, columns: list[str] | None) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        s = summary(env)
        assert s["columns"] == columns
        assert s["records"]["used"] == n_records  # no phantom empty records from the \r
        assert s["records"]["skipped_empty"] == 0
        assert "\r" not in vocabulary(env), "a record kept a \\r from the CRLF line endings"

    return check


def check_skipped(used: int, skipped_long: int) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        records = summary(env)["records"]
        assert (records["used"], records["skipped_long"]) == (used, skipped_long)

    return check


def check_one_small_batch(env: Env) -> None:
    s = summary(env)
    assert s["records"]["train"] + s["records"]["validation"] == 3
    assert s["records"]["train"] < 16  # fewer than one batch...
    assert (s["steps"], s["epochs"], s["stopped_by"]) == (1, 1, "epochs")  # ...still one full step


LONG_ROW = "zed," + "9" * 200 + ",Boston"

CASES = [
    # -- the data file
    Case("data-missing", train_on("nope.csv", None), DataError, ("data file not found", "nope.csv")),
    Case(
        "data-is-directory",
        lambda env: (env.tmp / "data.csv").mkdir() or env.train_args(env.tmp / "data.csv"),
        DataError,
        ("is a directory", "data.csv"),
    ),
    Case("data-empty", train_on("empty.csv", ""), DataError, ("the file is empty",)),
    Case("data-whitespace-only", train_on("blank.txt", "\n  \n\n"), DataError, ("the file is empty",)),
    Case("csv-header-only", train_on("header.csv", CSV_HEADER + "\n"), DataError, ("only a header",)),
    Case("data-binary", train_on("blob.bin", binary_blob), DataError, ("NUL bytes", "binary file")),
    Case(
        "data-invalid-utf8",
        train_on("latin1.txt", "caf\u00e9 one\n".encode("latin-1") * 3),
        DataError,
        ("not valid UTF-8", "line 1", "re-encode"),
    ),
    Case(
        "csv-nul-inside",
        train_on("nul.csv", csv_text(CSV_ROWS[:3] + ["eve,3\x004,Boston"] + CSV_ROWS[3:])),
        DataError,
        ("NUL bytes", "line 5"),
    ),
    Case(
        "csv-ragged-row",
        train_on("ragged.csv", csv_text(CSV_ROWS[:4] + ["eve,30,Boston,extra"] + CSV_ROWS[4:])),
        DataError,
        ("line 6 has 4 field(s), expected 3", "header"),
    ),
    Case(
        "csv-unclosed-quote-at-end",
        train_on("quote.csv", csv_text(CSV_ROWS) + 'eve,"30,Boston\n'),
        DataError,
        ("malformed CSV", "line"),
    ),
    Case(
        "single-record-with-validation-split",
        train_on("one.csv", csv_text(CSV_ROWS[:1])),
        DataError,
        ("too few to hold out a validation split", "validation_split: 0"),
    ),
    Case(
        "record-too-long-error",
        train_on("long.csv", csv_text(CSV_ROWS + [LONG_ROW]), data={"max_record_chars": 50, "long_records": "error"}),
        DataError,
        ("1 record(s) longer than data.max_record_chars=50", "record 33", "long_records: skip"),
    ),
    Case(
        "ten-mb-single-line",
        train_on("huge.txt", ten_mb_line),
        DataError,
        ("no records to train on", "1 record(s) longer than 2048 characters"),
    ),
    # -- data that is fine: these must train
    Case(
        "csv-utf8-bom",
        train_on("bom.csv", b"\xef\xbb\xbf" + csv_text().encode("utf-8"), pre_existing=False),
        None,
        check=check_bom,
    ),
    Case(
        "csv-crlf",
        train_on("crlf.csv", csv_text(newline="\r\n"), pre_existing=False),
        None,
        check=check_crlf(len(CSV_ROWS), CSV_HEADER.split(",")),
    ),
    Case(
        "text-crlf",
        train_on("crlf.txt", text_lines(newline="\r\n"), pre_existing=False),
        None,
        check=check_crlf(len(TEXT_LINES), None),
    ),
    Case(
        "record-too-long-skip",
        train_on(
            "long.csv",
            csv_text(CSV_ROWS + [LONG_ROW]),
            pre_existing=False,
            data={"max_record_chars": 50, "long_records": "skip"},
        ),
        None,
        check=check_skipped(len(CSV_ROWS), 1),
    ),
    Case(
        "ten-mb-line-among-good-ones",
        train_on("huge.txt", lambda: text_lines().encode() + ten_mb_line(), pre_existing=False),
        None,
        check=check_skipped(len(TEXT_LINES), 1),
    ),
    Case(
        "fewer-records-than-one-batch",
        train_on("three.csv", csv_text(CSV_ROWS[:3]), pre_existing=False, train={"batch_size": 16}),
        None,
        check=check_one_small_batch,
    ),
    # -- the config
    Case(
        "config-unknown-key",
        train_with(train={"epoch": 3}),
        ConfigError,
        ("train.epoch: unknown key", "did you mean 'epochs'"),
    ),
    Case(
        "config-wrong-type",
        train_with(train={"epochs": "many"}),
        ConfigError,
        ("train.epochs", "integer", "'many'"),
    ),
    Case("config-negative-lr", train_with(optim={"lr": -0.01}), ConfigError, ("optim.lr", "greater than 0", "-0.01")),
    Case(
        "config-dropout-one",
        train_with(model={"dropout": 1.0}),
        ConfigError,
        ("model.dropout", "less than 1"),
    ),
    Case(
        "config-val-monitor-without-split",
        train_with(data={"validation_split": 0}, early_stopping={"monitor": "val_loss"}),
        ConfigError,
        ("early_stopping.monitor", "needs validation data", "validation_split is 0"),
    ),
    Case(
        "config-warmup-longer-than-run",
        train_with(schedule={"name": "linear", "warmup_steps": 100}),
        ConfigError,
        ("schedule.warmup_steps", "warmup of 100 step(s) is not shorter than the run"),
    ),
    Case(
        "config-fp16-on-cpu",
        train_with(train={"device": "cpu", "precision": "fp16"}),
        ConfigError,
        ("train.precision", "fp16 needs a CUDA GPU"),
    ),
    Case(
        "config-not-a-mapping",
        config_file("- train\n- epochs\n"),
        ConfigError,
        ("config.yaml", "expected a mapping", "got list"),
    ),
    Case(
        "config-invalid-yaml",
        config_file("data: {path: people.csv\ntrain: [1, 2\n"),
        ConfigError,
        ("config.yaml", "cannot parse YAML"),
    ),
    Case("config-empty", config_file(""), ConfigError, ("config.yaml", "the file is empty")),
    Case("config-missing", config_file(None), ConfigError, ("config file not found", "config.yaml")),
    # -- the model dir given to generate
    Case("model-dir-missing", generate_from(shutil.rmtree), ModelDirError, ("model dir not found",)),
    Case(
        "model-dir-is-a-file",
        lambda env: (env.tmp / "model.txt").write_text("not a model\n") and ["generate", env.tmp / "model.txt"],
        ModelDirError,
        ("not a model dir (not a directory)", "model.txt"),
    ),
    Case(
        "model-dir-without-weights",
        generate_from(remove("model.safetensors")),
        ModelDirError,
        ("not a complete model dir", "missing model.safetensors"),
    ),
    Case(
        "model-dir-without-tokenizer",
        generate_from(remove("tokenizer.json")),
        ModelDirError,
        ("missing tokenizer.json",),
    ),
    Case(
        "model-dir-truncated-weights",
        generate_from(truncate("model.safetensors"), to_file=True),
        ModelDirError,
        ("model.safetensors", "cannot load weights"),
    ),
    Case(
        "model-dir-truncated-config",
        generate_from(truncate("config.json"), to_file=True),
        ModelDirError,
        ("config.json", "corrupted"),
    ),
    Case(
        "model-dir-config-invalid",
        generate_from(edit_config_json(hidden_size=-1), to_file=True),
        ModelDirError,
        ("config.json", "not a valid config", "model.hidden_size"),
    ),
    Case(
        "model-dir-config-disagrees-with-weights",
        generate_from(edit_config_json(hidden_size=48)),
        ModelDirError,
        ("the weights do not match the saved config",),
    ),
    Case(
        "model-dir-config-disagrees-with-weights-names-the-mismatch",
        generate_from(edit_config_json(hidden_size=48)),
        ModelDirError,
        ("the weights do not match the saved config", "shape"),
    ),
    # -- the disk fills up during the final save of a run that replaces a model dir
    Case(
        "disk-full-on-save-names-where",
        full_disk_on_save(OSError(errno.ENOSPC, "No space left on device")),
        TrainingError,
        ("No space left on device", "{tmp}", "was left as it was"),
    ),
    Case(
        "disk-full-on-save-as-safetensors-raises-it",
        # what safetensors 0.8 really raises when the disk is full (checked on a full tmpfs)
        full_disk_on_save(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")),
        TrainingError,
        ("No space left on device", "was left as it was"),
    ),
]

SUBPROCESS_CASES = {"data-missing", "data-invalid-utf8", "config-invalid-yaml", "model-dir-truncated-weights"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny CSV model, trained through the CLI: the pre-existing model dir of the train
    cases and the model (copied, then broken) of the generate cases."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad_inputs")
    data = root / "people.csv"
    data.write_text(csv_text(), encoding="utf-8")
    config = write_config(root / "config.yaml", data, root / "model", train={"epochs": 1})
    assert main(["train", str(config), "--no-progress"]) == 0
    return root / "model"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under root: a file's bytes, None for a directory."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def run_in_process(capsys, args: list) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except BaseException as exc:  # noqa: BLE001 - anything escaping main is a traceback on a terminal
        pytest.fail(f"{type(exc).__name__} escaped cli.main (a traceback for the user): {exc}")
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(case: Case, env: Env, rc: int, out: str, err: str) -> str:
    """The contract for a user's error; returns the message (from `error:` on)."""
    assert rc == exit_code_of(case.error) != 0, f"exit {rc}; stderr:\n{err}"
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, f"expected one error: line, stderr:\n{err}"
    assert "Traceback" not in err + out
    assert out == "", "an error must put nothing on stdout"
    message = err[err.index("error:") :]
    missing = [w for w in (w.format(tmp=env.tmp) for w in case.words) if w not in message]
    assert not missing, f"{missing} not in the message:\n{message}"
    return message


def assert_nothing_lost(before: dict, after: dict, message: str, tmp: Path) -> None:
    """Every entry that was there is there, byte-identical; nothing new is left behind, except
    a dir the message names (where a failed run says it kept its work)."""
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    added = sorted(k for k in set(after) - set(before) if str(tmp / Path(k).parts[0]) not in message)
    assert (gone, changed, added) == ([], [], []), f"lost {gone}, changed {changed}, left behind {added}"


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case: Case, trained, tmp_path, capsys, monkeypatch):
    env = Env(tmp_path, trained, monkeypatch)
    args = case.prepare(env)
    before = snapshot(tmp_path)
    rc, out, err = run_in_process(capsys, args)  # (how fast a 10 MB line is refused: benchmarks/bench_inputs.py)
    if case.error is None:
        assert rc == 0, err
        assert "error:" not in err and "Traceback" not in err
        assert out == ""  # train reports on stderr
        case.check(env)
        assert staging_dirs(tmp_path) == [] and not list(tmp_path.glob(".*.old-*"))
    else:
        message = assert_user_error(case, env, rc, out, err)
        assert_nothing_lost(before, snapshot(tmp_path), message, tmp_path)


@pytest.mark.parametrize("case", [c.param() for c in CASES if c.id in SUBPROCESS_CASES])
def test_bad_input_from_the_console_script(case: Case, trained, tmp_path, monkeypatch):
    """The installed `synthloom` script in a real process: the same one line, no traceback."""
    script = Path(sys.executable).parent / "synthloom"
    assert script.is_file(), "the synthloom console script is installed in the venv"
    env = Env(tmp_path, trained, monkeypatch)
    args = case.prepare(env)
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    message = assert_user_error(case, env, proc.returncode, proc.stdout, proc.stderr)
    assert_nothing_lost(before, snapshot(tmp_path), message, tmp_path)


def test_every_case_is_distinct_and_subprocess_cases_exist():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert SUBPROCESS_CASES <= set(ids)
