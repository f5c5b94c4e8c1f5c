"""Sampling field-token rows in lockstep: every row of a batch is at the same slot at every step.

    plans = job_plans(tokenizer, seeds)                     # per job: its slot order and seeded tokens
    sample_field_stream(net, tokenizer, plans, settings, generator, slots, wanted, finish)

A field-token row is a fixed number of slots (fields.py), so the rows of a batch start together
and end together: no row waits for another, no slot is refilled mid-batch, and every step samples
one slot for all rows, its logits computed from that slot's slice of the head only (a slot holds
tens of tokens of a vocabulary of thousands). A text column's slots after its <end-of-field> are
filler: the row feeds <pad> there, as in training. Seed fields are the first slots of the order,
fed through the model once per distinct seed; the model then samples the rest of the row from
their state, so every record is a draw from the model given its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .fields import EOR_ID, PAD_ID, FieldTokenizer, TextCodec
from .sampling import sample_next


@dataclass
class JobPlan:
    """How a job's rows are written: the slots in order (seeded columns' slots first) and the
    token ids of the seeded slots (the first len(prefix) of the order)."""

    order: tuple[int, ...]
    prefix: tuple[int, ...]
    fields: tuple[tuple[int, str], ...] = ()  # (column, seed text): written as given


def job_plans(tokenizer: FieldTokenizer, seeds: list[dict[str, str]] | None) -> list[JobPlan]:
    """One plan per job: no seeds, one job in the model's slot order; else per seed its columns'
    slots first (in the seed's column order), then the others' in the model's order. ValueError
    names a seed value the vocabularies cannot hold."""
    canonical = tuple(range(tokenizer.num_slots))
    if not seeds:
        return [JobPlan(canonical, ())]
    plans = []
    for seed in seeds:
        first = [tokenizer.columns.index(c) for c in seed]
        order = [s for c in first for s in tokenizer.column_slots[c]]
        order += [s for s in canonical if tokenizer.slots[s].column not in first]
        prefix = [t for c, value in zip(first, seed.values()) for t in tokenizer.encode_column(c, value)]
        plans.append(JobPlan(tuple(order), tuple(prefix), tuple(zip(first, seed.values()))))
    return plans


@torch.no_grad()
def sample_field_stream(
    net: torch.nn.Module,
    tokenizer: FieldTokenizer,
    plans: list[JobPlan],
    settings: tuple[float, int, float],
    generator: torch.Generator,
    slots: int,
    wanted: Callable[[int], list[tuple[int, int]]],
    finish: Callable[[list[list[str]], list[int]], object],
    should_stop: Callable[[], bool] | None = None,
    banned: dict[int, list[int]] | None = None,
    precision: str = "fp32",
) -> None:
    """Sample rows until `wanted(free)` starts none: each round starts up to `slots` records
    ((job, ticket) pairs), samples them in lockstep (rows of one slot order together) and hands
    their fields, in the model's column order, to `finish(rows, tickets)`. `banned`: slot ->
    local ids never drawn there (a DP model's <rare>). `should_stop()` true ends the stream.
    `precision`: the plan's (the model's sampling_plan)."""
    plan = net.sampling_plan(precision)
    decode_rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))
    while True:
        if should_stop is not None and should_stop():
            return
        started = wanted(slots)
        if not started:
            return
        by_order: dict[tuple[int, ...], list[int]] = {}
        for i, (job, _) in enumerate(started):
            by_order.setdefault(plans[job].order, []).append(i)
        rows: list[list[str] | None] = [None] * len(started)
        for order, members in by_order.items():
            jobs = [started[i][0] for i in members]
            ids = _lockstep(net, plan, tokenizer, order, [plans[j].prefix for j in jobs], settings, generator, banned)
            canonical = np.empty_like(ids)
            canonical[:, list(order)] = ids
            for i, job, row in zip(members, jobs, tokenizer.decode_rows(canonical, decode_rng)):
                for c, text in plans[job].fields:  # a seed as given (a part that copies another column
                    row[c] = text  # would otherwise follow that column's sampled value)
                rows[i] = row
            if should_stop is not None and should_stop():
                return
        finish(rows, [ticket for _, ticket in started])


@torch.no_grad()
def _lockstep(net, plan, tokenizer: FieldTokenizer, order, prefixes, settings, generator, banned) -> np.ndarray:
    """(n, S) token ids, column j holding slot order[j], for rows whose first slots are `prefixes`
    (all of one length)."""
    device = next(net.parameters()).device
    temperature, top_k, top_p = settings
    n, p = len(prefixes), len(prefixes[0])
    s_total = len(order)
    out = np.empty((n, s_total), dtype=np.int64)
    if p:
        out[:, :p] = np.asarray(prefixes, dtype=np.int64)
    if p == s_total:
        return out
    slot_info = tokenizer.slots
    first = slot_info[order[p]]
    logits, state = _prefix_state(net, order, prefixes, device, (first.base, first.base + first.size))
    text_cols = {c for c, codec in enumerate(tokenizer.codecs) if isinstance(codec, TextCodec)}
    ended: dict[int, torch.Tensor] = {}  # text column -> rows past its <end-of-field>
    for j in range(p, s_total):
        slot = slot_info[order[j]]
        if banned and order[j] in banned:
            logits[:, banned[order[j]]] = float("-inf")
        index = sample_next(logits, temperature, top_k, top_p, generator, overwrite=True, specials=False)
        token = index + slot.base
        if slot.column in text_cols:
            done = ended.get(slot.column)
            if done is not None:
                token = token.masked_fill(done, PAD_ID)  # filler after the field's end
                ended[slot.column] = done | (index == 0)
            else:
                ended[slot.column] = index == 0
        out[:, j] = token.cpu().numpy()
        if j + 1 < s_total:
            logits, state = net.step_slot(token, order[j], order[j + 1], state, plan)
    return out


def _prefix_state(net, order, prefixes, device, head: tuple[int, int]):
    """Logits (n, hi - lo) of the first unseeded slot (its range `head` = (lo, hi) of the vocabulary)
    and the model's state after [<eor>] + prefix; each distinct prefix runs once (chunks of 512),
    its slice of the logits and its state then copied to its rows."""
    p = len(prefixes[0])
    distinct = list(dict.fromkeys(prefixes))
    where = {prefix: k for k, prefix in enumerate(distinct)}
    positions_row = list(order[: p + 1])  # the slot each step predicts
    logits, states = [], []
    for i in range(0, len(distinct), 512):
        chunk = distinct[i : i + 512]
        inputs = torch.tensor([[EOR_ID, *prefix] for prefix in chunk], device=device)
        positions = torch.tensor([positions_row] * len(chunk), device=device)
        last, state = net.start(inputs, positions=positions)
        logits.append(last[:, head[0] : head[1]])
        states.append(state)
    rows = torch.tensor([where[prefix] for prefix in prefixes], device=device)
    return torch.cat(logits)[rows], type(states[0]).cat(states).rows(rows)
