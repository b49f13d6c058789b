from __future__ import annotations

import asyncio
import random

import pytest

from loadgen.measurement import (
    HIGHEST_US,
    LatencyStats,
    Recorder,
    WindowSummary,
    is_stable,
    mean_and_stddev,
    merge,
    new_histogram,
    summarize,
)


def _summary(throughput: float, latency: float) -> WindowSummary:
    return WindowSummary(throughput, latency, latency, 0.0, int(latency), None, None, 100, 0, 0.0)


def test_stable_needs_three_windows_within_the_percentage() -> None:
    assert not is_stable([_summary(100, 10), _summary(100, 10)], 10)
    assert is_stable([_summary(100, 10), _summary(105, 10.5), _summary(109, 10)], 10)
    # max/min = 1.11 > 1.10: throughput out of bounds
    assert not is_stable([_summary(100, 10), _summary(105, 10), _summary(111, 10)], 10)
    # latency out of bounds although throughput agrees
    assert not is_stable([_summary(100, 10), _summary(100, 12), _summary(100, 10)], 10)


def test_stability_looks_only_at_the_last_three_windows() -> None:
    windows = [_summary(10, 50), _summary(300, 1), _summary(100, 10), _summary(101, 10), _summary(102, 10)]
    assert is_stable(windows, 5)


def test_a_window_without_requests_is_never_stable() -> None:
    assert not is_stable([_summary(0, 0), _summary(0, 0), _summary(0, 0)], 10)


def test_merge_adds_histograms_exactly() -> None:
    rng = random.Random(7)
    recorder = Recorder()
    reference = new_histogram()
    windows = []
    for _ in range(3):
        for _ in range(1000):
            value = rng.randint(100, 50_000)
            recorder.record(value, recorder.start())
            reference.record_value(value)
        recorder.record_error("UNAVAILABLE: gone", recorder.start())
        windows.append(recorder.rotate())
    merged = merge(windows)
    assert merged.request_count == 3000
    assert merged.errors == {"UNAVAILABLE: gone": 3}
    assert merged.duration_s == pytest.approx(sum(w.duration_s for w in windows), rel=1e-12)  # back to back
    assert LatencyStats.from_histogram(merged.histogram) == LatencyStats.from_histogram(reference)


def test_rotate_starts_an_empty_window() -> None:
    recorder = Recorder()
    recorder.record(500, recorder.start())
    first = recorder.rotate()
    second = recorder.rotate()
    assert first.request_count == 1
    assert second.request_count == 0
    assert second.start_ns == first.end_ns


def test_out_of_range_latency_is_clamped_and_counted() -> None:
    recorder = Recorder()
    recorder.record(HIGHEST_US * 10, recorder.start())
    window = recorder.rotate()
    assert window.clamped == 1
    assert window.request_count == 1
    assert window.histogram.get_max_value() >= HIGHEST_US


def test_summary_counts_inferences_with_the_batch_size() -> None:
    recorder = Recorder()
    for _ in range(10):
        recorder.record(1000, recorder.start())
    window = recorder.rotate()
    one = summarize(window, 1)
    four = summarize(window, 4)
    assert four.throughput == 4 * one.throughput > 0


def test_latency_stats_of_an_empty_histogram_are_zero() -> None:
    assert LatencyStats.from_histogram(new_histogram()).p99 == 0


def test_stability_on_a_percentile_compares_that_percentile() -> None:
    recorder = Recorder()
    for value in [100] * 98 + [5000, 9000]:
        recorder.record(value, recorder.start())
    window = recorder.rotate()
    by_avg = summarize(window)
    by_p99 = summarize(window, percentile=99)
    assert by_avg.latency_us == by_avg.avg_latency_us
    assert by_p99.latency_us == window.histogram.get_value_at_percentile(99) > by_avg.latency_us


def test_open_loop_windows_keep_service_time_and_send_lag() -> None:
    recorder = Recorder(open_loop=True)
    for lag in (10, 20, 5000):
        recorder.record_sent(lag, recorder.start())
    recorder.record_response(7000, 2000, recorder.generation)
    recorder.record_limit_hit()
    window = recorder.rotate()
    assert window.sent == 3
    assert window.delayed == 1  # over 1 ms late
    assert window.limit_hits == 1
    assert window.service is not None and window.service.get_max_value() < 2010
    assert window.histogram.get_max_value() >= 7000
    merged = merge([window, recorder.rotate()])
    assert merged.sent == 3 and merged.lag is not None and merged.lag.get_total_count() == 3


def test_a_count_window_closes_at_exactly_the_nth_request() -> None:
    async def scenario() -> tuple[int, int, int]:
        recorder = Recorder()

        async def complete() -> None:
            for _ in range(8):
                await asyncio.sleep(0)
                recorder.record(100, recorder.start())

        feeder = asyncio.ensure_future(complete())
        filled = await recorder.fill(5, timeout_s=5)
        await feeder
        timed_out = await recorder.fill(10, timeout_s=0.01)  # only 3 more arrive
        return filled.request_count, timed_out.request_count, recorder.rotate().request_count

    assert asyncio.run(scenario()) == (5, 3, 0)


def test_mean_and_stddev_match_hdrhistograms_own() -> None:
    rng = random.Random(7)
    histogram = new_histogram()
    assert mean_and_stddev(histogram) == (0.0, 0.0)
    for _ in range(3000):  # every bucket size, from 1 us to an hour
        histogram.record_value(rng.choice([rng.randint(1, 2048), rng.randint(2048, 10**6), rng.randint(1, HIGHEST_US)]))
    mean, stddev = mean_and_stddev(histogram)
    assert mean == pytest.approx(histogram.get_mean_value(), rel=1e-12)
    assert stddev == pytest.approx(histogram.get_stddev(), rel=1e-12)
