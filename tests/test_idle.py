"""The wait, before the first window, for the server's other work on the model: on a scripted statistics reader."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from loadgen.plan import Windows
from loadgen.server.idle import IDLE_MIN_TIMEOUT_S, idle_timeout_s, poll_interval_s, wait_until_idle
from loadgen.server.statistics import Counters, Snapshot

MODELS = {"pipe", "head", "tail"}


def _served(count: int) -> Snapshot:
    """The pipeline and its steps after `count` requests of 20 ms."""
    step = Counters(success_count=count, execution_count=count, compute_infer_ns=count * 20_000_000)
    return {("pipe", "1"): Counters(success_count=count), ("head", "1"): step, ("tail", "1"): step}


def _reader(snapshots: list[Snapshot]) -> tuple[list[Snapshot], Callable[[], Awaitable[Snapshot]]]:
    """A statistics reader that hands out `snapshots` in turn, then the last one again."""
    read: list[Snapshot] = []

    async def next_snapshot() -> Snapshot:
        snapshot = snapshots[min(len(read), len(snapshots) - 1)]
        read.append(snapshot)
        return snapshot

    return read, next_snapshot


def test_the_wait_reads_until_the_counters_stand_still_and_says_what_it_waits_for() -> None:
    moving = [_served(count) for count in (10, 20, 30)]  # a queue draining, then nothing more
    read, reader = _reader(moving)
    notes: list[str] = []
    idle = asyncio.run(wait_until_idle(reader, "pipe", MODELS, 10.0, None, notes.append))
    assert idle.idle and idle.busy == ()
    assert len(read) == 4  # the last two reads agree
    assert notes[0].startswith("waiting until the server has no work left on pipe before the first window")
    assert "(still at work: head, pipe, tail; a queue an earlier run left" in notes[0]
    assert notes[-1].startswith("the server had finished its other work on pipe")


def test_an_idle_server_is_read_twice_and_nothing_is_said() -> None:
    read, reader = _reader([_served(10)])
    notes: list[str] = []
    idle = asyncio.run(wait_until_idle(reader, "pipe", MODELS, 10.0, None, notes.append))
    assert idle.idle and len(read) == 2 and notes == []


def test_pending_requests_keep_the_wait_going_until_the_bound_then_it_goes_on_and_says_so() -> None:
    _, reader = _reader([_served(10)])  # counters still, but the metrics say a request of the tail is queued
    notes: list[str] = []
    idle = asyncio.run(wait_until_idle(reader, "pipe", MODELS, 0.6, lambda: {"tail": 3}, notes.append))
    assert not idle.idle and idle.busy == ("tail",) and idle.waited_s >= 0.6
    assert "still at work: tail (3 requests pending);" in notes[0]
    assert notes[-1].startswith("WARNING: after ") and "the server is still at work on pipe (tail" in notes[-1]


def test_the_wait_is_bounded_by_the_level_and_reads_as_often_as_the_slowest_step_needs() -> None:
    assert idle_timeout_s(Windows(interval_ms=5000, count=None, max_windows=10, single=False)) == 50.0
    assert idle_timeout_s(Windows(interval_ms=300, count=None, max_windows=4, single=False)) == IDLE_MIN_TIMEOUT_S
    assert poll_interval_s(_served(10), MODELS) == 0.25  # 2 x 20 ms is below the floor
    slow = {("tail", "1"): Counters(execution_count=2, compute_infer_ns=2 * 400_000_000)}
    assert poll_interval_s(slow, {"tail"}) == 0.8
    assert poll_interval_s(slow, {"pipe"}) == 0.25  # not a model of the run
