"""Data-parallel training (torchrun, DDP over gloo): 2 CPU processes against 1, as CI runs them.

Each multi-process test starts `synthloom train --nproc 2` (torch's elastic launcher, as torchrun) in a
subprocess and reads what the run wrote."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file

from synthloom.config import validate_config
from synthloom.distributed import ALONE
from synthloom.schedules import plan_steps, resolve_for_records

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

CALLBACKS = '''
import os, signal

def stop_on_rank_1(state):
    if os.environ.get("RANK") == "1" and state.epoch == 1:
        state.stop = True  # only rank 1 asks: every rank must stop

def sigterm_rank_1(state):
    if os.environ.get("RANK") == "1" and state.epoch == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler stopping one process
'''


def write_table(path: Path, rows: int) -> Path:
    """A table where state follows city and age depends on the name."""
    rng = random.Random(3)
    cities = [("Boston", "MA"), ("Denver", "CO"), ("Austin", "TX"), ("Seattle", "WA")]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "age", "city", "state"])
        for _ in range(rows):
            city, state = rng.choice(cities)
            name = rng.choice(["ann", "bob", "cy", "dee"])
            w.writerow([name, rng.randint(20, 40) + (20 if name == "bob" else 0), city, state])
    return path


def config_file(tmp_path: Path, name: str, table: Path, **sections) -> Path:
    base = {
        "tokenizer": {"kind": "fields"},
        "data": {"format": "csv", "validation_split": 0.2},
        "schedule": {"name": "constant"},
        "train": {"epochs": 2, "seed": 0},
    }
    for key, values in sections.items():
        base[key] = base.get(key, {}) | values
    cfg = tiny_config(table, tmp_path / name, **base)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_train(config: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(config.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "synthloom", "train", str(config), "--no-progress", *args]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# --------------------------------------------------------------------------- planning (one process)


def test_a_step_takes_a_micro_batch_from_every_process(tmp_path):
    config = validate_config(tiny_config(tmp_path / "x.csv", tmp_path / "m", train={"batch_size": 8, "epochs": 3}))
    one, two = plan_steps(config, 100), plan_steps(config, 100, world=2)
    assert (one.steps_per_epoch, two.steps_per_epoch) == (13, 7)  # ceil(100 / 8), ceil(100 / 16)
    assert two.total_steps == 21 and two.world_size == 2
    assert "8 x 2 processes per step" in two.describe(config)


def test_an_automatic_batch_size_is_shared_among_the_processes(tmp_path):
    config = validate_config(tiny_config(tmp_path / "x.csv", tmp_path / "m", train={"batch_size": None}))
    alone = resolve_for_records(config, 10_000).train.batch_size
    shared = resolve_for_records(config, 10_000, world=2).train.batch_size
    assert shared == -(-alone // 2)
    assert plan_steps(config, 10_000).steps_per_epoch == plan_steps(config, 10_000, world=2).steps_per_epoch


def test_one_process_alone_needs_no_process_group():
    assert ALONE.sum([1.5, 2]) == [1.5, 2] and ALONE.any(True) and not ALONE.any(False)
    assert ALONE.broadcast({"a": 1}) == {"a": 1} and ALONE.gather(3) == [3]
    assert ALONE.on_main(lambda: 7) == 7 and not torch.distributed.is_initialized()


def test_nproc_under_torchrun_is_refused(tmp_path):
    config = config_file(tmp_path, "m", write_table(tmp_path / "t.csv", 50))
    env = dict(os.environ, WORLD_SIZE="2")
    proc = subprocess.run(
        [sys.executable, "-m", "synthloom", "train", str(config), "--nproc", "2"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "already runs under torchrun" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 2 processes against 1


def test_two_processes_give_the_weights_of_one_with_twice_the_batch(tmp_path):
    # 101 rows -> 81 training rows: the last batch of 16 holds one record, so rank 1 has none that step;
    # accumulation 2: the first micro-batch of a step runs under no_sync
    data = write_table(tmp_path / "t.csv", 101)
    one = config_file(tmp_path, "one", data, train={"batch_size": 16, "grad_accumulation_steps": 2})
    two = config_file(tmp_path, "two", data, train={"batch_size": 8, "grad_accumulation_steps": 2})
    ok(run_train(one, 1))
    p2 = ok(run_train(two, 2))
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-4

    h1 = (tmp_path / "one" / "history.csv").read_text().splitlines()
    h2 = (tmp_path / "two" / "history.csv").read_text().splitlines()
    assert len(h1) == len(h2) == 3  # header + 2 epochs, written once
    s1, s2 = (json.loads((tmp_path / m / "summary.json").read_text()) for m in ("one", "two"))
    assert s2["records"]["train"] == 81
    assert s1["steps"] == s2["steps"] == 6  # ceil(ceil(81 / 16) / 2) = 3 steps an epoch, either way
    assert (s2["processes"], s2["effective_batch_size"]) == (2, s1["effective_batch_size"]) == (2, 32)
    # rank 0 alone writes: the same files, one log line per logged step, one report on stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    lines = (tmp_path / "two" / "steps.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "steps.jsonl").read_text().splitlines())
    assert p2.stderr.count("trained 2 epoch(s)") == 1 and p2.stderr.count("epoch 2: loss") == 1
    assert not list(tmp_path.glob(".two*")), "no work dir left behind"
    losses = [row["loss"] for row in map(json.loads, lines) if "loss" in row]  # (not the epochs' evaluation lines)
    assert losses == pytest.approx([row["loss"] for row in map(json.loads, (tmp_path / "one" / "steps.jsonl").read_text().splitlines()) if "loss" in row], rel=1e-4)  # noqa: E501  (token losses summed over both ranks)


@pytest.mark.parametrize("poisson", [True, False], ids=["poisson", "fixed-batches"])
def test_differential_privacy_on_two_processes_counts_epsilon_once(tmp_path, poisson):
    data = write_table(tmp_path / "t.csv", 122)
    private = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 7, "max_grad_norm": 1.0, "encoding_epsilon": 5.0}
    private["poisson_sampling"] = poisson  # fixed batches: each rank clips its own share, never all of them
    bounds = {"column_bounds": {"age": [18, 70]}}
    one = config_file(tmp_path, "one", data, train={"batch_size": 16}, privacy=private, data=bounds)
    two = config_file(tmp_path, "two", data, train={"batch_size": 8}, privacy=private, data=bounds)
    ok(run_train(one, 1)), ok(run_train(two, 2))
    # the same Poisson draws over all records, the noise added once (on rank 0), the same sum and scale
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-5
    r1, r2 = (json.loads((tmp_path / m / "privacy.json").read_text()) for m in ("one", "two"))
    assert r2["steps"] == r1["steps"] and r2["epsilon"] == pytest.approx(r1["epsilon"], rel=1e-9)
    assert r2["epsilon"] > r2["encoding"]["epsilon"] > 0


def test_a_stop_one_rank_asks_for_stops_every_rank(tmp_path):
    data = write_table(tmp_path / "t.csv", 60)
    (tmp_path / "dp_callbacks.py").write_text(CALLBACKS)
    config = config_file(
        tmp_path, "m", data, train={"batch_size": 8, "epochs": 4, "epoch_callback": "dp_callbacks:stop_on_rank_1"}
    )
    proc = ok(run_train(config, 2))
    assert "stopped by callback" in proc.stderr
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["epochs"] == 1


def test_sigterm_on_one_rank_stops_all_and_the_run_resumes_as_if_never_stopped(tmp_path):
    data = write_table(tmp_path / "t.csv", 60)
    (tmp_path / "dp_callbacks.py").write_text(CALLBACKS)
    train = {"batch_size": 8, "epochs": 3}
    stopped = config_file(tmp_path, "m", data, train=train | {"epoch_callback": "dp_callbacks:sigterm_rank_1"})
    whole = config_file(tmp_path, "whole", data, train=train)
    proc = ok(run_train(stopped, 2))
    assert "stopped by interrupted" in proc.stderr
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["epochs"] == 1
    resumed = config_file(tmp_path, "m", data, train=train)  # the callback left out: a change resume allows
    ok(run_train(resumed, 2, "--resume"))
    ok(run_train(whole, 2))
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["epochs"] == 3
    assert max_difference(weights(tmp_path / "m"), weights(tmp_path / "whole")) < 1e-6


def test_an_error_is_said_once_without_a_traceback(tmp_path):
    data = write_table(tmp_path / "t.csv", 60)
    private = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 1}  # age has no public bounds
    config = config_file(tmp_path, "m", data, privacy=private)
    proc = run_train(config, 2)
    assert proc.returncode != 0
    assert proc.stderr.count("error: column 'age'") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "m").exists()
