"""LoRA: low-rank adapters on a model's linear layers; only the adapters train.

    names = add_lora(net, config.lora)          # the chosen nn.Linear -> LoRALinear, everything else frozen
    plain = merged_state(net.state_dict())      # W + B @ A * alpha / rank, under the plain model's names
    base, adapter = split_state(net.state_dict())   # or kept apart (adapter.safetensors)

LoRALinear(x) = base(x) + B(A(dropout(x))) * alpha / rank, with A (rank, in) initialised as nn.Linear
is (Kaiming uniform) and B (out, rank) zero, so a fresh adapter changes nothing (Hu et al. 2021). A and
B are nn.Linear layers of their own, so Opacus' linear grad sampler gives their per-record gradients and
DP-SGD clips and noises only them: the frozen weights need none.

Written here rather than taken from PEFT: the module is these few lines; PEFT would bring transformers
and accelerate as dependencies, and its adapters would have to be re-checked against our DP path and
our model-dir format (merged weights under the plain names, or adapter.safetensors beside them).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ADAPTER_FILE = "adapter.safetensors"


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.in_features, self.out_features = base.in_features, base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(self.dropout(x))) * self.scale

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight W + B A s (what slices of a head read; differentiable in A and B)."""
        return self.base.weight + (self.lora_b.weight @ self.lora_a.weight) * self.scale

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias


def lora_targets(net: nn.Module, targets: list[str] | None) -> list[str]:
    """Dotted names of the nn.Linear layers whose own name (the last part) is in `targets`
    (None: the model's default_lora_targets)."""
    wanted = set(targets if targets is not None else getattr(net, "default_lora_targets", ()))
    return [name for name, m in net.named_modules() if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in wanted]


def linear_names(net: nn.Module) -> list[str]:
    """The names target_modules may use: the last part of each nn.Linear's dotted name."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in net.named_modules() if isinstance(m, nn.Linear)})


def add_lora(net: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str] | None) -> list[str]:
    """Replace the target linear layers with LoRALinear, in place, and freeze every other parameter.
    Returns the adapted layers' names."""
    names = lora_targets(net, targets)
    for p in net.parameters():
        p.requires_grad_(False)
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, attr, LoRALinear(getattr(owner, attr), rank, alpha, dropout))
    return names


def merged_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A LoRA model's state dict as the plain model's: each adapted layer's weight W + B @ A * scale."""
    out = {}
    for key, value in state.items():
        if ".lora_a." in key or ".lora_b." in key:
            continue
        if ".base." in key:
            layer, _, param = key.rpartition(".base.")
            if param == "weight":
                a, b = state[f"{layer}.lora_a.weight"], state[f"{layer}.lora_b.weight"]
                value = value + (b.float() @ a.float()).to(value.dtype) * scale
            key = f"{layer}.{param}"
        out[key] = value
    return out


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the base weights under the plain model's names, the adapters {layer.lora_a.weight, ...})."""
    base = {k.replace(".base.", "."): v for k, v in state.items() if ".lora_a." not in k and ".lora_b." not in k}
    adapter = {k: v for k, v in state.items() if ".lora_a." in k or ".lora_b." in k}
    return base, adapter


def adapted_state(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """split_state's inverse: the state dict of the model with its adapters (for load_state_dict)."""
    layers = {k.rsplit(".lora_", 1)[0] for k in adapter}
    out = dict(adapter)
    for key, value in base.items():
        layer, _, param = key.rpartition(".")
        out[f"{layer}.base.{param}" if layer in layers else key] = value
    return out
