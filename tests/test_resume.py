"""Checkpoints and resuming: a killed run continues to the very weights of an uninterrupted one;
what may change on resume; the lock; rotation; NaN guards; SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from synthloom import ConfigError, TrainingError, train
from synthloom.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    LOCK_FILE,
    WEIGHTS_FILE,
    latest_checkpoint,
    load_checkpoint,
)

SCRIPT = Path(sys.executable).parent / "synthloom"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_config(csv_path: Path, out: Path, **sections) -> dict:
    """Dropout, a warmup + cosine schedule and accumulation: every piece of state a resume must restore."""
    base = {
        "model": {"dropout": 0.2},
        "schedule": {"name": "cosine", "warmup_steps": 4},
        # the bitwise guarantee is the CPU's (cuDNN kernels are not all deterministic)
        "train": {
            "epochs": 4,
            "batch_size": 8,
            "grad_accumulation_steps": 2,
            "num_threads": 1,
            "seed": 5,
            "device": "cpu",
        },
        "early_stopping": {"enabled": False},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return tiny_config(csv_path, out, **base)


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


# -- exact resume


def test_killed_between_the_best_checkpoint_and_its_copy_then_killed_again_still_resumes(
    csv_path, tmp_path, monkeypatch
):
    """An epoch that is the best so far writes its checkpoint, then copies it to checkpoints/best.
    Killed between the two, the resume starts from that checkpoint and must make the copy:
    killed again mid-way through the next epoch, the next resume needs it (the random-kill
    test above hit this once in a while: 'best does not hold epoch 2's best weights')."""
    import importlib

    loop_module = importlib.import_module("synthloom.train.loop")
    sections = {"train": {"epochs": 4}, "checkpoint": {"save_best": True, "every_steps": 1}}
    reference = train(run_config(csv_path, tmp_path / "ref", **sections), progress=False)
    config = run_config(csv_path, tmp_path / "out", **sections)

    real_copy, real_save = loop_module.copy_checkpoint, loop_module.save_checkpoint
    copies = []

    def killed_before_second_copy(path, name):
        copies.append(path.name)
        if len(copies) == 2:  # epoch 2's checkpoint is written; its copy to best never happens
            raise SystemExit("killed")
        real_copy(path, name)

    monkeypatch.setattr(loop_module, "copy_checkpoint", killed_before_second_copy)
    with pytest.raises(SystemExit):
        train(config, progress=False)
    monkeypatch.setattr(loop_module, "copy_checkpoint", real_copy)

    saves = []

    def killed_at_second_save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # one step into epoch 3 is checkpointed, the next is not
            raise SystemExit("killed")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop_module, "save_checkpoint", killed_at_second_save)
    with pytest.raises(SystemExit):
        train(config, progress=False, resume=True)
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    last = latest_checkpoint(work_dir(tmp_path / "out"))
    state = load_checkpoint(last)[1]
    assert not state["epoch_done"] and state["epoch"] == 3  # mid-way through the epoch after the best one

    result = train(config, progress=False, resume=True)
    assert digest(result.output_dir / WEIGHTS_FILE) == digest(reference.output_dir / WEIGHTS_FILE)


@pytest.mark.slow  # real processes, killed at random moments: CI runs it; a quick run: pytest -m "not slow"
def test_a_run_killed_at_random_points_resumes_to_the_same_weights(csv_path, tmp_path):
    """SIGKILL a real training process several times; each time continue with --resume.
    The final weights are bitwise those of the same run never interrupted (CPU)."""
    long = {"epochs": 24}  # 144 steps: long enough that a process rarely finishes between two kills
    reference = train(run_config(csv_path, tmp_path / "ref", train=long), progress=False)
    expected = digest(reference.output_dir / WEIGHTS_FILE)

    out = tmp_path / "killed"
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(run_config(csv_path, out, train=long, checkpoint={"every_steps": 1})))
    rng = random.Random(0)
    kills, seen = 0, []
    for attempt in range(12):
        last = latest_checkpoint(work_dir(out))
        cmd = [str(SCRIPT), "train", str(config), "--no-progress", "-q"] + (["--resume"] if last else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < 4:
            # once this process has made progress (a newer checkpoint), kill it at a random moment after
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline:
                now = latest_checkpoint(work_dir(out))
                if now is not None and (last is None or now.name > last.name):
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if not work_dir(out).exists():  # it had just published: the run is complete
                    break
                kills += 1
                seen.append(getattr(latest_checkpoint(work_dir(out)), "name", None))
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        break
    assert kills >= 3, f"killed only {kills} time(s) before the run ended ({seen}); lengthen the run"
    assert digest(out / WEIGHTS_FILE) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == reference.steps and summary["resumed"] is True
    logged = [r for r in map(json.loads, (out / "steps.jsonl").read_text().splitlines())]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, reference.steps + 1))  # each step once, in order
    assert [r["epoch"] for r in logged if "loss" not in r] == list(range(1, reference.epochs + 1))  # and each epoch's
    assert not work_dir(out).exists()


def test_an_interrupted_run_resumed_in_process_matches_and_history_is_whole(csv_path, tmp_path):
    reference = train(run_config(csv_path, tmp_path / "ref"), progress=False)
    out = tmp_path / "model"

    def stop_after_epoch_2(state):
        if state.epoch == 2:
            state.stop = True

    first = train(run_config(csv_path, out), callback=stop_after_epoch_2, progress=False)
    assert first.stopped_by == "callback" and first.epochs == 2
    resumed = train(run_config(csv_path, out), resume=True, progress=False)
    assert resumed.steps == reference.steps and resumed.epochs == reference.epochs
    assert digest(out / WEIGHTS_FILE) == digest(reference.output_dir / WEIGHTS_FILE)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]


def test_resume_mid_epoch_after_a_time_limit(csv_path, tmp_path):
    """A stop inside an epoch checkpoints that step boundary; resuming finishes the epoch."""
    constant = {"name": "constant", "warmup_steps": 4}  # the same LRs whatever the run's length
    reference = train(run_config(csv_path, tmp_path / "ref", schedule=constant), progress=False)
    out = tmp_path / "model"
    first = train(run_config(csv_path, out, train={"max_steps": 7}, schedule=constant), progress=False)
    assert first.steps == 7  # 6 steps an epoch: it stopped inside epoch 2
    state = load_checkpoint(latest_checkpoint(out))[1]
    assert (state["step"], state["epoch"], state["epoch_done"]) == (7, 2, False)
    resumed = train(run_config(csv_path, out, schedule=constant), resume=True, progress=False)  # max_steps: safe
    assert digest(out / WEIGHTS_FILE) == digest(reference.output_dir / WEIGHTS_FILE)
    assert resumed.steps == reference.steps


# -- what a resume may change


def test_resume_refuses_changes_to_the_model_data_or_optimisation_and_lists_them(csv_path, tmp_path):
    out = tmp_path / "model"
    train(run_config(csv_path, out, train={"epochs": 1}), progress=False)
    changed = run_config(csv_path, out, train={"epochs": 1, "batch_size": 4}, model={"hidden_size": 8})
    with pytest.raises(ConfigError) as err:
        train(changed, resume=True, progress=False)
    assert "model.hidden_size: 32 -> 8" in str(err.value) and "train.batch_size: 8 -> 4" in str(err.value)


def test_resume_with_more_epochs_continues_a_finished_model(csv_path, tmp_path, caplog):
    out = tmp_path / "model"
    train(run_config(csv_path, out, train={"epochs": 2}, schedule={"name": "constant"}), progress=False)
    before = digest(out / WEIGHTS_FILE)
    caplog.set_level("INFO", logger="synthloom")
    longer = train(
        run_config(csv_path, out, train={"epochs": 3}, schedule={"name": "constant"}), resume=True, progress=False
    )
    assert "resume: train.epochs: 2 -> 3" in caplog.text
    assert longer.epochs == 3 and longer.steps == 18 and [r["epoch"] for r in longer.history] == [1, 2, 3]
    assert digest(out / WEIGHTS_FILE) != before
    reference = train(
        run_config(csv_path, tmp_path / "ref", train={"epochs": 3}, schedule={"name": "constant"}), progress=False
    )
    assert digest(out / WEIGHTS_FILE) == digest(reference.output_dir / WEIGHTS_FILE)  # constant LR: no re-plan


def test_resume_with_nothing_to_resume_says_so(csv_path, tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(run_config(csv_path, tmp_path / "model"), resume=True, progress=False)


# -- leftovers, the lock


def test_an_interrupted_runs_checkpoints_are_not_silently_discarded(csv_path, tmp_path):
    out = tmp_path / "model"
    work = work_dir(out)
    train(run_config(csv_path, tmp_path / "ref", train={"epochs": 1}), progress=False)
    (tmp_path / "ref").rename(work)  # a work dir holding checkpoints, as a killed run leaves it
    with pytest.raises(ConfigError, match="--resume"):
        train(run_config(csv_path, out), progress=False)
    assert latest_checkpoint(work) is not None
    result = train(run_config(csv_path, out, overwrite=True), progress=False)  # --overwrite starts over
    assert result.steps == 24 and not work.exists()


def test_a_second_training_into_the_same_dir_fails_fast(csv_path, tmp_path):
    out = tmp_path / "model"
    work = work_dir(out)
    work.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": holder.pid, "host": os.uname().nodename, "started": "now"}
        (work / LOCK_FILE).write_text(json.dumps(owner))
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=f"another training \\(pid {holder.pid}"):
            train(run_config(csv_path, out), progress=False)
        assert time.perf_counter() - start < 5
        assert (work / LOCK_FILE).is_file()  # the other run's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(csv_path, tmp_path):
    out = tmp_path / "model"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    work = work_dir(out)
    work.mkdir()
    (work / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    result = train(run_config(csv_path, out, train={"epochs": 1}), progress=False)
    assert result.steps == 6 and not (out / LOCK_FILE).exists()


# -- rotation, best


def test_keep_last_rotates_step_checkpoints_but_never_the_best(csv_path, tmp_path):
    config = run_config(
        csv_path,
        tmp_path / "model",
        train={"epochs": 4, "batch_size": 16, "grad_accumulation_steps": 1},
        checkpoint={"every_steps": 2, "keep_last": 2},
        optim={"lr": 0.05},
    )
    result = train(config, progress=False)
    names = sorted(p.name for p in (result.output_dir / CHECKPOINTS_DIR).iterdir())
    assert names == [BEST_CHECKPOINT, "step-00000022", "step-00000024"]
    best_state = load_checkpoint(result.output_dir / CHECKPOINTS_DIR / BEST_CHECKPOINT)[1]
    assert best_state["epoch"] == result.best_epoch and best_state["epoch_done"]
    best_weights = load_checkpoint(result.output_dir / CHECKPOINTS_DIR / BEST_CHECKPOINT)[0]
    from safetensors.torch import load_file

    final = load_file(result.output_dir / WEIGHTS_FILE)  # save_best: the model dir holds the best weights
    assert all(bool((best_weights[k] == final[k]).all()) for k in final)


# -- NaN / inf


def _poison_after(steps: int):
    """A callable for monkeypatching F.cross_entropy that returns NaN after `steps` calls."""
    import torch.nn.functional as F

    real = F.cross_entropy
    calls = {"n": 0}

    def cross_entropy(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > steps else loss

    return cross_entropy


def test_a_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(csv_path, tmp_path, monkeypatch):
    fit = __import__("importlib").import_module("synthloom.train.step")
    # 12 micro-batches of 8 records make 6 steps an epoch; training calls cross_entropy once per micro-batch
    # (evaluation calls it too, after epoch 1: 3 validation batches)
    monkeypatch.setattr(fit.F, "cross_entropy", _poison_after(12 + 3 + 4))
    out = tmp_path / "model"
    with pytest.raises(TrainingError) as err:
        train(run_config(csv_path, out), progress=False)
    message = str(err.value)
    assert "at step 9 (epoch 2)" in message and "step-00000006" in message and "--resume" in message
    assert not out.exists()
    weights, state = load_checkpoint(latest_checkpoint(work_dir(out)))
    assert state["step"] == 6 and all(bool(t.isfinite().all()) for t in weights.values())


def test_nonfinite_loss_skip_counts_and_goes_on(csv_path, tmp_path, monkeypatch):
    fit = __import__("importlib").import_module("synthloom.train.step")
    real = fit.F.cross_entropy
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (3, 4) else loss  # the 2nd step's two micro-batches

    monkeypatch.setattr(fit.F, "cross_entropy", sometimes_nan)
    result = train(run_config(csv_path, tmp_path / "model", train={"nonfinite_loss": "skip"}), progress=False)
    assert result.summary["nonfinite_steps"] == 1 and result.steps == 24
    from safetensors.torch import load_file

    assert all(bool(t.isfinite().all()) for t in load_file(result.output_dir / WEIGHTS_FILE).values())


# -- SIGTERM


def test_sigterm_saves_a_checkpoint_and_writes_the_model_dir(csv_path, tmp_path):
    out = tmp_path / "model"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(run_config(csv_path, out, train={"epochs": 200})))
    proc = subprocess.Popen(
        [str(SCRIPT), "train", str(config), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while latest_checkpoint(work_dir(out)) is None and time.time() < deadline:  # training is under way
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "interrupted"
    state = load_checkpoint(latest_checkpoint(out))[1]
    assert state["step"] == summary["steps"]  # the checkpoint is at the step where it stopped


def test_a_second_ctrl_c_aborts_at_once_and_leaves_the_last_checkpoint(csv_path, tmp_path):
    out = tmp_path / "model"

    def press_ctrl_c_twice(state):
        if state.epoch == 2:  # epoch 1's checkpoint exists; epoch 2's is written after the callbacks
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where the tests run as a background job)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(csv_path, out), callback=press_ctrl_c_twice, progress=False)
    assert not out.exists()
    last = latest_checkpoint(work_dir(out))
    assert last.name == "step-00000006" and load_checkpoint(last)[1]["epoch_done"]
    assert not (work_dir(out) / LOCK_FILE).exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    resumed = train(run_config(csv_path, out), resume=True, progress=False)
    assert resumed.steps == 24 and [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
