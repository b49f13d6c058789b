"""The sweep: connect, build the requests, then measure each load level until it is stable."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import grpc

from loadgen.errors import ModelRejectedError
from loadgen.inputs import GENERATED, Sample, encode_request, load_samples
from loadgen.load import ClosedLoop
from loadgen.measurement import STABILITY_WINDOWS, Recorder, Window, WindowSummary, is_stable, merge, summarize
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server_stats import Composition, Snapshot, add, composition, delta, snapshot
from loadgen.settings import Settings
from loadgen.transport import Connection, ModelInfo, describe_rpc_error

PREFLIGHT_SAMPLES = 16  # distinct requests checked once before measuring


class Progress(Protocol):
    """Receives the sweep's progress; the console report implements it."""

    def started(self, model: ModelInfo, inputs: tuple[InputDescription, ...], settings: Settings) -> None: ...

    def window(self, concurrency: int, index: int, summary: WindowSummary, stable: bool) -> None: ...

    def level(self, level: LevelResult) -> None: ...


async def profile(settings: Settings | None = None, progress: Progress | None = None, **options: Any) -> ProfileResult:
    """Profile a model over the settings' load levels; keyword options are `Settings` fields."""
    settings = settings or Settings(**options)
    connection = Connection(settings.url)
    try:
        await connection.check_ready()
        name = settings.model_name or await connection.choose_model()
        model = await connection.model_info(name, settings.model_version)
        tree = await composition(model.name, model.version, connection.model_config)
        samples = load_samples(settings.input_data, model, settings.shape, settings.batch_size)
        payloads = [encode_request(model, sample) for sample in samples]
        await _preflight(connection, model, payloads, settings)
        inputs = _describe(samples[0])
        if progress:
            progress.started(model, inputs, settings)
        levels = await _sweep(connection, payloads, tree, settings, progress)
    finally:
        await connection.close()
    return ProfileResult(
        model=model.name,
        url=settings.url,
        mode="concurrency",
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


async def _sweep(
    connection: Connection,
    payloads: list[bytes],
    tree: Composition,
    settings: Settings,
    progress: Progress | None,
) -> list[LevelResult]:
    recorder = Recorder()
    pool = ClosedLoop(connection.infer, payloads, recorder, settings.url)
    levels: list[LevelResult] = []
    try:
        for concurrency in settings.levels:
            pool.resize(concurrency)
            level = await _measure_level(connection, recorder, tree, concurrency, settings, progress)
            levels.append(level)
            if progress:
                progress.level(level)
            if not level.stable:
                break
    finally:
        await pool.stop()
    return levels


async def _measure_level(
    connection: Connection,
    recorder: Recorder,
    tree: Composition,
    concurrency: int,
    settings: Settings,
    progress: Progress | None,
) -> LevelResult:
    """Back-to-back windows until the last three agree, or `max_trials` windows; server statistics per window."""
    interval_s = settings.measurement_interval / 1000
    recorder.rotate()  # the level starts now: drop what completed during the change of level
    reading = snapshot(await connection.statistics())
    windows: list[Window] = []
    server: list[Snapshot] = []
    summaries: list[WindowSummary] = []
    stable = False
    while not stable and len(windows) < settings.max_trials:
        await asyncio.sleep(interval_s)
        window = recorder.rotate()
        previous, reading = reading, snapshot(await connection.statistics())
        windows.append(window)
        server.append(delta(previous, reading))
        summaries.append(summarize(window, settings.batch_size))
        stable = is_stable(summaries, settings.stability_percentage)
        if progress:
            progress.window(concurrency, len(windows), summaries[-1], stable)
        if window.request_count == 0 and window.error_count:
            first = next(iter(window.errors))
            raise ModelRejectedError(f"every request failed at concurrency {concurrency}: {first}")
    last = slice(-STABILITY_WINDOWS, None)
    server_total: Snapshot = {}
    for window_delta in server[last]:
        server_total = add(server_total, window_delta)
    return LevelResult.from_merged(
        concurrency, merge(windows[last]), stable, len(windows), settings.batch_size, tree, server_total
    )
