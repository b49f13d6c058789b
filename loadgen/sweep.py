"""The sweep: connect, build the requests, then measure each load level until it is stable."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from loadgen.errors import ModelRejectedError, OptionError, RunFailed, ServerError
from loadgen.inputs import GENERATED, InputData, Requests, Sample, encode_requests, load_data
from loadgen.interval_log import WindowLog
from loadgen.load import Load, LocalGenerator, Shard
from loadgen.measurement import (
    STABILITY_WINDOWS,
    Window,
    WindowSummary,
    encode_window,
    is_stable,
    merge,
    summarize,
)
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.sequences import check_sequence_ids
from loadgen.server_stats import Composition, Snapshot, add, composition, delta, snapshot
from loadgen.settings import Settings, make_settings, read_intervals
from loadgen.shared_memory import Regions, place
from loadgen.transport import (
    TIMEOUT,
    Connection,
    ModelInfo,
    Payload,
    RequestFailed,
    Stream,
    Unreachable,
    connect,
    describe_rpc_error,
    stream_one,
)
from loadgen.workers import ProcessGenerator

PREFLIGHT_SAMPLES = 16  # distinct requests checked once before measuring
# When a run ends, requests in flight get this long to return before they are cancelled: tritonserver 2.51 can
# crash (SIGSEGV) on a gRPC request cancelled while it completes (triton-inference-server/server#7368).
STOP_GRACE_S = 2.0
WATCH_INTERVAL_S = 1.0  # the server's liveness is checked this often during a run
T = TypeVar("T")


class Progress(Protocol):
    """Receives the sweep's progress; the console report implements it."""

    def started(self, model: ModelInfo, inputs: tuple[InputDescription, ...], settings: Settings) -> None: ...

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None: ...

    def level(self, level: LevelResult) -> None: ...


async def profile(
    url: str | None = None,
    model: str | None = None,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> ProfileResult:
    """Profile `model` on the Triton server at `url` (gRPC, or HTTP with `protocol="http"`) over a sweep of load levels.

    Keyword options are the command line's long flags in snake case (the fields of `Settings`, or their
    aliases `concurrency`, `request_rate`, `model`), applied over `settings` when given. `concurrency` takes
    "START:END:STEP", an int or a list of ints.

    Setting `stop` ends the run gracefully: the result keeps every finished level and the partial one, marked
    interrupted. A run that fails midway (the server goes away, too many errors) raises `RunFailed`, whose
    `result` holds the same. Cancelling the call stops the load at once and returns nothing.
    """
    named = {key: value for key, value in (("url", url), ("model", model)) if value is not None}
    settings = make_settings(settings, **named, **options)
    connection = connect(settings)
    regions: Regions | None = None
    try:
        await connection.check_reachable()
        name = settings.model_name or await connection.choose_model()
        info = await connection.model_info(name, settings.model_version)
        await connection.check_model_ready(info.name, info.version)
        tree = await composition(info.name, info.version, connection.model_config, settings.bls_composing_models)
        data = load_data(info, settings)
        _check_kind(info, data, settings)
        placements = None
        if settings.shared_memory == "system":
            regions, placements = await place(connection, info, data.samples, settings)
        requests = encode_requests(connection.wire, info, data, settings, placements)
        if requests.sequential:
            check_sequence_ids(settings)
        await _preflight(connection, info, requests, settings)
        inputs = _describe(data.streams[0][0])
        if progress:
            progress.started(info, inputs, settings)
        log = None
        if settings.hdr_log:
            log = WindowLog(settings.hdr_log, settings.shard_index, settings.shard_count)
            described = [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in inputs]
            log.header(info.name, settings.url, settings.mode, described, settings.to_dict(), tree)
        sweep = _Sweep(connection, requests, tree, settings, progress, stop or asyncio.Event(), log)
        levels, abort = await sweep.run()
        if log:
            log.end(abort.status if abort else "complete")
    finally:
        try:
            if regions is not None:
                await asyncio.shield(regions.release())  # also when the call is cancelled
        finally:
            await connection.close()
    result = ProfileResult(
        model=info.name,
        url=settings.url,
        mode=settings.mode,
        levels=tuple(levels),
        inputs=inputs,
        settings=settings.to_dict(),
        status=abort.status if abort else "complete",
        message=abort.message if abort else "",
    )
    if abort and abort.status == "failed":
        raise RunFailed(abort.message, result)
    return result


def _describe(sample: Sample) -> tuple[InputDescription, ...]:
    return tuple(InputDescription(t.name, t.datatype, t.shape) for t in sample)


_NOT_THE_DATA = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


async def _preflight(connection: Connection, model: ModelInfo, requests: Requests, settings: Settings) -> None:
    """Send each distinct request once (a sequence of one, for a stateful model), so that data the model rejects
    stops the run before it starts."""
    payloads = requests.payloads[:PREFLIGHT_SAMPLES]
    if requests.sequential:
        flags = connection.wire.sequence_flags(settings.sequence_ids[0], start=True, end=True)
        payloads = tuple(connection.wire.with_flags(payload, flags) for payload in payloads)
    stream = connection.open_stream() if settings.streaming else None
    try:
        for payload in payloads:
            await _check_request(connection, model, stream, payload, settings)
    finally:
        if stream is not None:
            stream.cancel()


async def _check_request(
    connection: Connection, model: ModelInfo, stream: Stream | None, payload: Payload, settings: Settings
) -> None:
    try:
        if stream is None:
            await connection.infer(payload)
        else:
            await stream_one(stream, payload, time.perf_counter_ns)
    except (grpc.aio.AioRpcError, RequestFailed) as error:
        if isinstance(error, RequestFailed):
            reason = str(error)
            if isinstance(error, Unreachable) or reason.startswith("permission denied"):
                raise ServerError(reason) from None
        else:
            reason = describe_rpc_error(error, settings.url, tls=settings.ssl_grpc_use_ssl)
            if error.code() in _NOT_THE_DATA or reason.startswith("permission denied"):
                raise ServerError(reason) from None
        if reason.startswith(TIMEOUT):
            return  # slow, not rejected: the run counts its timeouts
        message = f"model {model.name} rejected the request: {reason}"
        if settings.input_data in GENERATED:
            message += f" (hint: the model needs real data; pass it with --input-data FILE, not {settings.input_data})"
        raise ModelRejectedError(message) from None


def _check_kind(model: ModelInfo, data: InputData, settings: Settings) -> None:
    """A decoupled model answers over a stream only; validation compares one response per request."""
    if model.is_decoupled and not settings.streaming:
        raise OptionError(
            f"model {model.name} is decoupled (several responses per request): profile it with --streaming"
            + (" over gRPC (-i grpc): Triton streams over gRPC only" if settings.protocol != "grpc" else "")
        )
    if settings.streaming and data.expected is not None and model.is_sequence:
        raise OptionError("--input-data: validation_data with --streaming is not supported for a sequence model")
    if settings.shared_memory != "none" and data.expected is not None:
        raise OptionError(
            "--input-data: validation_data is not supported with --shared-memory (outputs land in one region per "
            "output, which requests in flight overwrite)"
        )


def _loads(settings: Settings) -> list[Load]:
    if settings.mode == "concurrency":
        return [Load(concurrency=int(level)) for level in settings.levels]
    if settings.mode == "request_rate":
        return [Load(rate=level) for level in settings.levels]
    assert settings.request_intervals is not None
    gaps = read_intervals(settings.request_intervals)
    return [Load(rate=1e6 / statistics.fmean(gaps))]


Measure = Callable[[Load], Awaitable[LevelResult]]
Judge = Callable[[LevelResult], bool]


async def linear(loads: Sequence[Load], measure: Measure, last: Judge) -> list[LevelResult]:
    """Every level in order, until one that `last` says ends the sweep."""
    levels = []
    for load in loads:
        level = await measure(load)
        levels.append(level)
        if last(level):
            break
    return levels


def ends_sweep(over_threshold: Judge) -> Judge:
    """perf_analyzer's rule: a sweep ends after an unstable level or the first one over the latency threshold."""
    return lambda level: not level.stable or over_threshold(level)


async def binary_search(loads: Sequence[Load], measure: Measure, over_threshold: Judge) -> list[LevelResult]:
    """Bisect the range for its highest load under the latency threshold; levels in the order measured."""
    levels = [await measure(loads[0])]
    if over_threshold(levels[0]) or not levels[0].stable or len(loads) == 1:
        return levels
    levels.append(await measure(loads[-1]))
    if not over_threshold(levels[-1]) or not levels[-1].stable:
        return levels
    low, high = 0, len(loads) - 1  # loads[low] is under the threshold, loads[high] over it
    while high - low > 1:
        middle = (low + high) // 2
        level = await measure(loads[middle])
        levels.append(level)
        if not level.stable:
            break
        low, high = (low, middle) if over_threshold(level) else (middle, high)
    return levels


class _Abort(Exception):
    """Ends the sweep early; finished levels and the partial one are kept."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Sweep:
    """Runs the load generator over the levels, measuring each with windows and server statistics."""

    def __init__(
        self,
        connection: Connection,
        requests: Requests,
        tree: Composition,
        settings: Settings,
        progress: Progress | None,
        stop: asyncio.Event,
        log: WindowLog | None = None,
    ) -> None:
        self.connection = connection
        self.stop = stop
        self.log = log
        # a logged run measures a fixed number of windows per level, on a wall-clock grid shared by its shards
        self.grid_ns: int | None = None
        self.finished: list[LevelResult] = []
        self.tree = tree
        self.settings = settings
        self.progress = progress
        self.generator: LocalGenerator | ProcessGenerator = (
            LocalGenerator(connection, requests, settings, Shard(settings.shard_index, settings.shard_count))
            if settings.workers == 1
            else ProcessGenerator(requests, settings, settings.workers)
        )
        self.warmed_up = settings.warmup_request_count == 0

    async def run(self) -> tuple[list[LevelResult], _Abort | None]:
        """The measured levels, and why the sweep ended early if it did."""
        self.stopping = asyncio.ensure_future(self.stop.wait())
        self.watchdog = asyncio.ensure_future(_watch(self.connection))
        abort = None
        try:
            if isinstance(self.generator, ProcessGenerator):
                await self.generator.start()
            if self.log:
                self.grid_ns = await _wait_for_start(self.settings.start_at)
            loads = _loads(self.settings)
            if self.settings.binary_search:
                await binary_search(loads, self.measure, self._over_threshold)
            else:
                # the shards of a logged run all measure every level; the merge applies the rule to the whole
                await linear(loads, self.measure, _never if self.log else ends_sweep(self._over_threshold))
        except _Abort as stopped:
            abort = stopped
        finally:
            self.stopping.cancel()
            self.watchdog.cancel()
            await asyncio.gather(self.stopping, self.watchdog, return_exceptions=True)
            await self.generator.stop(STOP_GRACE_S)
        return self.finished, abort

    async def _guarded(self, step: Awaitable[T]) -> T:
        """Await a step of the run unless the user stops it or the server goes away first."""
        task = asyncio.ensure_future(step)
        await asyncio.wait({task, self.stopping, self.watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.stopping.done():
            raise _Abort("interrupted", "interrupted: stopped before the sweep finished")
        raise _Abort("failed", self.watchdog.result())

    def _over_threshold(self, level: LevelResult) -> bool:
        """perf_analyzer's -l: the level's latency (the --percentile, else the average) is over the threshold."""
        if self.settings.latency_threshold is None:
            return False
        latency = level.percentile_us if level.percentile_us is not None else level.latency_us.avg
        return latency > self.settings.latency_threshold * 1000

    async def measure(self, load: Load) -> LevelResult:
        """Back-to-back windows until the last three agree, or `max_trials` windows; server statistics per window."""
        settings = self.settings
        number = len(self.finished)
        first_window = number * settings.max_trials
        start_ns = self.grid_ns + first_window * settings.measurement_interval * 1_000_000 if self.grid_ns else None
        await self._guarded(self.generator.apply(load, start_ns or time.perf_counter_ns()))
        if not self.warmed_up:
            await self._guarded(self.generator.warm_up(settings.warmup_request_count))
            self.warmed_up = True
        await self.generator.discard()  # the level starts now: drop what completed before
        reading = await self._statistics()
        windows: list[Window] = []
        server: list[Snapshot] = []
        summaries: list[WindowSummary] = []
        stable = False
        single = settings.request_count > 0  # one window of exactly N requests, no stability check
        try:
            while (not stable or self.log) and len(windows) < (1 if single else settings.max_trials):
                deadline = None
                if start_ns is not None:
                    deadline = start_ns + (len(windows) + 1) * settings.measurement_interval * 1_000_000
                window = await self._guarded(self.generator.window(deadline))
                windows.append(window)
                previous, reading = reading, await self._statistics()
                server.append(delta(previous, reading))
                if self.log:
                    self.log.window(load, number, len(windows) - 1, encode_window(window), server[-1])
                summaries.append(summarize(window, settings.batch_size, settings.percentile))
                stable = single or is_stable(summaries, settings.stability_percentage)
                if self.progress:
                    self.progress.window(load, len(windows), summaries[-1], stable)
                self._check_errors(load, window)
        except _Abort:
            if not windows or windows[-1].request_count + windows[-1].error_count == 0:
                windows.append(await self.generator.rotate())  # what completed of the window cut short
                summaries.append(summarize(windows[-1], settings.batch_size, settings.percentile))
            if windows[-1].request_count or len(windows) > 1:
                self._keep(load, windows, server, summaries, stable=False, complete=False)
            raise
        return self._keep(load, windows, server, summaries, stable, complete=True)

    def _keep(
        self,
        load: Load,
        windows: list[Window],
        server: list[Snapshot],
        summaries: list[WindowSummary],
        stable: bool,
        complete: bool,
    ) -> LevelResult:
        """Merge a level's last windows into its result and record it."""
        last = slice(-STABILITY_WINDOWS, None)
        server_total: Snapshot = {}
        for window_delta in server[last]:
            server_total = add(server_total, window_delta)
        level = LevelResult.from_merged(
            load,
            merge(windows[last]),
            stable,
            summaries,
            self.settings.batch_size,
            self.settings.percentile,
            self.tree,
            server_total,
            complete=complete,
        )
        self.finished.append(level)
        if self.progress:
            self.progress.level(level)
        return level

    async def _statistics(self) -> Snapshot:
        try:
            return snapshot(await self._guarded(self.connection.statistics()))
        except ServerError as error:
            raise _Abort("failed", f"Triton at {self.settings.url} went away: {error}") from None

    def _check_errors(self, load: Load, window: Window) -> None:
        """Stop the sweep when a window's share of failed requests exceeds --max-error-rate."""
        completed = window.request_count + window.error_count
        if not window.error_count or window.error_count <= self.settings.max_error_rate * completed:
            return
        shown = "; ".join(f"{count} x {text}" for text, count in window.errors.most_common(3))
        raise _Abort(
            "failed",
            f"{window.error_count} of {completed} requests failed at {_label(load)}, over --max-error-rate "
            f"{self.settings.max_error_rate:g}: {shown}",
        )


def _never(level: LevelResult) -> bool:
    return False


async def _wait_for_start(start_at: float | None) -> int:
    """Sleep until the shared UNIX start time (if any); the perf_counter_ns instant the run's grid starts at."""
    if start_at is not None:
        await asyncio.sleep(max(start_at - time.time(), 0.0))
    return time.perf_counter_ns()


async def _watch(connection: Connection) -> str:
    """Return (with the reason) once the server has stopped answering its liveness check twice in a row."""
    misses = 0
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        try:
            await connection.check_live(WATCH_INTERVAL_S)
            misses = 0
        except ServerError as error:
            misses += 1
            if misses >= 2:
                return f"Triton at {connection.url} went away: {error}"


def _label(load: Load) -> str:
    return f"concurrency {load.concurrency}" if load.concurrency is not None else f"{load.rate:g} requests/s"
