"""The output head with field tokens (tables), shared by every model family.

    add_slots(net, allowed)                    # buffers: each slot's vocabulary, its range, the loss's groups
    logits = masked(net, logits, positions)    # (B, T, V): -inf outside each step's slot
    loss, correct = field_loss(net, out, targets, positions, net.head)   # out (B, T, H): the head's input

Every row holds each slot once, and a slot's tokens are one contiguous range of ids lo..hi-1, so
slot s's logits are only its own tokens' (hi - lo of them, not V): the rows' outputs at that slot
times that slice of the head. Slots of similar vocabulary size are stacked into one batched product
(padded to the group's largest), which costs ~ the sum of the slot sizes per row instead of slots x V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # as data.IGNORE_INDEX: targets the loss skips


def add_slots(net: nn.Module, allowed: torch.Tensor) -> None:
    """allowed: (S + 1, V) bool, which tokens each slot may hold. Buffers only (rebuilt from the
    tokenizer, never saved), so they follow the model's device."""
    net.register_buffer("blocked", ~allowed, persistent=False)
    net.slot_ranges = slot_ranges(allowed)  # slot -> (lo, hi): its tokens are ids lo..hi-1
    for k, group in enumerate(_slot_groups(allowed)):
        for name, tensor in zip(("slots", "index", "pad"), group):
            net.register_buffer(f"_group{k}_{name}", tensor, persistent=False)


def masked(net: nn.Module, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(net.blocked[positions], float("-inf"))  # only the slot's own tokens


def slot_groups(net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    buffers = dict(net.named_buffers())
    out, k = [], 0
    while f"_group{k}_slots" in buffers:
        out.append(tuple(buffers[f"_group{k}_{name}"] for name in ("slots", "index", "pad")))
        k += 1
    return out


def field_loss(
    net: nn.Module, out: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, head: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the token losses, correct predictions) from the head's inputs `out` (B, T, H), T = S + 1."""
    b, t, hidden = out.shape
    where = torch.empty_like(positions)  # where[r, s]: the step at which row r predicts slot s
    where.scatter_(1, positions, torch.arange(t, device=out.device).expand(b, t))
    loss = out.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=out.device)
    for slots, index, pad in slot_groups(net):  # (K,), (K, M), (K, M)
        steps = where[:, slots]  # (B, K)
        h = out.gather(1, steps[..., None].expand(b, len(slots), hidden))  # (B, K, H)
        w = head.weight[index]  # (K, M, H)
        bias = head.bias[index].masked_fill(pad, float("-inf"))  # (K, M)
        logits = (torch.bmm(h.transpose(0, 1), w.transpose(1, 2)) + bias[:, None]).float()  # (K, B, M)
        target = targets.gather(1, steps).T  # (K, B): token ids, or -100
        local = torch.where(target == IGNORE, IGNORE, target - index[:, :1])
        loss = loss + F.cross_entropy(logits.flatten(0, 1), local.flatten(), ignore_index=IGNORE, reduction="sum")
        with torch.no_grad():
            correct += ((logits.argmax(-1) == local) & (local != IGNORE)).sum()
    return loss, correct


def text_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the token losses, correct predictions) from full logits (B, T, V)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    with torch.no_grad():
        correct = ((logits.argmax(-1) == targets) & (targets != IGNORE)).sum()
    return loss, correct


def slot_ranges(allowed: torch.Tensor) -> list[tuple[int, int]]:
    ranges = []
    for row in allowed:
        ids = torch.nonzero(row).squeeze(1)
        ranges.append((int(ids[0]), int(ids[-1]) + 1))  # a slot's tokens are one contiguous range
    return ranges


def _slot_groups(allowed: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Slots grouped by vocabulary size (the next power of two, at least 8): per group the slot ids
    (K,), each slot's token ids padded to the group's width M (K, M), and the padding (K, M)."""
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for s, (lo, hi) in enumerate(slot_ranges(allowed)):
        width = max(8, 1 << (hi - lo - 1).bit_length())
        groups.setdefault(width, []).append((s, lo, hi))
    out = []
    for width, members in sorted(groups.items()):
        slots = torch.tensor([s for s, _, _ in members])
        offsets = torch.arange(width)
        index = torch.tensor([lo for _, lo, _ in members])[:, None] + offsets  # (K, M)
        pad = offsets >= torch.tensor([hi - lo for _, lo, hi in members])[:, None]
        out.append((slots, index.clamp(max=allowed.shape[1] - 1), pad))
    return out
