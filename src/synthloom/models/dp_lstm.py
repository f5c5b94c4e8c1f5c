"""The LSTM layers of a differentially private run: each record's gradient in one einsum per weight.

    net.lstm = DPLSTM.from_lstm(net.lstm)    # same parameter names and values as nn.LSTM
    register_grad_sampler()                  # teach Opacus' GradSampleModule this layer

DP-SGD clips each record's own gradient, so the LSTM must yield per-record gradients.
Opacus' DPLSTM does it with one Linear per gate matrix called at every time step, whose grad
sampler materialises a (B, 4H, H) gradient per step and sums T of them: on the benchmark
model its backward ran 40x slower than nn.LSTM's (benchmarks/RESULTS.md). Here the
recurrence runs step by step as usual, but the per-record gradients come from one batched
product per weight over all steps. Layer k's gate pre-activations at step t are

    z_t = x_t W_ih^T + h_{t-1} W_hh^T + b_ih + b_hh

so record n's gradients are sums over its steps of the loss gradient d_t = dL/dz_t:

    dW_ih[n] = sum_t d_t x_t^T     dW_hh[n] = sum_t d_t h_{t-1}^T     db[n] = sum_t d_t

d is the gradient of the input projection x W_ih^T + b (z minus a term that does not
depend on it), caught by a tensor hook during backward; x and h_{t-1} are kept from the
forward. Opacus calls the grad sampler when the gradient reaches the layer's input, which
needs d of every layer first, so all of them are there. Rows never interact (no state
crosses records, padding comes after a record's end), so row n's gradient is record n's.
The weights keep nn.LSTM's names, so a DP model saves, loads and samples as any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_GATES = ("weight_ih_l{}", "weight_hh_l{}", "bias_ih_l{}", "bias_hh_l{}")


class DPLSTM(nn.Module):
    """nn.LSTM(batch_first=True)'s forward (zero or given initial state, dropout between layers)
    with the per-record gradient bookkeeping above while training."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, width)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        self._saved: list[list[dict[str, torch.Tensor]]] = []  # per forward: per layer x, h_prev, d

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> "DPLSTM":
        if not lstm.batch_first or lstm.bidirectional or lstm.proj_size or not lstm.bias:
            raise ValueError("DPLSTM replaces a batch_first, unidirectional LSTM with biases and no projection")
        layer = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.dropout)
        layer.load_state_dict(lstm.state_dict())
        frozen = {name for name, p in lstm.named_parameters() if not p.requires_grad}  # (LoRA freezes it)
        for name, p in layer.named_parameters():
            p.requires_grad_(name not in frozen)
        return layer.to(next(lstm.parameters()).device)

    def layer_params(self, k: int) -> tuple[nn.Parameter, ...]:
        return tuple(getattr(self, name.format(k)) for name in _GATES)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch = x.shape[0]
        hidden = self.hidden_size
        keep = self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        saved: list[dict[str, torch.Tensor]] = []
        last_h, last_c = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_params(k)
            if state is None:
                h = c = x.new_zeros(batch, hidden)
            else:
                h, c = state[0][k], state[1][k]
            projected = F.linear(x, w_ih, b_ih + b_hh)  # (B, T, 4H): one GEMM for every step
            record: dict[str, torch.Tensor] = {}
            if keep:
                record["x"] = x.detach()
                projected.register_hook(lambda grad, record=record: record.__setitem__("d", grad))
            w_hh_t = w_hh.t()
            outputs = []
            for step_input in projected.unbind(1):  # unbind, not [:, t]: its backward is one stack, not T copies
                gates = torch.addmm(step_input, h, w_hh_t)  # (B, 4H), PyTorch's order: i, f, g, o
                i_f = torch.sigmoid(gates[:, : 2 * hidden])
                g, o = torch.tanh(gates[:, 2 * hidden : 3 * hidden]), torch.sigmoid(gates[:, 3 * hidden :])
                c = torch.addcmul(i_f[:, hidden:] * c, i_f[:, :hidden], g)
                h = o * torch.tanh(c)
                outputs.append(h)
            out = torch.stack(outputs, dim=1)  # (B, T, H)
            if keep:
                first = (state[0][k] if state is not None else x.new_zeros(batch, hidden)).detach()
                record["h_prev"] = torch.cat([first[:, None], out[:, :-1].detach()], dim=1)  # (B, T, H)
                saved.append(record)
            last_h.append(h)
            last_c.append(c)
            x = F.dropout(out, self.dropout, self.training) if k < self.num_layers - 1 else out
        if keep:
            self._saved.append(saved)
        return x, (torch.stack(last_h), torch.stack(last_c))


def dplstm_grad_sample(layer: DPLSTM, activations: list, backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus grad sampler: per-record gradients of every LSTM weight (see the module docstring).
    `backprops` (the gradient at the layer's output) is not needed: d already holds it, carried
    through the recurrence by autograd."""
    saved = layer._saved.pop()  # forwards and backwards pair up last in, first out, as Opacus' activations do
    grads: dict[nn.Parameter, torch.Tensor] = {}
    for k, record in enumerate(saved):
        w_ih, w_hh, b_ih, b_hh = layer.layer_params(k)
        d = record["d"].transpose(1, 2)  # (B, 4H, T)
        grads[w_ih] = torch.bmm(d, record["x"].to(d.dtype))  # (B, 4H, in)
        grads[w_hh] = torch.bmm(d, record["h_prev"].to(d.dtype))  # (B, 4H, H)
        grads[b_ih] = d.sum(2)  # (B, 4H)
        grads[b_hh] = grads[b_ih].clone()
    return grads


def register_grad_sampler() -> None:
    """Make DPLSTM known to Opacus (needs the 'dp' extra); idempotent."""
    from opacus.grad_sample import register_grad_sampler as register

    register(DPLSTM)(dplstm_grad_sample)
