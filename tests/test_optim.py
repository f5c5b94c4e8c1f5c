"""Optimizers, parameter groups, gradient clipping, precision and the runtime checks."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthloom.config import OPTIMIZER_PARAMS, OptimConfig, validate_config
from synthloom.errors import ConfigError
from synthloom.models import LSTMLanguageModel, build_model
from synthloom.optim import build_optimizer, check_optimizer_runs, param_groups

train_mod = importlib.import_module("synthloom.train")  # the package's `train` is the function

VOCAB = 11
TINY_MODEL = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "dropout": 0.0}
CPU = torch.device("cpu")


def make_config(optim: dict | None = None, train: dict | None = None, model: dict | None = None):
    return validate_config(
        {
            "output_dir": "m",
            "data": {"path": "x.csv"},
            "model": model or TINY_MODEL,
            "optim": optim or {},
            "train": train or {},
        }
    )


def tiny_net(config) -> LSTMLanguageModel:
    return build_model(config.model, VOCAB)


def tokens(batch: int = 3, length: int = 6) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), dtype=torch.long)  # avoid padding_idx 0


def lm_loss(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits, _ = net(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())


def fake_find_spec(monkeypatch, **answers):
    """Patch importlib.util.find_spec (used by synthloom.optim and synthloom.train) so the named
    modules resolve to the given answer; every other name goes to the real find_spec."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in answers:
            return answers[name]
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def config_error(raw_optim=None, raw_train=None) -> str:
    with pytest.raises(ConfigError) as exc:
        make_config(raw_optim, raw_train)
    return str(exc.value)


# --------------------------------------------------------------------------- building optimizers

# name -> (torch class, config, expected values in every param group)
OPTIMIZERS = {
    "sgd": (
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.1, "nesterov": False},
    ),
    "adam": (
        torch.optim.Adam,
        {"lr": 0.02, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.01},
        {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-6},
    ),
    "adamw": (
        torch.optim.AdamW,
        {"lr": 0.02, "betas": [0.85, 0.9], "eps": 1e-7, "weight_decay": 0.01},
        {"lr": 0.02, "betas": (0.85, 0.9), "eps": 1e-7},
    ),
    "adagrad": (
        torch.optim.Adagrad,
        {"lr": 0.04, "eps": 1e-6, "weight_decay": 0.01},
        {"lr": 0.04, "eps": 1e-6},
    ),
    "rmsprop": (
        torch.optim.RMSprop,
        {"lr": 0.003, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True, "weight_decay": 0.01},
        {"lr": 0.003, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True},
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_build_optimizer_makes_the_torch_class_with_the_configured_hyperparameters(name):
    cls, optim, expected = OPTIMIZERS[name]
    config = make_config({"name": name, **optim})
    opt = build_optimizer(config.optim, tiny_net(config))
    assert type(opt) is cls
    for group in opt.param_groups:
        for key, value in expected.items():
            assert group[key] == pytest.approx(value), (key, group[key])
    # adamw excludes biases/embeddings by default; the others decay everything
    decays = sorted(group["weight_decay"] for group in opt.param_groups)
    assert decays == ([0.0, 0.01] if name == "adamw" else [0.01])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_real_step_changes_every_weight_and_keeps_them_finite(name):
    _, optim, _ = OPTIMIZERS[name]
    config = make_config({"name": name, **optim})
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.zero_grad()
    loss = lm_loss(net, tokens())
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    for n, p in net.named_parameters():
        assert torch.isfinite(p).all(), n
        assert not torch.equal(p, before[n]), f"{n} did not change"


def test_sgd_nesterov_with_momentum_builds_nesterov_sgd():
    config = make_config({"name": "sgd", "nesterov": True, "momentum": 0.9})
    opt = build_optimizer(config.optim, tiny_net(config))
    assert type(opt) is torch.optim.SGD
    assert opt.param_groups[0]["nesterov"] is True
    assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["dampening"] == 0.0


@pytest.mark.parametrize(
    "optim",
    [
        {"name": "sgd", "nesterov": True},  # momentum 0
        {"name": "sgd", "nesterov": True, "momentum": 0.9, "dampening": 0.1},
    ],
    ids=["momentum-0", "dampening"],
)
def test_sgd_nesterov_without_momentum_or_with_dampening_is_a_config_error(optim):
    message = config_error(optim)
    assert "optim.nesterov" in message
    assert "momentum > 0 and dampening 0" in message


# --------------------------------------------------------------------------- unused parameters

# (optimizer, key, a non-default value it does not use)
UNUSED = [
    ("adam", "momentum", 0.9),
    ("adamw", "nesterov", True),
    ("adam", "alpha", 0.5),
    ("adam", "dampening", 0.1),
    ("sgd", "betas", [0.8, 0.9]),
    ("sgd", "eps", 1e-6),
    ("sgd", "centered", True),
    ("adagrad", "centered", True),
    ("adagrad", "momentum", 0.5),
    ("adagrad", "betas", [0.5, 0.5]),
    ("rmsprop", "nesterov", True),
    ("rmsprop", "betas", [0.8, 0.9]),
    ("rmsprop", "dampening", 0.2),
    ("adamw8bit", "momentum", 0.3),
]


@pytest.mark.parametrize("name, key, value", UNUSED, ids=[f"{n}-{k}" for n, k, _ in UNUSED])
def test_a_parameter_the_optimizer_does_not_use_is_a_config_error_naming_its_users(name, key, value):
    message = config_error({"name": name, key: value})
    users = ", ".join(n for n, params in OPTIMIZER_PARAMS.items() if key in params)
    assert f"optim.{key}: {name} does not use it (used by {users})" in message
    assert name not in users.split(", ")


def test_unused_parameter_message_lists_the_users_by_name():
    message = config_error({"name": "adam", "momentum": 0.9})
    assert "used by sgd, rmsprop" in message


def test_unused_parameters_at_their_defaults_are_accepted():
    defaults = {
        "momentum": 0.0,
        "nesterov": False,
        "dampening": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "alpha": 0.99,
        "centered": False,
    }
    for name in OPTIMIZER_PARAMS:
        config = make_config({"name": name, **defaults})
        assert config.optim.name == name


@pytest.mark.parametrize("name", sorted(OPTIMIZER_PARAMS))
def test_a_dumped_config_validates_again_with_every_default_written_out(name):
    config = make_config({"name": name})
    dumped = config.model_dump(mode="json")
    assert set(OptimConfig.model_fields) <= set(dumped["optim"])  # defaults are written out
    again = validate_config(dumped)
    assert again.optim == config.optim
    assert again.model_dump(mode="json") == dumped


# --------------------------------------------------------------------------- weight decay groups


@pytest.mark.parametrize("name, resolved", [("adamw", True), ("adamw8bit", True), ("adam", False), ("sgd", False)])
def test_exclude_from_weight_decay_resolves_from_the_optimizer_when_null(name, resolved):
    assert make_config({"name": name}).optim.exclude_from_weight_decay is resolved


def test_an_explicit_exclude_from_weight_decay_is_kept():
    assert make_config({"name": "adamw", "exclude_from_weight_decay": False}).optim.exclude_from_weight_decay is False
    assert make_config({"name": "sgd", "exclude_from_weight_decay": True}).optim.exclude_from_weight_decay is True


def _names(net: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in net.named_parameters() if id(p) in ids}


def test_excluding_decays_only_the_lstm_and_head_weight_matrices():
    config = make_config({"name": "adamw", "weight_decay": 0.1}, model={**TINY_MODEL, "num_layers": 2})
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    assert len(opt.param_groups) == 2
    decayed, undecayed = opt.param_groups
    assert decayed["weight_decay"] == 0.1
    assert undecayed["weight_decay"] == 0.0
    assert _names(net, decayed) == {
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.weight_ih_l1",
        "lstm.weight_hh_l1",
        "head.weight",
    }
    assert _names(net, undecayed) == {
        "embedding.weight",
        "lstm.bias_ih_l0",
        "lstm.bias_hh_l0",
        "lstm.bias_ih_l1",
        "lstm.bias_hh_l1",
        "head.bias",
    }
    assert all(p.ndim == 2 for p in decayed["params"])


def test_groups_partition_the_trainable_parameters_without_duplicates():
    net = tiny_net(make_config())
    groups = param_groups(net, 0.1, True)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in net.parameters()}


def test_frozen_parameters_are_left_out_of_every_group():
    net = tiny_net(make_config())
    net.embedding.weight.requires_grad_(False)
    for exclude in (True, False):
        grouped = {id(p) for g in param_groups(net, 0.1, exclude) for p in g["params"]}
        assert id(net.embedding.weight) not in grouped
        assert id(net.head.weight) in grouped


def test_without_exclusion_one_group_carries_the_weight_decay():
    config = make_config({"name": "adam", "weight_decay": 0.1})
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert _names(net, opt.param_groups[0]) == {n for n, _ in net.named_parameters()}


def test_with_weight_decay_zero_there_is_one_group_even_when_excluding():
    config = make_config({"name": "adamw", "weight_decay": 0.0})
    assert config.optim.exclude_from_weight_decay is True
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 0.0
    assert len(opt.param_groups[0]["params"]) == len(list(net.parameters()))


@pytest.mark.parametrize("norm", [nn.LayerNorm(4), nn.LayerNorm((2, 4)), nn.RMSNorm((2, 4))], ids=repr)
def test_norm_layer_weights_are_not_decayed_even_when_two_dimensional(norm):
    net = nn.Sequential(nn.Linear(4, 8), norm, nn.Linear(8, 3))
    groups = param_groups(net, 0.1, True)
    decayed, undecayed = groups
    assert _names(net, decayed) == {"0.weight", "2.weight"}
    assert {"1.weight"} <= _names(net, undecayed)
    assert {"0.bias", "2.bias"} <= _names(net, undecayed)


def test_weight_decay_exclusion_leaves_excluded_weights_unchanged_under_zero_gradients():
    config = make_config({"name": "adamw", "lr": 0.1, "weight_decay": 0.5})
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    decayed, undecayed = opt.param_groups
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    params = dict(net.named_parameters())
    for n in _names(net, decayed):  # AdamW: p <- p * (1 - lr * wd), and a zero Adam update
        assert torch.allclose(params[n], before[n] * (1 - 0.1 * 0.5)), n
        assert params[n].abs().sum() < before[n].abs().sum(), n
    for n in _names(net, undecayed):
        assert torch.equal(params[n], before[n]), n


def test_without_exclusion_zero_gradient_adamw_shrinks_the_embedding_too():
    config = make_config({"name": "adamw", "lr": 0.1, "weight_decay": 0.5, "exclude_from_weight_decay": False})
    net = tiny_net(config)
    opt = build_optimizer(config.optim, net)
    before = net.embedding.weight.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(net.embedding.weight, before * 0.95)


# --------------------------------------------------------------------------- adamw8bit


def fake_bnb_machine(monkeypatch, *, cpu="AVX2", version="0.50.2", capability=(8, 0)):
    """bitsandbytes importable at `version`, a CPU with `cpu` vector extensions and, for
    device 'cuda', a (CUDA, not ROCm) GPU of compute `capability`."""
    fake_find_spec(monkeypatch, bitsandbytes=object())
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: version if name == "bitsandbytes" else real_version(name)
    )
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: cpu)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_adamw8bit_without_bitsandbytes_names_the_bnb_extra(monkeypatch, device):
    fake_find_spec(monkeypatch, bitsandbytes=None)
    config = make_config({"name": "adamw8bit"})
    with pytest.raises(ConfigError, match=r"optim\.name: adamw8bit needs bitsandbytes: .*synthloom\[bnb\]"):
        check_optimizer_runs(config.optim, torch.device(device))
    with pytest.raises(ConfigError, match=r"synthloom\[bnb\]"):
        train_mod.check_runtime(config, torch.device(device))


@pytest.mark.parametrize("cpu", ["AVX2", "AVX512"])
def test_adamw8bit_runs_on_a_cpu_with_avx2_and_a_recent_bitsandbytes(monkeypatch, cpu):
    fake_bnb_machine(monkeypatch, cpu=cpu, version="0.50.2")
    config = make_config({"name": "adamw8bit"}, {"device": "cpu"})
    assert check_optimizer_runs(config.optim, CPU) is None
    assert train_mod.check_runtime(config, CPU) is None


def test_adamw8bit_on_a_cpu_without_avx2_is_refused(monkeypatch):
    fake_bnb_machine(monkeypatch, cpu="DEFAULT")
    with pytest.raises(ConfigError, match="adamw8bit .*cannot run here: .*need a CPU with AVX2; use adamw"):
        check_optimizer_runs(make_config({"name": "adamw8bit"}).optim, CPU)


def test_adamw8bit_on_the_cpu_with_an_old_bitsandbytes_names_both_versions(monkeypatch):
    fake_bnb_machine(monkeypatch, version="0.49.1")
    with pytest.raises(ConfigError) as exc:
        check_optimizer_runs(make_config({"name": "adamw8bit"}).optim, CPU)
    assert "bitsandbytes >= 0.50.2 (found 0.49.1)" in str(exc.value)


def test_adamw8bit_on_a_gpu_below_compute_capability_6_is_refused(monkeypatch):
    fake_bnb_machine(monkeypatch, capability=(5, 2))
    with pytest.raises(ConfigError, match="Fake GPU is below compute capability 6.0"):
        check_optimizer_runs(make_config({"name": "adamw8bit"}).optim, torch.device("cuda"))


def test_adamw8bit_on_a_recent_gpu_passes_the_check(monkeypatch):
    fake_bnb_machine(monkeypatch, capability=(6, 0), cpu="DEFAULT", version="0.1.0")  # the CPU checks do not apply
    assert check_optimizer_runs(make_config({"name": "adamw8bit"}).optim, torch.device("cuda")) is None


def test_adamw8bit_on_another_device_type_is_refused(monkeypatch):
    fake_bnb_machine(monkeypatch)
    with pytest.raises(ConfigError, match="no 8-bit optimizers for mps devices"):
        check_optimizer_runs(make_config({"name": "adamw8bit"}).optim, torch.device("mps"))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_other_optimizers_never_need_bitsandbytes(monkeypatch, name):
    fake_find_spec(monkeypatch, bitsandbytes=None)
    assert check_optimizer_runs(make_config({"name": name}).optim, CPU) is None


def test_adamw8bit_with_device_cpu_is_valid_config():
    # CPU support came with bitsandbytes 0.50.2: the machine, not the config, decides (check_runtime)
    config = make_config({"name": "adamw8bit"}, {"device": "cpu"})
    assert config.optim.name == "adamw8bit"
    assert config.train.device == "cpu"


# --------------------------------------------------------------------------- precision and runtime


def test_fp16_on_device_cpu_is_a_config_time_error():
    message = config_error(None, {"precision": "fp16", "device": "cpu"})
    assert "train.precision: fp16 needs a CUDA GPU" in message


def test_fp16_on_auto_fails_check_runtime_on_cpu():
    config = make_config(train={"precision": "fp16", "device": "auto"})
    with pytest.raises(ConfigError, match="train.precision: fp16"):
        train_mod.check_runtime(config, CPU)


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_on_device_cpu_is_a_config_time_error(tf32):
    message = config_error(None, {"tf32": tf32, "device": "cpu"})
    assert "train.tf32: TF32 is a CUDA setting" in message


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_on_auto_fails_check_runtime_on_cpu(tf32):
    config = make_config(train={"tf32": tf32, "device": "auto"})
    with pytest.raises(ConfigError, match="train.tf32"):
        train_mod.check_runtime(config, CPU)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_bf16_and_fp32_on_cpu_pass_check_runtime(device):
    for precision in ("bf16", "fp32"):
        config = make_config(train={"precision": precision, "device": device})
        assert train_mod.check_runtime(config, CPU) is None


def test_tensorboard_without_the_package_names_the_extra(monkeypatch):
    fake_find_spec(monkeypatch, tensorboard=None)
    config = make_config(train={"tensorboard": True})
    with pytest.raises(ConfigError, match=r"train\.tensorboard: .*synthloom\[tensorboard\]"):
        train_mod.check_runtime(config, CPU)


def test_tensorboard_with_the_package_passes_check_runtime(monkeypatch):
    fake_find_spec(monkeypatch, tensorboard=object())
    assert train_mod.check_runtime(make_config(train={"tensorboard": True}), CPU) is None


# --------------------------------------------------------------------------- gradient clipping


def grads_params(*grads: list) -> list[torch.Tensor]:
    params = []
    for g in grads:
        p = torch.zeros(len(g), requires_grad=True)
        p.grad = torch.tensor(g, dtype=torch.float32)
        params.append(p)
    return params


def global_norm(params) -> float:
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))


def random_params(scale: float) -> list[torch.Tensor]:
    params = [torch.zeros(shape, requires_grad=True) for shape in [(4, 3), (5,), (2, 2, 2)]]
    for p in params:
        p.grad = torch.randn(p.shape) * scale
    return params


def test_clip_gradients_returns_the_global_l2_norm_before_clipping():
    params = grads_params([3.0, 0.0], [4.0], [0.0, 12.0])  # sqrt(9 + 16 + 144) = 13
    assert train_mod.clip_gradients(params, 1.0, None) == pytest.approx(13.0)


def test_clip_gradients_scales_a_larger_norm_down_to_max_norm():
    params = random_params(5.0)
    norm = global_norm(params)
    assert norm > 2.0
    before = [p.grad.clone() for p in params]
    returned = train_mod.clip_gradients(params, 2.0, None)
    assert returned == pytest.approx(norm, rel=1e-5)
    assert global_norm(params) == pytest.approx(2.0, abs=1e-5)
    for p, g in zip(params, before):  # the direction is kept
        assert torch.allclose(p.grad, g * (2.0 / norm), rtol=1e-5, atol=1e-7)


def test_clip_gradients_leaves_a_smaller_norm_unchanged():
    params = random_params(0.01)
    before = [p.grad.clone() for p in params]
    norm = global_norm(params)
    assert norm < 1.0
    assert train_mod.clip_gradients(params, 1.0, None) == pytest.approx(norm, rel=1e-5)
    for p, g in zip(params, before):
        assert torch.equal(p.grad, g)


def test_max_grad_norm_zero_leaves_gradients_unchanged_but_returns_the_norm():
    params = random_params(5.0)
    before = [p.grad.clone() for p in params]
    norm = global_norm(params)
    assert train_mod.clip_gradients(params, 0.0, None) == pytest.approx(norm, rel=1e-5)
    for p, g in zip(params, before):
        assert torch.equal(p.grad, g)


def test_clip_grad_value_clamps_each_element_and_returns_the_pre_clip_norm():
    params = random_params(3.0)
    before = [p.grad.clone() for p in params]
    norm = global_norm(params)
    assert any((g.abs() > 0.5).any() for g in before)
    returned = train_mod.clip_gradients(params, 0.0, 0.5)
    assert returned == pytest.approx(norm, rel=1e-5)
    for p, g in zip(params, before):
        assert torch.equal(p.grad, g.clamp(-0.5, 0.5))


def test_clip_grad_value_then_max_grad_norm_applies_both_and_returns_the_original_norm():
    params = grads_params([3.0, -4.0], [10.0, 0.5])  # norm sqrt(125.25)
    returned = train_mod.clip_gradients(params, 1.0, 2.0)
    assert returned == pytest.approx(math.sqrt(125.25))
    clamped = torch.tensor([2.0, -2.0, 2.0, 0.5])  # clamped to [-2, 2], then norm 1
    expected = clamped / clamped.norm()
    assert torch.allclose(torch.cat([p.grad for p in params]), expected, atol=1e-5)
    assert global_norm(params) == pytest.approx(1.0, abs=1e-5)


def test_max_grad_norm_null_means_one_or_none_under_privacy():
    assert make_config(train={"max_grad_norm": None}).train.max_grad_norm == 1.0
    assert make_config().train.max_grad_norm == 1.0
    assert make_config(train={"max_grad_norm": 0}).train.max_grad_norm == 0.0  # 0: no clipping
    private = validate_config({"output_dir": "m", "data": {"path": "x.csv"}, "privacy": {"enabled": True,
                               "noise_multiplier": 1.0}})  # fmt: skip
    assert private.train.max_grad_norm == 0.0  # DP-SGD clips each record instead


# --------------------------------------------------------------------------- Precision


def test_bf16_autocasts_a_matmul_to_bfloat16_on_cpu():
    precision = train_mod.Precision.of("bf16", CPU)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast():
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # only inside the context
    assert precision.scaler is None


def test_fp32_does_not_autocast():
    precision = train_mod.Precision.of("fp32", CPU)
    assert precision.dtype is None
    assert precision.scaler is None
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast():
        assert (a @ b).dtype == torch.float32


def test_fp16_has_a_grad_scaler():
    precision = train_mod.Precision.of("fp16", CPU)
    assert precision.dtype == torch.float16
    assert isinstance(precision.scaler, torch.amp.GradScaler)


# --------------------------------------------------------------------------- optimizer_step


def test_micro_batches_give_the_gradients_of_one_batch_normalised_over_all_tokens():
    """Two micro-batches of different token counts accumulate exactly the full batch's gradients."""
    ignore = -100  # data.IGNORE_INDEX
    inputs = tokens(4, 5)
    targets = tokens(4, 5)
    targets[0, 2:] = ignore  # uneven lengths: the first micro-batch holds fewer tokens
    targets[1, 4:] = ignore
    config = make_config({"name": "sgd", "lr": 0.1}, {"max_grad_norm": 0, "grad_accumulation_steps": 2})

    def run(micro_batches):
        torch.manual_seed(0)
        net = tiny_net(config)
        opt = build_optimizer(config.optim, net)
        stats = train_mod.optimizer_step(
            net, opt, micro_batches, CPU, config.train, train_mod.Precision.of("fp32", CPU)
        )
        return stats, [p.grad.clone() for p in net.parameters()], [p.detach().clone() for p in net.parameters()]

    whole, whole_grads, whole_params = run([(inputs, targets, None)])
    split, split_grads, split_params = run([(inputs[:2], targets[:2], None), (inputs[2:], targets[2:], None)])
    assert whole.tokens == split.tokens == int((targets != ignore).sum())
    assert split.loss_sum == pytest.approx(whole.loss_sum, rel=1e-5)
    assert split.grad_norm == pytest.approx(whole.grad_norm, rel=1e-5)
    assert split.skipped is False
    for a, b in zip(whole_grads, split_grads):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(whole_params, split_params):
        assert torch.allclose(a, b, atol=1e-6)
