"""Which records a generate() call starts and keeps, and its sampling streams side by side.

    draws = Draws(needs, max_invalid)        # per job: how many valid records it needs
    started = draws.start(free)              # (job, ticket) of the records to start now
    cancel = draws.finish(ticket, record)    # tickets of records in flight no longer wanted
    run_streams([stream_a, stream_b], device)

The sample is each job's records in start order up to its last needed valid one, so quick
(short) records are not favoured; near the end extra records run beside the last needed ones
(SPECULATION), by the valid rate so far.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Callable

import torch

from .records import GeneratedRecord

SPECULATION = 1.25  # records in flight per valid record still needed, over the valid rate so far


class Draws:
    """Which records to start, and which finished ones make up the sample, per job (a job is
    one prefix or one seed; `needs[j]` valid records are wanted of job j).

    Every record started gets a ticket, in start order. A job's sample is its records in
    ticket order up to its needs[j]-th valid one. That rule is blind to how long records take,
    so records started beside the needed ones, to keep the batch full while the last needed
    ones finish, cannot bias the sample toward short records: a record past its job's cutoff
    was never part of the sample, and is cancelled in flight or dropped when it finishes.
    Started records past what is surely needed are SPECULATION x (still needed) / (valid rate).
    """

    def __init__(self, needs: list[int], max_invalid: int):
        self.needs = needs
        self.max_invalid = max_invalid
        self.job_of: dict[int, int] = {}  # ticket -> job, for records in flight or kept
        self.in_flight: list[set[int]] = [set() for _ in needs]
        self.valid_tickets: list[list[int]] = [[] for _ in needs]  # sorted, at most needs[j]
        self.invalid_tickets: list[list[int]] = [[] for _ in needs]  # sorted, all before the cutoff
        self.kept: dict[int, GeneratedRecord] = {}  # ticket -> finished record in the sample
        self.next_ticket = 0
        self.first_open = 0  # jobs before it have their sample's cutoff
        self.valid = self.invalid = 0  # in the sample so far
        self.seen = self.seen_valid = 0  # every record finished (for the valid rate)

    def cutoff(self, job: int) -> int | None:
        valid = self.valid_tickets[job]
        if len(valid) < self.needs[job]:
            return None
        return valid[-1] if valid else -1  # (a job of no records needs none started)

    def start(self, free: int) -> list[tuple[int, int]]:
        """(job, ticket) of up to `free` records to start now: first what is needed if every
        record in flight turns out valid, then the speculative ones. None past max_invalid
        (those in flight still finish: nothing is thrown away)."""
        if self.invalid > self.max_invalid:
            return []
        while self.first_open < len(self.needs) and self.cutoff(self.first_open) is not None:
            self.first_open += 1
        rate = (self.seen_valid + 1) / (self.seen + 1)
        started: list[tuple[int, int]] = []
        for speculative in (False, True):
            for job in range(self.first_open, len(self.needs)):
                if len(started) >= free:
                    return started
                still = self.needs[job] - len(self.valid_tickets[job])
                if still <= 0:
                    continue
                target = math.ceil(SPECULATION * still / rate) if speculative else still
                for _ in range(min(target - len(self.in_flight[job]), free - len(started))):
                    self.job_of[self.next_ticket] = job
                    self.in_flight[job].add(self.next_ticket)
                    started.append((job, self.next_ticket))
                    self.next_ticket += 1
        return started

    def finish(self, ticket: int, record: GeneratedRecord) -> set[int]:
        """Take in a finished record; returns the tickets in flight that the sample no longer needs."""
        job = self.job_of[ticket]
        self.in_flight[job].discard(ticket)
        self.seen += 1
        self.seen_valid += record.valid
        cutoff = self.cutoff(job)
        if cutoff is not None and ticket > cutoff:  # started before the cutoff was known
            del self.job_of[ticket]
            return set()
        self.kept[ticket] = record
        bisect.insort(self.valid_tickets[job] if record.valid else self.invalid_tickets[job], ticket)
        self.valid += record.valid
        self.invalid += not record.valid
        valid = self.valid_tickets[job]
        if len(valid) < self.needs[job]:
            return set()
        if len(valid) > self.needs[job]:  # an earlier record came in valid: the cutoff moves back
            self._drop(valid.pop())
            self.valid -= 1
        cutoff = valid[-1]
        invalid = self.invalid_tickets[job]
        while invalid and invalid[-1] > cutoff:
            self._drop(invalid.pop())
            self.invalid -= 1
        cancel = {t for t in self.in_flight[job] if t > cutoff}
        self.in_flight[job] -= cancel
        for t in cancel:
            del self.job_of[t]
        return cancel

    def _drop(self, ticket: int) -> None:
        del self.kept[ticket]
        del self.job_of[ticket]

    def records(self) -> list[GeneratedRecord]:
        """The sample so far, in start order."""
        return [self.kept[t] for t in sorted(self.kept)]


def split_needs(needs: list[int], streams: int) -> list[list[int]]:
    """Each job's records shared out among the streams, as evenly as can be; one-record jobs
    (seeds) go round the streams in turn. Depends on nothing but its arguments, so a seed
    gives the same records on any machine."""
    shares = [[0] * len(needs) for _ in range(streams)]
    turn = 0
    for job, need in enumerate(needs):
        for k in range(streams):
            shares[k][job] = need // streams
        for _ in range(need % streams):
            shares[turn][job] += 1
            turn = (turn + 1) % streams
    return shares


def share(total: int, streams: int, k: int) -> int:
    """Stream k's share of `total` (batch_size, max_invalid): as even as can be, the first ones larger."""
    return total // streams + (k < total % streams)


def stream_seed(seed: int, k: int) -> int:
    """Stream k's sampling seed: the seed itself for the first stream."""
    return seed if k == 0 else (seed + k * 0x9E3779B97F4A7C15) % 2**63


class Stopped(Exception):
    """Raised inside a stream's thread to end it early (Ctrl-C in the main thread)."""


def run_streams(streams: list[Callable[[], None]], device: torch.device) -> None:
    """Run the sampling streams side by side: the first in this thread, the others in
    threads of their own, each with its share of torch's CPU threads. While one stream runs
    Python (decoding, checks) the others keep the cores busy with matrix products: ~10 %
    more records/s than one stream with all threads, on 2 cores. A stream's error (or
    Ctrl-C here) stops the others at their next step and is raised here."""
    if len(streams) == 1:
        streams[0]()
        return
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(stream):
        def run() -> None:
            try:
                stream(should_stop=stop.is_set)
            except Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 (raised again in the main thread)
                errors.append(exc)
                stop.set()

        return run

    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads_before // len(streams)))
    workers = [threading.Thread(target=guarded(s), daemon=True) for s in streams[1:]]
    try:
        for w in workers:
            w.start()
        try:
            streams[0](should_stop=stop.is_set)
        except Stopped:
            pass
        except BaseException:
            stop.set()
            raise
        finally:
            for w in workers:
                w.join()
    finally:
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]
