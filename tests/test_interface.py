"""The model interface (models/interface.py): train, generate, lockstep and privacy use nothing of a
model beyond it. A bigram model written here, knowing nothing of the LSTM or the transformer, plugs
in through models.MODELS and trains, samples tables and text, and trains privately, untouched."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from safetensors.torch import load_file
from torch import nn

from synthloom import load_model, train
from synthloom.models import MODELS, LSTMLanguageModel, ModelState, RecordModel, TransformerLanguageModel
from synthloom.records import COPY_EXPLANATION


class LastToken(NamedTuple):
    """The bigram's state: each row's last token (it needs no more), and how many steps each row took."""

    token: torch.Tensor  # (B,)
    steps: torch.Tensor  # (B,)

    def rows(self, index):
        return LastToken(self.token[index], self.steps[index])

    def put(self, index, other):
        self.token[index], self.steps[index] = other.token, other.steps

    @classmethod
    def cat(cls, states):
        return cls(torch.cat([s.token for s in states]), torch.cat([s.steps for s in states]))


class Bigram(nn.Module):
    """The next token from the last one (and, with field tokens, the slot it predicts)."""

    max_length = None
    built: list = []  # every instance, so the tests can see which model ran

    def __init__(self, cfg, vocab_size: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.vocab_size = vocab_size
        self.table = nn.Embedding(vocab_size, 8)
        self.head = nn.Linear(8, vocab_size)
        self.slot = None
        if allowed is not None:
            self.slot = nn.Embedding(allowed.shape[0], 8)
            self.register_buffer("blocked", ~allowed, persistent=False)
            self.ranges = [(int(r.nonzero()[0]), int(r.nonzero()[-1]) + 1) for r in allowed]
        self.prepared = False
        Bigram.built.append(self)

    def forward(self, tokens, positions=None):
        x = self.table(tokens)
        if self.slot is not None:
            x = x + self.slot(positions)
        logits = self.head(x)
        return logits if self.slot is None else logits.masked_fill(self.blocked[positions], float("-inf"))

    logits = forward

    def loss(self, tokens, targets, positions=None):
        logits = self.forward(tokens, positions)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        correct = ((logits.argmax(-1) == targets) & (targets != -100)).sum()
        return loss, correct

    def start(self, tokens, positions=None):
        n = tokens.shape[0]
        return self.forward(tokens, positions)[:, -1], LastToken(
            tokens[:, -1].clone(), torch.zeros(n, dtype=torch.long)
        )

    def sampling_plan(self, precision="fp32"):
        return {"precision": precision}

    def step(self, token, state, plan):
        state.token.copy_(token)
        state.steps.add_(1)
        return self.head(self.table(token)), state

    def step_slot(self, token, fed, slot, state, plan):
        lo, hi = self.ranges[slot]
        state.token.copy_(token)
        state.steps.add_(1)
        return self.head(self.table(token) + self.slot.weight[slot])[:, lo:hi].contiguous(), state

    def prepare_per_record_gradients(self):
        self.prepared = True  # embedding and linear: Opacus has samplers for both already


@pytest.fixture
def bigram(monkeypatch):
    Bigram.built.clear()
    monkeypatch.setitem(MODELS, "lstm", Bigram)  # config.model.kind "lstm" now builds the bigram
    return Bigram


def test_the_models_meet_the_protocols():
    from synthloom.config import LSTMConfig, TransformerConfig
    from synthloom.models.lstm import LSTMState
    from synthloom.models.transformer import KVCache

    assert isinstance(LSTMLanguageModel(LSTMConfig(embedding_dim=4, hidden_size=4, num_layers=1), 9), RecordModel)
    cfg = TransformerConfig(num_layers=1, num_heads=1, hidden_size=4, ffn_size=4, context_length=5)
    assert isinstance(TransformerLanguageModel(cfg, 9), RecordModel)
    for state in (
        LSTMState(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)),
        KVCache(*[torch.zeros(1, 2, 1, 3, 4)] * 2, torch.zeros(2)),
    ):
        assert isinstance(state, ModelState)
    assert isinstance(LastToken(torch.zeros(1), torch.zeros(1)), ModelState) and isinstance(
        Bigram(None, 5), RecordModel
    )


def test_a_third_model_trains_and_samples_a_table_valid_by_construction(bigram, csv_path, tmp_path):
    out = tmp_path / "model"
    cfg = tiny_config(
        csv_path, out, tokenizer={"kind": "fields"}, data={"leading_columns": ["city"]}, train={"epochs": 3, "seed": 0}
    )
    train(cfg, progress=False)
    assert set(load_file(out / "model.safetensors")) == {"table.weight", "head.weight", "head.bias", "slot.weight"}
    model = load_model(out, device="cpu")
    assert isinstance(model.net, Bigram)
    records = model.generate(num_records=40, seed=1)
    assert sum(r.valid for r in records) == 40
    assert {r.explanation for r in records if not r.valid} <= {COPY_EXPLANATION}  # all decode: only copies filtered
    seeded = model.generate(num_records=10, seed=2, seed_fields={"city": "Austin"})
    assert sum(r.valid for r in seeded) == 10 and all(r.fields[2] == "Austin" for r in seeded)  # (name, age, city, ..)


def test_a_third_model_samples_text_with_continuous_batching(bigram, text_path, tmp_path):
    out = tmp_path / "model"
    train(tiny_config(text_path, out, train={"epochs": 2, "batch_size": 16, "seed": 0}), progress=False)
    model = load_model(out, device="cpu")
    records = model.generate(num_records=30, seed=1, batch_size=8, prefix="red")  # 8 rows in flight for 30
    assert sum(r.valid for r in records) > 0
    assert all(r.text.startswith("red") for r in records)


def test_a_third_model_trains_privately(bigram, text_path, tmp_path):
    out = tmp_path / "model"
    privacy = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0}
    train(tiny_config(text_path, out, privacy=privacy), progress=False)
    assert any(net.prepared for net in Bigram.built)  # DP asked the model for per-record-gradient layers
    assert json.loads((out / "privacy.json").read_text())["epsilon"] > 0
    assert sum(r.valid for r in load_model(out, device="cpu").generate(num_records=10, seed=0)) == 10
