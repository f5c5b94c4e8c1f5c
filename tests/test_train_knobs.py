"""The training knobs inside a real (tiny) run: the schedule the optimizer actually gets, gradient
accumulation, clipping, precision, the 8-bit optimizer, determinism and the per-step log."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthloom import ConfigError, train
from synthloom.checkpoint import WEIGHTS_FILE
from synthloom.config import validate_config
from synthloom.schedules import lr_curve, plan_steps
from synthloom.steplog import STEPS_FILE, StepLog

NO_STOP = {"enabled": False}


def steps_log(out: Path) -> list[dict]:
    """The per-step lines of steps.jsonl (the epochs' evaluation lines have no loss)."""
    return [row for row in map(json.loads, (out / STEPS_FILE).read_text().splitlines()) if "loss" in row]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_resumed_step_log_keeps_the_evaluations_its_checkpoint_holds(tmp_path):
    """An epoch's evaluation line written after its checkpoint's step, but not yet in a saved history (the
    process died in between): the resumed run drops it and writes it again; saved ones stay."""

    def run_to(step: int) -> StepLog:
        log = StepLog(tmp_path, every=1, tensorboard=False)
        for s in range(1, step + 1):
            log.add(step=s, epoch=1 + (s > 2), loss_sum=1.0, tokens=1, lr=0.1, grad_norm=1.0, seconds=0.1)
            if s % 2 == 0:
                log.end_of_epoch({"epoch": s // 2, "step": s, "loss": 1.0, "val_loss": 0.5, "epsilon": None}, s)
        return log

    log = run_to(4)
    state = log.state()
    log.close()
    lines = [json.loads(line) for line in (tmp_path / STEPS_FILE).read_text().splitlines()]
    assert [("loss" in line, line["step"]) for line in lines] == [
        (True, 1), (True, 2), (False, 2), (True, 3), (True, 4), (False, 4)
    ]  # fmt: skip
    assert lines[2] == {"step": 2, "epoch": 1, "val_loss": 0.5}  # no train loss, no empty epsilon
    resumed = StepLog(tmp_path, every=1, tensorboard=False)
    resumed.restore(state, step=4, evaluated={(1, 2)})  # checkpoint at step 4, epoch 2 not yet evaluated
    resumed.close()
    kept = [json.loads(line) for line in (tmp_path / STEPS_FILE).read_text().splitlines()]
    assert kept == lines[:5]


def test_the_optimizer_gets_the_planned_lr_at_every_step(csv_path, make_config):
    """steps.jsonl's lr is what each update used; it equals the curve `synthloom schedule` draws."""
    raw = make_config(
        csv_path,
        schedule={"name": "cosine", "warmup_steps": 3, "min_lr_ratio": 0.1},
        train={"epochs": 2, "batch_size": 16},
        early_stopping=NO_STOP,
    )
    result = train(raw, progress=False)
    logged = [row["lr"] for row in steps_log(result.output_dir)]
    config = validate_config(raw)
    expected = lr_curve(config, plan_steps(config, result.summary["records"]["train"]))
    assert len(logged) == result.steps == len(expected) == 12
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[0] < logged[2] == pytest.approx(0.01) and logged[-1] < 0.01 * 0.2  # warmup, then the decay


def test_accumulation_makes_fewer_larger_steps(csv_path, make_config):
    # 96 training records: batch 16 -> 6 micro-batches an epoch; accumulating 4 -> 2 steps (4 + 2 micro-batches)
    result = train(
        make_config(
            csv_path, train={"epochs": 2, "batch_size": 16, "grad_accumulation_steps": 4}, early_stopping=NO_STOP
        ),
        progress=False,
    )
    s = result.summary
    assert (s["micro_batches_per_epoch"], s["steps_per_epoch"], s["effective_batch_size"]) == (6, 2, 64)
    assert result.steps == s["planned_steps"] == 4
    rows = steps_log(result.output_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2]


def test_warmup_is_counted_in_steps_not_micro_batches(csv_path, make_config):
    raw = make_config(
        csv_path,
        schedule={"name": "constant", "warmup_steps": 2},
        train={"epochs": 2, "batch_size": 16, "grad_accumulation_steps": 3},
        early_stopping=NO_STOP,
    )
    lrs = [r["lr"] for r in steps_log(train(raw, progress=False).output_dir)]
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.01])  # update 1 at half the LR, update 2 at the full LR


def test_reduce_on_plateau_lowers_the_lr_in_a_real_run(csv_path, make_config):
    # an absolute threshold no epoch can beat: every epoch after the first is a plateau
    raw = make_config(
        csv_path,
        schedule={"name": "reduce_on_plateau", "patience": 0, "factor": 0.5, "threshold": 1e9, "threshold_mode": "abs"},
        train={"epochs": 4, "batch_size": 32},
        early_stopping=NO_STOP,
    )
    result = train(raw, progress=False)
    # a row's lr is the one its epoch trained with; torch reduces after the (patience + 1)-th bad epoch
    assert [row["lr"] for row in result.history] == pytest.approx([0.01, 0.01, 0.005, 0.0025])


def test_grad_norm_is_logged_before_clipping_and_clipping_bounds_the_update(csv_path, make_config):
    raw = make_config(
        csv_path,
        optim={"name": "sgd", "lr": 1.0},
        train={"max_steps": 1, "batch_size": 16, "max_grad_norm": 1e-3},
        checkpoint={"save_best": False},
        early_stopping=NO_STOP,
    )
    result = train(raw, progress=False)
    (row,) = steps_log(result.output_dir)
    assert row["grad_norm"] > 1e-2  # the norm before clipping, far above the clip
    # plain SGD with lr 1 moves the weights by exactly the clipped gradient
    torch.manual_seed(0)
    from synthloom.models import build_model

    config = validate_config(raw)
    trained = load_file(result.output_dir / WEIGHTS_FILE)
    torch.manual_seed(config.train.seed)
    initial = build_model(config.model, result.summary["vocab_size"]).state_dict()
    moved = math.sqrt(sum(float(((trained[k] - initial[k]) ** 2).sum()) for k in trained))
    assert moved == pytest.approx(1e-3, rel=1e-3)


def test_same_config_same_weights_bitwise_and_another_seed_differs(csv_path, tmp_path):
    from conftest import tiny_config

    def run(name: str, seed: int) -> str:
        raw = tiny_config(csv_path, tmp_path / name, train={"epochs": 2, "seed": seed}, model={"dropout": 0.3})
        return digest(train(raw, progress=False).output_dir / WEIGHTS_FILE)

    first = run("a", 3)
    assert run("b", 3) == first
    assert run("c", 4) != first


def test_bf16_trains_on_the_cpu_and_keeps_fp32_weights(csv_path, make_config):
    result = train(
        make_config(csv_path, train={"precision": "bf16", "epochs": 2}, early_stopping=NO_STOP), progress=False
    )
    weights = load_file(result.output_dir / WEIGHTS_FILE)
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert result.summary["precision"] == "bf16"
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_fp16_without_a_gpu_is_refused_before_any_work(csv_path, make_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, where fp16 is allowed")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        train(make_config(csv_path, train={"precision": "fp16"}), progress=False)
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model.partial-*"))


def test_a_warmup_longer_than_the_run_is_refused_before_any_work(csv_path, make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps: a warmup of 50 step\(s\).*12 step\(s\)"):
        train(make_config(csv_path, schedule={"warmup_steps": 50}), progress=False)
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model.partial-*"))


def test_adamw8bit_trains_on_the_cpu(csv_path, make_config):
    raw = make_config(csv_path, optim={"name": "adamw8bit", "lr": 0.01, "weight_decay": 0.01}, early_stopping=NO_STOP)
    result = train(raw, progress=False)
    weights = load_file(result.output_dir / WEIGHTS_FILE)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_logging_steps_averages_over_the_window(csv_path, make_config):
    result = train(
        make_config(csv_path, train={"epochs": 2, "logging_steps": 4}, early_stopping=NO_STOP), progress=False
    )
    rows = steps_log(result.output_dir)
    assert [r["step"] for r in rows] == [4, 8, 12]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["tokens_per_second"] > 0
        assert r["skipped_steps"] == 0


def test_tensorboard_gets_the_same_values(csv_path, make_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(make_config(csv_path, train={"epochs": 1, "tensorboard": True}), progress=False)
    events = EventAccumulator(str(result.output_dir / "tensorboard"))
    events.Reload()
    logged = steps_log(result.output_dir)
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in logged]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in logged], rel=1e-6)


def test_under_bf16_the_lstm_recurrence_stays_fp32_and_the_head_runs_bf16():
    """bf16 loses the LSTM's cell state along a record (measured; see the model), so only the head is bf16."""
    from synthloom.config import LSTMConfig
    from synthloom.models import build_model

    net = build_model(LSTMConfig(embedding_dim=8, hidden_size=16, num_layers=2, dropout=0.0), 20).eval()
    tokens = torch.randint(3, 20, (4, 30))
    logits32, (h32, c32) = net(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16, (h16, c16) = net(tokens)
    assert logits16.dtype == torch.bfloat16 and logits32.dtype == torch.float32
    assert h16.dtype == c16.dtype == torch.float32
    assert torch.equal(h16, h32) and torch.equal(c16, c32)  # the recurrence is the fp32 one, exactly
    assert torch.allclose(logits16.float(), logits32, atol=0.05)


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_of_real_records_equal_one_batch_of_k_times_n(k):
    """Records of unequal length, collated per micro-batch (each its own padding width): the
    accumulated gradients and the updated weights equal one batch holding all of them."""
    import importlib
    import random

    from synthloom.config import validate_config
    from synthloom.data import collate
    from synthloom.models import build_model
    from synthloom.optim import build_optimizer
    from synthloom.tokenizers import EOR_ID, PAD_ID

    fit = importlib.import_module("synthloom.train")
    rng = random.Random(0)
    records = [[rng.randrange(3, 30) for _ in range(rng.randint(1, 25))] for _ in range(8)]
    config = validate_config(
        {
            "output_dir": "m",
            "data": {"path": "x.txt"},
            "model": {"embedding_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.0},
            "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
            "train": {"grad_accumulation_steps": k},
        }
    )

    def step(batches):
        torch.manual_seed(0)
        net = build_model(config.model, 30)
        optimizer = build_optimizer(config.optim, net)
        stats = fit.optimizer_step(
            net, optimizer, batches, torch.device("cpu"), config.train, fit.Precision.of("fp32", torch.device("cpu"))
        )
        return stats, {n: p.grad.clone() for n, p in net.named_parameters()}, net.state_dict()

    n = len(records) // k
    whole, whole_grads, whole_weights = step([(*collate(records, EOR_ID, PAD_ID), None)])
    parts, part_grads, part_weights = step(
        [(*collate(records[i : i + n], EOR_ID, PAD_ID), None) for i in range(0, len(records), n)]
    )
    assert parts.tokens == whole.tokens == sum(len(r) + 1 for r in records)
    assert parts.loss_sum == pytest.approx(whole.loss_sum, rel=1e-6)
    assert parts.grad_norm == pytest.approx(whole.grad_norm, rel=1e-5)
    for name in whole_grads:
        torch.testing.assert_close(part_grads[name], whole_grads[name], rtol=1e-5, atol=1e-7)
        # Adam divides by sqrt(v): a float-rounding difference in a tiny gradient moves a weight by
        # up to ~1e-6 (0.01% of one lr=0.01 update)
        torch.testing.assert_close(part_weights[name], whole_weights[name], rtol=1e-5, atol=1e-5)
