"""The sweep: connect, build the requests, then measure each load level until it is stable."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from loadgen.errors import ModelRejectedError
from loadgen.inputs import GENERATED, Sample, encode_request, load_samples
from loadgen.load import Load, LocalGenerator
from loadgen.measurement import STABILITY_WINDOWS, Window, WindowSummary, is_stable, merge, summarize
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server_stats import Composition, Snapshot, add, composition, delta, snapshot
from loadgen.settings import Settings, make_settings, read_intervals
from loadgen.transport import Connection, ModelInfo, describe_rpc_error

PREFLIGHT_SAMPLES = 16  # distinct requests checked once before measuring


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
    **options: Any,
) -> ProfileResult:
    """Profile `model` on the Triton server at `url` (gRPC) over a sweep of load levels.

    Keyword options are the command line's long flags in snake case (the fields of `Settings`, or their
    aliases `concurrency`, `request_rate`, `model`), applied over `settings` when given. `concurrency` takes
    "START:END:STEP", an int or a list of ints. Cancelling the call stops the load before it returns.
    """
    named = {key: value for key, value in (("url", url), ("model", model)) if value is not None}
    settings = make_settings(settings, **named, **options)
    connection = Connection(settings.url)
    try:
        await connection.check_ready()
        name = settings.model_name or await connection.choose_model()
        info = await connection.model_info(name, settings.model_version)
        tree = await composition(info.name, info.version, connection.model_config)
        samples = load_samples(settings.input_data, info, settings.shape, settings.batch_size)
        payloads = [encode_request(info, sample) for sample in samples]
        await _preflight(connection, info, payloads, settings)
        inputs = _describe(samples[0])
        if progress:
            progress.started(info, inputs, settings)
        levels = await _Sweep(connection, payloads, tree, settings, progress).run()
    finally:
        await connection.close()
    return ProfileResult(
        model=info.name,
        url=settings.url,
        mode=settings.mode,
        levels=tuple(levels),
        inputs=inputs,
        settings=settings.to_dict(),
    )


def _describe(sample: Sample) -> tuple[InputDescription, ...]:
    return tuple(InputDescription(t.name, t.datatype, t.shape) for t in sample)


async def _preflight(connection: Connection, model: ModelInfo, payloads: list[bytes], settings: Settings) -> None:
    """Send each distinct request once, so that data the model rejects stops the run before it starts."""
    for payload in payloads[:PREFLIGHT_SAMPLES]:
        try:
            await connection.infer(payload)
        except grpc.aio.AioRpcError as error:
            message = f"model {model.name} rejected the request: {describe_rpc_error(error, settings.url)}"
            if settings.input_data in GENERATED:
                message += (
                    f" (hint: the model needs real data; pass it with --input-data FILE, not {settings.input_data})"
                )
            raise ModelRejectedError(message) from None


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


async def linear(loads: Sequence[Load], measure: Measure, over_threshold: Judge) -> list[LevelResult]:
    """Every level in order, stopping after an unstable level or the first one over the latency threshold."""
    levels = []
    for load in loads:
        level = await measure(load)
        levels.append(level)
        if not level.stable or over_threshold(level):
            break
    return levels


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


class _Sweep:
    """Runs the load generator over the levels, measuring each with windows and server statistics."""

    def __init__(
        self,
        connection: Connection,
        payloads: list[bytes],
        tree: Composition,
        settings: Settings,
        progress: Progress | None,
    ) -> None:
        self.connection = connection
        self.tree = tree
        self.settings = settings
        self.progress = progress
        self.generator = LocalGenerator(connection.infer, payloads, settings)
        self.warmed_up = settings.warmup_request_count == 0

    async def run(self) -> list[LevelResult]:
        try:
            walk = binary_search if self.settings.binary_search else linear
            return await walk(_loads(self.settings), self.measure, self._over_threshold)
        finally:
            await self.generator.stop()

    def _over_threshold(self, level: LevelResult) -> bool:
        """perf_analyzer's -l: the level's latency (the --percentile, else the average) is over the threshold."""
        if self.settings.latency_threshold is None:
            return False
        latency = level.percentile_us if level.percentile_us is not None else level.latency_us.avg
        return latency > self.settings.latency_threshold * 1000

    async def measure(self, load: Load) -> LevelResult:
        """Back-to-back windows until the last three agree, or `max_trials` windows; server statistics per window."""
        settings = self.settings
        await self.generator.apply(load, time.perf_counter_ns())
        if not self.warmed_up:
            await self.generator.warm_up(settings.warmup_request_count)
            self.warmed_up = True
        await self.generator.discard()  # the level starts now: drop what completed before
        reading = snapshot(await self.connection.statistics())
        windows: list[Window] = []
        server: list[Snapshot] = []
        summaries: list[WindowSummary] = []
        stable = False
        single = settings.request_count > 0  # one window of exactly N requests, no stability check
        while not stable and len(windows) < (1 if single else settings.max_trials):
            window = await self.generator.window()
            previous, reading = reading, snapshot(await self.connection.statistics())
            windows.append(window)
            server.append(delta(previous, reading))
            summaries.append(summarize(window, settings.batch_size, settings.percentile))
            stable = single or is_stable(summaries, settings.stability_percentage)
            if self.progress:
                self.progress.window(load, len(windows), summaries[-1], stable)
            if window.request_count == 0 and window.error_count:
                first = next(iter(window.errors))
                raise ModelRejectedError(f"every request failed at {_label(load)}: {first}")
        last = slice(-STABILITY_WINDOWS, None)
        server_total: Snapshot = {}
        for window_delta in server[last]:
            server_total = add(server_total, window_delta)
        level = LevelResult.from_merged(
            load,
            merge(windows[last]),
            stable,
            summaries,
            settings.batch_size,
            settings.percentile,
            self.tree,
            server_total,
        )
        if self.progress:
            self.progress.level(level)
        return level


def _label(load: Load) -> str:
    return f"concurrency {load.concurrency}" if load.concurrency is not None else f"{load.rate:g} requests/s"
