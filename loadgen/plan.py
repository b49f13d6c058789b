"""The run plan: what a run does, derived once from its flat `Settings` before anything starts.

`Settings` mirrors the command line; everything the engine needs that is computed from it (the load mode, the
levels, how windows close, the level rule, this shard's part, the correlation IDs, the request-interval gaps) is
derived here once, and nothing downstream derives it again.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.errors import OptionError
from loadgen.server.local import is_local
from loadgen.settings import (
    MAX_CONCURRENCY,
    Mode,
    Settings,
    is_closed_loop,
    is_open_range,
    parse_periodic_range,
    parse_range,
    parse_rate_range,
    parse_shard,
)
from loadgen.values import CONFIDENCE

if TYPE_CHECKING:
    from loadgen.results import LevelResult

COUNT_WINDOW_TIMEOUT_FACTOR = 20  # a count window waits at most this many measurement intervals


def longest_wait_s(interval_ms: float) -> float:
    """The longest a count window waits for its requests."""
    return interval_ms / 1000 * COUNT_WINDOW_TIMEOUT_FACTOR


STALL_FLOOR_S = 60.0  # no default request timeout is shorter: a slow model's request is not a silent server's


def stall_timeout_s(interval_ms: float) -> float:
    """How long a request may go unanswered when no --request-timeout is given: half the longest a count window
    waits, so that a silent server's requests fail as timeouts inside the window that waits for them instead of
    holding the run, and never under STALL_FLOOR_S (short windows are no reason to fail a slow request)."""
    return max(longest_wait_s(interval_ms) / 2, STALL_FLOOR_S)


SYNC_THREADS = 4  # perf_analyzer's default --max-threads: with --sync, the open loop's requests in flight
DEFAULT_MAX_THREADS = 16  # perf_analyzer's threads for a concurrency sweep without --max-threads
PERF_ANALYZER_WINDOW_FACTOR = 1.2  # perf_analyzer sleeps 1.2 x --measurement-interval per time window


@dataclass(frozen=True)
class Load:
    """One load level: a concurrency (closed loop) or a request rate (open loop)."""

    concurrency: int | None = None
    rate: float | None = None

    def __str__(self) -> str:
        return f"concurrency {self.concurrency}" if self.concurrency is not None else f"{self.rate:g} requests/s"

    @property
    def load_value(self) -> float:
        """The concurrency, or the request rate."""
        return float(self.concurrency) if self.concurrency is not None else self.rate or 0.0


@dataclass(frozen=True)
class Shard:
    """This generator's part of the load: shard `index` of `count`; all shards together make the whole load."""

    index: int = 0
    count: int = 1

    def concurrency(self, total: int) -> int:
        """Its share of the concurrency slots (or of a request count)."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def by_slots(self, count: int, concurrency: int) -> int:
        """Its part of `count` requests in proportion to its slots of `concurrency`: the parts of all shards add up
        to `count`, and a shard without slots has none."""
        if concurrency <= 0:
            return 0
        before = self.index * (concurrency // self.count) + min(self.index, concurrency % self.count)
        mine = self.concurrency(concurrency)
        return count * (before + mine) // concurrency - count * before // concurrency

    def schedule(self, offsets: Iterator[int]) -> Iterator[int]:
        """Its share of a schedule: every `count`-th request, so that the shards' union is the schedule itself."""
        return itertools.islice(offsets, self.index, None, self.count) if self.count > 1 else offsets


@dataclass(frozen=True)
class Windows:
    """How a level's windows close: after `interval_ms`, or once `count` requests completed."""

    interval_ms: int
    count: int | None  # requests per window (count windows, or --request-count); None: time windows
    max_windows: int
    single: bool  # --request-count, --fixed-schedule: one window of exactly `count` requests, no stability check
    schedule_s: float = 0.0  # --fixed-schedule: how long the schedule runs, which a count window waits for too
    perf_analyzer: bool = False  # its lengths: time windows of 1.2 x interval_ms, a single count window whole seconds

    @property
    def length_ms(self) -> int:
        """How long a time window lasts: `interval_ms`, or perf_analyzer's 1.2 times it (its inference_profiler)."""
        return int(self.interval_ms * PERF_ANALYZER_WINDOW_FACTOR) if self.perf_analyzer else self.interval_ms

    @property
    def timeout_s(self) -> float:
        """The longest a count window waits for its requests."""
        return longest_wait_s(self.interval_ms) + self.schedule_s


@dataclass(frozen=True)
class LevelRule:
    """How a level's windows become its figures, and when a sweep ends (perf_analyzer's rules)."""

    batch_size: int
    percentile: int | None
    stability_percentage: float
    latency_threshold_ms: float | None
    single: bool
    confidence: float = CONFIDENCE  # of the bounds each level reports
    goodput: bool = False  # token streams: --goodput objectives were given

    def over_threshold(self, level: LevelResult) -> bool:
        """perf_analyzer's -l: the level's latency (the --percentile, else the average) is over the threshold."""
        if self.latency_threshold_ms is None:
            return False
        latency = level.percentile_us if level.percentile_us is not None else level.latency_us.avg
        return latency > self.latency_threshold_ms * 1000


@dataclass(frozen=True)
class RunPlan:
    """What one run does, derived once from its settings; `settings` keeps the flat values used as they are."""

    settings: Settings
    mode: Mode
    loads: tuple[Load, ...]
    windows: Windows
    rule: LevelRule
    shard: Shard
    sequence_ids: tuple[int, int | None]  # the first correlation ID and the last (None: no limit)
    intervals_us: tuple[int, ...] | None  # --request-intervals: the gaps, read once
    server_cores: int | None  # the server host's cores, when it is this machine (a loopback URL)
    max_in_flight: int  # the open loop's cap: --max-in-flight, or with --sync perf_analyzer's threads
    periodic: tuple[int, int, int] | None = None  # --periodic-concurrency-range: START, END and STEP
    schedule_ns: tuple[int, ...] | None = None  # --fixed-schedule: each request's time (see `with_schedule`)

    @property
    def closed_loop(self) -> bool:
        return is_closed_loop(self.mode)


def read_intervals(path: str) -> tuple[int, ...]:
    """Gaps between requests in microseconds, one per line, from a `--request-intervals` file."""
    try:
        lines = Path(path).read_text().split()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not a text file"
        raise OptionError(f"--request-intervals {path}: cannot read: {reason}") from None
    gaps = []
    for number, line in enumerate(lines, 1):
        try:
            gap = int(line)
        except ValueError:
            raise OptionError(
                f"--request-intervals {path}: entry {number} {line!r} is not whole microseconds"
            ) from None
        if gap < 0:
            raise OptionError(f"--request-intervals {path}: entry {number} is negative")
        gaps.append(gap)
    if not gaps or not any(gaps):
        raise OptionError(f"--request-intervals {path}: needs at least one gap above 0")
    return tuple(gaps)


def sequence_ids(text: str | None) -> tuple[int, int | None]:
    """--sequence-id-range START[:END]: the first correlation ID and the last (None: no limit); default 1."""
    if text is None:
        return 1, None
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(parts) > 2 or not numbers or numbers[0] < 1 or (len(numbers) == 2 and numbers[1] < numbers[0]):
        raise OptionError(f"--sequence-id-range {text!r}: expected START[:END], whole numbers from 1, END >= START")
    return numbers[0], numbers[1] if len(numbers) == 2 else None


def plan(settings: Settings) -> RunPlan:
    """The run the settings describe; reads the --request-intervals file (once)."""
    intervals = read_intervals(settings.request_intervals) if settings.request_intervals is not None else None
    periodic = None
    if settings.periodic_concurrency_range is not None:
        periodic = parse_periodic_range(settings.periodic_concurrency_range)
        loads: tuple[Load, ...] = ()  # no levels: the ramp is recorded for the profile export only
    elif settings.fixed_schedule:
        loads = ()  # the schedule comes with the input data (`with_schedule`)
    elif intervals is not None:
        loads = (Load(rate=1e6 / statistics.fmean(intervals)),)
    elif settings.request_rate_range is not None:
        rates = settings.request_rate_range
        assert isinstance(rates, (str, tuple))  # text when its END is open, else the rates
        loads = tuple(Load(rate=rate) for rate in (parse_rate_range(rates) if isinstance(rates, str) else rates))
    else:
        levels = settings.concurrency_range
        assert isinstance(levels, (str, tuple))
        loads = tuple(Load(concurrency=c) for c in (parse_range(levels) if isinstance(levels, str) else levels))
    single = settings.request_count > 0
    count = settings.request_count or (
        settings.measurement_request_count if settings.measurement_mode == "count_windows" else None
    )
    index, shards = parse_shard(settings.shard)
    _check_load(settings, loads, shards)
    return RunPlan(
        settings=settings,
        mode=settings.mode,
        loads=loads,
        windows=Windows(
            settings.measurement_interval,
            count,
            1 if single else settings.max_trials,
            single,
            perf_analyzer=settings.perf_analyzer_rules,
        ),
        rule=level_rule(settings),
        shard=Shard(index, shards),
        sequence_ids=sequence_ids(settings.sequence_id_range),
        intervals_us=intervals,
        server_cores=os.cpu_count() if is_local(settings.address) else None,
        max_in_flight=(settings.max_threads or SYNC_THREADS) if _synchronous(settings) else settings.max_in_flight,
        periodic=periodic,
    )


def capped_at_threads(run: RunPlan, sequence: bool) -> RunPlan:
    """perf_analyzer's open concurrency range (END 0), once the model is known: with synchronous calls its threads
    cap it (--max-threads, else 16); a sequence model's asynchronous calls (its default) refuse it."""
    settings = run.settings
    if not settings.perf_analyzer_rules or not is_open_range(settings.concurrency_range):
        return run
    if sequence and not settings.sync:
        raise OptionError("The 'end' concurrency can not be 0 for sequence models when using asynchronous API.")
    if settings.asynchronous or settings.streaming:
        return run
    threads = settings.max_threads or DEFAULT_MAX_THREADS
    return replace(run, loads=tuple(load for load in run.loads if (load.concurrency or 0) <= threads))


def _synchronous(settings: Settings) -> bool:
    """--sync, or perf_analyzer's default under its rules (no -a, no stream): an open loop's requests in flight are
    capped at its threads."""
    default = settings.perf_analyzer_rules and not (settings.asynchronous or settings.streaming)
    return settings.sync or default


def with_schedule(run: RunPlan, timestamps_ms: Sequence[int]) -> RunPlan:
    """A --fixed-schedule run once its input data gave each request's time (ms from the start, in order): one
    open-loop level that sends every entry once at its time, measured as one window of the entries after the
    warm-up (perf_analyzer's rule: the warm-up takes the first entries, and must leave some)."""
    warmup = run.settings.warmup_request_count
    if warmup >= len(timestamps_ms):
        raise OptionError(
            f"--warmup-request-count {warmup}: must be below the {len(timestamps_ms)} entries of the --fixed-schedule "
            "data (the warm-up sends the first entries)"
        )
    offsets = tuple(ms * 1_000_000 for ms in timestamps_ms)
    span_s = offsets[-1] / 1e9
    rate = (len(offsets) - 1) / span_s if span_s > 0 else 0.0  # the schedule's average rate (0: all at once)
    windows = Windows(run.windows.interval_ms, len(offsets) - warmup, 1, True, schedule_s=span_s)
    return replace(run, loads=(Load(rate=rate),), windows=windows, schedule_ns=offsets)


def level_rule(settings: Settings) -> LevelRule:
    """How the settings turn a level's windows into its figures."""
    return LevelRule(
        settings.batch_size,
        settings.percentile,
        settings.stability_percentage,
        settings.latency_threshold,
        settings.request_count > 0 or settings.fixed_schedule,
        settings.confidence,
        bool(settings.goodput),
    )


def _check_load(settings: Settings, loads: tuple[Load, ...], shards: int) -> None:
    """Refuse, with the reason, a load one process cannot hold: it would be built up front and never sent."""
    highest = max((load.concurrency or 0 for load in loads), default=0)
    per_process = -(-highest // shards)
    if per_process > MAX_CONCURRENCY:
        raise OptionError(
            f"--concurrency-range: {highest} requests in flight is more than one process holds (at most "
            f"{MAX_CONCURRENCY}); split the load with --shard i/K over processes or machines"
        )
    if settings.workers > 1 and loads and loads[0].concurrency is not None and settings.workers > highest:
        raise OptionError(
            f"--workers {settings.workers}: more worker processes than requests in flight (at most {highest}); "
            "each process needs at least one"
        )
