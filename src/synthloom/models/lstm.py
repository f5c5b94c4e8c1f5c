"""The LSTM language model: embedding -> LSTM layers (dropout between) -> linear head.

    net = LSTMLanguageModel(config.model, vocab_size)
    logits, state = net(tokens)               # (B, T) -> (B, T, V), and the state after them
    loss, correct = net.loss(tokens, targets)  # training
    logits, state = net.start(prefixes)       # sampling: the last step's logits (B, V), an LSTMState
    plan = net.sampling_plan()                # weights rearranged for sampling, and work buffers
    logits, state = net.step(token, state, plan)  # (B,) -> (B, V), ~2x nn.LSTM's call; state updated in place

    net = LSTMLanguageModel(config.model, vocab_size, allowed=slot_mask(tokenizer))   # field tokens
    logits, state = net(tokens, positions=slots)  # slots (B, T): the slot each step predicts
    logits, state = net.step_slot(token, fed, slot, state, plan)   # sampling one slot: (B, its size)

The model interface (models/interface.py) is what the rest of the package uses.

One nn.LSTM holds all layers, so PyTorch runs them with its fused kernels (cuDNN on GPU,
oneDNN on CPU). A record always starts from a zero state: no state crosses records.

Field tokens (tables, fields.py): every step also gets the embedding of the slot it predicts
(which column, which part of it), so the model knows where it is in the row even when the
columns come in a shuffled order, and its logits are masked to that slot's vocabulary
(`allowed`, a buffer rebuilt from the tokenizer, not saved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from ..config import LSTMConfig
from .field_head import add_slots, field_loss, masked, text_loss


class LSTMState(NamedTuple):
    """h and c, each (num_layers, B, H): a tuple, as nn.LSTM takes and returns them."""

    h: torch.Tensor
    c: torch.Tensor

    def rows(self, index: torch.Tensor) -> "LSTMState":
        return LSTMState(self.h[:, index], self.c[:, index])

    def put(self, index: torch.Tensor, other: "LSTMState") -> None:
        self.h[:, index] = other.h
        self.c[:, index] = other.c

    @classmethod
    def cat(cls, states: list["LSTMState"]) -> "LSTMState":
        return cls(torch.cat([s.h for s in states], dim=1), torch.cat([s.c for s in states], dim=1))


@dataclass
class SamplingPlan:
    """The weights rearranged for sampling, and the step's work buffers (reused every step:
    a fresh multi-MB tensor per step costs page faults that show up in the step time).

    The gate rows are scaled by -log2(e), so that sigmoid(z) = 1 / (1 + 2^(scaled z)) (exp2
    costs half of exp on CPU), and the g gate's rows by 2 more, so that the same pass over
    all four gates also gives g = tanh(z) = 2 sigmoid(2z) - 1 (tanh costs ~3 sigmoids)."""

    input_table: torch.Tensor  # (V, 4H): embedding @ W_ih0 + biases, one row per token
    w_hh0: torch.Tensor  # (H, 4H)
    w_cat: list  # per layer >= 1: [W_ih; W_hh] (2H, 4H)
    biases: list  # per layer: b_ih + b_hh (4H,)
    w_head: torch.Tensor  # (H, V)
    b_head: torch.Tensor  # (V,)
    slot_table: torch.Tensor | None = None  # field tokens: (S + 1, 4H) slot embedding @ W_ih0
    low: torch.dtype | None = None  # bf16: the recurrent products' dtype (w_hh0, w_cat held in it)
    buffers: dict = field(default_factory=dict)
    head_slices: dict = field(default_factory=dict)  # field tokens: slot -> its slice of w_head, contiguous
    pair_tables: dict = field(default_factory=dict)  # (fed slot, next slot) -> input rows + the next's slot_table

    def buffer(self, name: str, rows: int, cols: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A (rows, cols) work buffer, the leading rows of one kept across steps."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < rows:
            buf = self.buffers[name] = self.w_head.new_empty((rows, cols), dtype=dtype)
        return buf[:rows]


class LSTMLanguageModel(nn.Module):
    max_length = None  # a record of any length: the state carries the prefix
    default_lora_targets = ("head",)  # the only nn.Linear: the recurrent weights live inside nn.LSTM

    def __init__(self, cfg: LSTMConfig, vocab_size: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.slots = None
        if allowed is not None:  # field tokens: (S + 1, V) which tokens each slot may hold
            self.slots = nn.Embedding(allowed.shape[0], cfg.embedding_dim)
            add_slots(self, allowed)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(cfg.hidden_size, vocab_size)
        _initialize(self.lstm, cfg.initializer)

    def forward(
        self, tokens: torch.Tensor, state: LSTMState | None = None, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        out, state = self.features(tokens, state, positions)
        logits = self.head(out)  # (B, T, V)
        if self.slots is not None:
            logits = masked(self, logits, positions)
        return logits, state

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward(tokens, positions=positions)[0]

    def start(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, LSTMState]:
        logits, state = self.forward(tokens, positions=positions)
        return logits[:, -1], state

    def features(
        self, tokens: torch.Tensor, state: LSTMState | None = None, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """The LSTM's output before the head, dropout applied: (B, T, H), and the state."""
        x = self.embedding(tokens)  # (B, T, E)
        if self.slots is not None:
            x = x + self.slots(positions)  # the slot each step predicts
        x = self.dropout(x)
        state_arg = () if state is None else (state,)  # (Opacus' hooks record every positional input)
        device = x.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
            # bf16's 8-bit mantissa loses the cell state along a record: on an H100 a bf16 cuDNN LSTM
            # reached val loss 3.44 where fp32 reached 1.73 (200 steps); so under bf16 autocast the
            # recurrence runs in fp32 and only the rest (the head, the largest GEMM after it) in bf16
            with torch.autocast(device, enabled=False):
                out, state = self.lstm(x.float(), *state_arg)  # (B, T, H)
        else:
            out, state = self.lstm(x, *state_arg)  # (B, T, H)
        return self.dropout(out), LSTMState(*state)

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the token losses, correct predictions) of a batch; targets -100 are skipped.
        Field tokens: each slot's logits over its own vocabulary only (field_head.field_loss)."""
        if self.slots is None:
            return text_loss(self.forward(tokens)[0], targets)
        out, _ = self.features(tokens, None, positions)  # (B, T, H), T = slots + 1
        return field_loss(self, out, targets, positions, self.head)

    def step(
        self, token: torch.Tensor, state: LSTMState, plan: "SamplingPlan | None" = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """One token per row: (B,) -> logits (B, V). Only the new token is fed; the state
        carries the prefix, so sampling never re-runs it.

        With a plan (see sampling_plan) the step runs on rearranged weights and reused buffers,
        about 2x faster on CPU than nn.LSTM's call. It then updates `state` in place, and the
        logits it returns are one of the plan's buffers, overwritten by the next step."""
        if plan is None:
            logits, state = self.forward(token[:, None], None if state is None else LSTMState(*state))
            return logits[:, 0], state
        self._cell(token, state, plan)
        n = token.shape[0]
        logits = plan.buffer("logits", n, plan.w_head.shape[1])
        logits.copy_(plan.b_head.expand(n, -1))
        return logits.addmm_(state[0][-1], plan.w_head), state

    def step_slot(
        self, token: torch.Tensor, fed: int | None, slot: int, state: LSTMState, plan: "SamplingPlan"
    ) -> tuple[torch.Tensor, LSTMState]:
        """Field tokens, every row at the same slot: feed (B,) tokens of slot `fed` (or <pad>, a text
        field's filler; fed None: any token, as <eor> at the start), predict slot `slot`: logits
        (B, the slot's size) from that slice of the head only (the rest are masked anyway). State
        updated in place; the logits are a plan buffer."""
        lo, hi = self.slot_ranges[slot]
        table = plan.pair_tables.get((fed, slot))
        if table is None:  # row 0 <pad>, then the fed slot's tokens: embedding @ W_ih + biases + slot's
            f_lo, f_hi = self.slot_ranges[fed] if fed is not None else (1, self.vocab_size)
            rows = torch.cat([plan.input_table[:1], plan.input_table[f_lo:f_hi]])
            table = plan.pair_tables[fed, slot] = rows + plan.slot_table[slot]
        local = plan.buffer("local", token.shape[0], 1, torch.long)[:, 0]
        first = self.slot_ranges[fed][0] if fed is not None else 1
        torch.sub(token, first - 1, out=local).clamp_(min=0)  # <pad> (id 0) -> row 0
        self._cell(local, state, plan, table)
        n = token.shape[0]
        w = plan.head_slices.get(slot)
        if w is None:  # the slice as a matrix of its own: a strided one of the whole head is ~2x slower
            w = plan.head_slices[slot] = plan.w_head[:, lo:hi].contiguous()
        logits = plan.buffer(f"slot_logits{hi - lo}", n, hi - lo)
        logits.copy_(plan.b_head[lo:hi].expand(n, -1))
        return logits.addmm_(state[0][-1], w), state

    def _cell(self, token: torch.Tensor, state: LSTMState, plan: "SamplingPlan", table: torch.Tensor | None = None):
        """The LSTM layers for one token per row, on the plan's weights; `state` updated in place.
        `table`: the first layer's input rows to look `token` up in (default plan.input_table)."""
        h, c = state  # each (L, B, H); updated in place
        n, hidden = token.shape[0], h.shape[-1]
        for layer in range(h.shape[0]):
            gates = plan.buffer(f"gates{layer}", n, 4 * hidden)
            if layer == 0:  # embedding @ W_ih + biases, looked up instead of multiplied
                torch.index_select(plan.input_table if table is None else table, 0, token, out=gates)
                if plan.low is None:
                    gates.addmm_(h[0], plan.w_hh0)
                else:  # h and W_hh in bf16, the sum accumulated in fp32 and added to fp32 gates
                    hb = plan.buffer("h_low", n, hidden, plan.low)
                    hb.copy_(h[0])
                    product = torch.mm(hb, plan.w_hh0, out=plan.buffer("mm_low", n, 4 * hidden, plan.low))
                    gates.add_(plan.buffer("mm_fp32", n, 4 * hidden).copy_(product))  # (no fresh 8 MB per step)
            else:  # [x, h] @ [W_ih; W_hh]: one GEMM instead of two
                xh = plan.buffer("xh", n, 2 * hidden, plan.low)
                xh[:, :hidden].copy_(h[layer - 1])
                xh[:, hidden:].copy_(h[layer])
                gates.copy_(plan.biases[layer].expand(n, -1))
                if plan.low is None:
                    gates.addmm_(xh, plan.w_cat[layer])
                else:
                    product = torch.mm(xh, plan.w_cat[layer], out=plan.buffer("mm_low", n, 4 * hidden, plan.low))
                    gates.add_(plan.buffer("mm_fp32", n, 4 * hidden).copy_(product))
            # sigmoid(z) = 1 / (1 + 2^(-z log2 e)): the weights carry the -log2 e (and the g gate's 2),
            # and exp2 costs half of exp here
            i, f, g, o = gates.exp2_().add_(1).reciprocal_().split(hidden, dim=1)  # g = sigmoid(2z)
            c[layer].mul_(f).addcmul_(i, g, value=2).sub_(i)  # f c + i tanh(z) = f c + 2 i g - i
            tanh_c = plan.buffer("tanh_c", n, hidden)
            torch.mul(c[layer], 2, out=tanh_c).sigmoid_().mul_(2).sub_(1)  # tanh(c) = 2 sigmoid(2c) - 1
            torch.mul(o, tanh_c, out=h[layer])

    def prepare_per_record_gradients(self) -> None:
        """Make every layer one that Opacus' GradSampleModule can give per-record gradients, in
        place: nn.LSTM becomes a DPLSTM (same parameter names and values, so the weights saved
        load into a plain model); embedding and head have Opacus' own samplers. What DP-SGD asks
        of a model (privacy.make_private); the rest of training and sampling never sees it."""
        from .dp_lstm import DPLSTM, register_grad_sampler  # (Opacus only when privacy is on)

        if not any(p.requires_grad for p in self.lstm.parameters()):
            return  # frozen (LoRA on the head): no per-record gradients wanted, nn.LSTM's fused kernel stays
        register_grad_sampler()
        self.lstm = DPLSTM.from_lstm(self.lstm)

    @torch.no_grad()
    def sampling_plan(self, precision: str = "fp32") -> "SamplingPlan":
        """Weights rearranged for step(); build it again after the weights change.

        precision "bf16": the recurrent matrix products (h @ W_hh, the bulk of a step) take h and
        W_hh in bf16; the state, the gates, the input table and the head stay fp32. On a CPU with
        bf16 instructions that product runs ~4x faster (benchmarks/RESULTS.md)."""
        lstm = self.lstm
        hidden = lstm.hidden_size
        scale = torch.full((4 * hidden, 1), -math.log2(math.e), device=self.head.weight.device)  # step()'s exp2
        scale[2 * hidden : 3 * hidden] *= 2.0  # the g gate: tanh(z) = 2 sigmoid(2z) - 1
        w = [(getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")) for k in range(lstm.num_layers)]
        b = [getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") for k in range(lstm.num_layers)]
        biases = [bias * scale[:, 0] for bias in b]
        low = torch.bfloat16 if precision == "bf16" else None
        dtype = low or self.head.weight.dtype
        return SamplingPlan(
            input_table=torch.addmm(biases[0], self.embedding.weight, (w[0][0] * scale).T),  # (V, 4H)
            w_hh0=(w[0][1] * scale).T.contiguous().to(dtype),  # (H, 4H)
            w_cat=[None] + [(torch.cat([wi, wh], dim=1) * scale).T.contiguous().to(dtype) for wi, wh in w[1:]],
            biases=biases,
            w_head=self.head.weight.T.contiguous(),  # (H, V)
            b_head=self.head.bias.detach().clone(),
            slot_table=(self.slots.weight @ (w[0][0] * scale).T) if self.slots is not None else None,  # (S + 1, 4H)
            low=low,
        )


def _initialize(lstm: nn.LSTM, scheme: str) -> None:
    if scheme == "pytorch":
        return  # nn.LSTM's own uniform(-1/sqrt(H), 1/sqrt(H))
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("bias"):
            nn.init.zeros_(param)
            if name.startswith("bias_ih"):  # PyTorch adds bias_ih + bias_hh: set one of them
                param.data[hidden : 2 * hidden] = 1.0  # forget-gate bias 1, as Keras' unit_forget_bias
        elif name.startswith("weight_hh") and scheme == "orthogonal":
            for gate in param.data.chunk(4, dim=0):  # one orthogonal matrix per gate
                nn.init.orthogonal_(gate)
        else:
            for gate in param.data.chunk(4, dim=0):
                nn.init.xavier_uniform_(gate)
