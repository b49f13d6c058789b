"""Time: the monotonic clock mapped to UNIX time once, across processes and clock steps."""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.queues import Queue

import pytest

from loadgen.clock import WallClock
from loadgen.server.metrics import MetricsCollector

HOUR_NS = 3600 * 10**9


def test_the_mapping_goes_both_ways() -> None:
    clock = WallClock.now()
    instant = time.perf_counter_ns()
    assert clock.perf_ns(clock.unix_ns(instant)) == instant
    assert abs(clock.unix_ns(instant) - time.time_ns()) < HOUR_NS  # sanity: UNIX time, not some other epoch


def _child_reading(queue: Queue[int]) -> None:
    queue.put(time.perf_counter_ns())


def test_a_spawned_process_reads_the_parents_perf_counter() -> None:
    """Workers take the parent's perf_counter_ns instants as they are: in a spawned process the clock is the same."""
    context = multiprocessing.get_context("spawn")
    queue: Queue[int] = context.Queue()
    before = time.perf_counter_ns()
    child = context.Process(target=_child_reading, args=(queue,))
    child.start()
    reading = queue.get(timeout=60)
    child.join(timeout=60)
    after = time.perf_counter_ns()
    assert before < reading < after  # the child's instant falls between the parent's: one clock


def test_a_clock_step_moves_neither_the_mapping_nor_the_metrics_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock.now()
    collector = MetricsCollector("http://127.0.0.1:9/metrics")
    stepped = time.time_ns() + HOUR_NS  # the system clock jumps an hour ahead (NTP, a manual change)
    monkeypatch.setattr(time, "time_ns", lambda: stepped)
    monkeypatch.setattr(time, "time", lambda: stepped / 1e9)
    assert abs(clock.unix_s() - (stepped - HOUR_NS) / 1e9) < 60
    window = collector.window()
    assert 0 <= window.duration_s < 60  # not an hour long
