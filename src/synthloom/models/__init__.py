"""Model builders: one readable file per model family, picked by `config.model.kind`.

net = build_model(config.model, vocab_size=tokenizer.vocab_size)
"""

from __future__ import annotations

from torch import nn

from ..config import LSTMConfig
from .lstm import LSTMLanguageModel


def build_model(cfg: LSTMConfig, vocab_size: int) -> nn.Module:
    if cfg.kind == "lstm":
        return LSTMLanguageModel(cfg, vocab_size)
    raise AssertionError(f"unhandled model kind {cfg.kind!r}")  # the config's union makes this unreachable


__all__ = ["build_model", "LSTMLanguageModel"]
