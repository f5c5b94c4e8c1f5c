"""Hyperparameter search on Optuna: every trial a normal training run with its own model dir.

    space = read_space("space.yaml")                     # dotted config keys -> ranges or choices
    summary = search("config.yaml", space, trials=12, sampler="tpe", pruner="median")

A space file names config keys, each with one of:

    optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}
    model.dropout: {uniform: [0.0, 0.5]}
    train.batch_size: {int: [16, 128]}               # {int_log: [16, 128]} on a log scale
    model.hidden_size: {choices: [64, 128, 256]}
    schedule.name: {choices: [constant, cosine]}

Every key, and every end of every range and every choice, is checked against the config before any
trial runs: a key that does not exist, or a value the config would refuse, is a ConfigError then.
`--sampler grid` needs choices for every key and runs each combination once (the plain grid search).

The study folder is the config's output_dir: trial k trains into `trial_000k/`, `study.db` (SQLite) is
the default storage, so several `synthloom search` processes on one machine share one study; a
PostgreSQL or MySQL URL (`--storage`) shares it across machines. The objective (`metric`) is the run's
best value of a training metric (default early_stopping.monitor, val_loss unless set; minimised or
maximised as config.METRIC_MODE says), reported every epoch for the pruner; or, for a table, `quality`:
the report's SDMetrics-style quality (report.py) of as many rows sampled from the trial's model as it
held out for validation, against those held-out rows (maximised; known only at the end, so not pruned).
A pruned or failed trial leaves no model dir (nor work dir).
At the end `best_config.yaml` (the best trial's config, ready to train), `trials.csv` and, with two or
more finished trials, `optimization_history.png` and `param_importances.png` (optuna's matplotlib plots).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from .checkpoint import CONFIG_FILE, work_dir
from .config import METRIC_MODE, apply_overrides, read_config_file, validate_config
from .errors import ConfigError, SynthloomError

log = logging.getLogger("synthloom")

FORMS = ("log_uniform", "uniform", "int", "int_log", "choices")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted config key, e.g. optim.lr
    form: str  # one of FORMS
    values: tuple  # (low, high) for ranges; the choices otherwise

    def ends(self) -> tuple:
        """The values checked against the config before any trial: both ends, or every choice."""
        return self.values

    def suggest(self, trial) -> Any:
        low, high = (self.values + (None, None))[:2]
        if self.form == "choices":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.form in ("int", "int_log"):
            return trial.suggest_int(self.key, low, high, log=self.form == "int_log")
        return trial.suggest_float(self.key, low, high, log=self.form == "log_uniform")


def read_space(path: str | Path) -> list[Dimension]:
    """A space file (YAML, JSON or TOML) parsed; ConfigError naming the key and what is wrong."""
    try:
        raw = read_config_file(path)
    except ConfigError as exc:
        raise ConfigError(f"--space: {exc}") from None
    return parse_space(raw)


def parse_space(raw: Any) -> list[Dimension]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("--space: expected a mapping of dotted config keys to ranges or choices")
    dims = []
    for key, spec in raw.items():
        where = f"--space {key}"
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(f"{where}: name a config key with its section, e.g. optim.lr")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in FORMS:
            raise ConfigError(f"{where}: give one of {', '.join(FORMS)}, e.g. {{log_uniform: [1.0e-4, 1.0e-2]}}")
        form, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {form} takes a list")
        if form == "choices":
            if len(set(map(json.dumps, values))) != len(values):
                raise ConfigError(f"{where}: choices repeat a value")
            dims.append(Dimension(key, form, tuple(values)))
            continue
        if len(values) != 2:
            raise ConfigError(f"{where}: {form} takes [low, high]")
        low, high = values
        numbers = (int,) if form.startswith("int") else (int, float)
        if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {form} takes {'integers' if form.startswith('int') else 'numbers'}")
        if not low < high:
            raise ConfigError(f"{where}: low {low} must be below high {high}")
        if form in ("log_uniform", "int_log") and low <= 0:
            raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
        dims.append(Dimension(key, form, (float(low), float(high)) if form.endswith("uniform") else (low, high)))
    return dims


def _assign(raw: dict, values: dict[str, Any]) -> dict:
    return apply_overrides(raw, [f"{key}={json.dumps(value)}" for key, value in values.items()])


def check_space(raw: dict, space: list[Dimension], sampler: str) -> None:
    """Every key exists and every end and choice is a value the config takes: ConfigError otherwise,
    before any trial runs."""
    if sampler == "grid":
        ranged = [d.key for d in space if d.form != "choices"]
        if ranged:
            raise ConfigError(f"--sampler grid: every key needs choices; {', '.join(ranged)} hold ranges")
    for dim in space:
        for value in dim.ends():
            try:
                validate_config(_assign(raw, {dim.key: value}))
            except ConfigError as exc:
                problem = str(exc).split("\n", 1)[-1].strip()
                raise ConfigError(f"--space {dim.key}: {value!r} is refused by the config: {problem}") from None


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("synthloom search needs Optuna: pip install 'synthloom[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(optuna, name: str, space: list[Dimension], seed: int | None):
    if name == "grid":
        return optuna.samplers.GridSampler({d.key: list(d.values) for d in space}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna, name: str):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def search(
    config_path: str | Path,
    space: list[Dimension],
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str = "tpe",
    pruner: str | Any = "median",
    overrides: list[str] | None = None,
    seed: int | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Run `trials` trials of the study (created or joined) and write its summary; returns it.
    `pruner`: a name of PRUNERS, or an optuna pruner object."""
    from .train import train  # (search sits above train)

    optuna = _optuna()
    raw = apply_overrides(read_config_file(config_path), list(overrides or []))
    base = validate_config(raw)  # the config itself, before any key of the space
    check_space(raw, space, sampler)
    metric = metric or base.early_stopping.monitor
    if metric not in METRIC_MODE and metric != "quality":
        raise ConfigError(f"--metric: {metric!r} is not one of {', '.join([*METRIC_MODE, 'quality'])}")
    if metric == "quality" and base.data.format != "csv":
        raise ConfigError("--metric quality: the quality score compares tables; this config trains on text")
    if metric == "quality" and base.data.validation_split == 0:
        raise ConfigError(
            "--metric quality: scored against the rows held out for validation; set data.validation_split"
        )
    if metric in ("val_bleu", "val_chrf", "val_exact_match") and base.model.kind != "seq2seq":
        raise ConfigError(f"--metric {metric}: a seq2seq model's score (model.kind: seq2seq), not {base.model.kind}'s")
    if metric.startswith("val_") and base.data.validation_split == 0:
        raise ConfigError(f"--metric {metric}: needs validation rows; set data.validation_split or use loss")
    direction = "maximize" if metric == "quality" or METRIC_MODE[metric] == "max" else "minimize"
    folder = Path(base.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    study = None
    for attempt in range(5):  # two workers starting at once may race to create the tables: the loser retries
        try:
            kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait on the file's lock
            with _creation_lock(url):
                study = optuna.create_study(
                    study_name=study_name or folder.name,
                    storage=optuna.storages.RDBStorage(url, engine_kwargs=kwargs),
                    direction=direction,
                    sampler=_sampler(optuna, sampler, space, seed),
                    pruner=_pruner(optuna, pruner) if isinstance(pruner, str) else pruner,
                    load_if_exists=True,
                )
            break
        except Exception as exc:  # noqa: BLE001 (a bad URL, an unreachable server, a study of another direction)
            if attempt == 4 or not any(m in str(exc) for m in ("already exists", "UNIQUE constraint", "locked")):
                raise ConfigError(f"--storage: cannot open the study: {exc}") from None
            time.sleep(0.2 + random.random())

    def objective(trial) -> float:
        values = {dim.key: dim.suggest(trial) for dim in space}
        out = folder / f"trial_{trial.number:04d}"
        config = validate_config(_assign(raw, values) | {"output_dir": str(out), "overwrite": True})
        pruned = []

        def report(state) -> None:
            if metric == "quality":
                return
            value = getattr(state, metric)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, state.epoch)
            if trial.should_prune():
                pruned.append(state.epoch)
                state.stop = True

        level = log.level
        log.setLevel(max(logging.WARNING, log.getEffectiveLevel()))  # one line per trial, not its training log
        try:
            result = train(config, callback=report, progress=False)
        except BaseException as exc:
            shutil.rmtree(work_dir(config), ignore_errors=True)  # nothing half-written stays
            log.warning("trial %d %s: failed (%s)", trial.number, values, exc)
            raise
        finally:
            log.setLevel(level)
        if pruned:
            shutil.rmtree(result.output_dir, ignore_errors=True)
            log.info("trial %d %s: pruned at epoch %d", trial.number, values, pruned[0])
            raise optuna.TrialPruned(f"pruned at epoch {pruned[0]}")
        if metric == "quality":
            value = table_quality(result.output_dir, config, seed=trial.number)
        else:
            scores = [row[metric] for row in result.history if row.get(metric) is not None]
            if not scores:
                raise SynthloomError(f"trial {trial.number}: no {metric} was recorded")
            value = max(scores) if direction == "maximize" else min(scores)
        log.info("trial %d %s: %s %.6g after %d epoch(s)", trial.number, values, metric, value, result.epochs)
        return value

    study.optimize(objective, n_trials=trials, catch=(SynthloomError,))
    return write_summary(study, folder, metric, base.overwrite)


def table_quality(model_dir: Path, config, seed: int = 0) -> float:
    """The report's quality score (SDMetrics' definitions) of rows sampled from a table model against
    the rows it held out for validation, as many as those."""
    from .generate import load_model
    from .report import build_report, model_split

    split = model_split(config)
    model = load_model(model_dir, device="cpu")
    records = model.generate(num_records=len(split.holdout_rows), seed=seed)
    rows = [r.fields for r in records if r.valid]
    report = build_report(split.columns, split.holdout_rows, rows, schema=model.schema)
    return float(report["quality"]["overall"])


@contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """An SQLite study's tables are created by whichever worker comes first: a file lock beside the
    database makes the others wait for it (POSIX; elsewhere the retry in search() covers the race)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_summary(study, folder: Path, metric: str, overwrite: bool = False) -> dict[str, Any]:
    """trials.csv, best_config.yaml and the plots, in the study folder; the summary as a dict."""
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name, metric: t.value, **t.params})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    summary: dict[str, Any] = {"metric": metric, "trials": len(study.trials), "complete": len(done)}
    if done:
        best = study.best_trial
        best_dir = folder / f"trial_{best.number:04d}"
        summary |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
        if (best_dir / CONFIG_FILE).is_file():
            config = json.loads((best_dir / CONFIG_FILE).read_text(encoding="utf-8"))
            config["output_dir"], config["overwrite"] = str(folder / "best"), overwrite
            text = f"# the best of {len(done)} trials: trial {best.number}, {metric} {best.value:.6g}\n"
            (folder / "best_config.yaml").write_text(text + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            summary["best_config"] = str(folder / "best_config.yaml")
    if len(done) >= 2:
        summary["plots"] = _plots(study, folder)
    return summary


def _plots(study, folder: Path) -> list[str]:
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    written = []
    with warnings.catch_warnings():  # (optuna marks its matplotlib plots experimental)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, draw in (
            ("optimization_history", views.plot_optimization_history),
            ("param_importances", views.plot_param_importances),
        ):
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as exc:  # e.g. one parameter that never varied: no importance
                log.info("search: no %s plot (%s)", name, exc)
                continue
            figure = ax.figure if hasattr(ax, "figure") else ax[0].figure
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(figure)
            written.append(str(path))
    return written
