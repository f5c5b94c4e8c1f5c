"""Optimizers, built from `config.optim`.

    optimizer = build_optimizer(config.optim, net)

Weight decay goes to weight matrices only when `optim.exclude_from_weight_decay` is on
(the default for adamw): biases, norm weights and embeddings form a second parameter
group with weight decay 0. adamw8bit is bitsandbytes' AdamW8bit (the `bnb` extra): 8-bit
optimizer states on CUDA (compute capability 6.0+), ROCm, Intel XPU, or an x86 CPU with
AVX2 (bitsandbytes >= 0.50.2); tensors under 4,096 elements keep 32-bit states.
"""

from __future__ import annotations

import importlib.util
import re

import torch
from torch import nn

from .config import OptimConfig
from .errors import ConfigError

NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, getattr(nn, "RMSNorm", nn.LayerNorm))


def build_optimizer(cfg: OptimConfig, net: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(net, cfg.weight_decay, bool(cfg.exclude_from_weight_decay))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum, centered=cfg.centered
        )
    raise AssertionError(f"unhandled optimizer {cfg.name!r}")  # the config's Literal makes this unreachable


def param_groups(net: nn.Module, weight_decay: float, exclude: bool) -> list[dict]:
    """One group with `weight_decay`, or, with `exclude`, decayed weight matrices and an
    undecayed group of biases, norm weights and embeddings (each group only if non-empty)."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not exclude or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    skip = set()
    for module in net.modules():
        if isinstance(module, (nn.Embedding, *NORM_LAYERS)):
            skip.update(id(p) for p in module.parameters(recurse=False))
    for name, p in net.named_parameters():
        if p.ndim < 2 or name.rsplit(".", 1)[-1].startswith("bias"):
            skip.add(id(p))
    decay = [p for p in params if id(p) not in skip]
    no_decay = [p for p in params if id(p) in skip]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


BNB_MIN_VERSION = (0, 50, 2)  # the first with 8-bit optimizers on the CPU


def check_optimizer_runs(cfg: OptimConfig, device: torch.device) -> None:
    """Refuse, before any work, an optimizer this machine cannot run."""
    if cfg.name != "adamw8bit":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optim.name: adamw8bit needs bitsandbytes: pip install 'synthloom[bnb]'; or use adamw")
    problem = _bnb_device_problem(device)
    if problem:
        raise ConfigError(f"optim.name: adamw8bit (bitsandbytes) cannot run here: {problem}; use adamw")


def _bnb_device_problem(device: torch.device) -> str | None:
    if device.type == "cuda":
        if torch.version.hip is None and torch.cuda.get_device_capability(device) < (6, 0):
            return f"{torch.cuda.get_device_name(device)} is below compute capability 6.0"
        return None
    if device.type == "xpu":
        return None
    if device.type != "cpu":
        return f"bitsandbytes has no 8-bit optimizers for {device.type} devices"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return "its 8-bit optimizers need a CPU with AVX2"
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("bitsandbytes")
    except PackageNotFoundError:  # importable without an install record (vendored): trust it
        return None
    # leading digits of each part: 0.50.3rc1 -> (0, 50, 3), 0.51rc1 -> (0, 51)
    parts = tuple(int(m.group()) for m in (re.match(r"\d+", x) for x in found.split(".")[:3]) if m)
    if parts < BNB_MIN_VERSION:
        wanted = ".".join(map(str, BNB_MIN_VERSION))
        return f"8-bit optimizers on the CPU need bitsandbytes >= {wanted} (found {found})"
    return None
