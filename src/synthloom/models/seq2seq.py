"""An encoder-decoder for paired records: source -> target (issue 15).

    net = Seq2SeqModel(Seq2SeqConfig(), vocab_size)
    loss, correct = net.loss(tokens, targets)        # a pair is one row: <eor> source <eor> target
    memory = net.encode(sources)                     # decoding: encoder states, the decoder's first state
    logits, state = net.decode_step(token, state)    # one target token per row -> the next's logits

Shape. A shared embedding; a bidirectional LSTM encoder (its two directions' outputs summed, so a source
position is a vector of hidden_size, as a decoder state is); a bridge from the encoder's last forward
and backward states to the decoder's first (tanh of a linear map, the same for every decoder layer); an
LSTM decoder; global attention of every decoder output over the source positions (Luong et al. 2015:
scores by dot, general or Bahdanau's additive form, softmax over the real positions, the context
combined with the decoder state as tanh(W [h; context])); a linear head.

A pair travels through the fit loop as one record, `<eor> source <eor> target`, with the targets of the
source part ignored (-100): the first <eor> after the start splits it. So training, accumulation,
clipping, checkpoints and DP (one pair is one record) need nothing new.

Teacher forcing: `teacher_forcing_ratio` (set by the fit loop each step, see teacher_forcing_at) is the
chance that a decoder step is fed the true previous token; otherwise it is fed the model's own likeliest
token of the step before. At 1.0 the decoder runs as one LSTM call; below, step by step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

IGNORE = -100
PAD_ID, EOR_ID = 0, 1  # as tokenizers.PAD_ID, EOR_ID


def teacher_forcing_at(step: int, total: int, ratio: float, schedule: str, k: float = 0.0) -> float:
    """The teacher-forcing ratio at optimizer step `step` (0-based) of `total`:
    constant: `ratio`; linear: from 1 down to `ratio` over the run; inverse_sigmoid (Bengio et al. 2015):
    k / (k + exp(step / k)) with k chosen so the decay is halfway at the run's middle (unless given),
    never below `ratio`."""
    if schedule == "constant":
        return ratio
    frac = step / max(total - 1, 1)
    if schedule == "linear":
        return 1.0 - (1.0 - ratio) * min(frac, 1.0)
    if schedule == "inverse_sigmoid":
        if k <= 0:  # k / (k + exp(m / k)) = 1/2 at m = total / 2  <=>  exp(m / k) = k
            k = _halfway_k(max(total / 2, 1.0))
        value = k / (k + math.exp(min(step / k, 700.0)))
        return max(ratio, value)
    raise ValueError(f"teacher forcing schedule {schedule!r}")


def _halfway_k(m: float) -> float:
    lo, hi = 1.0 + 1e-9, max(m, 2.0)  # solve m / k = ln k: m / k - ln k falls as k grows
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if m / mid > math.log(mid) else (lo, mid)
    return (lo + hi) / 2


class Seq2SeqState(NamedTuple):
    """A decoding state, one row per hypothesis: the decoder's (h, c) (L, B, H), the encoder's memory
    (B, S, H) and which source positions are real (B, S)."""

    h: torch.Tensor
    c: torch.Tensor
    memory: torch.Tensor
    mask: torch.Tensor

    def rows(self, index: torch.Tensor) -> "Seq2SeqState":
        return Seq2SeqState(self.h[:, index], self.c[:, index], self.memory[index], self.mask[index])

    def put(self, index: torch.Tensor, other: "Seq2SeqState") -> None:
        width = max(self.memory.shape[1], other.memory.shape[1])
        if other.memory.shape[1] > self.memory.shape[1]:  # (a longer source than any so far: widen in place)
            raise ValueError("Seq2SeqState.put: the new rows' sources are longer than this state holds")
        self.h[:, index], self.c[:, index] = other.h, other.c
        self.memory[index] = F.pad(other.memory, (0, 0, 0, width - other.memory.shape[1]))
        self.mask[index] = F.pad(other.mask, (0, width - other.mask.shape[1]))

    @classmethod
    def cat(cls, states: list["Seq2SeqState"]) -> "Seq2SeqState":
        width = max(s.memory.shape[1] for s in states)
        return cls(
            torch.cat([s.h for s in states], 1),
            torch.cat([s.c for s in states], 1),
            torch.cat([F.pad(s.memory, (0, 0, 0, width - s.memory.shape[1])) for s in states]),
            torch.cat([F.pad(s.mask, (0, width - s.mask.shape[1])) for s in states]),
        )


class Attention(nn.Module):
    """Global attention: scores of queries (B, T, H) over keys (B, S, H), softmax over the real positions."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.kind = kind
        if kind == "luong_general":
            self.w = nn.Linear(hidden, hidden, bias=False)
        elif kind == "bahdanau":
            self.w_query = nn.Linear(hidden, hidden, bias=False)
            self.w_key = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, 1, bias=False)
        elif kind != "luong_dot":
            raise ValueError(f"attention {kind!r}")

    def scores(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.kind == "luong_dot":
            return queries @ keys.transpose(1, 2)  # (B, T, S)
        if self.kind == "luong_general":
            return queries @ self.w(keys).transpose(1, 2)
        q, k = self.w_query(queries), self.w_key(keys)  # (B, T, H), (B, S, H)
        return self.v(torch.tanh(q[:, :, None] + k[:, None])).squeeze(-1)  # (B, T, S)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor):
        """(context (B, T, H), weights (B, T, S)): each row of weights sums to 1 over the real positions."""
        scores = self.scores(queries, keys).masked_fill(~mask[:, None], float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(queries.dtype)
        return weights @ keys, weights


class Seq2SeqModel(nn.Module):
    max_length = None  # any length: the state carries the prefix
    default_lora_targets = ("combine", "head")

    def __init__(self, cfg, vocab_size: int, allowed: torch.Tensor | None = None):
        """allowed: None (one vocabulary both sides share) or, for two (tokenizers.PairTokenizer), the (V,)
        mask of the target ids, the first ids: the head gives logits over them alone."""
        super().__init__()
        out = vocab_size
        if allowed is not None:
            out = int(allowed.sum()) if allowed.dim() == 1 else 0
            if not out or not bool(allowed[:out].all()):
                raise ValueError("a seq2seq model reads text tokens (char or sentencepiece), not field tokens")
        self.vocab_size, self.target_vocab_size = vocab_size, out
        e, h = cfg.embedding_dim, cfg.hidden_size
        self.hidden_size = h
        self.embedding = nn.Embedding(vocab_size, e, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.LSTM(
            e, h, num_layers=cfg.encoder_layers, bidirectional=True, batch_first=True,
            dropout=cfg.dropout if cfg.encoder_layers > 1 else 0.0,
        )  # fmt: skip
        self.bridge_h = nn.Linear(2 * h, h)
        self.bridge_c = nn.Linear(2 * h, h)
        self.decoder = nn.LSTM(
            e, h, num_layers=cfg.decoder_layers, batch_first=True,
            dropout=cfg.dropout if cfg.decoder_layers > 1 else 0.0,
        )  # fmt: skip
        self.attention = Attention(cfg.attention, h)
        self.combine = nn.Linear(2 * h, h)
        self.head = nn.Linear(h, out)
        self.teacher_forcing_ratio = 1.0  # set per step by the fit loop (teacher_forcing_at)
        self.last_decoder_inputs: torch.Tensor | None = None  # what the last training pass fed the decoder

    # -- a pair as one row: <eor> source <eor> target
    @staticmethod
    def split(tokens: torch.Tensor, targets: torch.Tensor | None = None):
        """Rows `<eor> source <eor> target (<pad>...)` -> sources (B, S) padded, their lengths (B,), decoder
        inputs (B, D) (`<eor> target`), their targets (B, D) (-100 past each row's end) and where each
        row's decoder part starts in `tokens` (B,)."""
        b, t = tokens.shape
        after = tokens[:, 1:] == EOR_ID
        if not bool(after.any(1).all()):
            raise ValueError("a seq2seq row holds <eor> source <eor> target: a row has no second <eor>")
        sep = after.int().argmax(1) + 1  # the first <eor> after the start
        lengths = (sep - 1).clamp(min=1)  # an empty source reads its separator as its one token
        s = int(lengths.max())
        at = torch.arange(s, device=tokens.device)
        sources = tokens.gather(1, (at + 1).clamp(max=t - 1).expand(b, s))
        sources = sources.masked_fill(at >= lengths[:, None], PAD_ID)
        d = int((t - sep).max())
        where = sep[:, None] + torch.arange(d, device=tokens.device)
        inside = where < t
        decoder_in = tokens.gather(1, where.clamp(max=t - 1)).masked_fill(~inside, PAD_ID)
        decoder_targets = None
        if targets is not None:
            decoder_targets = targets.gather(1, where.clamp(max=t - 1)).masked_fill(~inside, IGNORE)
        return sources, lengths, decoder_in, decoder_targets, sep

    # -- encoder
    def encode(self, sources: torch.Tensor, lengths: torch.Tensor) -> Seq2SeqState:
        """Sources (B, S) with their lengths (B,) -> the state decoding starts from."""
        x = self.dropout(self.embedding(sources))
        if isinstance(self.encoder, nn.LSTM):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h_n, _) = self.encoder(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=sources.shape[1])  # (B, S, 2H)
        else:  # DP-SGD's DPLSTM: the same per row, from padded rows and their lengths
            out, (h_n, _) = self.encoder(x, lengths=lengths)
        h = self.hidden_size
        memory = out[..., :h] + out[..., h:]  # the two directions summed: (B, S, H)
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # the last layer's forward and backward final states
        layers = self.decoder.num_layers
        h0 = torch.tanh(self.bridge_h(last)).expand(layers, -1, -1).contiguous()
        c0 = torch.tanh(self.bridge_c(last)).expand(layers, -1, -1).contiguous()
        mask = torch.arange(sources.shape[1], device=sources.device) < lengths[:, None].to(sources.device)
        return Seq2SeqState(h0, c0, memory, mask)

    def attend(self, out: torch.Tensor, state: Seq2SeqState) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder outputs (B, T, H) -> (logits (B, T, V), attention weights (B, T, S))."""
        context, weights = self.attention(out, state.memory, state.mask)
        combined = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))
        return self.head(self.dropout(combined)), weights

    # -- training
    def decoder_logits(self, decoder_in: torch.Tensor, state: Seq2SeqState) -> torch.Tensor:
        """(B, D, V) logits of every decoder step, fed the true previous tokens with probability
        teacher_forcing_ratio (always in eval mode), else the model's own likeliest of the step before."""
        ratio = self.teacher_forcing_ratio if self.training else 1.0
        if ratio >= 1.0:
            self.last_decoder_inputs = decoder_in
            out, _ = self.decoder(self.dropout(self.embedding(decoder_in)), hx=(state.h, state.c))
            return self.attend(out, state)[0]
        hc, fed, steps = (state.h, state.c), decoder_in[:, 0], []
        inputs = [fed]
        for t in range(decoder_in.shape[1]):
            out, hc = self.decoder(self.dropout(self.embedding(fed))[:, None], hx=hc)
            logits = self.attend(out, state)[0][:, 0]  # (B, V)
            steps.append(logits)
            if t + 1 < decoder_in.shape[1]:
                own = logits.detach().argmax(-1)
                true = decoder_in[:, t + 1]
                forced = torch.rand(true.shape, device=true.device) < ratio
                fed = torch.where(forced | (true == PAD_ID), true, own)  # (past a row's end: padding stays)
                inputs.append(fed)
        self.last_decoder_inputs = torch.stack(inputs, 1)
        return torch.stack(steps, 1)

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed token losses, correct predictions) over the targets' part of each row."""
        sources, lengths, decoder_in, decoder_targets, _ = self.split(tokens, targets)
        logits = self.decoder_logits(decoder_in, self.encode(sources, lengths))
        flat = logits.float().flatten(0, 1)
        loss = F.cross_entropy(flat, decoder_targets.flatten(), ignore_index=IGNORE, reduction="sum")
        with torch.no_grad():
            correct = ((logits.argmax(-1) == decoder_targets) & (decoder_targets != IGNORE)).sum()
        return loss, correct

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, V) aligned with the row: the decoder's logits at the target part, zeros over the source
        (whose targets are ignored). What DP-SGD takes per-record losses from."""
        sources, lengths, decoder_in, _, sep = self.split(tokens)
        dec = self.decoder_logits(decoder_in, self.encode(sources, lengths))  # (B, D, V)
        b, t = tokens.shape
        where = sep[:, None] + torch.arange(dec.shape[1], device=tokens.device)
        full = dec.new_zeros((b, t + dec.shape[1], dec.shape[2]))  # room past the end, cut below
        full = full.scatter(1, where[..., None].expand(-1, -1, dec.shape[2]), dec)
        return full[:, :t]

    # -- decoding
    def decode_step(self, token: torch.Tensor, state: Seq2SeqState) -> tuple[torch.Tensor, Seq2SeqState]:
        """Feed one target token per row (B,): the next token's logits (B, V) and the new state."""
        out, (h, c) = self.decoder(self.embedding(token)[:, None], hx=(state.h, state.c))
        logits = self.attend(out, state)[0][:, 0]
        return logits, Seq2SeqState(h, c, state.memory, state.mask)

    def prepare_per_record_gradients(self) -> None:
        """DP-SGD: encoder and decoder become DPLSTMs (the same weights and names, so a DP model saves and
        loads as any other); embedding, bridge, attention, combine and head are layers Opacus' own samplers
        give per-pair gradients for. Pairs never interact in a batch (each row's own source, attention
        over its own memory), so row n's gradient is pair n's."""
        from .dp_lstm import DPLSTM, register_grad_sampler  # (Opacus only when privacy is on)

        register_grad_sampler()
        for name in ("encoder", "decoder"):
            lstm = getattr(self, name)
            if isinstance(lstm, nn.LSTM) and any(p.requires_grad for p in lstm.parameters()):
                setattr(self, name, DPLSTM.from_lstm(lstm))
