"""Model builders: one readable file per model family, picked by `config.model.kind`.

net = build_model(config.model, vocab_size=tokenizer.vocab_size)
net = build_model(config.model, tokenizer.vocab_size, allowed=tokenizer.allowed_mask())   # field tokens
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import LSTMConfig
from ..errors import ConfigError
from .lstm import LSTMLanguageModel


def build_model(cfg: LSTMConfig, vocab_size: int, allowed: torch.Tensor | None = None) -> nn.Module:
    """allowed: (slots + 1, V) bool for field tokens (each slot's vocabulary); None for text tokens."""
    if cfg.kind == "lstm":
        return LSTMLanguageModel(cfg, vocab_size, allowed)
    raise AssertionError(f"unhandled model kind {cfg.kind!r}")  # the config's union makes this unreachable


def resolve_device(name: str, key: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cuda' without a GPU is a ConfigError naming `key`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


__all__ = ["build_model", "resolve_device", "LSTMLanguageModel"]
