"""The command-line interface.

    synthloom config init data.csv --output-dir model/ > config.yaml
    synthloom config validate config.yaml | config show config.yaml | config schema
    synthloom train config.yaml --set train.epochs=5 --set model.hidden_size=128
    synthloom generate model/ --num-records 1000 --output synthetic.csv
    synthloom schedule config.yaml --output lr.png       synthloom lr-find config.yaml --output lr_find.png

Errors a user can cause print one clear message on stderr (no traceback) and exit non-zero;
data go to stdout or --output, messages and progress to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click

from .config import (
    apply_overrides,
    commented_yaml,
    config_json_schema,
    dump_config,
    load_config,
    validate_config,
)
from .errors import GenerationError, SynthloomError
from .progress import progress_bar

log = logging.getLogger("synthloom")
SET_HELP = "Override a config key: --set train.epochs=5 (repeatable; values parsed as YAML)."


class _Commands(click.Group):
    """The command group. A reader that closes our stdout early (`| head`) ends a command
    quietly with exit 0: it has what it wanted (click alone would exit 1)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthloom")
def app() -> None:
    """Train text-generation models on records and sample synthetic records."""


# --------------------------------------------------------------------------- config


@app.group("config")
def config_group() -> None:
    """Create, check and inspect training configs."""


@config_group.command("init")
@click.argument("data_path", type=click.Path(path_type=Path))
@click.option("--output-dir", default="model", show_default=True, help="Model dir the config will train into.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "toml"]), default="yaml", show_default=True)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def config_init(data_path: Path, output_dir: str, fmt: str, overrides: tuple[str, ...]) -> None:
    """Print a complete default config for DATA_PATH (YAML with a comment on every key)."""
    raw = apply_overrides({"output_dir": output_dir, "data": {"path": str(data_path)}}, list(overrides))
    config = validate_config(raw)
    # the data is read now, so a file training cannot use fails here and the types it will get show
    summary = _data_summary(config) if Path(config.data.path).is_file() else [f"{config.data.path}: not there yet"]
    if fmt == "yaml":
        comment = ["", "# What config init read (training infers it again; data.column_types overrides a type):"]
        click.echo(commented_yaml(config, unresolved=raw) + "\n".join(comment + [f"#   {s}" for s in summary]))
    else:
        click.echo(dump_config(config, fmt), nl=False)
        click.echo("\n".join(summary), err=True)


@config_group.command("validate")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def config_validate(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Check a config file and its data: the file reads as records (exit 2 where it does not), the
    schedule fits the run; prints the step plan and, for a table, the column types training infers."""
    from .data import read_records
    from .train import plan_run

    config = load_config(config_path, list(overrides))
    records = read_records(config.data)  # a missing, empty, binary or ragged file is a DataError here
    click.echo(f"{config_path}: valid; {_plan_line(config, plan_run(config, records))}")
    for line in _data_summary(config, records):
        click.echo(f"  {line}")


def _data_summary(config, records=None) -> list[str]:
    """What the data is, as training will read it (`records`, or read here): records (and for csv
    the delimiter and each column's inferred type). DataError where it cannot be read."""
    from .data import decode_row, read_records
    from .schema import infer_schema

    records = records or read_records(config.data)
    if config.data.format != "csv":
        return [f"{config.data.path}: text, {len(records.texts):,} records (one per line)"]
    delimiter = config.data.field_delimiter
    names = records.model_columns or [f"column_{i + 1}" for i in range(records.num_fields or 0)]
    schema = infer_schema(names, [decode_row(t, delimiter) for t in records.texts], config.data.column_types)
    lines = [f"{config.data.path}: csv, delimiter {delimiter!r}, {len(records.texts):,} rows, {len(names)} columns"]
    for column in schema.columns:
        detail = ""
        if column.kind == "categorical" and column.categories is not None:
            detail = f", {len(column.categories)} values"
        elif column.min is not None and column.kind != "text":
            detail = f", {column.min} .. {column.max}"
        missing = ", with missing values" if column.allow_missing else ""
        lines.append(f"{column.name}: {column.kind}{detail}{missing}")
    return lines


@config_group.command("show")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "toml"]), default="yaml", show_default=True)
def config_show(config_path: Path, overrides: tuple[str, ...], fmt: str) -> None:
    """Print the resolved config: every key, defaults filled in, derived values resolved;
    the run's step plan (counted from the data) goes to stderr."""
    config = load_config(config_path, list(overrides))
    click.echo(dump_config(config, fmt), nl=False)
    click.echo(_plan_line(config), err=True)


def _plan_line(config, plan=None) -> str:
    """The step plan (counted here unless given), or why it cannot be counted yet (a schedule that
    cannot fit is an error)."""
    from .errors import DataError
    from .train import plan_run

    if plan is None:
        try:
            plan = plan_run(config)
        except DataError as exc:
            return f"plan: steps not counted, the data cannot be read yet ({exc})"
    line = f"plan: {plan.describe(config)}" + "".join(f"\n{note}" for note in _time_limit_note(config, plan))
    if config.privacy.enabled:
        line += "\n" + _privacy_line(config, plan)
    return line


def _time_limit_note(config, plan) -> list[str]:
    """A note where a time limit may cut a decaying schedule short (config show / validate, schedule)."""
    from .schedules import NOT_DECAYING

    if config.train.max_time_seconds is None or config.schedule.name in NOT_DECAYING:
        return []
    return [
        f"note: the {config.schedule.name} schedule decays over the {plan.total_steps:,} planned steps; "
        f"train.max_time_seconds={config.train.max_time_seconds:g} may stop the run before, its LR not decayed "
        "(training warns once it knows its step rate); set train.max_steps to what fits the time"
    ]


def _privacy_line(config, plan) -> str:
    """The DP plan and the epsilon the whole run ends at: choose the noise before training."""
    from .privacy import check_privacy_runtime, epsilon_after, plan_privacy

    check_privacy_runtime()
    dp = plan_privacy(config, plan.train_records, plan)
    eps = epsilon_after(dp.noise_multiplier, dp.sample_rate, plan.total_steps, dp.delta, dp.accountant)
    eps += dp.encoding_epsilon  # field tokens: the vocabularies' share, spent before the first step
    return f"privacy: {dp.describe()}; the planned {plan.total_steps:,} steps end at epsilon {eps:.3g}"


@config_group.command("schema")
def config_schema() -> None:
    """Print the config's JSON Schema."""
    click.echo(json.dumps(config_json_schema(), indent=2))


# --------------------------------------------------------------------------- train


@app.command("train")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing output_dir (same as --set overwrite=true).")
@click.option(
    "--resume", is_flag=True, help="Continue the interrupted (or finished) run of output_dir from its last checkpoint."
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=None,
    help="Train data-parallel on N processes of this machine (torchrun --standalone --nproc_per_node N).",
)
def train_cmd(
    config_path: Path,
    overrides: tuple[str, ...],
    overwrite: bool,
    resume: bool,
    progress: bool | None,
    quiet: bool,
    nproc: int | None,
) -> None:
    """Train a model as CONFIG_PATH says and write its model dir.

    On many processes: torchrun --nproc_per_node N -m synthloom train CONFIG_PATH (or --nproc N here);
    docs/scale.md says how, and what it changes."""
    from .train import train

    if nproc is not None and nproc > 1:
        args = [str(config_path), *(f"--set={o}" for o in overrides)]
        args += ["--overwrite"] * overwrite + ["--resume"] * resume + ["--quiet"] * quiet
        args += [] if progress is None else ["--progress" if progress else "--no-progress"]
        raise SystemExit(_torchrun(nproc, args))
    _setup_logging(quiet)
    config = load_config(config_path, list(overrides) + (["overwrite=true"] if overwrite else []))
    result = train(config, progress=progress, resume=resume)
    if os.environ.get("RANK", "0") not in ("", "0"):
        return  # data-parallel: rank 0 says it
    dp = result.summary.get("privacy")
    private = f"; differentially private: epsilon {dp['epsilon']:.4g}, delta {dp['delta']:.3g}" if dp else ""
    click.echo(
        f"trained {result.epochs} epoch(s), {result.steps} step(s), stopped by {result.stopped_by}{private}; "
        f"model dir: {result.output_dir}",
        err=True,
    )


def _torchrun(nproc: int, train_args: list[str]) -> int:
    """`synthloom train --nproc N`: `synthloom train` on N processes of this machine, started as
    `torchrun --standalone --nproc_per_node N` starts them (torch's elastic launcher); the first failed
    rank's exit code (its message is on stderr already), or 0."""
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise click.UsageError("--nproc: this process already runs under torchrun; leave --nproc out")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # the cores shared out
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # a rank's error is said by the rank
    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        shutdown_timeout=600,  # Ctrl-C: the ranks finish the step and write the model dir before they exit
    )
    try:
        elastic_launch(launch, sys.executable)("-m", "synthloom", "train", *train_args)
    except ChildFailedError as exc:
        return exc.get_first_failure()[1].exitcode or 1
    except SignalException:  # Ctrl-C or SIGTERM: handed on to the ranks, which stop as one process would
        click.echo("interrupted", err=True)
        return 130
    return 0


@app.command("search")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--space", "space_path", required=True, type=click.Path(path_type=Path), help="SPACE.yaml: key -> range.")
@click.option("--trials", type=click.IntRange(min=1), required=True, help="Trials this process runs.")
@click.option("--storage", help="Optuna storage URL shared by workers (default: sqlite in the study folder).")
@click.option("--study", "study_name", help="Study name (default: the output_dir's name).")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--seed", type=int, help="The sampler's seed (default: fresh).")
@click.option(
    "--metric",
    help="The objective: loss | val_loss | accuracy | val_accuracy | quality (tables; default: "
    "early_stopping.monitor).",
)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def search_cmd(
    config_path: Path,
    space_path: Path,
    trials: int,
    storage: str | None,
    study_name: str | None,
    sampler: str,
    pruner: str,
    seed: int | None,
    metric: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Hyperparameter search (Optuna) over SPACE for CONFIG_PATH: each trial a training run of its own
    under output_dir; the best trial's config is written there as best_config.yaml."""
    from .search import read_space, search

    _setup_logging(quiet)
    space = read_space(space_path)
    summary = search(config_path, space, trials, storage, study_name, sampler, pruner, list(overrides), seed, metric)
    if "best_trial" in summary:
        click.echo(
            f"{summary['complete']} of {summary['trials']} trial(s) complete; best: trial {summary['best_trial']}, "
            f"{summary['metric']} {summary['best_value']:.6g}, {summary['best_params']}; "
            f"config: {summary.get('best_config')}",
            err=True,
        )
    else:
        click.echo(f"no trial completed of {summary['trials']}", err=True)


# --------------------------------------------------------------------------- schedule, lr-find


@app.command("schedule")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--steps", type=click.IntRange(min=1), help="Draw this many steps (default: the run's, from the data).")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="A .png/.svg/.pdf plot or a .csv (step,lr); default stdout."
)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def schedule_cmd(config_path: Path, steps: int | None, output: Path | None, overrides: tuple[str, ...]) -> None:
    """The LR at every step of the run CONFIG_PATH describes, before any training."""
    from .plots import check_curve_path, write_curve
    from .schedules import lr_curve, plan_steps, resolve_for_records
    from .train import plan_run

    if output is not None:
        check_curve_path(output)
    config = load_config(config_path, list(overrides))
    plan = plan_steps(config, 0, total_steps=steps) if steps else plan_run(config)
    config = resolve_for_records(config, plan.train_records)
    lrs = lr_curve(config, plan)
    click.echo(f"plan: {plan.describe(config)}", err=True)
    for note in _time_limit_note(config, plan):
        click.echo(note, err=True)
    if config.schedule.name == "reduce_on_plateau":
        click.echo(
            f"note: reduce_on_plateau lowers the LR when {config.schedule.monitor} stalls, which is not known "
            "before training; the curve shows the warmup and then optim.lr",
            err=True,
        )
    steps_axis = list(range(1, len(lrs) + 1))
    if output is None:
        click.echo("step,lr")
        for step, lr in zip(steps_axis, lrs):
            click.echo(f"{step},{lr!r}")
        return
    write_curve(output, "step", steps_axis, {"lr": lrs}, title=f"{config.schedule.name}: {plan.describe(config)}")
    click.echo(f"wrote {output}", err=True)


@app.command("lr-find")
@click.argument("config_path", type=click.Path(path_type=Path))
@click.option("--start-lr", type=float, default=1e-7, show_default=True, help="LR of the first step.")
@click.option("--end-lr", type=float, default=10.0, show_default=True, help="LR of the last step.")
@click.option("--steps", type=click.IntRange(min=5), default=100, show_default=True, help="Steps of the test.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Loss vs LR: a .png/.svg/.pdf plot or a .csv.")
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def lr_find_cmd(
    config_path: Path,
    start_lr: float,
    end_lr: float,
    steps: int,
    output: Path | None,
    overrides: tuple[str, ...],
    progress: bool | None,
) -> None:
    """An LR range test on CONFIG_PATH's data and model; suggests optim.lr. Writes no model dir."""
    from .lr_find import lr_find
    from .plots import check_curve_path, write_curve

    if output is not None:
        check_curve_path(output)
    _setup_logging(quiet=True)
    config = load_config(config_path, list(overrides))
    result = lr_find(config, start_lr=start_lr, end_lr=end_lr, num_steps=steps, progress=progress)
    if output is not None:
        marker = (result.suggestion, f"suggested {result.suggestion:.2e}") if result.suggestion else None
        write_curve(
            output,
            "lr",
            result.lrs,
            {"loss": result.losses, "smoothed_loss": result.smoothed},
            title=f"LR range test, {len(result.lrs)} steps",
            log_x=True,
            marker=marker,
        )
        click.echo(f"wrote {output}", err=True)
    if result.suggestion is None:
        click.echo(f"no suggestion: {result.reason}")
        return
    click.echo(f"suggested optim.lr: {result.suggestion:.3g}  ({result.reason})")
    click.echo(f"try: synthloom train {config_path} --set optim.lr={result.suggestion:.3g}")


# --------------------------------------------------------------------------- generate


@app.command("generate")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-n", "--num-records", type=int, help="Valid records to generate (default: the model's config).")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write here (CSV with header for table models); default stdout.",
)
@click.option("--temperature", type=float)
@click.option("--top-k", type=int, help="Sample among the k likeliest tokens; 0 = off.")
@click.option("--top-p", type=float, help="Nucleus sampling mass; 1 = off.")
@click.option("--max-tokens", type=int, help="Most tokens per record.")
@click.option("--stop", multiple=True, help="A string that ends a record (repeatable).")
@click.option("--prefix", help="Every record starts with this text.")
@click.option("--batch-size", type=int, help="Records sampled in parallel.")
@click.option("--streams", type=int, help="Sampling streams side by side (the records a seed gives depend on it).")
@click.option("--seed", type=int, help="Seed for reproducible output.")
@click.option(
    "--max-invalid",
    type=int,
    help="Give up after this many invalid records (default: as many as asked for, at least 1,000).",
)
@click.option(
    "--validator", help="'module:function' or 'file.py:function' that accepts (returns non-False) or rejects a record."
)
@click.option(
    "--privacy-filter/--no-privacy-filter",
    default=None,
    help="Drop exact copies of training records (default: the model's generate.privacy_filter; on for tables).",
)
@click.option(
    "--near-copy-fields",
    type=int,
    default=None,
    help="Tables: the privacy filter also drops records differing from a training record in at most K fields.",
)
@click.option(
    "--seed-field",
    "seed_field",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="Every record starts with this value in COLUMN (repeatable; the model's leading columns).",
)
@click.option(
    "--seed-fields",
    "seed_file",
    type=click.Path(path_type=Path),
    help="A CSV of seeds (header: leading columns): one record per row, its seeded columns equal to the row's.",
)
@click.option(
    "--check-types/--no-check-types",
    default=None,
    help="Tables: a field that does not parse as its column's type makes the record invalid (default: on).",
)
@click.option(
    "--reject-unseen-categories",
    is_flag=True,
    default=None,
    help="Tables: a categorical value never seen in training makes the record invalid.",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    help="seq2seq: a CSV holding the model's source columns (writes it with the generated target column), or "
    "for a model trained on aligned text files a text file of sources (writes a target per line).",
)
@click.option("--num-beams", type=click.IntRange(min=1), help="seq2seq: beam search width (1 = greedy).")
@click.option("--length-penalty", type=float, help="seq2seq beam search: score = log prob / length ** this.")
@click.option("--num-return-sequences", type=click.IntRange(min=1), help="seq2seq beam search: targets per source.")
@click.option("--no-repeat-ngram-size", type=click.IntRange(min=0), help="seq2seq beam search: ban repeated n-grams.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def generate_cmd(
    model_dir: Path,
    num_records,
    output,
    temperature,
    top_k,
    top_p,
    max_tokens,
    stop,
    prefix,
    batch_size,
    streams,
    seed,
    max_invalid,
    validator,
    privacy_filter,
    near_copy_fields,
    seed_field,
    seed_file,
    check_types,
    reject_unseen_categories,
    source,
    num_beams,
    length_penalty,
    num_return_sequences,
    no_repeat_ngram_size,
    progress,
) -> None:
    """Sample synthetic records from MODEL_DIR (a seq2seq model: targets for --source)."""
    if source is not None:
        beam = dict(num_beams=num_beams, length_penalty=length_penalty, num_return_sequences=num_return_sequences,
                    no_repeat_ngram_size=no_repeat_ngram_size)  # fmt: skip
        _translate(model_dir, source, output, temperature, top_k, top_p, max_tokens, seed, beam)
        return
    from .config import GenerateConfig
    from .generate import load_model, resolve_settings
    from .hooks import load_callable
    from .records import COPY_EXPLANATION, NEAR_COPY_EXPLANATION, check_output_path, write_records

    settings = dict(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=list(stop) or None,
        prefix=prefix,
        batch_size=batch_size,
        streams=streams,
        seed=seed,
        max_invalid=max_invalid,
        privacy_filter=privacy_filter,
        near_copy_fields=near_copy_fields,
        check_types=check_types,
        unseen_categories=False if reject_unseen_categories else None,
    )
    resolve_settings(GenerateConfig(), num_records=num_records, **settings)  # bad options fail before any work
    check = load_callable(validator, "--validator")
    if seed_file is not None and num_records is not None:
        raise click.UsageError("--seed-fields makes one record per seed: leave out --num-records")
    if output is not None:
        check_output_path(output)  # before sampling, not after
    model = load_model(model_dir)
    seeds = _seed_option(seed_field, seed_file, model.delimiter or ",")
    start = time.perf_counter()
    total = len(seeds) if isinstance(seeds, list) else num_records or model.config.generate.num_records
    bar_context = progress_bar(progress, total, "generate", "{task.fields[invalid]} invalid", invalid=0)
    with bar_context as bar, _term_as_ctrl_c():
        try:
            records = model.generate(
                num_records,
                validator=check,
                seed_fields=seeds,
                progress=lambda valid, invalid: bar(valid, invalid=invalid),
                **settings,
            )
        except GenerationError as exc:
            partial = exc.records
            if partial and any(r.valid for r in partial):  # keep what was made before giving up
                write_records(partial, output, model.columns, model.delimiter)
                exc.args = (f"{exc.args[0]} The {sum(r.valid for r in partial)} valid record(s) were written.",)
            raise
    write_records(records, output, model.columns, model.delimiter)
    n_valid = sum(r.valid for r in records)
    copies = sum(r.explanation == COPY_EXPLANATION for r in records)
    near = sum((r.explanation or "").startswith(NEAR_COPY_EXPLANATION) for r in records)
    dropped = f", {copies} of them copies of training records, dropped" if copies else ""
    if near:
        dropped += f", {near} near copies of training records, dropped"
    seconds = time.perf_counter() - start
    click.echo(
        f"generated {n_valid} valid record(s) ({len(records) - n_valid} invalid{dropped}) in {seconds:.1f}s"
        + (f" -> {output}" if output else ""),
        err=True,
    )
    kept = _kept_copies(model, records, resolve_settings(model.config.generate, **settings))
    if kept:
        click.echo(
            f"note: {kept} of them ({100 * kept / max(n_valid, 1):.0f} %) are training records (ones that occur once "
            "in the data): the privacy filter is off for this model; --privacy-filter drops them",
            err=True,
        )


def _kept_copies(model, records, opts) -> int:
    """Valid records that are training records, where the privacy filter was off (text models by
    default): a copy rate the user should see. 0 where the filter ran or the model keeps no digests."""
    from .checkpoint import read_digests
    from .records import training_copies

    if opts.privacy_filter:
        return 0
    digests = read_digests(model.path)
    texts = [r.text for r in records if r.valid]
    return int(training_copies(texts, *digests).sum()) if digests is not None and texts else 0


@contextlib.contextmanager
def _term_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (kill's default; the one signal a job started with & in a script still takes) stops
    generation as Ctrl-C does: the valid records made so far are written, then a non-zero exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _translate(model_dir, source, output, temperature, top_k, top_p, max_tokens, seed, beam) -> None:
    from .records import check_output_path
    from .translate import load_seq2seq, write_lines, write_targets

    if output is not None:
        check_output_path(output)
    model = load_seq2seq(model_dir)
    header, rows, sources = model.read_sources(source)
    start = time.perf_counter()
    targets = model.translate(
        sources, temperature=temperature or 0.0, top_k=top_k, top_p=top_p, max_tokens=max_tokens, seed=seed, **beam
    )
    if model.reads_lines(source):  # a text file of sources: the targets one per line
        text = write_lines(targets)
    else:
        text = write_targets(header, rows, targets, model.target_column, model.delimiter)
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
    seconds = time.perf_counter() - start
    click.echo(f"{len(sources):,} source(s) -> {model.target_column} in {seconds:.1f} s", err=True)


@app.command("evaluate")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("pairs", type=click.Path(path_type=Path))
@click.option("--num-beams", type=click.IntRange(min=1), help="Beam search width (default: the model's; 1 = greedy).")
@click.option("--max-tokens", type=int, help="Most tokens per target.")
@click.option(
    "--targets",
    type=click.Path(path_type=Path),
    help="A model trained on aligned text files: the targets' text file, aligned with PAIRS (the sources').",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate_cmd(model_dir: Path, pairs: Path, num_beams, max_tokens, targets, as_json: bool) -> None:
    """Score a seq2seq model on PAIRS (a CSV with its source and target columns, or a text file of sources
    with --targets): BLEU, chrF, exact match."""
    from .translate import load_seq2seq

    model = load_seq2seq(model_dir)
    scores = model.evaluate(pairs, targets, num_beams=num_beams, max_tokens=max_tokens)
    if as_json:
        click.echo(json.dumps(scores))
        return
    click.echo(
        f"{scores['pairs']:,} pairs: BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, "
        f"exact match {100 * scores['exact_match']:.1f} %"
    )


@app.command("report")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("synthetic", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="report.html or report.json.")
@click.option(
    "--real", type=click.Path(path_type=Path), help="The real table (default: the model's training file, data.path)."
)
@click.option(
    "--holdout",
    type=click.Path(path_type=Path),
    help="Real rows the model never trained on, for DCR (default: the model's validation split, recomputed).",
)
def report_cmd(model_dir: Path, synthetic: Path, output: Path, real: Path | None, holdout: Path | None) -> None:
    """Compare SYNTHETIC (a CSV written by `generate`) with the real rows MODEL_DIR was trained on:
    SDMetrics' quality score, a dependency score, distance to closest record against a holdout,
    exact copies, validity, epsilon; per-column distributions (docs/tables.md, "The quality report")."""
    from .checkpoint import SUMMARY_FILE, read_json, read_model_config, read_schema
    from .errors import DataError
    from .groups import GROUPS_FILE
    from .report import build_report, check_report_path, model_split, read_table, write_report
    from .schema import Schema

    check_report_path(output)  # before the work
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    if config.data.format != "csv":
        return _text_report(model_dir, config, synthetic, output, real, holdout)
    if real is None and not Path(config.data.path).is_file():
        raise DataError(f"the model's training file {config.data.path} is not there; give the real table: --real FILE")
    real = real or config.data.path
    delimiter = config.data.field_delimiter
    columns, real_rows = read_table(real, delimiter)
    synth_columns, synth_rows = read_table(synthetic, delimiter)
    if synth_columns != columns:
        raise DataError(f"{synthetic}: its columns {synth_columns} are not the real table's {columns}")
    sources = {"real": str(real), "synthetic": str(synthetic)}
    holdout_rows, note = None, None
    if holdout is not None:
        holdout_columns, holdout_rows = read_table(holdout, delimiter)
        if sorted(holdout_columns) != sorted(columns):
            raise DataError(f"{holdout}: its columns {holdout_columns} are not the real table's {columns}")
        order = [holdout_columns.index(c) for c in columns]
        holdout_rows = [[row[i] for i in order] for row in holdout_rows]
        sources["holdout"] = str(holdout)
    elif (model_dir / GROUPS_FILE).is_file():
        note = "a model of column groups splits each group's records on its own, so no row is held out of all; "
        note += "give --holdout FILE"
    elif config.data.validation_split == 0:
        note = "data.validation_split is 0, so the model holds no rows out; DCR needs a holdout: give --holdout FILE"
    else:
        split = model_split(config, real)
        summary = model_dir / SUMMARY_FILE
        held = (read_json(summary).get("records") or {}).get("validation") if summary.is_file() else None
        if split.columns != columns:
            note = f"the recomputed split's columns {split.columns} are not the table's; give --holdout FILE"
        elif held is not None and held != len(split.holdout_rows):
            note = (
                f"{real} split as training did holds out {len(split.holdout_rows)} row(s), training held out {held}: "
                "it is not the table the model trained on; give --holdout FILE"
            )
        else:
            real_rows, holdout_rows = split.train_rows, split.holdout_rows
            sources["real"] = f"{real}: the {len(real_rows):,} rows the model trained on (its split, recomputed)"
            sources["holdout"] = (
                f"{real}: the {len(holdout_rows):,} rows held out for validation "
                f"(data.validation_split={config.data.validation_split:g}, train.seed={config.train.seed})"
            )
    schema = read_schema(model_dir)
    if schema is not None and sorted(schema.names) == sorted(columns):
        schema = Schema([schema.column(name) for name in columns])  # the model's types, the table's order
    else:
        schema = None  # inferred from the real rows
    privacy = model_dir / "privacy.json"
    dp = read_json(privacy) if privacy.is_file() else {}
    report = build_report(
        columns,
        real_rows,
        synth_rows,
        schema=schema,
        holdout_rows=holdout_rows,
        holdout_note=note,
        epsilon=dp.get("epsilon"),
        delta=dp.get("delta"),
        sources=sources,
    )
    write_report(report, output)
    quality, dependency, dcr = report["quality"], report["dependency"], report["dcr"]

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    score = "n/a" if report["score"] is None else f"{report['score']:.1f} of 100"
    dcr_text = (
        f"DCR: {100 * dcr['closer_to_train_rate']:.1f} % of synthetic rows closer to a training row than to any "
        "holdout row (about 50 % without memorisation)"
        if "skipped" not in dcr
        else f"DCR skipped ({dcr['skipped']})"
    )
    click.echo(
        f"quality score {score} (SDMetrics QualityReport {num(quality['overall'])}: Column Shapes "
        f"{num(quality['column_shapes'])}, Column Pair Trends {num(quality['column_pair_trends'])}); "
        f"dependency score {num(dependency['score'])}; {dcr_text} -> {output}",
        err=True,
    )


def _text_report(model_dir: Path, config, synthetic: Path, output: Path, real: Path | None, holdout: Path | None):
    """`report` for a text model: its records against the ones it trained on (text_report.py)."""
    from .checkpoint import read_json
    from .data import read_records, read_text, split_records
    from .errors import DataError
    from .report import write_report
    from .text_report import build_text_report, render_text_html

    if real is None and not Path(config.data.path).is_file():
        raise DataError(
            f"the model's training file {config.data.path} is not there; give the real records: --real FILE"
        )

    def lines(path: Path, what: str) -> list[str]:  # a file of records, one a line; blank lines skipped
        return [line for line in read_text(Path(path), what).splitlines() if line.strip()]

    sources = {"synthetic": str(synthetic)}
    synth = lines(synthetic, "synthetic")
    note = None
    if real is not None:
        train_texts, sources["real"] = lines(real, "real"), str(real)
        held = lines(holdout, "holdout") if holdout is not None else None
        note = None if holdout is not None else "the real records were given: give --holdout FILE for DCR"
    else:
        records = read_records(config.data).texts
        train_texts, held = split_records(records, config.data.validation_split, config.train.seed)
        sources["real"] = f"{config.data.path}: the {len(train_texts):,} records the model trained on (its split)"
        if holdout is not None:
            held = lines(holdout, "holdout")
        elif not held:
            held, note = None, "data.validation_split is 0, so the model holds no records out: give --holdout FILE"
        else:
            sources["holdout"] = f"{config.data.path}: the {len(held):,} records held out for validation"
    if holdout is not None:
        sources["holdout"] = str(holdout)
    privacy = model_dir / "privacy.json"
    dp = read_json(privacy) if privacy.is_file() else {}
    report = build_text_report(
        train_texts, synth, holdout=held, holdout_note=note, epsilon=dp.get("epsilon"), delta=dp.get("delta"),
        sources=sources,
    )  # fmt: skip
    write_report(report, output, render=render_text_html)
    nov, dcr = report["novelty"], report["dcr"]
    dcr_text = (
        f"DCR: {100 * dcr['closer_to_train_rate']:.1f} % closer to a training record than to any holdout record"
        if "skipped" not in dcr
        else f"DCR skipped ({dcr['skipped']})"
    )
    click.echo(
        f"text similarity score {report['score']:.1f} of 100; {100 * nov['exact_copy_rate']:.1f} % of synthetic "
        f"records are training records (the real records repeat: {100 * nov['real_repeat_rate']:.1f} %); "
        f"{dcr_text} -> {output}",
        err=True,
    )


def _seed_option(pairs: tuple[str, ...], path: Path | None, delimiter: str):
    """--seed-field COLUMN=VALUE (one dict for every record) or --seed-fields FILE (a list, one per row)."""
    if pairs and path is not None:
        raise click.UsageError("give --seed-field or --seed-fields, not both")
    if path is not None:
        from .report import read_table

        columns, rows = read_table(path, delimiter)
        return [dict(zip(columns, row)) for row in rows]
    if not pairs:
        return None
    seed = {}
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column:
            raise click.UsageError(f"--seed-field: expected COLUMN=VALUE, got {pair!r}")
        seed[column] = value
    return seed


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; into a closed pipe that would print another error
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI; a user's error is one line on stderr and a non-zero exit."""
    try:
        app.main(args=argv, prog_name="synthloom", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:  # usage errors: the same one-line form as ours
        hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except SynthloomError as exc:
        rank = _rank() or "0"
        if rank == "0":
            click.echo(f"error: {exc}", err=True)
        elif not getattr(exc, "mirrored", False):  # data-parallel: an error rank 0 raises too is said there
            click.echo(f"error (rank {rank}): {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # data-parallel: another process is gone (its own message says why)
        if _rank() is None or not _is_distributed_error(exc):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        click.echo(f"error (rank {_rank()}): another process of this run stopped: {first}", err=True)
        return 1
    except OSError as exc:  # the machine said no: permissions, a full disk, a vanished file
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 1
    return 0


def _rank() -> str | None:
    """This process's rank under torchrun, or None alone."""
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        return None
    return os.environ.get("RANK", "0")


def _is_distributed_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    return isinstance(exc, getattr(dist, "DistError", ())) or "gloo" in str(exc).lower() or "nccl" in str(exc).lower()


if __name__ == "__main__":
    sys.exit(main())
