"""The level rule on synthetic windows: figures from the last three windows, empty windows, who fell behind."""

from __future__ import annotations

import gc
import os

from loadgen.levels import TREND_WINDOWS, Level, outcome
from loadgen.measurement import Recorder, Window, keep_memory_flat
from loadgen.plan import LevelRule, Load
from loadgen.server.statistics import Composition

RULE = LevelRule(batch_size=1, percentile=None, stability_percentage=10, latency_threshold_ms=None, single=False)
MODEL = Composition("m", "1", 1, 0, False)
SECOND = 1_000_000_000


def _open_window(sent: int, late: int, completed: int, loop_busy: float, limit_hits: int = 0) -> Window:
    """One second of an open loop: `sent` requests, `late` of them over 1 ms late, `completed` answered (`_level`
    places the windows back to back)."""
    recorder = Recorder(open_loop=True)
    for index in range(sent):
        recorder.record_sent(5000 if index < late else 10, recorder.start())
    for _ in range(completed):
        recorder.record_response(2000, 1500, recorder.generation)
    for _ in range(limit_hits):
        recorder.record_limit_hit()
    window = recorder.rotate()
    window.start_ns, window.end_ns = 0, SECOND
    window.loop_cpu_ns = int(loop_busy * SECOND)
    return window


def _level(windows: list[Window], load: Load | None = None) -> Level:
    level = Level(load or Load(rate=100.0), RULE, MODEL)
    for index, window in enumerate(windows):
        placed = Window.decode(window.encode())  # a copy, placed at its second
        placed.start_ns, placed.end_ns = index * SECOND, (index + 1) * SECOND
        level.add(placed, {})
    return level


def test_late_sends_with_an_idle_loop_blame_the_machine_not_the_client() -> None:
    level = _level([_open_window(100, 20, 100, loop_busy=0.05)] * 3).result()
    assert level.saturated == "machine"
    assert _level([_open_window(100, 20, 100, loop_busy=0.9)] * 3).result().saturated == "client"
    assert _level([_open_window(100, 0, 100, loop_busy=0.05)] * 3).result().saturated is None
    assert _level([_open_window(100, 0, 60, loop_busy=0.05)] * 3).result().saturated == "server"
    assert _level([_open_window(100, 20, 100, 0.05, limit_hits=3)] * 3).result().saturated == "server"


def test_windows_without_requests_are_a_level_with_zero_figures() -> None:
    result = _level([_open_window(0, 0, 0, loop_busy=0.0)] * 3).result()
    assert (result.request_count, result.throughput, result.send_rate) == (0, 0.0, 0.0)
    assert result.send_lag_us is not None and result.send_lag_us.p99 == 0
    assert not result.stable  # nothing to agree on


def test_a_level_merges_its_last_three_windows() -> None:
    windows = [_open_window(sent, 0, sent, loop_busy=0.1) for sent in (10, 100, 100, 100)]
    level = _level(windows)
    assert level.stable
    result = level.result()
    assert (result.request_count, result.windows) == (300, 4)
    assert result.throughput == 100.0


def test_a_sweep_that_stopped_unstable_says_where() -> None:
    stable = _level([_open_window(100, 0, 100, 0.1)] * 3).result()
    unstable = _level([_open_window(n, 0, n, 0.1) for n in (10, 100, 300)], Load(concurrency=4)).result()
    assert outcome([stable]) == ("complete", "")
    status, message = outcome([stable, unstable])
    assert status == "unstable"
    assert message.startswith("no stable measurement at concurrency 4 after 3 windows")


def test_a_level_where_nothing_returned_says_so() -> None:
    silent = _level([_open_window(3, 0, 0, 0.01)] * 3, Load(concurrency=2)).result()
    status, message = outcome([silent])
    assert status == "unstable" and message.startswith("no request completed at concurrency 2 in 3 windows")


def _rss_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_thousand_windows_keep_a_level_within_a_bound() -> None:
    """A soak's level keeps the windows its figures come from whole and a bounded trend: each window's histograms
    (about 180 KB each, three in an open loop's) are let go once they fall out of the last three."""
    keep_memory_flat()  # as every run does
    level = Level(Load(rate=100.0), RULE, MODEL)
    for _ in range(50):  # the allocator's pools settle first
        level.add(_open_window(20, 0, 20, loop_busy=0.1), {})
    gc.collect()
    before = _rss_bytes()
    for _ in range(1000):
        level.add(_open_window(20, 0, 20, loop_busy=0.1), {})
    gc.collect()
    assert level.count == 1050
    assert _rss_bytes() - before < 5_000_000  # kept whole, 1000 windows would hold over 500 MB
    result = level.result()
    assert result.windows == 1050 and result.request_count == 3 * 20
    assert len(result.trend) == TREND_WINDOWS
