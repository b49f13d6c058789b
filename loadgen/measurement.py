"""Measurement: per-request latencies into HDR histograms, back-to-back windows, and the stability rule."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour; a longer latency is recorded as one hour and counted as clamped
SIGNIFICANT_DIGITS = 3
STABILITY_WINDOWS = 3  # perf_analyzer's rule: the last three windows agree
LATE_US = 1000  # a request that left more than 1 ms after its scheduled time counts as delayed


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _midpoints(histogram: HdrHistogram) -> np.ndarray:
    """The value HdrHistogram stands each bucket for (the middle of its range), for every counts index at once."""
    index = np.arange(histogram.counts_len, dtype=np.int64)
    bucket = (index >> histogram.sub_bucket_half_count_magnitude) - 1
    sub_bucket = (index & (histogram.sub_bucket_half_count - 1)) + histogram.sub_bucket_half_count
    first = bucket < 0
    sub_bucket = np.where(first, sub_bucket - histogram.sub_bucket_half_count, sub_bucket)
    shift = np.where(first, 0, bucket) + histogram.unit_magnitude
    return ((sub_bucket << shift) + ((1 << shift) >> 1)).astype(np.float64)


_MIDPOINTS = _midpoints(new_histogram())


def mean_and_stddev(histogram: HdrHistogram) -> tuple[float, float]:
    """HdrHistogram's mean and standard deviation, computed over its counts with numpy.

    The library's own `get_mean_value`/`get_stddev` walk every bucket in Python (tens of ms for one window),
    which would stall the event loop that is sending requests on schedule.
    """
    total = histogram.get_total_count()
    if not total:
        return 0.0, 0.0
    counts = np.ctypeslib.as_array(histogram.counts).astype(np.float64)
    mean = float(counts @ _MIDPOINTS) / total
    deviation = _MIDPOINTS - mean
    return mean, math.sqrt(float(counts @ (deviation * deviation)) / total)


def _record(histogram: HdrHistogram, value_us: int) -> bool:
    """Record a value; False when it was outside the histogram's range and had to be clamped."""
    if histogram.record_value(value_us):
        return True
    histogram.record_value(HIGHEST_US if value_us > HIGHEST_US else LOWEST_US)
    return False


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
        avg, stddev = mean_and_stddev(histogram)
        return cls(
            min=histogram.get_min_value(),
            avg=avg,
            stddev=stddev,
            p50=p[50],
            p90=p[90],
            p95=p[95],
            p99=p[99],
            max=histogram.get_max_value(),
        )


@dataclass
class Window:
    """One measurement window: what completed (and, open loop, what was sent) between two rotations."""

    start_ns: int
    end_ns: int
    histogram: HdrHistogram  # response time: from the scheduled send time (closed loop: from the send)
    service: HdrHistogram | None  # open loop: from the actual send
    lag: HdrHistogram | None  # open loop: actual minus scheduled send time
    sent: int
    delayed: int
    limit_hits: int
    errors: Counter[str]
    clamped: int
    loop_cpu_ns: int
    process_cpu_ns: int
    first_response: HdrHistogram | None = None  # streaming: latency to each request's first response
    responses: int = 0  # streaming: responses received

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
    """Collects completed requests into the current window; `rotate` closes it and opens the next.

    It lives in the event loop's thread: no locks, and `time.thread_time_ns` measures the loop's own busy time.
    """

    __slots__ = (
        "_clamped",
        "_completed",
        "_delayed",
        "_errors",
        "_filled",
        "_first",
        "_full",
        "_histogram",
        "_lag",
        "_limit_hits",
        "_loop_cpu_ns",
        "_process_cpu_ns",
        "_responses",
        "_sent",
        "_service",
        "_start_ns",
        "_target",
        "open_loop",
        "streaming",
    )

    def __init__(self, open_loop: bool = False, streaming: bool = False) -> None:
        self.open_loop = open_loop
        self.streaming = streaming
        self._full = asyncio.Event()
        self._target = 0
        self._filled: Window | None = None
        self._reset(time.perf_counter_ns())

    def _reset(self, now: int) -> None:
        self._start_ns = now
        self._histogram = new_histogram()
        self._service = new_histogram() if self.open_loop else None
        self._lag = new_histogram() if self.open_loop else None
        self._first = new_histogram() if self.streaming else None
        self._errors: Counter[str] = Counter()
        self._sent = self._delayed = self._limit_hits = self._clamped = self._completed = self._responses = 0
        self._loop_cpu_ns = time.thread_time_ns()
        self._process_cpu_ns = time.process_time_ns()

    def _completion(self) -> None:
        self._completed += 1
        if self._completed == self._target:
            self._filled = self.rotate()  # the window closes at exactly the target request
            self._full.set()

    def record(self, latency_us: int) -> None:
        """Closed loop: one successful request's latency."""
        if not _record(self._histogram, latency_us):
            self._clamped += 1
        self._completion()

    def record_stream(self, first_us: int, last_us: int, responses: int) -> None:
        """Streaming: one request's latency to its first and to its last response, and how many responses it got."""
        assert self._first is not None
        _record(self._first, first_us)
        self._responses += responses
        self.record(last_us)

    def record_stream_response(self, first_us: int, response_us: int, service_us: int, responses: int) -> None:
        """Open loop over a stream: one request's first response and response time (from its schedule), its
        service time, and how many responses it got."""
        assert self._first is not None
        _record(self._first, first_us)
        self._responses += responses
        self.record_response(response_us, service_us)

    def record_sent(self, lag_us: int) -> None:
        """Open loop: a request left `lag_us` after its scheduled time."""
        self._sent += 1
        assert self._lag is not None
        _record(self._lag, lag_us)
        if lag_us > LATE_US:
            self._delayed += 1

    def record_response(self, response_us: int, service_us: int) -> None:
        """Open loop: one successful request's response time (from its schedule) and service time."""
        assert self._service is not None
        if not _record(self._histogram, response_us):
            self._clamped += 1
        _record(self._service, service_us)
        self._completion()

    def record_error(self, description: str) -> None:
        """Count one failed request under its one-line description."""
        self._errors[description] += 1
        self._completion()

    def record_limit_hit(self) -> None:
        """Open loop: a request had to wait because the in-flight limit was reached."""
        self._limit_hits += 1

    async def fill(self, count: int, timeout_s: float) -> Window:
        """Close the current window once `count` requests completed in it (or, after `timeout_s`, as it is)."""
        if self._completed >= count:
            return self.rotate()
        self._target, self._filled = count, None
        self._full.clear()
        try:
            await asyncio.wait_for(self._full.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self._target = 0
        return self._filled or self.rotate()

    def rotate(self) -> Window:
        """Close the current window and start an empty one."""
        now = time.perf_counter_ns()
        window = Window(
            start_ns=self._start_ns,
            end_ns=now,
            histogram=self._histogram,
            service=self._service,
            lag=self._lag,
            sent=self._sent,
            delayed=self._delayed,
            limit_hits=self._limit_hits,
            errors=self._errors,
            clamped=self._clamped,
            loop_cpu_ns=time.thread_time_ns() - self._loop_cpu_ns,
            process_cpu_ns=time.process_time_ns() - self._process_cpu_ns,
            first_response=self._first,
            responses=self._responses,
        )
        self._reset(now)
        return window


def throughput(request_count: int, batch_size: int, duration_s: float) -> float:
    """Inferences per second: requests times the batch size over the time they took."""
    return request_count * batch_size / duration_s if duration_s > 0 else 0.0


@dataclass(frozen=True)
class WindowSummary:
    """The figures of one window: what the stability rule compares, and the trend a user reads."""

    throughput: float
    latency_us: float  # what stability compares: the average, or the --percentile
    avg_latency_us: float
    p99_us: int
    service_p99_us: int | None
    send_rate: float | None
    request_count: int
    error_count: int
    loop_busy_share: float


def summarize(window: Window, batch_size: int = 1, percentile: int | None = None) -> WindowSummary:
    """One window's figures; percentiles are read once here, never per request."""
    histogram = window.histogram
    avg, _ = mean_and_stddev(histogram)
    duration = window.duration_s
    return WindowSummary(
        throughput=throughput(window.request_count, batch_size, duration),
        latency_us=histogram.get_value_at_percentile(percentile) if percentile else avg,
        avg_latency_us=avg,
        p99_us=histogram.get_value_at_percentile(99),
        service_p99_us=window.service.get_value_at_percentile(99) if window.service else None,
        send_rate=window.sent / duration if window.lag is not None and duration > 0 else None,
        request_count=window.request_count,
        error_count=window.error_count,
        loop_busy_share=window.loop_cpu_ns / (window.end_ns - window.start_ns)
        if window.end_ns > window.start_ns
        else 0.0,
    )


def _within(values: Sequence[float], percentage: float) -> bool:
    low = min(values)
    return low > 0 and max(values) / low <= 1 + percentage / 100


def is_stable(windows: Sequence[WindowSummary], percentage: float) -> bool:
    """True when the last three windows' throughput and latency (average or percentile) agree within `percentage`."""
    if len(windows) < STABILITY_WINDOWS:
        return False
    last = windows[-STABILITY_WINDOWS:]
    return _within([w.throughput for w in last], percentage) and _within([w.latency_us for w in last], percentage)


@dataclass(frozen=True)
class Merged:
    """Several windows combined exactly: histograms added, counts and durations summed."""

    histogram: HdrHistogram
    service: HdrHistogram | None
    lag: HdrHistogram | None
    duration_s: float
    request_count: int
    sent: int
    delayed: int
    limit_hits: int
    errors: Counter[str]
    clamped: int
    loop_cpu_s: float
    process_cpu_s: float
    first_response: HdrHistogram | None = None
    responses: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def throughput(self, batch_size: int) -> float:
        return throughput(self.request_count, batch_size, self.duration_s)


def _added(histograms: Sequence[HdrHistogram | None]) -> HdrHistogram | None:
    if any(h is None for h in histograms):
        return None
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


def merge(windows: Sequence[Window]) -> Merged:
    """Combine windows into one measurement."""
    errors: Counter[str] = Counter()
    for window in windows:
        errors.update(window.errors)
    histogram = _added([w.histogram for w in windows])
    assert histogram is not None
    return Merged(
        histogram=histogram,
        service=_added([w.service for w in windows]),
        lag=_added([w.lag for w in windows]),
        duration_s=sum(w.duration_s for w in windows),
        request_count=sum(w.request_count for w in windows),
        sent=sum(w.sent for w in windows),
        delayed=sum(w.delayed for w in windows),
        limit_hits=sum(w.limit_hits for w in windows),
        errors=errors,
        clamped=sum(w.clamped for w in windows),
        loop_cpu_s=sum(w.loop_cpu_ns for w in windows) / 1e9,
        process_cpu_s=sum(w.process_cpu_ns for w in windows) / 1e9,
        first_response=_added([w.first_response for w in windows]),
        responses=sum(w.responses for w in windows),
    )


@dataclass(frozen=True)
class EncodedWindow:
    """A window in a form that crosses process and machine boundaries (HdrHistogram's compressed encoding)."""

    start_ns: int
    end_ns: int
    histogram: bytes
    service: bytes | None
    lag: bytes | None
    sent: int
    delayed: int
    limit_hits: int
    errors: dict[str, int]
    clamped: int
    loop_cpu_ns: int
    process_cpu_ns: int
    first_response: bytes | None = None
    responses: int = 0


def encode_window(window: Window) -> EncodedWindow:
    """Encode a window's histograms so that another process can merge them exactly."""
    return EncodedWindow(
        start_ns=window.start_ns,
        end_ns=window.end_ns,
        histogram=window.histogram.encode(),
        service=window.service.encode() if window.service is not None else None,
        lag=window.lag.encode() if window.lag is not None else None,
        sent=window.sent,
        delayed=window.delayed,
        limit_hits=window.limit_hits,
        errors=dict(window.errors),
        clamped=window.clamped,
        loop_cpu_ns=window.loop_cpu_ns,
        process_cpu_ns=window.process_cpu_ns,
        first_response=window.first_response.encode() if window.first_response is not None else None,
        responses=window.responses,
    )


def _decoded(encoded: Sequence[bytes | None]) -> HdrHistogram | None:
    if any(e is None for e in encoded):
        return None
    histogram = new_histogram()
    for data in encoded:
        assert data is not None
        histogram.decode_and_add(data)
    return histogram


def combine(parts: Sequence[EncodedWindow]) -> Window:
    """One window from the same window of several generators: histograms added exactly, counts summed.

    The span runs from the earliest start to the latest end; the loop's busy time is the busiest generator's.
    """
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    histogram = _decoded([p.histogram for p in parts])
    assert histogram is not None
    return Window(
        start_ns=min(p.start_ns for p in parts),
        end_ns=max(p.end_ns for p in parts),
        histogram=histogram,
        service=_decoded([p.service for p in parts]),
        lag=_decoded([p.lag for p in parts]),
        sent=sum(p.sent for p in parts),
        delayed=sum(p.delayed for p in parts),
        limit_hits=sum(p.limit_hits for p in parts),
        errors=errors,
        clamped=sum(p.clamped for p in parts),
        loop_cpu_ns=max(p.loop_cpu_ns for p in parts),
        process_cpu_ns=sum(p.process_cpu_ns for p in parts),
        first_response=_decoded([p.first_response for p in parts]),
        responses=sum(p.responses for p in parts),
    )
