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
    """nn.LSTM(batch_first=True)'s forward (zero or given initial state, dropout between layers, one or
    two directions) with the per-record gradient bookkeeping above while training.

    Call it as nn.LSTM: `layer(x)` or `layer(x, hx=(h0, c0))` (the initial state by keyword under Opacus,
    whose hooks take every positional argument for a tensor).
    `lengths` (B,) gives each row's own length, as a packed sequence would: the reverse direction reads
    each row from its own last token back, the final states are each row's at its own end, and outputs
    past a row's end are zeros (pad_packed_sequence's). Without it every row runs the full length."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0, bidirectional: bool = False
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size * directions
            for suffix in self._suffixes():
                self.register_parameter(f"weight_ih_l{k}{suffix}", nn.Parameter(torch.empty(4 * hidden_size, width)))
                self.register_parameter(
                    f"weight_hh_l{k}{suffix}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
                )
                self.register_parameter(f"bias_ih_l{k}{suffix}", nn.Parameter(torch.empty(4 * hidden_size)))
                self.register_parameter(f"bias_hh_l{k}{suffix}", nn.Parameter(torch.empty(4 * hidden_size)))
        self._saved: list[list[dict]] = []  # per forward: per layer and direction x, h_prev, d and its weights

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> "DPLSTM":
        if not lstm.batch_first or lstm.proj_size or not lstm.bias:
            raise ValueError("DPLSTM replaces a batch_first LSTM with biases and no projection")
        layer = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.dropout, lstm.bidirectional)
        layer.load_state_dict(lstm.state_dict())
        frozen = {name for name, p in lstm.named_parameters() if not p.requires_grad}  # (LoRA freezes it)
        for name, p in layer.named_parameters():
            p.requires_grad_(name not in frozen)
        return layer.to(next(lstm.parameters()).device)

    def layer_params(self, k: int, suffix: str = "") -> tuple[nn.Parameter, ...]:
        return tuple(getattr(self, name.format(k) + suffix) for name in _GATES)

    def forward(
        self,
        x: torch.Tensor,
        hx: tuple[torch.Tensor, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, steps = x.shape[:2]
        keep = self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        saved: list[dict] = []
        last_h, last_c = [], []
        flip = ends = None
        if lengths is not None:
            lengths = lengths.to(x.device)
            at = torch.arange(steps, device=x.device)
            inside = at < lengths[:, None]  # (B, T)
            # position t of a reversed row: its own token len - 1 - t (padding stays put); its own inverse
            flip = torch.where(inside, lengths[:, None] - 1 - at, at)
            ends = (lengths - 1).clamp(min=0)
        directions = len(self._suffixes())
        for k in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                index = k * directions + d
                h0 = c0 = None
                if hx is not None:
                    h0, c0 = hx[0][index], hx[1][index]
                reverse = d == 1
                if reverse and flip is None:
                    flip = torch.arange(steps - 1, -1, -1, device=x.device).expand(batch, steps)
                inputs = _gather_steps(x, flip) if reverse else x
                out, cells, c_n, record = self._direction(
                    inputs, h0, c0, self.layer_params(k, suffix), keep, cells_wanted=ends is not None
                )
                h_n = out[:, -1]  # (reversed: the row's first token, read last)
                if ends is not None:  # each row's state at its own end
                    h_n, c_n = _at(out, ends), _at(cells, ends)
                if reverse:
                    out = _gather_steps(out, flip)
                last_h.append(h_n)
                last_c.append(c_n)
                outs.append(out)
                if keep:
                    saved.append(record)
            out = outs[0] if directions == 1 else torch.cat(outs, dim=-1)
            if lengths is not None:
                out = out.masked_fill(~inside[..., None], 0.0)
            x = F.dropout(out, self.dropout, self.training) if k < self.num_layers - 1 else out
        if keep:
            self._saved.append(saved)
        return x, (torch.stack(last_h), torch.stack(last_c))

    def _direction(self, x, h, c, params, keep: bool, cells_wanted: bool):
        """One layer in one direction over x (B, T, in) from (h, c) (zeros if None): outputs (B, T, H), cell
        states (B, T, H) if `cells_wanted`, the last cell state, and what the grad sampler needs."""
        w_ih, w_hh, b_ih, b_hh = params
        batch, hidden = x.shape[0], self.hidden_size
        if h is None:
            h = c = x.new_zeros(batch, hidden)
        first = h
        projected = F.linear(x, w_ih, b_ih + b_hh)  # (B, T, 4H): one GEMM for every step
        record: dict = {"params": params}
        if keep:
            record["x"] = x.detach()
            projected.register_hook(lambda grad, record=record: record.__setitem__("d", grad))
        w_hh_t = w_hh.t()
        outputs, cells = [], []
        for step_input in projected.unbind(1):  # unbind, not [:, t]: its backward is one stack, not T copies
            gates = torch.addmm(step_input, h, w_hh_t)  # (B, 4H), PyTorch's order: i, f, g, o
            i_f = torch.sigmoid(gates[:, : 2 * hidden])
            g, o = torch.tanh(gates[:, 2 * hidden : 3 * hidden]), torch.sigmoid(gates[:, 3 * hidden :])
            c = torch.addcmul(i_f[:, hidden:] * c, i_f[:, :hidden], g)
            h = o * torch.tanh(c)
            outputs.append(h)
            if cells_wanted:
                cells.append(c)
        out = torch.stack(outputs, dim=1)  # (B, T, H)
        if keep:
            record["h_prev"] = torch.cat([first.detach()[:, None], out[:, :-1].detach()], dim=1)  # (B, T, H)
        return out, torch.stack(cells, dim=1) if cells_wanted else None, c, record


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, F) with each row's steps taken in `index` (B, T) order."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _at(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """x (B, T, F) at one step per row (B,) -> (B, F)."""
    return x[torch.arange(x.shape[0], device=x.device), steps]


def dplstm_grad_sample(layer: DPLSTM, activations: list, backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus grad sampler: per-record gradients of every LSTM weight (see the module docstring).
    `backprops` (the gradient at the layer's output) is not needed: d already holds it, carried
    through the recurrence by autograd."""
    saved = layer._saved.pop()  # forwards and backwards pair up last in, first out, as Opacus' activations do
    grads: dict[nn.Parameter, torch.Tensor] = {}
    for record in saved:
        w_ih, w_hh, b_ih, b_hh = record["params"]
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
