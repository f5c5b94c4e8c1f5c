"""Sampling text-token records with continuous batching: up to `slots` records in flight, one token
each per step; a record that ends hands its row to a new one at once (the model's state refilled in
place), so the matrix products stay full-width to the last record. Field-token rows sample in
lockstep instead (lockstep.py).

    sample_stream(net, job_prefixes, max_tokens, (temperature, top_k, top_p), generator, slots, wanted, finish)
"""

from __future__ import annotations

from typing import Callable

import torch

from .draws import Stopped
from .sampling import sample_next
from .tokenizers import EOR_ID, PAD_ID, Tokenizer


@torch.no_grad()
def sample_stream(
    net: torch.nn.Module,
    job_prefixes: list[list[int]],
    max_tokens: int,
    settings: tuple[float, int, float],
    generator: torch.Generator,
    slots: int,
    wanted: Callable[[int], list[tuple[int, int]]],
    finish: Callable[[list[list[int]], list[bool], list[int]], set[int]],
    stop: list[str] | None = None,
    tokenizer: Tokenizer | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: str = "fp32",
) -> None:
    """Sample records with continuous batching: up to `slots` records in flight, one token
    each per step; a record that ends hands its slot to a new one at once, so the matrix
    products stay full-width to the last record. `wanted(free)` returns (job, ticket) of the
    records to start now (at most `free`); a record of job j continues `job_prefixes[j]`.
    `finish(token_rows, ended, tickets)` receives records as they end: their tokens (without
    the end token), whether they ended by themselves (False: max_tokens hit), and their
    tickets; it returns the tickets of records in flight that are no longer wanted, whose
    rows are freed at once. `should_stop()` true ends the stream at the next step (Stopped).

    Each distinct prefix runs once; every record of a job starts from its state, and rows
    never interact, so each record's distribution is that of sampling it alone.
    """
    temperature, top_k, top_p = settings
    device = next(net.parameters()).device
    plan = net.sampling_plan(precision)
    job_row, first_logits, first_state = _prefix_states(net, job_prefixes, device)

    def start(jobs: list[int]):
        rows = torch.tensor([job_row[j] for j in jobs], device=device)
        return first_logits[rows], first_state.rows(rows)

    started = wanted(slots)
    n = len(started)
    if n == 0:
        return
    jobs = [job for job, _ in started]
    tickets = [ticket for _, ticket in started]
    logits, state = start(jobs)
    buf = torch.full((n, max_tokens), PAD_ID, dtype=torch.int32, device=device)  # tokens so far
    pos = torch.zeros(n, dtype=torch.long, device=device)  # each row's length
    step = 0
    while n > 0:
        if should_stop is not None and should_stop():
            raise Stopped
        token = sample_next(logits, temperature, top_k, top_p, generator, overwrite=True)  # (n,)
        buf[torch.arange(n, device=device), pos] = token.int()
        pos += 1
        step += 1
        eor = token == EOR_ID
        ended = eor.clone()
        if stop and tokenizer is not None and step % 4 == 0:  # stop strings: checked every few steps
            width = int(pos.max())
            texts = tokenizer.decode_batch([r[:n] for r, n in zip(buf[:, :width].tolist(), pos.tolist())])
            ended |= torch.tensor([any(s in x for s in stop) for x in texts], device=device)
        finished = ended | (pos >= max_tokens)
        done = finished.nonzero().squeeze(1)  # rows whose record ended this step
        refill = done[:0]
        new: list[tuple[int, int]] = []
        if done.numel():
            done_rows = done.tolist()
            lengths = (pos[done] - eor[done].long()).tolist()  # the end token is not kept
            cancel = finish(
                [row[:length] for row, length in zip(buf[done].tolist(), lengths)],
                ended[done].tolist(),
                [tickets[i] for i in done_rows],
            )
            if cancel:  # rows still running whose records are no longer wanted: freed as well
                ending = set(done_rows)
                done_rows = sorted(done_rows + [i for i, t in enumerate(tickets) if t in cancel and i not in ending])
            freed = torch.tensor(done_rows, device=device)
            new = wanted(len(done_rows))
            refill, drop = freed[: len(new)], freed[len(new) :]  # freed slots start new records, in place
            for row, (job, ticket) in zip(done_rows, new):
                jobs[row], tickets[row] = job, ticket
            buf[refill] = PAD_ID
            pos[refill] = 0
            if drop.numel():  # nothing more to start: the batch shrinks
                keep = torch.ones(n, dtype=torch.bool, device=device)
                keep[drop] = False
                token, buf, pos = token[keep], buf[keep], pos[keep]
                state = state.rows(keep)
                kept = keep.tolist()
                jobs = [j for j, k in zip(jobs, kept) if k]
                tickets = [t for t, k in zip(tickets, kept) if k]
                refill = torch.cumsum(keep, 0)[refill] - 1  # the refilled rows' new positions
                n = len(jobs)
        if n == 0:
            break
        logits, state = net.step(token, state, plan)  # (n, V); a refilled row's step is discarded:
        if refill.numel():  # it starts from its job's prefix state instead
            logits[refill], fresh = start([job for job, _ in new])
            state.put(refill, fresh)


def _prefix_states(net: torch.nn.Module, job_prefixes: list[list[int]], device) -> tuple:
    """Where each job starts: the row of its prefix, then per distinct prefix the logits (P, V)
    and the model's state after [<eor>] + the prefix; each distinct prefix runs once, prefixes of
    one length together."""
    distinct = list(dict.fromkeys(tuple(p) for p in job_prefixes))
    by_length: dict[int, list[int]] = {}
    for k, p in enumerate(distinct):
        by_length.setdefault(len(p), []).append(k)
    order, logits, states = [], [], []
    for group in by_length.values():
        for i in range(0, len(group), 512):
            chunk = group[i : i + 512]
            last, state = net.start(torch.tensor([[EOR_ID, *distinct[k]] for k in chunk], device=device))
            order += chunk
            logits.append(last)
            states.append(state)
    row = [0] * len(distinct)  # distinct prefix k -> its row in the stacked results
    for r, k in enumerate(order):
        row[k] = r
    index = {p: k for k, p in enumerate(distinct)}
    return [row[index[tuple(p)]] for p in job_prefixes], torch.cat(logits), type(states[0]).cat(states)
