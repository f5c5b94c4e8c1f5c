"""The decoder-only transformer: embedding (+ positions, + slots) -> pre-norm blocks -> norm -> head.

    net = TransformerLanguageModel(config.model, vocab_size)       # config.model.context_length resolved
    loss, correct = net.loss(tokens, targets)                       # training: causal, one pass
    logits, cache = net.start(prefixes)                             # sampling: last logits (B, V), a KVCache
    logits, cache = net.step(token, cache, net.sampling_plan())     # (B,) -> (B, V); the cache grows in place

Each block: x += attention(norm(x)); x += ffn(norm(x)). Attention is torch's
scaled_dot_product_attention (causal in training; over the cache, masked by each row's length, in
sampling), with learned or rotary positions. The feed-forward network is Linear -> activation ->
Linear, or SwiGLU's silu(x W) * (x V) -> Linear. Every weight is an nn.Linear, nn.Embedding,
nn.LayerNorm or nn.RMSNorm, so Opacus gives per-record gradients for all of them as they are.

Sampling keeps each row's keys and values (a KV cache) and its length: rows of different lengths
step together (continuous batching refills a row with a new record's prefix in place), each
attending only to its own first `length` positions.

Field tokens (tables): every step also gets the embedding of the slot it predicts, and its logits
are masked to that slot's vocabulary, as in the LSTM (field_head.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TransformerConfig
from .field_head import add_slots, field_loss, masked, text_loss

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


@dataclass
class KVCache:
    """Per layer the keys and values of every row's tokens so far: k, v (L, B, heads, width, head size),
    width >= the longest row; `length` (B,): how many positions each row holds."""

    k: torch.Tensor
    v: torch.Tensor
    length: torch.Tensor
    common: int | None = None  # the length of every row, where they all have one (lockstep sampling)

    def rows(self, index: torch.Tensor) -> "KVCache":
        return KVCache(self.k[:, index], self.v[:, index], self.length[index], self.common)

    def put(self, index: torch.Tensor, other: "KVCache") -> None:
        width = other.k.shape[3]
        self.grow(width)
        self.k[:, index, :, :width] = other.k
        self.v[:, index, :, :width] = other.v
        self.length[index] = other.length
        if other.common != self.common:
            self.common = None

    def grow(self, width: int) -> None:
        """Room for `width` positions (doubling, so a record's steps copy the cache O(log T) times)."""
        have = self.k.shape[3]
        if width <= have:
            return
        new = max(width, 2 * have)
        pad = (0, 0, 0, new - have)
        self.k, self.v = F.pad(self.k, pad), F.pad(self.v, pad)

    @classmethod
    def cat(cls, states: list["KVCache"]) -> "KVCache":
        width = max(s.k.shape[3] for s in states)
        pad = [(0, 0, 0, width - s.k.shape[3]) for s in states]
        commons = {s.common for s in states}
        return cls(
            torch.cat([F.pad(s.k, p) for s, p in zip(states, pad)], dim=1),
            torch.cat([F.pad(s.v, p) for s, p in zip(states, pad)], dim=1),
            torch.cat([s.length for s in states]),
            commons.pop() if len(commons) == 1 else None,
        )


@dataclass
class TransformerPlan:
    """What sampling prepares once: the precision of the step, and field tokens' head slices."""

    low: torch.dtype | None = None  # bf16: the step's matrix products run under bf16 autocast
    head_slices: dict = field(default_factory=dict)  # slot -> (its rows of the head's weight, its bias)


def _norm(kind: str, size: int) -> nn.Module:
    return nn.LayerNorm(size) if kind == "layernorm" else nn.RMSNorm(size, eps=1e-6)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d, f = cfg.hidden_size, cfg.ffn_size
        self.heads, self.attention_dropout = cfg.num_heads, cfg.attention_dropout
        self.norm1, self.norm2 = _norm(cfg.norm, d), _norm(cfg.norm, d)
        self.qkv = nn.Linear(d, 3 * d)  # queries, keys and values in one product
        self.proj = nn.Linear(d, d)
        self.swiglu = cfg.activation == "swiglu"
        self.act = None if self.swiglu else ACTIVATIONS[cfg.activation]
        self.ffn_in = nn.Linear(d, 2 * f if self.swiglu else f)  # swiglu: gate and value in one product
        self.ffn_out = nn.Linear(f, d)
        self.dropout = nn.Dropout(cfg.dropout)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ffn_in(x)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = self.act(h)
        return self.ffn_out(h)

    def forward(self, x: torch.Tensor, rope: tuple | None, kv: list | None = None) -> torch.Tensor:
        """x (B, T, d), causal over T; `kv` given: this block's keys and values (B, heads, T, hs) appended."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if kv is not None:
            kv.append((k, v))
        p = self.attention_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, heads, T, hs)
        x = x + self.dropout(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.ffn(self.norm2(x)))

    def step(self, x: torch.Tensor, rope: tuple | None, cache: KVCache, layer: int, at: torch.Tensor, width: int):
        """One position per row: x (B, d) at positions `at` (B,); its key and value go into the cache, and
        each row attends to its own first at + 1 positions (all `width` of them where every row is at one
        position, cache.common: no mask, and the new keys written as one slice)."""
        b, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, 3, self.heads, d // self.heads).unbind(1)  # (B, heads, hs)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if cache.common is not None:
            cache.k[layer, :, :, width - 1] = k
            cache.v[layer, :, :, width - 1] = v
            mask = None
        else:
            rows = torch.arange(b, device=x.device)
            cache.k[layer, rows, :, at] = k.to(cache.k.dtype)
            cache.v[layer, rows, :, at] = v.to(cache.v.dtype)
            mask = (torch.arange(width, device=x.device) <= at[:, None])[:, None, None]  # (B, 1, 1, W)
        keys, values = (
            cache.k[layer, :, :, :width].to(q.dtype),
            cache.v[layer, :, :, :width].to(q.dtype),
        )  # (B, h, W, hs)
        a = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask)  # (B, h, 1, hs)
        x = x + self.proj(a.reshape(b, d))
        return x + self.ffn(self.norm2(x))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions: pairs (x_i, x_{i + hs/2}) rotated by position x angle_i. x (..., T or B, hs)
    with cos, sin (T or B, hs / 2) broadcast over the leading dims."""
    x1, x2 = x.float().chunk(2, dim=-1)
    if x.dim() == 3:  # step: (B, heads, hs), angles per row (B, hs / 2)
        cos, sin = cos[:, None], sin[:, None]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class TransformerLanguageModel(nn.Module):
    default_lora_targets = ("qkv", "proj", "ffn_in", "ffn_out")  # attention and FFN (the head may be tied)

    def __init__(self, cfg: TransformerConfig, vocab_size: int, allowed: torch.Tensor | None = None):
        super().__init__()
        if cfg.context_length is None:
            raise ValueError("model.context_length must be resolved (train.prepare does it from the records)")
        d = cfg.hidden_size
        self.vocab_size, self.max_length = vocab_size, cfg.context_length
        self.embedding = nn.Embedding(vocab_size, d)
        self.position = nn.Embedding(cfg.context_length, d) if cfg.positional == "learned" else None
        if cfg.positional == "rope":
            hs = d // cfg.num_heads
            angles = torch.arange(cfg.context_length)[:, None] * 10000.0 ** (-torch.arange(0, hs, 2) / hs)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)  # (C, hs / 2)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.slots = None
        if allowed is not None:  # field tokens: (S + 1, V) which tokens each slot may hold
            self.slots = nn.Embedding(allowed.shape[0], d)
            add_slots(self, allowed)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = _norm(cfg.norm, d)
        self.head = nn.Linear(d, vocab_size)
        self._initialize(cfg)
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight

    def _initialize(self, cfg: TransformerConfig) -> None:
        """GPT-2's: normal(0, 0.02), biases 0, the residual branches' last layers scaled by 1/sqrt(2 L)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.num_layers) if name.endswith(("proj.weight", "ffn_out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def _rope(self, index: torch.Tensor) -> tuple | None:
        return None if self.position is not None else (self.rope_cos[index], self.rope_sin[index])

    def features(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, kv: list | None = None):
        """The final norm's output (B, T, d); `kv` given: each block's keys and values appended."""
        b, t = tokens.shape
        if t > self.max_length:
            raise ValueError(f"{t} tokens is longer than the model's context_length={self.max_length}")
        index = torch.arange(t, device=tokens.device)
        x = self.embedding(tokens)
        if self.position is not None:
            x = x + self.position(index.expand(b, t))  # (B, T): Opacus wants the batch dimension first
        if self.slots is not None:
            x = x + self.slots(positions)  # the slot each step predicts
        x = self.dropout(x)
        rope = self._rope(index)
        for block in self.blocks:
            x = block(x, rope, kv)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.head(self.features(tokens, positions))
        return masked(self, logits, positions) if self.slots is not None else logits

    logits = forward

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.slots is None:
            return text_loss(self.forward(tokens), targets)
        return field_loss(self, self.features(tokens, positions), targets, positions, self.head)

    def start(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        kv: list = []
        out = self.features(tokens, positions, kv)
        logits = self.head(out[:, -1])
        if self.slots is not None:
            logits = masked(self, logits, positions[:, -1])
        b, t = tokens.shape
        k, v = kv[0][0], kv[0][1]
        width = min(self.max_length, max(t, 32))  # room to step on: a table's whole row, a text's first steps
        cache = KVCache(
            k.new_zeros((len(kv), b, k.shape[1], width, k.shape[3]), dtype=torch.float32),
            v.new_zeros((len(kv), b, v.shape[1], width, v.shape[3]), dtype=torch.float32),
            torch.full((b,), t, dtype=torch.long, device=tokens.device),
            t,
        )
        for layer, (k, v) in enumerate(kv):  # (B, heads, T, hs) each
            cache.k[layer, :, :, :t] = k
            cache.v[layer, :, :, :t] = v
        return logits.float(), cache

    @torch.no_grad()
    def sampling_plan(self, precision: str = "fp32") -> TransformerPlan:
        return TransformerPlan(low=torch.bfloat16 if precision == "bf16" else None)

    def _step(self, token: torch.Tensor, slot: int | None, cache: KVCache, plan: TransformerPlan) -> torch.Tensor:
        """The blocks for one token per row at positions cache.length; the final norm's output (B, d)."""
        at = cache.length.clamp(max=self.max_length - 1)  # (a finished row past the end: its step is discarded)
        if cache.common is not None and cache.common >= self.max_length:
            cache.common = None
        width = cache.common + 1 if cache.common is not None else int(at.max()) + 1
        cache.grow(width)
        x = self.embedding(token)
        if self.position is not None:
            x = x + self.position(at)
        if slot is not None:
            x = x + self.slots.weight[slot]
        rope = self._rope(at)
        device = token.device.type
        with torch.autocast(device, dtype=plan.low, enabled=plan.low is not None):
            for layer, block in enumerate(self.blocks):
                x = block.step(x, rope, cache, layer, at, width)
            out = self.norm(x)
        cache.length += 1
        if cache.common is not None:
            cache.common += 1
        return out.float()

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: KVCache, plan: TransformerPlan | None = None):
        out = self._step(token, None, state, plan or TransformerPlan())
        return self.head(out), state

    @torch.no_grad()
    def step_slot(self, token: torch.Tensor, fed: int | None, slot: int, state: KVCache, plan: TransformerPlan):
        """Every row predicts slot `slot` next: logits (B, its size) from that slice of the head."""
        out = self._step(token, slot, state, plan)
        head = plan.head_slices.get(slot)
        if head is None:
            lo, hi = self.slot_ranges[slot]
            head = plan.head_slices[slot] = (self.head.weight[lo:hi].contiguous(), self.head.bias[lo:hi].clone())
        return torch.addmm(head[1], out, head[0].T), state

    def prepare_per_record_gradients(self) -> None:
        """Nothing to swap: Opacus has per-record gradients for every layer here."""
