"""synthloom search (search.py, Optuna): the space parser and its checks before any trial, grid order,
pruned trials leaving no model dirs, two workers sharing one SQLite study, the best config."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import assert_user_error, run, tiny_config

from synthloom import ConfigError
from synthloom.config import load_config
from synthloom.search import parse_space, search


def study_config(tmp_path: Path, csv_path: Path, **sections) -> Path:
    cfg = tiny_config(csv_path, tmp_path / "study", tokenizer={"kind": "fields"}, train={"epochs": 2, "seed": 0})
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def trial_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("trial_", ".trial_")))


def test_the_space_parser_reads_each_form():
    space = parse_space(
        {
            "optim.lr": {"log_uniform": [1e-4, 1e-2]},
            "model.dropout": {"uniform": [0, 0.5]},
            "train.batch_size": {"int": [8, 32]},
            "model.hidden_size": {"int_log": [8, 64]},
            "schedule.name": {"choices": ["constant", "cosine"]},
        }
    )
    assert [(d.key, d.form, d.values) for d in space] == [
        ("optim.lr", "log_uniform", (1e-4, 1e-2)),
        ("model.dropout", "uniform", (0.0, 0.5)),
        ("train.batch_size", "int", (8, 32)),
        ("model.hidden_size", "int_log", (8, 64)),
        ("schedule.name", "choices", ("constant", "cosine")),
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lr": {"uniform": [0, 1]}}, "--space lr: name a config key with its section"),
        ({"optim.lr": {"loguniform": [1e-4, 1e-2]}}, "--space optim.lr: give one of log_uniform"),
        ({"optim.lr": {"uniform": [0.1, 0.01]}}, "low 0.1 must be below high 0.01"),
        ({"optim.lr": {"log_uniform": [0, 0.01]}}, "a log scale needs low > 0"),
        ({"train.batch_size": {"int": [8, 32.5]}}, "int takes integers"),
        ({"model.hidden_size": {"choices": [8, 8]}}, "choices repeat a value"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_the_space_parser_names_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(raw)


@pytest.mark.parametrize(
    "space, sampler, message",
    [
        (
            {"optim.lrr": {"choices": [0.01]}},
            "tpe",
            r"--space optim.lrr: 0.01 is refused by the config: optim.lrr: unknown",
        ),
        ({"model.dropout": {"uniform": [0.0, 1.5]}}, "tpe", r"--space model.dropout: 1.5 is refused by the config"),
        ({"optim.lr": {"log_uniform": [1e-3, 1e-2]}}, "grid", r"--sampler grid: every key needs choices; optim.lr"),
    ],
)
def test_a_bad_space_is_refused_before_any_trial(tmp_path, csv_path, space, sampler, message):
    config = study_config(tmp_path, csv_path)
    with pytest.raises(ConfigError, match=message):
        search(config, parse_space(space), trials=2, sampler=sampler)
    assert not (tmp_path / "study").exists()  # nothing was run, nothing written


def test_grid_search_runs_every_combination_once_and_writes_the_best_config(tmp_path, csv_path):
    config = study_config(tmp_path, csv_path)
    space = parse_space({"optim.lr": {"choices": [0.01, 0.003]}, "model.hidden_size": {"choices": [8, 16]}})
    summary = search(config, space, trials=4, sampler="grid", pruner="none", seed=0)
    with open(tmp_path / "study" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    combos = sorted((float(r["optim.lr"]), int(r["model.hidden_size"])) for r in rows)
    assert combos == sorted(itertools.product([0.003, 0.01], [8, 16]))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert trial_dirs(tmp_path / "study") == [f"trial_{k:04d}" for k in range(4)]
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert summary["best_trial"] == int(best["trial"])
    chosen = load_config(tmp_path / "study" / "best_config.yaml")  # ready to train
    assert (chosen.optim.lr, chosen.model.hidden_size) == (float(best["optim.lr"]), int(best["model.hidden_size"]))
    assert chosen.output_dir == tmp_path / "study" / "best" and chosen.overwrite is False
    assert (tmp_path / "study" / "optimization_history.png").stat().st_size > 0


def test_pruned_trials_leave_no_model_dirs(tmp_path, csv_path):
    config = study_config(tmp_path, csv_path)
    space = parse_space({"optim.lr": {"log_uniform": [1e-3, 1e-2]}})
    every_trial = optuna.pruners.ThresholdPruner(upper=-1.0)  # any val_loss is above -1: pruned at epoch 1
    summary = search(config, space, trials=3, sampler="random", pruner=every_trial, seed=0)
    assert summary["complete"] == 0 and summary["trials"] == 3
    assert trial_dirs(tmp_path / "study") == []  # neither model dirs nor work dirs
    with open(tmp_path / "study" / "trials.csv") as fh:
        assert {r["state"] for r in csv.DictReader(fh)} == {"PRUNED"}


def test_two_workers_share_one_sqlite_study_without_losing_or_repeating_a_trial(tmp_path, csv_path):
    config = study_config(tmp_path, csv_path)
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {log_uniform: [0.001, 0.03]}\nmodel.hidden_size: {choices: [8, 16]}\n")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [sys.executable, "-m", "synthloom", "search", str(config), "--space", str(space), "--trials", "3"]
    cmd += ["--storage", storage, "--study", "shared", "--sampler", "random", "--pruner", "none", "-q"]
    workers = [subprocess.Popen([*cmd, "--seed", str(k)], stderr=subprocess.PIPE, text=True) for k in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(6))  # 3 + 3: none lost, none run twice
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert trial_dirs(tmp_path / "study") == [f"trial_{k:04d}" for k in range(6)]


def test_the_cli_refuses_a_missing_space_file_and_a_bad_storage(tmp_path, csv_path, capsys):
    config = study_config(tmp_path, csv_path)
    assert_user_error(*run(capsys, "search", config, "--space", tmp_path / "none.yaml", "--trials", "1"), 2, "--space")
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {choices: [0.01]}\n")
    rc, out, err = run(capsys, "search", config, "--space", space, "--trials", "1", "--storage", "nosuch://x")
    assert_user_error(rc, out, err, 2, "--storage: cannot open the study")


def test_without_optuna_the_message_says_how_to_install_it(tmp_path, csv_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    config = study_config(tmp_path, csv_path)
    with pytest.raises(ConfigError, match=r"pip install 'synthloom\[search\]'"):
        search(config, parse_space({"optim.lr": {"choices": [0.01]}}), trials=1)


def test_a_table_study_can_maximise_the_quality_score_of_sampled_rows(tmp_path, csv_path):
    from synthloom.search import table_quality

    config = study_config(tmp_path, csv_path)
    space = parse_space({"model.hidden_size": {"choices": [8, 16]}})
    summary = search(config, space, trials=2, sampler="grid", metric="quality", seed=0)
    with open(tmp_path / "study" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    scores = {int(r["trial"]): float(r["quality"]) for r in rows}
    assert all(0 < v <= 1 for v in scores.values())
    assert summary["best_value"] == max(scores.values())  # maximised
    best = tmp_path / "study" / f"trial_{summary['best_trial']:04d}"
    again = table_quality(best, load_config(tmp_path / "study" / "best_config.yaml"), seed=summary["best_trial"])
    assert again == pytest.approx(summary["best_value"])  # the score is the model's, recomputable


@pytest.mark.parametrize(
    "metric, data, message",
    [
        ("bleu", None, r"--metric: 'bleu' is not one of loss, "),
        ("quality", "text", r"--metric quality: the quality score compares tables"),
        ("val_loss", "no_val", r"--metric val_loss: needs validation rows"),
    ],
)
def test_a_metric_that_cannot_be_the_objective_is_refused(tmp_path, csv_path, text_path, metric, data, message):
    if data == "text":
        config = tmp_path / "text.yaml"
        config.write_text(yaml.safe_dump(tiny_config(text_path, tmp_path / "study")))
    else:
        extra = {"data": {"validation_split": 0.0}, "early_stopping": {"monitor": "loss"}} if data == "no_val" else {}
        config = study_config(tmp_path, csv_path, **extra)
    with pytest.raises(ConfigError, match=message):
        search(config, parse_space({"optim.lr": {"choices": [0.01]}}), trials=1, metric=metric)


def test_a_seq2seq_study_maximises_validation_bleu(tmp_path):
    from test_seq2seq_train import seq2seq_config, write_pairs

    cfg = seq2seq_config(tmp_path, write_pairs(tmp_path / "pairs.csv", n=120), train={"epochs": 2})
    cfg["output_dir"] = str(tmp_path / "study")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    space = parse_space({"optim.lr": {"choices": [0.0001, 0.02]}})
    summary = search(path, space, trials=2, sampler="grid", pruner="none", seed=0, metric="val_bleu")
    with open(tmp_path / "study" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = max(rows, key=lambda r: float(r["val_bleu"]))  # higher is better
    assert summary["best_trial"] == int(best["trial"]) and float(best["optim.lr"]) == 0.02


def test_bleu_is_no_metric_for_a_language_model(tmp_path, csv_path):
    with pytest.raises(ConfigError, match="a seq2seq model's score"):
        search(study_config(tmp_path, csv_path), parse_space({"optim.lr": {"choices": [0.01]}}), trials=1,
               metric="val_bleu")  # fmt: skip
