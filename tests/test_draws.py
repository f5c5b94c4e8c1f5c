"""Which records generation starts and keeps (draws.Draws): the sample is each job's records in
start order up to its last needed valid one, however many extra records ran beside them and
whatever order they finished in, so keeping the batch full never biases the sample toward
records that finish sooner (shorter ones)."""

from __future__ import annotations

import math
import random

import pytest

from synthloom.draws import SPECULATION, Draws
from synthloom.records import GeneratedRecord


def record(valid: bool) -> GeneratedRecord:
    return GeneratedRecord("x" if valid else "", valid, None if valid else "bad")


def run(needs: list[int], outcome, slots: int, rng: random.Random, max_invalid: int = 10**9):
    """Drive Draws like sample_stream does: start, finish in flight records in random order
    (as records of random lengths would), free cancelled slots; returns the draws."""
    draws = Draws(needs, max_invalid)
    running = dict((t, j) for j, t in draws.start(slots))
    while running:
        ticket = rng.choice(sorted(running))
        del running[ticket]
        for t in draws.finish(ticket, record(outcome(ticket))):
            running.pop(t)
        running |= dict((t, j) for j, t in draws.start(slots - len(running)))
    return draws


@pytest.mark.parametrize("slots", [1, 7, 64])
def test_the_sample_is_the_first_needed_valid_records_in_start_order_whatever_order_they_finish(slots):
    valid_ticket = lambda t: t % 3 != 1  # noqa: E731 (tickets 1, 4, 7... are invalid)
    for trial in range(20):
        draws = run([10], valid_ticket, slots, random.Random(trial))
        kept = sorted(draws.kept)
        # start order up to the 10th valid ticket: 0..14, of which 1, 4, 7, 10, 13 invalid
        assert kept == list(range(15))
        assert [r.valid for r in draws.records()] == [valid_ticket(t) for t in range(15)]
        assert (draws.valid, draws.invalid) == (10, 5)


def test_extra_records_start_by_the_valid_rate_and_are_cancelled_when_not_needed():
    draws = Draws([4], max_invalid=100)
    first = [t for _, t in draws.start(100)]
    assert first == list(range(math.ceil(SPECULATION * 4)))  # nothing seen yet: a rate of 1
    draws.finish(0, record(False))
    draws.finish(1, record(False))
    draws.finish(2, record(True))  # 1 of 3 valid: the rate is (1 + 1) / (3 + 1)
    more = [t for _, t in draws.start(100)]
    in_flight = len(first) - 3 + len(more)
    assert in_flight == math.ceil(SPECULATION * 3 / 0.5)  # 3 still needed, at half of them valid
    assert more == list(range(len(first), len(first) + len(more)))
    draws.finish(4, record(True))
    draws.finish(5, record(True))
    assert sorted(draws.kept) == [0, 1, 2, 4, 5]
    cancelled = draws.finish(3, record(True))  # the 4th valid in start order: 2, 3, 4, 5
    assert cancelled == set(more[1:])  # everything started after ticket 5 is no longer needed
    assert sorted(draws.kept) == [0, 1, 2, 3, 4, 5] and draws.start(100) == []
    assert (draws.valid, draws.invalid) == (4, 2)


def test_an_earlier_record_finishing_valid_moves_the_cutoff_back():
    draws = Draws([2], max_invalid=100)
    draws.start(2)
    draws.finish(0, record(False))
    draws.start(10)  # speculation: 1, 2, 3, ...
    draws.finish(2, record(True))
    draws.finish(3, record(True))  # 2 valid: the cutoff is ticket 3 for now
    assert sorted(draws.kept) == [0, 2, 3]
    draws.finish(1, record(True))  # ticket 1 is earlier: the sample is 0, 1, 2
    assert sorted(draws.kept) == [0, 1, 2] and (draws.valid, draws.invalid) == (2, 1)


def test_max_invalid_counts_only_records_in_the_sample():
    # 3 needed; every third record invalid; records past the cutoff do not count
    draws = run([3], lambda t: t % 3 != 0, slots=50, rng=random.Random(0), max_invalid=1)
    assert [r.valid for r in draws.records()] == [False, True, True, False, True]
    assert draws.invalid == 2  # more than max_invalid=1: no more starts after that, as before
    assert draws.start(10) == []


def test_many_jobs_each_get_their_own_cutoff():
    needs = [1, 3, 2, 1]
    draws = run(needs, lambda t: t % 4 != 2, slots=5, rng=random.Random(3))
    for job, need in enumerate(needs):
        mine = [t for t in sorted(draws.kept) if draws.job_of[t] == job]
        assert sum(draws.kept[t].valid for t in mine) == need
        assert draws.kept[mine[-1]].valid  # each job's sample ends with its last needed valid record


def test_a_slow_long_record_is_not_traded_for_a_quick_one():
    """The bias this rule prevents: with extra records in flight, the first records to *finish*
    are the short ones. Records of two lengths, long ones started at even tickets; whatever
    finishes first, half of the sample stays long."""
    draws = Draws([200], max_invalid=10**9)
    long = lambda t: t % 2 == 0  # noqa: E731
    running = {t for _, t in draws.start(64)}
    clock = {t: (3 if long(t) else 1) for t in running}  # steps left
    while running:
        for t in list(running):
            clock[t] -= 1
        for t in sorted(t for t in running if clock[t] == 0):
            if t in running:
                running.discard(t)
                running -= draws.finish(t, record(valid=True))
        for _, t in draws.start(64 - len(running)):
            running.add(t)
            clock[t] = 3 if long(t) else 1
    assert sorted(draws.kept) == list(range(200))  # 100 long, 100 short


# --------------------------------------------------------------------------- streams


def test_split_needs_shares_every_record_and_spreads_single_seeds():
    from synthloom.draws import split_needs

    assert split_needs([10], 2) == [[5], [5]]
    assert split_needs([7], 3) == [[3], [2], [2]]
    assert split_needs([1, 1, 1, 1, 1], 2) == [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]  # seeds alternate
    assert split_needs([3, 1], 1) == [[3, 1]]
    for needs, k in (([5, 0, 9, 1], 3), ([1] * 7, 4), ([0], 2)):
        shares = split_needs(needs, k)
        assert [sum(col) for col in zip(*shares)] == needs  # nothing lost, nothing doubled
        assert max(map(sum, shares)) - min(map(sum, shares)) <= max(1, max(needs) % k + 1)


def test_a_job_that_needs_nothing_starts_nothing():
    draws = Draws([0, 2], max_invalid=10)
    assert draws.cutoff(0) == -1
    assert {job for job, _ in draws.start(10)} == {1}
