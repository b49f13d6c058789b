"""The sweep's level logic (linear, latency threshold, binary search) on synthetic measurements."""

from __future__ import annotations

import asyncio

from loadgen.levels import ends_sweep
from loadgen.measurement import LatencyStats
from loadgen.plan import LevelRule, Load
from loadgen.results import LevelResult
from loadgen.sweep import binary_search, linear


def _fake(latency_ms_per_load: float, unstable_at: int | None = None) -> tuple[list[int], object]:
    measured: list[int] = []

    async def measure(load: Load) -> LevelResult:
        assert load.concurrency is not None
        measured.append(load.concurrency)
        avg = load.concurrency * latency_ms_per_load * 1000
        latency = LatencyStats(0, avg, 0.0, 0, 0, 0, 0, 0)
        stable = load.concurrency != unstable_at
        return LevelResult(load.concurrency, None, 100.0, 10, 0, stable, latency, 3, 1.0)

    return measured, measure


def _rule(threshold_ms: float) -> LevelRule:
    return LevelRule(
        batch_size=1, percentile=None, stability_percentage=10, latency_threshold_ms=threshold_ms, single=False
    )


def _over(threshold_ms: float) -> object:
    return _rule(threshold_ms).over_threshold


def _ends(threshold_ms: float) -> object:
    return lambda level: ends_sweep(level, _rule(threshold_ms))


LOADS = [Load(concurrency=c) for c in range(1, 17)]


def _run(walk: object, measure: object, over: object) -> list[int]:
    return [level.concurrency for level in asyncio.run(walk(LOADS, measure, over))]  # type: ignore[operator]


def test_linear_stops_at_the_first_level_over_the_threshold() -> None:
    measured, measure = _fake(10)
    assert _run(linear, measure, _ends(35)) == [1, 2, 3, 4]
    assert measured == [1, 2, 3, 4]


def test_linear_stops_after_an_unstable_level() -> None:
    _, measure = _fake(1, unstable_at=3)
    assert _run(linear, measure, _ends(1000)) == [1, 2, 3]


def test_binary_search_finds_the_highest_load_under_the_threshold() -> None:
    measured, measure = _fake(10)
    levels = _run(binary_search, measure, _over(75))  # 7 is the highest under 75 ms
    assert levels[:2] == [1, 16]
    assert 7 in levels and 8 in levels
    assert len(levels) <= 2 + 4  # bisection: log2(16) steps after the two ends
    assert measured == levels


def test_binary_search_stops_when_the_ends_decide() -> None:
    _, measure = _fake(10)
    assert _run(binary_search, measure, _over(5)) == [1]  # even the lowest load is over
    _, measure = _fake(10)
    assert _run(binary_search, measure, _over(1000)) == [1, 16]  # even the highest load is under
