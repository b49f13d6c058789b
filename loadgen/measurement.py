"""Measurement: per-request latencies into HDR histograms, back-to-back windows, and the stability rule."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour; a longer latency is recorded as one hour and counted as clamped
SIGNIFICANT_DIGITS = 3
STABILITY_WINDOWS = 3  # perf_analyzer's rule: the last three windows agree


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass(frozen=True)
class LatencyStats:
    """Latency figures in microseconds, read once from a histogram."""

    min: int
    avg: float
    stddev: float
    p50: int
    p90: int
    p95: int
    p99: int
    max: int

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> LatencyStats:
        if histogram.get_total_count() == 0:
            return cls(0, 0.0, 0.0, 0, 0, 0, 0, 0)
        p = histogram.get_percentile_to_value_dict([50, 90, 95, 99])
        return cls(
            min=histogram.get_min_value(),
            avg=histogram.get_mean_value(),
            stddev=histogram.get_stddev(),
            p50=p[50],
            p90=p[90],
            p95=p[95],
            p99=p[99],
            max=histogram.get_max_value(),
        )


@dataclass
class Window:
    """One measurement window: what completed between two rotations of the recorder."""

    start_ns: int
    end_ns: int
    histogram: HdrHistogram
    errors: Counter[str]
    clamped: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def request_count(self) -> int:
        """Successful requests (failed ones carry no latency)."""
        return int(self.histogram.get_total_count())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class Recorder:
    """Collects completed requests into the current window; `rotate` closes it and opens the next."""

    __slots__ = ("_clamped", "_errors", "_histogram", "_start_ns")

    def __init__(self) -> None:
        self._start_ns = time.perf_counter_ns()
        self._histogram = new_histogram()
        self._errors: Counter[str] = Counter()
        self._clamped = 0

    def record(self, latency_us: int) -> None:
        """Record one successful request's latency."""
        if not self._histogram.record_value(latency_us):
            self._histogram.record_value(HIGHEST_US if latency_us > HIGHEST_US else LOWEST_US)
            self._clamped += 1

    def record_error(self, description: str) -> None:
        """Count one failed request under its one-line description."""
        self._errors[description] += 1

    def rotate(self) -> Window:
        """Close the current window and start an empty one."""
        fresh = new_histogram()
        now = time.perf_counter_ns()
        window = Window(self._start_ns, now, self._histogram, self._errors, self._clamped)
        self._start_ns, self._histogram, self._errors, self._clamped = now, fresh, Counter(), 0
        return window


@dataclass(frozen=True)
class WindowSummary:
    """The figures of one window that the stability rule compares."""

    throughput: float
    avg_latency_us: float
    request_count: int
    error_count: int


def throughput(request_count: int, batch_size: int, duration_s: float) -> float:
    """Inferences per second: requests times the batch size over the time they took."""
    return request_count * batch_size / duration_s if duration_s > 0 else 0.0


def summarize(window: Window, batch_size: int = 1) -> WindowSummary:
    """Throughput and average latency of one window."""
    return WindowSummary(
        throughput(window.request_count, batch_size, window.duration_s),
        window.histogram.get_mean_value(),
        window.request_count,
        window.error_count,
    )


def _within(values: Sequence[float], percentage: float) -> bool:
    low = min(values)
    return low > 0 and max(values) / low <= 1 + percentage / 100


def is_stable(windows: Sequence[WindowSummary], percentage: float) -> bool:
    """True when the last three windows' throughput and average latency agree within `percentage`."""
    if len(windows) < STABILITY_WINDOWS:
        return False
    last = windows[-STABILITY_WINDOWS:]
    return _within([w.throughput for w in last], percentage) and _within([w.avg_latency_us for w in last], percentage)


@dataclass(frozen=True)
class Merged:
    """Several windows combined exactly: histograms added, counts summed, durations summed."""

    histogram: HdrHistogram
    duration_s: float
    request_count: int
    errors: Counter[str]
    clamped: int

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def throughput(self, batch_size: int) -> float:
        return throughput(self.request_count, batch_size, self.duration_s)


def merge(windows: Sequence[Window]) -> Merged:
    """Combine windows into one measurement."""
    histogram = new_histogram()
    errors: Counter[str] = Counter()
    for window in windows:
        histogram.add(window.histogram)
        errors.update(window.errors)
    return Merged(
        histogram=histogram,
        duration_s=sum(w.duration_s for w in windows),
        request_count=sum(w.request_count for w in windows),
        errors=errors,
        clamped=sum(w.clamped for w in windows),
    )
