"""The training loop: what it writes, when it stops, what it reports, and what it never leaves behind."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthloom import ConfigError, DataError, EpochState, TrainingConfig, TrainingError, load_model, train
from synthloom.checkpoint import CONFIG_FILE, HISTORY_FILE, SUMMARY_FILE, WEIGHTS_FILE
from synthloom.steplog import STEPS_FILE


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# -- what a run writes


def test_model_dir_holds_everything_loading_needs(csv_path, make_config):
    result = train(make_config(csv_path), progress=False)
    out = result.output_dir
    for name in (CONFIG_FILE, WEIGHTS_FILE, SUMMARY_FILE, HISTORY_FILE, "tokenizer.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["data"]["format"] == "csv" and saved["checkpoint"]["monitor"] == "val_loss"  # resolved
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["columns"] == ["name", "age", "city", "state", "note"]
    assert summary["records"]["train"] + summary["records"]["validation"] == 120
    assert summary["steps"] == result.steps == summary["planned_steps"]
    model = load_model(out)
    assert model.columns == summary["columns"]
    assert not leftovers(out.parent)


def test_history_has_one_row_per_epoch_with_all_metrics(csv_path, make_config):
    result = train(make_config(csv_path, train={"epochs": 3}, early_stopping={"enabled": False}), progress=False)
    with (result.output_dir / HISTORY_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "elapsed_seconds"):
            assert float(r[key]) >= 0
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns


def test_total_steps_follow_epochs_and_batch_size(csv_path, make_config):
    # 120 records, 20% validation -> 96 train records; batch 16 -> 6 steps an epoch
    result = train(
        make_config(csv_path, train={"epochs": 2, "batch_size": 16}, early_stopping={"enabled": False}), progress=False
    )
    assert result.summary["steps_per_epoch"] == 6
    assert result.steps == 12 and result.stopped_by == "epochs"


def test_max_steps_wins_over_epochs_and_stops_mid_epoch(csv_path, make_config):
    result = train(make_config(csv_path, train={"epochs": 50, "max_steps": 8}), progress=False)
    assert result.steps == 8 and result.stopped_by == "max_steps"
    assert result.epochs == 2  # 6 steps in epoch 1, 2 in epoch 2


def test_same_seed_same_weights(csv_path, tmp_path, make_config):
    a = train(make_config(csv_path), progress=False)
    cfg = make_config(csv_path)
    cfg["output_dir"] = str(tmp_path / "again")
    b = train(cfg, progress=False)
    wa, wb = load_file(a.output_dir / WEIGHTS_FILE), load_file(b.output_dir / WEIGHTS_FILE)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


# -- stopping


def test_early_stopping_stops_after_patience_epochs_without_improvement(csv_path, make_config):
    # an lr this small cannot improve val_loss by min_delta=10: the first epoch sets the best, then `patience` more
    cfg = make_config(
        csv_path, train={"epochs": 20}, optim={"lr": 1e-6}, early_stopping={"patience": 2, "min_delta": 10.0}
    )
    result = train(cfg, progress=False)
    assert result.stopped_by == "early_stopping"
    assert result.epochs == 3


def test_early_stopping_on_accuracy_maximises(csv_path, make_config):
    """With patience 1, an accuracy that rises every epoch never stops the run; were accuracy
    minimised, epoch 2's rise would count as no improvement and stop it there."""
    cfg = make_config(csv_path, train={"epochs": 4}, early_stopping={"monitor": "accuracy", "patience": 1})
    result = train(cfg, progress=False)
    accuracy = [row["accuracy"] for row in result.history]
    assert len(accuracy) == 4 and all(a < b for a, b in zip(accuracy, accuracy[1:]))  # it rose every epoch
    assert result.stopped_by == "epochs"


def test_time_limit_stops_at_a_step_boundary_and_leaves_a_usable_model(csv_path, make_config):
    cfg = make_config(csv_path, train={"epochs": 10_000, "max_time_seconds": 1.0}, early_stopping={"enabled": False})
    result = train(cfg, progress=False)
    assert result.stopped_by == "time_limit"
    assert 0 < result.steps < 10_000 * 6
    steps = [json.loads(line) for line in (result.output_dir / STEPS_FILE).read_text().splitlines()]
    assert [row["step"] for row in steps if "loss" in row] == list(range(1, result.steps + 1))  # each step, whole
    records = load_model(result.output_dir).generate(5, seed=0, max_invalid=10_000)
    assert sum(r.valid for r in records) == 5


def test_callback_receives_epoch_state_and_can_stop(csv_path, make_config):
    seen: list[EpochState] = []

    def callback(state: EpochState) -> None:
        seen.append(state)
        state.stop = state.epoch == 2

    result = train(
        make_config(csv_path, train={"epochs": 5}, early_stopping={"enabled": False}), callback=callback, progress=False
    )
    assert [s.epoch for s in seen] == [1, 2]
    assert result.stopped_by == "callback"
    s = seen[-1]
    assert s.step == 12 and s.lr == pytest.approx(0.01)
    assert s.val_loss is not None and 0 <= s.val_accuracy <= 1 and s.elapsed_seconds > 0
    assert s.epsilon is None and s.delta is None  # no DP yet


def test_epoch_callback_from_config_import_path(csv_path, make_config, tmp_path, monkeypatch):
    (tmp_path / "my_hooks.py").write_text("CALLS = []\ndef on_epoch(state):\n    CALLS.append(state.epoch)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    train(make_config(csv_path, train={"epoch_callback": "my_hooks:on_epoch"}), progress=False)
    import my_hooks

    assert my_hooks.CALLS == [1, 2]


def test_unimportable_epoch_callback_is_a_config_error_before_any_work(csv_path, make_config):
    cfg = make_config(csv_path, train={"epoch_callback": "no_such_module:fn"})
    with pytest.raises(ConfigError, match="epoch_callback"):
        train(cfg, progress=False)
    assert not Path(cfg["output_dir"]).exists()


# -- what is kept


def test_save_best_keeps_the_best_epoch_not_the_last(csv_path, make_config):
    # huge lr: the first epoch is the best, later ones blow up
    cfg = make_config(
        csv_path,
        train={"epochs": 4, "max_grad_norm": 0},
        optim={"lr": 3.0, "name": "sgd"},
        early_stopping={"enabled": False},
        checkpoint={"save_best": True, "monitor": "val_loss"},
    )
    result = train(cfg, progress=False)
    losses = [row["val_loss"] for row in result.history]
    best = losses.index(min(losses)) + 1
    assert result.summary["weights_from_epoch"] == best == result.best_epoch


def test_save_every_epoch_writes_one_checkpoint_per_epoch(csv_path, make_config):
    result = train(
        make_config(
            csv_path, train={"epochs": 3}, early_stopping={"enabled": False}, checkpoint={"save_every_epoch": True}
        ),
        progress=False,
    )
    # 6 steps an epoch: one checkpoint per epoch end, none rotated away, and the best one
    ckpts = sorted(p.name for p in (result.output_dir / "checkpoints").iterdir())
    assert ckpts == ["best", "step-00000006", "step-00000012", "step-00000018"]
    last = load_file(result.output_dir / "checkpoints" / "step-00000018" / WEIGHTS_FILE)
    assert set(last) == set(load_file(result.output_dir / WEIGHTS_FILE))


# -- overwrite and never half-written


def test_existing_output_dir_is_refused_untouched_without_overwrite(csv_path, make_config):
    cfg = make_config(csv_path)
    out = Path(cfg["output_dir"])
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="overwrite"):
        train(cfg, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("where", ["project", "runs"])
def test_overwrite_never_replaces_a_directory_that_is_not_a_model_dir(tmp_path, csv_path, make_config, where):
    # `output_dir: .` or a folder of runs with --overwrite must not wipe the folder
    target = tmp_path / where
    (target / "src").mkdir(parents=True)
    (target / "src" / "main.py").write_text("print('hi')")
    cfg = make_config(csv_path, overwrite=True)
    cfg["output_dir"] = str(target)
    with pytest.raises(ConfigError, match="not a synthloom model dir"):
        train(cfg, progress=False)
    assert (target / "src" / "main.py").read_text() == "print('hi')"
    assert not leftovers(tmp_path)


def test_overwrite_replaces_a_model_dir(csv_path, make_config):
    first = train(make_config(csv_path), progress=False)
    (first.output_dir / "stale.txt").write_text("from the first run")
    second = train(make_config(csv_path, overwrite=True, train={"epochs": 3}), progress=False)
    assert second.output_dir == first.output_dir
    assert not (second.output_dir / "stale.txt").exists() and second.epochs == 3
    assert not leftovers(second.output_dir.parent)


def test_a_dir_filled_during_training_is_not_replaced_and_the_model_is_kept(csv_path, make_config):
    cfg = make_config(csv_path)
    out = Path(cfg["output_dir"])

    def someone_writes_there(state):
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("not yours")

    with pytest.raises(TrainingError, match="kept in") as info:
        train(cfg, callback=someone_writes_there, progress=False)
    assert (out / "theirs.txt").read_text() == "not yours"
    kept = Path(str(info.value).rsplit("kept in ", 1)[1].rstrip("."))
    assert (kept / WEIGHTS_FILE).is_file() and load_model(kept).generate(2, seed=0, max_invalid=10**4)


def test_overwrite_refuses_a_dir_that_holds_the_training_data(tmp_path, csv_path, make_config):
    for name in (CONFIG_FILE, SUMMARY_FILE):  # it looks like a model dir, but the data live there
        (csv_path.parent / name).write_text("{}")
    cfg = make_config(csv_path, overwrite=True)
    cfg["output_dir"] = str(csv_path.parent)
    with pytest.raises(ConfigError, match="training data"):
        train(cfg, progress=False)
    assert csv_path.is_file()


def test_a_failure_midway_leaves_no_output_dir_and_no_staging(csv_path, make_config):
    def explode(state):
        raise RuntimeError("callback failed")

    cfg = make_config(csv_path)
    with pytest.raises(RuntimeError):
        train(cfg, callback=explode, progress=False)
    out = Path(cfg["output_dir"])
    assert not out.exists()
    assert not leftovers(out.parent)


def test_bad_data_fails_before_anything_is_written(tmp_path, make_config):
    data = tmp_path / "ragged.csv"
    data.write_text("a,b\n1,2\n3\n")
    cfg = make_config(data)
    with pytest.raises(DataError, match="line 3"):
        train(cfg, progress=False)
    assert not Path(cfg["output_dir"]).exists() and not leftovers(tmp_path)


def test_accepts_a_config_object_and_revalidates_it(csv_path, make_config):
    config = TrainingConfig.model_validate(make_config(csv_path))
    config.data.validation_split = 0.0  # assignment is field-valid, but val_loss now has nothing to monitor
    with pytest.raises(ConfigError, match="validation"):
        train(config, progress=False)


def test_text_records_with_sentencepiece_train_and_sample(text_path, make_config):
    cfg = make_config(text_path, tokenizer={"kind": "sentencepiece", "vocab_size": 40}, train={"epochs": 3})
    result = train(cfg, progress=False)
    assert json.loads((result.output_dir / "tokenizer.json").read_text())["kind"] == "sentencepiece"
    records = load_model(result.output_dir).generate(10, seed=1, max_invalid=10_000)
    assert sum(r.valid for r in records) == 10
    assert all("\n" not in r.text for r in records)


def test_a_limit_reached_exactly_at_an_epoch_boundary_is_reported(csv_path, make_config, monkeypatch):
    # the clock passes the limit with epoch 1's last step: epoch 2 stops before its first step
    train_module = importlib.import_module("synthloom.train.loop")

    steps_per_epoch = 6
    monkeypatch.setattr(
        train_module.FitLoop, "elapsed", property(lambda self: 1e6 if self.step >= steps_per_epoch else 0.0)
    )
    cfg = make_config(csv_path, train={"epochs": 5, "max_time_seconds": 100.0}, early_stopping={"enabled": False})
    result = train(cfg, progress=False)
    assert result.stopped_by == "time_limit"
    assert result.epochs == 1 and result.steps == steps_per_epoch
    assert len(result.history) == 1


def test_records_the_tokenizer_cannot_represent_are_reported(tmp_path, make_config, caplog):
    data = tmp_path / "rare.txt"
    data.write_text("".join(f"common line {i % 7}\n" for i in range(200)) + "one rare \u2603 snowman\n")
    cfg = make_config(data, tokenizer={"kind": "sentencepiece", "vocab_size": 40, "character_coverage": 0.9995})
    with caplog.at_level("WARNING", logger="synthloom"):
        train(cfg, progress=False)
    assert any("1 record(s) hold characters the tokenizer cannot represent" in r.message for r in caplog.records)


def test_progress_bar_reports_steps_and_loss_on_stderr(csv_path, make_config, capsys):
    train(make_config(csv_path, train={"epochs": 1}), progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "6/6" in err and "loss" in err and "tok/s" in err


# -- interruptions and limits


def test_first_ctrl_c_stops_at_a_step_boundary_and_writes_the_model_dir(csv_path, make_config):
    import os
    import signal

    def press_ctrl_c(state):
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal would, at the end of epoch 1

    cfg = make_config(csv_path, train={"epochs": 5}, early_stopping={"enabled": False})
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where the tests run as a background job)
    result = train(cfg, callback=press_ctrl_c, progress=False)
    assert result.stopped_by == "interrupted" and result.epochs == 1
    assert (result.output_dir / WEIGHTS_FILE).is_file()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_a_time_limit_before_the_first_step_is_an_error_not_an_untrained_model(csv_path, make_config):
    cfg = make_config(csv_path, train={"max_time_seconds": 1e-9})
    with pytest.raises(TrainingError, match="before its first step"):
        train(cfg, progress=False)
    assert not Path(cfg["output_dir"]).exists()


def test_headerless_csv_records_the_field_count(tmp_path, make_config):
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},{i % 3},x\n" for i in range(60)))
    result = train(make_config(data, data={"header": False}), progress=False)
    assert result.summary["columns"] is None and result.summary["num_fields"] == 3


def test_a_time_limit_that_cuts_a_decaying_schedule_short_is_flagged(csv_path, make_config, caplog):
    """Cosine over 60,000 planned steps, a 1.5 s limit: training warns early that the LR will end far
    from decayed and names the step count that fits; a constant schedule gets no such warning."""
    cfg = make_config(
        csv_path, train={"epochs": 10_000, "max_time_seconds": 1.5}, early_stopping={"enabled": False},
        schedule={"name": "cosine"},
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="synthloom"):
        result = train(cfg, progress=False)
    assert result.stopped_by == "time_limit"
    flagged = [r.getMessage() for r in caplog.records if "max_time_seconds" in r.getMessage()]
    assert len(flagged) == 1 and "cosine schedule" in flagged[0] and "set train.max_steps=" in flagged[0]
    caplog.clear()
    cfg = make_config(
        csv_path, train={"epochs": 10_000, "max_time_seconds": 0.5}, early_stopping={"enabled": False}, overwrite=True
    )
    with caplog.at_level("WARNING", logger="synthloom"):
        train(cfg, progress=False)
    assert not [r for r in caplog.records if "max_time_seconds" in r.getMessage()]


def test_log_lines_print_above_a_live_progress_bar_and_the_handler_is_restored(capsys):
    """While a bar is live a stderr log handler writes through the bar's console (above the bar, not
    over it); after it, the handler writes to stderr again."""
    import logging
    import sys

    from synthloom.progress import progress_bar

    logger = logging.getLogger("synthloom")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with progress_bar(True, 10, "train", "loss {task.fields[loss]}", loss="–") as update:
            assert handler.stream is not sys.stderr
            update(3, total=8, loss="1.2345")
            logger.warning("epoch 1: loss 1.2345")
        assert handler.stream is sys.stderr
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "epoch 1: loss 1.2345" in err
