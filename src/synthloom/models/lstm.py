"""The LSTM language model: embedding -> LSTM layers (dropout between) -> linear head.

    net = LSTMLanguageModel(config.model, vocab_size)
    logits, state = net(tokens)               # training: (B, T) -> (B, T, V)
    logits, state = net.step(token, state)    # sampling: (B,) -> (B, V), state carried on

One nn.LSTM holds all layers, so PyTorch runs them with its fused kernels (cuDNN on GPU,
oneDNN on CPU). A record always starts from a zero state: no state crosses records.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..config import LSTMConfig

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, H)


@dataclass
class SamplingPlan:
    input_table: torch.Tensor
    w_hh0: torch.Tensor
    w_cat: list
    biases: list


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own instructions (AVX512-BF16, AMX), not emulated."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


class LSTMLanguageModel(nn.Module):
    def __init__(self, cfg: LSTMConfig, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
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

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
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
        return self.head(self.dropout(out)), state  # (B, T, V)

    def step(self, token: torch.Tensor, state: State, plan: "SamplingPlan | None" = None) -> tuple[torch.Tensor, State]:
        """One token per row: (B,) -> logits (B, V). Only the new token is fed; the state
        carries the prefix, so sampling never re-runs it. With a plan (see sampling_plan) the
        step runs on precomputed weights, about 1.7x faster on CPU than nn.LSTM's call."""
        if plan is None:
            logits, state = self.forward(token[:, None], state)
            return logits[:, 0], state
        h, c = state  # each (L, B, H)
        new_h, new_c = [], []
        x = None
        for layer in range(self.lstm.num_layers):
            if layer == 0:  # embedding @ W_ih + biases, looked up instead of multiplied
                gates = torch.addmm(plan.input_table[token], h[0], plan.w_hh0)  # (B, 4H)
            else:  # [x, h] @ [W_ih; W_hh]: one GEMM instead of two
                gates = torch.addmm(plan.biases[layer], torch.cat([x, h[layer]], dim=1), plan.w_cat[layer])
            hidden = gates.shape[1] // 4
            i_f = torch.sigmoid(gates[:, : 2 * hidden])  # input and forget gates in one call
            g, o = torch.tanh(gates[:, 2 * hidden : 3 * hidden]), torch.sigmoid(gates[:, 3 * hidden :])
            c_l = torch.addcmul(i_f[:, hidden:] * c[layer], i_f[:, :hidden], g)
            x = o * torch.tanh(c_l)  # (B, H)
            new_h.append(x)
            new_c.append(c_l)
        return self.head(x), (torch.stack(new_h), torch.stack(new_c))

    @torch.no_grad()
    def sampling_plan(self) -> "SamplingPlan":
        """Weights rearranged for step(); build it again after the weights change."""
        lstm = self.lstm
        w = [(getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")) for k in range(lstm.num_layers)]
        biases = [getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") for k in range(lstm.num_layers)]
        return SamplingPlan(
            input_table=torch.addmm(biases[0], self.embedding.weight, w[0][0].T),  # (V, 4H)
            w_hh0=w[0][1].T.contiguous(),  # (H, 4H)
            w_cat=[None] + [torch.cat([wi, wh], dim=1).T.contiguous() for wi, wh in w[1:]],  # (H + H, 4H)
            biases=biases,
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
