"""The LR commands: `synthloom schedule` (the LR curve before training), `synthloom lr-find`
(the LR range test) and its python API, the step plan `config show` / `config validate` print,
and `synthloom generate` into a pipe its reader closes early.

Commands run in-process through `synthloom.cli.main` (output captured with capsys); the pipe
test runs the installed `synthloom` console script in a subprocess.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_user_error, run, tiny_config, write_config, write_people_csv, write_word_lines

from synthloom.cli import main
from synthloom.config import load_config, validate_config
from synthloom.errors import ConfigError, DataError, TrainingError
from synthloom.lr_find import LRFindResult, lr_find, suggest_lr
from synthloom.schedules import lr_curve, plan_steps
from synthloom.train import plan_run

# The tiny people table: 120 records, validation_split 0.2 -> 96 training records; batch 16 ->
# 6 steps per epoch; tiny_config's 2 epochs -> 12 steps.
TINY_RUN_STEPS = 12
COSINE = {"name": "cosine", "warmup_steps": 5}


# --------------------------------------------------------------------------- helpers


def read_curve(text: str) -> tuple[list[str], list[list[float]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [[float(v) for v in row] for row in rows[1:]]


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: its sha256 and its mtime in ns."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def data_csv(tmp_path) -> Path:
    return write_people_csv(tmp_path / "people.csv")


@pytest.fixture
def cosine_config(tmp_path, data_csv) -> Path:
    return write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model", schedule=COSINE)


# --------------------------------------------------------------------------- schedule


def test_schedule_with_steps_writes_the_lr_curve_as_csv(tmp_path, capsys, cosine_config):
    out_csv = tmp_path / "lr.csv"
    rc, out, err = run(capsys, "schedule", cosine_config, "--steps", 50, "-o", out_csv)
    assert rc == 0, err
    assert out == ""
    assert f"wrote {out_csv}" in err
    assert "plan: 50 step(s); warmup 5 step(s) (schedule cosine)" in err

    header, rows = read_curve(out_csv.read_text(encoding="utf-8"))
    assert header == ["step", "lr"]
    assert [int(step) for step, _ in rows] == list(range(1, 51))
    lrs = [lr for _, lr in rows]
    config = load_config(cosine_config)
    assert lrs == lr_curve(config, plan_steps(config, 0, total_steps=50))  # repr round-trips exactly
    lr = config.optim.lr
    assert lrs[0] < lr
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] < lrs[4]  # linear warmup
    assert lrs[4] == pytest.approx(lr, rel=1e-12)  # warmup's last step reaches optim.lr
    assert max(lrs) == pytest.approx(lr, rel=1e-12)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # cosine only decays after warmup
    assert lrs[-1] < lrs[10] < lr


def test_schedule_without_steps_counts_the_runs_steps_from_the_data(tmp_path, capsys, cosine_config):
    config = load_config(cosine_config)
    assert plan_run(config).total_steps == TINY_RUN_STEPS
    rc, out, err = run(capsys, "schedule", cosine_config)
    assert rc == 0, err
    header, rows = read_curve(out)
    assert header == ["step", "lr"]
    assert len(rows) == TINY_RUN_STEPS
    assert [lr for _, lr in rows] == lr_curve(config, plan_run(config))
    plan_lines = [line for line in err.splitlines() if line.startswith("plan:")]
    assert len(plan_lines) == 1
    assert "96 training record(s)" in plan_lines[0]
    assert f"= {TINY_RUN_STEPS} step(s)" in plan_lines[0]


def test_schedule_set_override_of_grad_accumulation_halves_the_steps(tmp_path, capsys, data_csv):
    config_path = write_config(
        tmp_path / "config.yaml", data_csv, tmp_path / "model", schedule={"name": "cosine", "warmup_steps": 2}
    )
    rc, out, err = run(capsys, "schedule", config_path, "--set", "train.grad_accumulation_steps=2")
    assert rc == 0, err
    _, rows = read_curve(out)
    overridden = load_config(config_path, ["train.grad_accumulation_steps=2"])
    expected = plan_run(overridden).total_steps
    assert expected == TINY_RUN_STEPS // 2
    assert len(rows) == expected
    assert [lr for _, lr in rows] == lr_curve(overridden, plan_run(overridden))
    assert f"= {expected} step(s)" in err
    assert "16 x 2 per step" in err


def test_schedule_png_output_is_a_real_png(tmp_path, capsys, cosine_config):
    png = tmp_path / "lr.png"
    rc, out, err = run(capsys, "schedule", cosine_config, "--steps", 20, "-o", png)
    assert rc == 0, err
    assert out == ""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_schedule_svg_output_is_an_svg_document(tmp_path, capsys, cosine_config):
    svg = tmp_path / "lr.svg"
    rc, out, err = run(capsys, "schedule", cosine_config, "--steps", 20, "-o", svg)
    assert rc == 0, err
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml")
    assert "<svg" in text and text.rstrip().endswith("</svg>")


def test_schedule_without_output_prints_csv_on_stdout_and_messages_on_stderr(capsys, cosine_config):
    rc, out, err = run(capsys, "schedule", cosine_config, "--steps", 7)
    assert rc == 0, err
    assert out.splitlines()[0] == "step,lr"
    header, rows = read_curve(out)
    assert [int(step) for step, _ in rows] == list(range(1, 8))
    assert "step,lr" not in err and "plan:" not in out


def test_schedule_unsupported_output_suffix_fails_before_any_work(tmp_path, capsys):
    # the config does not even exist: the suffix is refused before it is read
    missing = tmp_path / "no-such-config.yaml"
    rc, out, err = run(capsys, "schedule", missing, "--steps", 10, "-o", tmp_path / "lr.txt")
    assert_user_error(rc, out, err, ConfigError.exit_code, "lr.txt", ".csv", ".png")
    assert not (tmp_path / "lr.txt").exists()


def test_schedule_warmup_longer_than_the_run_names_the_key_and_the_steps(tmp_path, capsys, data_csv):
    config = write_config(
        tmp_path / "config.yaml", data_csv, tmp_path / "m", schedule={"name": "cosine", "warmup_steps": 10_000}
    )
    rc, out, err = run(capsys, "schedule", config)
    assert_user_error(
        rc, out, err, ConfigError.exit_code, "schedule.warmup_steps", "10,000", f"{TINY_RUN_STEPS} step(s)"
    )


def test_schedule_step_size_beyond_the_run_is_a_user_error(tmp_path, capsys, data_csv):
    config = write_config(
        tmp_path / "config.yaml", data_csv, tmp_path / "m", schedule={"name": "step", "step_size": 50}
    )
    rc, out, err = run(capsys, "schedule", config)
    assert_user_error(rc, out, err, ConfigError.exit_code, "schedule.step_size", "never decays", f"{TINY_RUN_STEPS}")
    # the same schedule fits a longer run given with --steps
    rc, out, err = run(capsys, "schedule", config, "--steps", 120)
    assert rc == 0, err
    _, rows = read_curve(out)
    lrs = [lr for _, lr in rows]
    assert lrs[0] == lrs[49] == 0.01 and lrs[50] == pytest.approx(0.01 * 0.1)


def test_schedule_reduce_on_plateau_notes_the_curve_cannot_show_plateaus(tmp_path, capsys, data_csv):
    sched = {"name": "reduce_on_plateau", "warmup_steps": 3}
    config_path = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "m", schedule=sched)
    rc, out, err = run(capsys, "schedule", config_path)
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "reduce_on_plateau" in notes[0] and "val_loss" in notes[0] and "not known" in notes[0]
    _, rows = read_curve(out)
    lrs = [lr for _, lr in rows]
    assert len(lrs) == TINY_RUN_STEPS
    assert lrs[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01], rel=1e-12)  # warmup from 0 (start factor 0)
    assert lrs[2:] == pytest.approx([0.01] * (TINY_RUN_STEPS - 2), rel=1e-12)


def test_schedule_without_reduce_on_plateau_prints_no_note(capsys, cosine_config):
    rc, out, err = run(capsys, "schedule", cosine_config, "--steps", 10)
    assert rc == 0, err
    assert "note:" not in err


# --------------------------------------------------------------------------- config show / validate: the plan


def test_config_show_prints_yaml_on_stdout_and_the_plan_on_stderr(capsys, cosine_config):
    rc, out, err = run(capsys, "config", "show", cosine_config)
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert shown["schedule"]["name"] == "cosine"
    assert shown["schedule"]["warmup_steps"] == 5
    assert "plan:" not in out
    plan_lines = [line for line in err.splitlines() if line.startswith("plan:")]
    assert plan_lines == [f"plan: {plan_run(load_config(cosine_config)).describe(load_config(cosine_config))}"]
    assert f"{TINY_RUN_STEPS} step(s)" in plan_lines[0]


def test_config_show_without_the_data_file_still_prints_the_config(tmp_path, capsys):
    config = write_config(tmp_path / "config.yaml", tmp_path / "absent.csv", tmp_path / "m", schedule=COSINE)
    rc, out, err = run(capsys, "config", "show", config)
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert shown["schedule"]["name"] == "cosine"
    assert shown["data"]["path"] == str(tmp_path / "absent.csv")
    assert "plan: steps not counted" in err
    assert "absent.csv" in err
    assert "error:" not in err and "Traceback" not in err


def test_config_validate_prints_valid_and_the_plan_when_the_data_exists(capsys, cosine_config):
    rc, out, err = run(capsys, "config", "validate", cosine_config)
    assert rc == 0, err
    assert out.startswith(f"{cosine_config}: valid; plan: ")
    assert f"= {TINY_RUN_STEPS} step(s)" in out
    assert "warmup 5 step(s)" in out


def test_config_validate_without_the_data_file_is_an_error(tmp_path, capsys):
    config = write_config(tmp_path / "config.yaml", tmp_path / "absent.csv", tmp_path / "m", schedule=COSINE)
    rc, out, err = run(capsys, "config", "validate", config)
    assert_user_error(rc, out, err, DataError.exit_code, "absent.csv")


def test_config_validate_rejects_a_schedule_that_does_not_fit_the_run(tmp_path, capsys, data_csv):
    sched = {"name": "cosine", "warmup_steps": 40}
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "m", schedule=sched)
    rc, out, err = run(capsys, "config", "validate", config)
    assert_user_error(rc, out, err, ConfigError.exit_code, "schedule.warmup_steps", f"{TINY_RUN_STEPS} step(s)")


# --------------------------------------------------------------------------- lr-find (CLI)


def assert_lr_find_stdout(out: str, start_lr: float, end_lr: float) -> float | None:
    """One of the two outcomes; a suggestion lies within the tested range. Returns it (or None)."""
    lines = out.splitlines()
    suggested = [line for line in lines if line.startswith("suggested optim.lr: ")]
    none = [line for line in lines if line.startswith("no suggestion: ")]
    assert len(suggested) + len(none) == 1, out
    if none:
        assert len(none[0]) > len("no suggestion: ")  # with a reason
        return None
    value = float(suggested[0].removeprefix("suggested optim.lr: ").split()[0])
    assert start_lr <= value <= end_lr
    assert "steepest" in suggested[0]
    assert any(line.startswith("try: synthloom train ") and f"optim.lr={value:.3g}" in line for line in lines)
    return value


def test_lr_find_writes_a_geometric_lr_loss_curve_and_suggests_an_lr(tmp_path, capsys, data_csv):
    model_dir = tmp_path / "model"
    config = write_config(tmp_path / "config.yaml", data_csv, model_dir)
    out_csv = tmp_path / "lf.csv"
    start, end = 1e-5, 1.0
    args = ["lr-find", config, "--steps", 30, "--start-lr", start, "--end-lr", end, "-o", out_csv, "--no-progress"]
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"wrote {out_csv}" in err
    assert_lr_find_stdout(out, start, end)

    header, rows = read_curve(out_csv.read_text(encoding="utf-8"))
    assert header == ["lr", "loss", "smoothed_loss"]
    assert 6 <= len(rows) <= 30
    lrs = [row[0] for row in rows]
    assert lrs[0] == pytest.approx(start, rel=1e-12)
    ratio = (end / start) ** (1 / 29)
    for a, b in zip(lrs, lrs[1:]):
        assert b / a == pytest.approx(ratio, rel=1e-9)
    assert all(math.isfinite(v) for row in rows for v in row[1:])
    assert not model_dir.exists()  # lr-find writes no model dir


def test_lr_find_with_default_range_reports_an_outcome(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    rc, out, err = run(capsys, "lr-find", config, "--steps", 30, "-o", tmp_path / "lf.csv", "--no-progress")
    assert rc == 0, err
    assert_lr_find_stdout(out, 1e-7, 10.0)
    _, rows = read_curve((tmp_path / "lf.csv").read_text(encoding="utf-8"))
    assert 0 < len(rows) <= 30
    assert not (tmp_path / "model").exists()


def test_lr_find_png_output(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    png = tmp_path / "lf.png"
    args = ["lr-find", config, "--steps", 20, "--start-lr", 1e-5, "--end-lr", 1, "-o", png, "--no-progress"]
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_find_leaves_an_existing_model_dir_byte_identical(tmp_path, capsys, data_csv):
    model_dir = tmp_path / "model"
    config = write_config(tmp_path / "config.yaml", data_csv, model_dir)
    rc, out, err = run(capsys, "train", config, "--set", "train.epochs=1", "--no-progress")
    assert rc == 0, err
    before = snapshot(model_dir)
    assert "model.safetensors" in before and "config.json" in before
    listing = sorted(p.name for p in tmp_path.iterdir())

    out_csv = tmp_path / "lf.csv"
    args = ["lr-find", config, "--steps", 20, "--start-lr", 1e-5, "--end-lr", 1, "-o", out_csv, "--no-progress"]
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    assert_lr_find_stdout(out, 1e-5, 1.0)
    assert snapshot(model_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(listing + ["lf.csv"])  # no staging dirs left


def test_lr_find_start_lr_above_end_lr_is_a_training_error(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    rc, out, err = run(capsys, "lr-find", config, "--start-lr", 1, "--end-lr", 0.1, "--no-progress")
    assert TrainingError.exit_code == 5
    assert_user_error(rc, out, err, TrainingError.exit_code, "start_lr", "end_lr")
    assert not (tmp_path / "model").exists()


def test_lr_find_unsupported_output_suffix_fails_before_any_work(tmp_path, capsys):
    missing = tmp_path / "no-such-config.yaml"
    rc, out, err = run(capsys, "lr-find", missing, "--steps", 10, "-o", tmp_path / "lf.txt")
    assert_user_error(rc, out, err, ConfigError.exit_code, "lf.txt")


def test_lr_find_too_few_steps_is_a_usage_error(tmp_path, capsys, data_csv):
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    rc, out, err = run(capsys, "lr-find", config, "--steps", 3)
    assert_user_error(rc, out, err, 2, "--steps", "--help")


def test_lr_find_ignores_a_schedule_that_would_not_fit_the_run(tmp_path, capsys, data_csv):
    """lr-find sets the LR itself: a schedule training would refuse plays no part in it."""
    sched = {"name": "cosine", "warmup_steps": 10_000}
    config = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "m", schedule=sched)
    rc, out, err = run(capsys, "lr-find", config, "--steps", 10, "--no-progress")
    assert rc == 0, err
    assert "suggested optim.lr:" in out or "no suggestion:" in out
    rc, out, err = run(capsys, "train", config, "--no-progress")
    assert_user_error(rc, out, err, ConfigError.exit_code, "schedule.warmup_steps")


# --------------------------------------------------------------------------- suggest_lr


def test_suggest_lr_on_a_flat_curve_says_the_lrs_are_too_low():
    lrs = [1e-3 * 2**i for i in range(10)]
    suggestion, reason = suggest_lr(lrs, [2.0] * 10)
    assert suggestion is None
    assert "too low" in reason and "too high" not in reason


def test_suggest_lr_finds_the_steepest_fall_before_the_minimum():
    lrs = list(np.logspace(-6, 0, 61))  # 10 points per decade
    x = np.log10(lrs)
    # falls from 4 to 2 around lr 1e-3 (steepest there), flat to 1e-2, then rises steeply
    fall = 3.0 - np.tanh((x + 3.0) / 0.3)
    rise = np.where(x > -2.0, 20.0 * (x + 2.0) ** 2, 0.0)
    smoothed = list(fall + rise)
    suggestion, reason = suggest_lr(lrs, smoothed)
    assert suggestion is not None
    assert 10**-3.15 <= suggestion <= 10**-2.85
    assert suggestion in lrs
    assert "steepest" in reason
    assert f"{suggestion:.2e}" in reason


def test_suggest_lr_returns_none_when_the_loss_only_rises():
    lrs = list(np.logspace(-2, 1, 40))
    smoothed = [2.0 + 0.1 * i for i in range(40)]
    suggestion, reason = suggest_lr(lrs, smoothed)
    assert suggestion is None
    assert "too high" in reason and "only rose" in reason


def test_suggest_lr_returns_none_for_a_very_short_curve():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    smoothed = [3.0, 2.5, 2.0, 5.0]
    suggestion, reason = suggest_lr(lrs, smoothed)
    assert suggestion is None
    assert "too few steps" in reason and "(4)" in reason
    assert suggest_lr([], [])[0] is None


# --------------------------------------------------------------------------- lr_find (python API)


def test_lr_find_api_returns_consistent_lists(tmp_path, data_csv):
    num_steps = 20
    result = lr_find(
        tiny_config(data_csv, tmp_path / "model"), num_steps=num_steps, start_lr=1e-5, end_lr=1.0, progress=False
    )
    assert isinstance(result, LRFindResult)
    n = len(result.lrs)
    assert n == len(result.losses) == len(result.smoothed)
    assert 0 < n <= num_steps
    if result.stopped_early:  # a non-finite loss (not kept), or a kept point whose smoothed loss diverged
        assert n < num_steps or result.smoothed[-1] > 4.0 * min(result.smoothed)
    else:
        assert n == num_steps
        assert result.lrs[-1] == pytest.approx(1.0, rel=1e-12)
    assert result.lrs[0] == pytest.approx(1e-5, rel=1e-12)
    assert all(math.isfinite(v) for v in result.losses + result.smoothed)
    assert result.reason
    if result.suggestion is not None:
        assert 1e-5 <= result.suggestion <= 1.0
        assert result.suggestion in result.lrs
    assert (result.suggestion, result.reason) == suggest_lr(result.lrs, result.smoothed)
    assert not (tmp_path / "model").exists()


def test_lr_find_api_is_repeatable(tmp_path, data_csv):
    config = tiny_config(data_csv, tmp_path / "model")
    first = lr_find(config, num_steps=10, start_lr=1e-4, end_lr=0.1, progress=False)
    second = lr_find(config, num_steps=10, start_lr=1e-4, end_lr=0.1, progress=False)
    assert first.losses == second.losses


def test_lr_find_api_stops_early_when_the_loss_diverges(tmp_path, data_csv):
    config = tiny_config(data_csv, tmp_path / "model", optim={"name": "sgd"})
    result = lr_find(config, num_steps=30, start_lr=1e-3, end_lr=1e6, progress=False)
    assert result.stopped_early
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) < 30
    # stopped because the smoothed loss passed 4x its minimum (the last point is the one that did)
    assert result.smoothed[-1] > 4.0 * min(result.smoothed)
    assert all(s <= 4.0 * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1]))


def test_lr_find_api_accepts_a_config_file_and_a_config_object(tmp_path, data_csv):
    path = write_config(tmp_path / "config.yaml", data_csv, tmp_path / "model")
    from_file = lr_find(path, num_steps=8, start_lr=1e-4, end_lr=0.1, progress=False)
    from_object = lr_find(validate_config(yaml.safe_load(path.read_text())), num_steps=8, start_lr=1e-4, end_lr=0.1)
    assert from_file.losses == from_object.losses
    assert len(from_file.lrs) == 8


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start_lr": 0.0, "end_lr": 1.0}, "start_lr"),
        ({"start_lr": 1.0, "end_lr": 1.0}, "start_lr"),
        ({"start_lr": 1e-3, "end_lr": 1.0, "num_steps": 4}, "at least 5 steps"),
    ],
)
def test_lr_find_api_rejects_bad_arguments_before_reading_data(tmp_path, kwargs, fragment):
    config = tiny_config(tmp_path / "absent.csv", tmp_path / "model")
    with pytest.raises(TrainingError, match=fragment):
        lr_find(config, **kwargs)


# --------------------------------------------------------------------------- generate into a closed pipe


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """A tiny text model trained through `synthloom train` (every line it samples is a valid record)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli_lr")
    data = write_word_lines(root / "lines.txt")
    model_dir = root / "model"
    config = write_config(root / "config.yaml", data, model_dir)
    assert main(["train", str(config), "--set", "train.epochs=5", "--no-progress", "--quiet"]) == 0
    return model_dir


class ClosedPipe(io.TextIOBase):
    """A stdout whose reader has gone: every write raises BrokenPipeError; no file descriptor."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no fd")  # keeps main() from dup2-ing over pytest's real stdout


def test_main_returns_0_when_stdout_is_a_closed_pipe(monkeypatch, cosine_config):
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["schedule", str(cosine_config), "--steps", "20"]) == 0


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered-stdout", "PYTHONUNBUFFERED"])
def test_generate_into_a_pipe_closed_after_one_line_exits_quietly(tmp_path, trained_model, unbuffered):
    script = Path(sys.executable).parent / "synthloom"
    assert script.is_file()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    stderr_path = tmp_path / "stderr.txt"
    args = [str(script), "generate", str(trained_model), "--num-records", "2000", "--seed", "1", "--no-progress"]
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=env)
        # a one-page pipe: the 2,000 records (about 30 kB) cannot all be written before the reader closes it
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        first = proc.stdout.readline()
        proc.stdout.close()
        rc = proc.wait(timeout=60)
    err = stderr_path.read_text(encoding="utf-8")
    assert first.endswith(b"\n") and first.strip()  # one whole record
    assert rc == 0, err
    assert "Traceback" not in err
    assert "error:" not in err
    assert "Exception ignored" not in err
    if not unbuffered:
        # the write into the closed pipe raised BrokenPipeError: generate stopped before its summary line
        assert "generated" not in err
