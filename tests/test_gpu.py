"""The training knobs that need a CUDA GPU: fp16 with its grad scaler, bf16, TF32, adamw8bit, DP-SGD.
Skipped where there is no GPU (CI); run on one with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import importlib
import importlib.util
import math

import pytest
import torch
from safetensors.torch import load_file

from synthloom import train
from synthloom.checkpoint import WEIGHTS_FILE
from synthloom.config import validate_config
from synthloom.models import build_model
from synthloom.optim import build_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NO_STOP = {"enabled": False}


def finite_fp32(out) -> bool:
    weights = load_file(out / WEIGHTS_FILE)
    return all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in weights.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_on_the_gpu(precision, csv_path, make_config):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    raw = make_config(csv_path, train={"device": "cuda", "precision": precision, "epochs": 3}, early_stopping=NO_STOP)
    result = train(raw, progress=False)
    assert result.summary["device"].startswith("cuda") and result.summary["precision"] == precision
    assert finite_fp32(result.output_dir)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_fp16_skips_a_step_whose_gradients_overflow_and_goes_on():
    """The grad scaler skips an update with inf gradients (weights untouched) and the next one runs."""
    fit = importlib.import_module("synthloom.train")
    config = validate_config(
        {
            "output_dir": "m",
            "data": {"path": "x.csv"},
            "model": {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
            "train": {"device": "cuda", "precision": "fp16"},
        }
    )
    device = torch.device("cuda")
    net = build_model(config.model, 12).to(device)
    optimizer = build_optimizer(config.optim, net)
    precision = fit.Precision.of("fp16", device)
    batch = [(torch.randint(3, 12, (4, 6)), torch.randint(3, 12, (4, 6)), None)]
    poison = net.head.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = fit.optimizer_step(net, optimizer, batch, device, config.train, precision)
    assert stats.skipped and not math.isfinite(stats.grad_norm)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    poison.remove()
    stats = fit.optimizer_step(net, optimizer, batch, device, config.train, precision)
    assert not stats.skipped and math.isfinite(stats.grad_norm)
    assert not torch.equal(before["head.weight"], net.state_dict()["head.weight"])


def test_tf32_is_set_for_the_run_and_restored(csv_path, make_config):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    seen = []
    train(
        make_config(csv_path, train={"device": "cuda", "tf32": not before[0], "epochs": 1}),
        callback=lambda s: seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)),
        progress=False,
    )
    assert seen == [(not before[0], not before[0])]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="the 'bnb' extra")
def test_adamw8bit_trains_on_the_gpu(csv_path, make_config):
    raw = make_config(
        csv_path,
        optim={"name": "adamw8bit", "lr": 0.01, "weight_decay": 0.01},
        train={"device": "cuda", "epochs": 3},
        early_stopping=NO_STOP,
    )
    result = train(raw, progress=False)
    assert finite_fp32(result.output_dir)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dp_sgd_trains_on_the_gpu(precision, csv_path, make_config):
    """Per-record gradients, noise drawn on the GPU, the accountant: a private run as on the CPU."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    raw = make_config(
        csv_path,
        train={"device": "cuda", "precision": precision, "epochs": 3},
        privacy={"enabled": True, "noise_multiplier": 0.5},
    )
    result = train(raw, progress=False)
    assert result.summary["device"].startswith("cuda") and finite_fp32(result.output_dir)
    assert 0 < result.summary["privacy"]["epsilon"] < math.inf
    assert result.history[-1]["loss"] < result.history[0]["loss"]
