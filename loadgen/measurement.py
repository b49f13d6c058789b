"""Measurement: per-request latencies into HDR histograms, back-to-back windows, and the stability rule."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from hdrh.histogram import HdrHistogram

if TYPE_CHECKING:
    from loadgen.tokens import TokenMetrics
    from loadgen.transport.tokens import TokenReply

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour; a longer latency is recorded as one hour and counted as clamped
SIGNIFICANT_DIGITS = 3
STABILITY_WINDOWS = 3  # perf_analyzer's rule: the last three windows agree
FAILING_MIN_COMPLETED = 100  # a window's share of failures stops a run early once this many requests completed
MAX_ERROR_KINDS = 20  # failures of more kinds in one window or level are counted together, as OTHER_ERRORS
OTHER_ERRORS = "other failures (more kinds than are kept)"
NO_OUTPUT = "the server answered with no output (no token event)"
LATE_US = 1000  # a request that left more than 1 ms after its scheduled time counts as delayed
# why a request left late, where it can be told (`loadgen.load.OpenLoop`): the sender's loop was running something
# else, the sender's thread did not run at all (the machine's cores were taken), or it waited for the in-flight limit
LOOP_BUSY, DESCHEDULED, IN_FLIGHT_LIMIT = "loop_busy", "descheduled", "in_flight_limit"
LATE_CAUSES = (LOOP_BUSY, DESCHEDULED, IN_FLIGHT_LIMIT)
T = TypeVar("T")


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 64 * 1024


def keep_memory_flat() -> None:
    """Have glibc serve every allocation of 64 KiB or more (a window's histograms: a few hundred KB each, made and
    dropped every window) straight from the system, so that a day-long run's memory stays flat: with glibc's
    default, its threshold rises after the first such allocations are freed and they fragment the heap (about
    10 MB more per thousand windows, never returned). Elsewhere than glibc it does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


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


def record_value(histogram: HdrHistogram, value_us: int) -> bool:
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


# How each field of a window reduces: histograms are added exactly; counts are summed over consecutive windows and
# reduced by "parallel" over the same window of parallel generators; the span runs from the first start to the
# last end either way.
HISTOGRAM: Mapping[str, Any] = {"histogram": True}
SUMMED: Mapping[str, Callable[[Iterable[int]], int]] = {"parallel": sum}
BUSIEST: Mapping[str, Callable[[Iterable[int]], int]] = {"parallel": max}  # a per-generator figure
WORST: Mapping[str, Callable[[Iterable[int]], int]] = {"reduce": max}  # the largest value, either way


@dataclass(slots=True)
class Window:
    """One measurement window: what completed (and, open loop, what was sent) between two rotations.

    This is the one definition of a window's record: the recorder fills it, `merge` (consecutive windows) and
    `combine` (the same window of parallel generators) reduce it field by field as each field's metadata says,
    and `encode`/`decode` carry it between processes and machines. A new figure is one field here.
    """

    start_ns: int = field(metadata={"reduce": min})
    end_ns: int = field(metadata={"reduce": max})
    histogram: HdrHistogram = field(metadata=HISTOGRAM)  # response time: from the scheduled send time
    service: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # open loop: from the actual send
    lag: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # open loop: actual minus scheduled send
    first_response: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # streaming: to the first response
    # token streams (`loadgen.tokens` defines each): per request unless said otherwise
    ttft: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # time to first token
    ttft_scheduled: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # open loop: from the schedule
    ttst: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # time to second token
    itl: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # inter-token latency
    gaps: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # every gap between events, pooled
    output_tokens: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # counts, not microseconds
    input_tokens: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)
    user_rate: HdrHistogram | None = field(default=None, metadata=HISTOGRAM)  # output tokens/s per user
    sent: int = field(default=0, metadata=SUMMED)  # open loop: requests sent
    delayed: int = field(default=0, metadata=SUMMED)  # open loop: sent more than LATE_US after their time
    limit_hits: int = field(default=0, metadata=SUMMED)  # open loop: requests that waited for the in-flight limit
    # open loop: the delayed requests by cause (LATE_CAUSES), each cause's count and worst lateness
    late_loop_busy: int = field(default=0, metadata=SUMMED)
    late_loop_busy_max_us: int = field(default=0, metadata=WORST)
    late_descheduled: int = field(default=0, metadata=SUMMED)
    late_descheduled_max_us: int = field(default=0, metadata=WORST)
    late_in_flight_limit: int = field(default=0, metadata=SUMMED)
    late_in_flight_limit_max_us: int = field(default=0, metadata=WORST)
    clamped: int = field(default=0, metadata=SUMMED)  # values outside the histograms' range (any histogram)
    stale: int = field(default=0, metadata=SUMMED)  # requests of an earlier level that completed here: not counted
    responses: int = field(default=0, metadata=SUMMED)  # streaming: responses received
    sequences: int = field(default=0, metadata=SUMMED)  # sequence models: requests that ended their sequence
    loop_cpu_ns: int = field(default=0, metadata=BUSIEST)  # the event loop's thread CPU time
    process_cpu_ns: int = field(default=0, metadata=SUMMED)  # the whole process's CPU time
    client_send_ns: int = field(default=0, metadata=SUMMED)  # handing requests to the connection (`ClientTimes`)
    client_recv_ns: int = field(default=0, metadata=SUMMED)  # from responses' first bytes to their completion
    client_sends: int = field(default=0, metadata=SUMMED)  # the requests `client_send_ns` sums over
    client_calls: int = field(default=0, metadata=SUMMED)  # the successful calls `client_recv_ns` sums over
    tokens_out: int = field(default=0, metadata=SUMMED)  # token streams: output tokens of the requests counted
    good: int = field(default=0, metadata=SUMMED)  # token streams: requests that met every --goodput objective
    by_server: int = field(default=0, metadata=SUMMED)  # token streams: requests counted by the server's count,
    by_tokenizer: int = field(default=0, metadata=SUMMED)  # by the run's tokenizer,
    by_events: int = field(default=0, metadata=SUMMED)  # or by their events
    compared_server: int = field(default=0, metadata=SUMMED)  # output tokens by the server's count, where the
    compared_client: int = field(default=0, metadata=SUMMED)  # tokenizer counted them too: its count
    cancelled: int = field(default=0, metadata=SUMMED)  # requests cancelled on purpose (--request-cancellation-rate)
    errors: Counter[str] = field(default_factory=Counter)  # failed requests by one-line description

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

    def throughput(self, batch_size: int) -> float:
        """Inferences per second."""
        return throughput(self.request_count, batch_size, self.duration_s)

    def encode(self) -> dict[str, Any]:
        """The window as JSON-ready values (histograms in HdrHistogram's compressed base64 encoding), so that
        another process or machine can merge it exactly."""
        encoded: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.metadata.get("histogram"):
                value = value.encode().decode("ascii") if value is not None else None
            elif isinstance(value, Counter):
                value = dict(value)
            encoded[item.name] = value
        return encoded

    @classmethod
    def decode(cls, encoded: Mapping[str, Any]) -> Window:
        """A window from `encode`'s values (keys it does not know are ignored; missing ones take defaults)."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name not in encoded:
                continue
            value = encoded[item.name]
            if item.metadata.get("histogram") and value is not None:
                histogram = new_histogram()
                histogram.decode_and_add(value.encode("ascii") if isinstance(value, str) else value)
                value = histogram
            elif item.name == "errors":
                value = Counter(value)
            values[item.name] = value
        return cls(**values)


def _reduce(windows: Sequence[Window], parallel: bool) -> Window:
    if not windows:
        raise ValueError("no windows to reduce")
    values: dict[str, Any] = {}
    for item in fields(Window):
        parts = [getattr(window, item.name) for window in windows]
        if item.metadata.get("histogram"):
            values[item.name] = _added(parts)
        elif item.name == "errors":
            values[item.name] = bounded_errors(parts)
        else:
            reducer = item.metadata.get("reduce") or (item.metadata["parallel"] if parallel else sum)
            values[item.name] = reducer(parts)
    return Window(**values)


def bounded_errors(parts: Iterable[Counter[str]]) -> Counter[str]:
    """Failure counts added up, the first MAX_ERROR_KINDS kinds by name and the rest as other."""
    total: Counter[str] = Counter()
    for part in parts:
        for description, count in part.items():
            if description not in total and len(total) >= MAX_ERROR_KINDS:
                description = OTHER_ERRORS
            total[description] += count
    return total


def merge(windows: Sequence[Window]) -> Window:
    """Consecutive windows as one measurement: histograms added exactly, counts summed, the span they cover."""
    return _reduce(windows, parallel=False)


def combine(parts: Sequence[Window]) -> Window:
    """The same window of several parallel generators as one: histograms added exactly, counts summed (the loop's
    busy time is the busiest generator's), the span from the earliest start to the latest end."""
    return _reduce(parts, parallel=True)


def _added(histograms: Sequence[HdrHistogram | None]) -> HdrHistogram | None:
    if any(h is None for h in histograms):
        return None
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


class Recorder:
    """Collects completed requests into the current window; `rotate` closes it and opens the next.

    It lives in the event loop's thread: no locks, and `time.thread_time_ns` measures the loop's own busy time.
    The histograms of the window being filled are kept at hand, so that recording a latency is one call.

    Every request is tagged when it leaves (`start`) with the generation of the load level it belongs to;
    `next_level` starts a new generation, and a request of an earlier one that completes later is not counted in
    any figure (only as `stale`): a level's windows hold its own requests alone. `drained` waits until none of
    them is in flight any more.
    """

    __slots__ = (
        "_answered",
        "_completed",
        "_drained",
        "_failed",
        "_filled",
        "_first",
        "_full",
        "_histogram",
        "_lag",
        "_loop_cpu_ns",
        "_max_error_rate",
        "_old",
        "_process_cpu_ns",
        "_service",
        "_target",
        "_window",
        "failing",
        "generation",
        "in_flight",
        "open_loop",
        "streaming",
        "tokens",
    )

    def __init__(
        self,
        open_loop: bool = False,
        streaming: bool = False,
        max_error_rate: float = 1.0,
        failing: asyncio.Event | None = None,
        tokens: TokenMetrics | None = None,
    ) -> None:
        """`failing` is set as soon as the current window's share of failed requests passes `max_error_rate` (after
        FAILING_MIN_COMPLETED completions), so that a run stops as failures arrive, not at the window's end.
        `tokens` records generative requests' token figures (`record_tokens`)."""
        self.open_loop = open_loop
        self.streaming = streaming
        self.tokens = tokens
        self._max_error_rate = max_error_rate
        self.failing = failing or asyncio.Event()
        self._full = asyncio.Event()
        self._drained = asyncio.Event()
        self._target = 0
        self._filled: Window | None = None
        self._answered = False
        self.generation = 0
        self.in_flight = 0  # requests of the current generation in flight
        self._old = 0  # requests of earlier generations in flight
        self._reset(time.perf_counter_ns())

    def _reset(self, now: int) -> None:
        self._window = window = Window(
            start_ns=now,
            end_ns=now,
            histogram=new_histogram(),
            service=new_histogram() if self.open_loop else None,
            lag=new_histogram() if self.open_loop else None,
            first_response=new_histogram() if self.streaming else None,
        )
        if self.tokens is not None:
            window.ttft, window.ttst, window.itl, window.gaps = (new_histogram() for _ in range(4))
            window.output_tokens, window.input_tokens, window.user_rate = (new_histogram() for _ in range(3))
            window.ttft_scheduled = new_histogram() if self.open_loop else None
        self._histogram = window.histogram
        self._service = window.service
        self._lag = window.lag
        self._first = window.first_response
        self._completed = 0
        self._failed = 0
        self._loop_cpu_ns = time.thread_time_ns()
        self._process_cpu_ns = time.process_time_ns()

    def start(self) -> int:
        """A request leaves (or, open loop, is scheduled): the generation its completion hands back."""
        self.in_flight += 1
        return self.generation

    def next_level(self) -> None:
        """Requests sent from now on belong to a new level; those in flight are of an earlier one."""
        self._old += self.in_flight
        self.in_flight = 0
        self.generation += 1
        if self._old:
            self._drained.clear()

    async def drained(self, timeout_s: float) -> int:
        """Wait until no request of an earlier level is in flight, at most `timeout_s`; how many still are."""
        if self._old:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        return self._old

    @property
    def outstanding(self) -> int:
        """Requests in flight, of any level."""
        return self.in_flight + self._old

    def _ours(self, generation: int) -> bool:
        """Whether a completed request belongs to the current level; one of an earlier level is counted as stale."""
        if generation == self.generation:
            self.in_flight -= 1
            return True
        self._old -= 1
        self._window.stale += 1
        if not self._old:
            self._drained.set()
        return False

    def _completion(self) -> None:
        self._completed += 1
        if self._completed == self._target:
            self._target = 0  # once: completions later in the same loop turn go to the next window
            self._filled = self.rotate()  # the window closes at exactly the target request
            self._full.set()

    def _clamp(self, histogram: HdrHistogram | None, value_us: int) -> None:
        if histogram is not None and not record_value(histogram, value_us):
            self._window.clamped += 1

    def record(self, latency_us: int, generation: int) -> None:
        """Closed loop: one successful request's latency."""
        if not self._ours(generation):
            return
        if not record_value(self._histogram, latency_us):
            self._window.clamped += 1
        self._completion()

    def record_stream(self, first_us: int, last_us: int, responses: int, generation: int) -> None:
        """Streaming: one request's latency to its first and to its last response, and how many responses it got."""
        if not self._ours(generation):
            return
        self._clamp(self._first, first_us)
        self._window.responses += responses
        self._clamp(self._histogram, last_us)
        self._completion()

    def record_sent(self, lag_us: int, generation: int, cause: str | None = None) -> None:
        """Open loop: a request left `lag_us` after its scheduled time, late for `cause` (one of LATE_CAUSES) when
        it was; one of an earlier level is not counted."""
        if generation != self.generation:
            return
        window = self._window
        window.sent += 1
        self._clamp(self._lag, lag_us)
        if lag_us > LATE_US:
            window.delayed += 1
            if cause is not None:
                count, worst = f"late_{cause}", f"late_{cause}_max_us"
                setattr(window, count, getattr(window, count) + 1)
                setattr(window, worst, max(getattr(window, worst), lag_us))

    def record_response(self, response_us: int, service_us: int, generation: int) -> None:
        """Open loop: one successful request's response time (from its schedule) and service time."""
        if not self._ours(generation):
            return
        self._clamp(self._histogram, response_us)
        self._clamp(self._service, service_us)
        self._completion()

    def record_stream_response(
        self, first_us: int, response_us: int, service_us: int, responses: int, generation: int
    ) -> None:
        """Open loop over a stream: one request's first response and response time (from its schedule), its
        service time, and how many responses it got."""
        if not self._ours(generation):
            return
        self._clamp(self._first, first_us)
        self._window.responses += responses
        self._clamp(self._histogram, response_us)
        self._clamp(self._service, service_us)
        self._completion()

    def record_tokens(
        self, reply: TokenReply, sent: int, due: int, done: int, input_tokens: int, generation: int
    ) -> None:
        """A generative request answered (perf_counter_ns: sent, scheduled, last response): its response time (from
        the schedule), service time (open loop) and token figures; one without any output is a failure."""
        assert self.tokens is not None
        if generation == self.generation and not self.tokens.record(self._window, reply, sent, due, done, input_tokens):
            self.record_error(NO_OUTPUT, generation)
            return
        if not self._ours(generation):
            return
        self._clamp(self._histogram, (done - due) // 1000)
        self._clamp(self._service, (done - sent) // 1000)
        self._window.responses += len(reply.events)
        self._completion()

    def record_sequence_end(self, generation: int) -> None:
        """A successful request that ended its sequence completes (before it is recorded, which may close the
        window): perf_analyzer's sequence count."""
        if generation == self.generation:
            self._window.sequences += 1

    def record_error(self, description: str, generation: int) -> None:
        """Count one failed request under its one-line description (past MAX_ERROR_KINDS kinds, as other)."""
        if not self._ours(generation):
            return
        errors = self._window.errors
        if description not in errors and len(errors) >= MAX_ERROR_KINDS:
            description = OTHER_ERRORS
        errors[description] += 1
        self._completion()
        self._failed += 1
        if self._completed >= FAILING_MIN_COMPLETED and self._failed > self._max_error_rate * self._completed:
            self.failing.set()

    def record_cancelled(self, generation: int) -> None:
        """Count one request cancelled on purpose: neither a failure nor a latency."""
        if self._ours(generation):
            self._window.cancelled += 1
            self._completion()

    def record_limit_hit(self) -> None:
        """Open loop: a request had to wait because the in-flight limit was reached."""
        self._window.limit_hits += 1

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

    @property
    def completed(self) -> int:
        """Requests completed (or failed) in the current window."""
        return self._completed

    @property
    def answered(self) -> bool:
        """Whether any request has succeeded since the recorder started (read on the failure path only)."""
        return self._answered or self._histogram.get_total_count() > 0

    def rotate(self) -> Window:
        """Close the current window and start an empty one."""
        now = time.perf_counter_ns()
        self._answered = self.answered
        window = self._window
        window.end_ns = now
        window.loop_cpu_ns = time.thread_time_ns() - self._loop_cpu_ns
        window.process_cpu_ns = time.process_time_ns() - self._process_cpu_ns
        self._reset(now)
        self.failing.clear()  # a new window, whose failures are counted anew
        return window


@dataclass(frozen=True)
class Unfinished:
    """The requests in flight when the load stopped: how many, and how many of them never answered within the
    grace period (cancelled)."""

    in_flight: int = 0
    cancelled: int = 0

    def __add__(self, other: Unfinished) -> Unfinished:
        return Unfinished(self.in_flight + other.in_flight, self.cancelled + other.cancelled)


def throughput(request_count: int, batch_size: int, duration_s: float) -> float:
    """Inferences per second: requests times the batch size over the time they took."""
    return request_count * batch_size / duration_s if duration_s > 0 else 0.0


@dataclass(frozen=True)
class WindowSummary:
    """The figures of one window: what the stability rule compares, and the trend a user reads."""

    throughput: float
    latency_us: float  # what stability compares: the average, or the --percentile
    avg_latency_us: float
    stddev_us: float
    p99_us: int
    service_p99_us: int | None
    send_rate: float | None
    request_count: int
    error_count: int
    loop_busy_share: float


def summarize(window: Window, batch_size: int = 1, percentile: int | None = None) -> WindowSummary:
    """One window's figures; percentiles are read once here, never per request."""
    histogram = window.histogram
    avg, stddev = mean_and_stddev(histogram)
    duration = window.duration_s
    return WindowSummary(
        throughput=throughput(window.request_count, batch_size, duration),
        latency_us=histogram.get_value_at_percentile(percentile) if percentile else avg,
        avg_latency_us=avg,
        stddev_us=stddev,
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


def last_windows(windows: Sequence[T]) -> list[T]:
    """The last STABILITY_WINDOWS items (of a list or a bounded deque, which cannot be sliced)."""
    return [windows[index] for index in range(max(len(windows) - STABILITY_WINDOWS, 0), len(windows))]


def is_stable(windows: Sequence[WindowSummary], percentage: float, latency: bool = True) -> bool:
    """True when the last three windows' throughput and latency (average or percentile; not without `latency`)
    agree within `percentage`."""
    if len(windows) < STABILITY_WINDOWS:
        return False
    last = last_windows(windows)
    settled = _within([w.throughput for w in last], percentage)
    return settled and (not latency or _within([w.latency_us for w in last], percentage))
