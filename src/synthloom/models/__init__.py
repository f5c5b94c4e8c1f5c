"""Model builders: one readable file per model family, picked by `config.model.kind`.

net = build_model(config.model, vocab_size=tokenizer.vocab_size)
net = build_model(config.model, tokenizer.vocab_size, allowed=slot_mask(tokenizer))   # field tokens

Every family implements the model interface (interface.py), and nothing outside this package
uses more of a model than that.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .interface import ModelState, RecordModel
from .lstm import LSTMLanguageModel
from .seq2seq import Seq2SeqModel
from .transformer import TransformerLanguageModel

# config.model.kind -> the model's class, built as cls(config.model, vocab_size, allowed)
MODELS: dict[str, type[nn.Module]] = {
    "lstm": LSTMLanguageModel,
    "transformer": TransformerLanguageModel,
    "seq2seq": Seq2SeqModel,  # (source -> target pairs; decoding.py decodes it, not the record samplers)
}


def build_model(cfg, vocab_size: int, allowed: torch.Tensor | None = None) -> nn.Module:
    """cfg: a config.model section. allowed: (slots + 1, V) bool for field tokens (each slot's
    vocabulary); None for text tokens."""
    return MODELS[cfg.kind](cfg, vocab_size, allowed)


def resolve_device(name: str, key: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cuda' without a GPU is a ConfigError naming `key`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


__all__ = [
    "build_model",
    "resolve_device",
    "LSTMLanguageModel",
    "TransformerLanguageModel",
    "Seq2SeqModel",
    "MODELS",
    "ModelState",
    "RecordModel",
]
