"""The sweep: connect, build the requests, then measure each load level until it is stable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loadgen.clock import WallClock
from loadgen.errors import LoadgenError, ModelRejectedError, OptionError, RunFailed, ServerError
from loadgen.inputs import GENERATED, InputData, Requests, Sample, encode_requests, load_data
from loadgen.levels import Level, ends_sweep, outcome, start_level
from loadgen.load import WARMUP_TIMEOUT_S, Generator, LocalGenerator, next_window
from loadgen.measurement import Unfinished, Window, WindowSummary, keep_memory_flat
from loadgen.mix import MixGenerator, dealing, selector
from loadgen.plan import Load, RunPlan, Windows, capped_at_threads, plan, with_schedule
from loadgen.prompts import TEXT_OUTPUT, SessionPlan, prompts_for, sessions_of, token_outputs, triton_sample
from loadgen.records import EVERYTHING, Recorded, RequestLog, body_inputs, request_records, token_records
from loadgen.reports.profile_export import tensor_value
from loadgen.results import (
    Experiment,
    InputDescription,
    LevelResult,
    ProfileResult,
    RunDescription,
    TokenRecord,
    Unmeasured,
)
from loadgen.sequences import check_sequence_ids
from loadgen.server.idle import Idle, idle_timeout_s, wait_until_idle
from loadgen.server.metrics import MetricsCollector, metrics_url
from loadgen.server.sharing import server_requests
from loadgen.server.statistics import Composition, Snapshot, composition, delta, snapshot
from loadgen.server.trace import traced
from loadgen.settings import Settings, make_settings
from loadgen.shards.grid import Grid
from loadgen.shards.log import LoggedStart, LoggedWindow, WindowLog
from loadgen.shared_memory import Regions, place
from loadgen.transport import Connection, ConnectionOptions, ModelInfo, Payload, RequestFailed, TensorSpec, connect
from loadgen.watchdog import Watchdog
from loadgen.workers import ProcessGenerator

# When a run ends, requests in flight get this long to return before they are cancelled: tritonserver 2.51 can
# crash (SIGSEGV) on a gRPC request cancelled while it completes (triton-inference-server/server#7368).
STOP_GRACE_S = 2.0
# After Ctrl-C (or SIGTERM), a shorter grace: the run stops within 2 s whatever its requests wait for (measured
# against endless responses, about 0.4 s of the stop is the rest: cancelling, closing, the report, the exit)
INTERRUPT_GRACE_S = 0.5
UNBOUNDED = (0, 2**64 - 1)  # perf_analyzer's window boundaries of a periodic-concurrency run
LARGE_INPUT_BYTES = 10_000_000  # input files above this size are worth a line while they load
STATISTICS_SETTLE_S = 2.0  # how long the statistics after a --request-count window may take to count all of it
STATISTICS_POLL_S = 0.02
# An open loop's control work runs in a thread (`_Sweep._off_loop`): the sender's loop gets the interpreter back from
# it within this long (Python's default, 5 ms, would make a request due meanwhile up to 5 ms late;
# benchmarks/gil_wake.py measures it)
SWITCH_INTERVAL_S = 0.0005
# perf_analyzer's warning when an asynchronous level is taken on its throughput alone
LATENCY_NOT_SETTLING = "Warning: Request latency is not stabilizing. Please try lowering the request rate."
T = TypeVar("T")


class Progress(Protocol):
    """Receives the sweep's progress; the console report implements it."""

    def note(self, text: str) -> None:
        """A step of the preparation worth saying while it takes long (loading a large input file); optional."""

    def started(self, run: RunDescription) -> None: ...

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None: ...

    def level(self, level: LevelResult) -> None: ...


class Stopped(Exception):
    """The user stopped the run before it measured anything."""


@dataclass
class _Tally:
    """Counts, as the sweep goes, the requests that no measured window holds (see `Unmeasured`)."""

    warmup: int = 0
    between_levels: int = 0
    earlier_level: int = 0
    after_last_window: int = 0
    unfinished: Unfinished = field(default_factory=Unfinished)

    def measured(self, window: Window) -> None:
        self.earlier_level += window.stale

    def before(self, window: Window, warmup: bool) -> None:
        """What completed before a level's first window: the warm-up's, or since the previous level's last."""
        self.earlier_level += window.stale
        done = window.request_count + window.error_count
        if warmup:
            self.warmup += done
        else:
            self.between_levels += done

    def tail(self, window: Window | None, unfinished: Unfinished) -> None:
        """What completed after the last window: until the load stopped, and within its grace period."""
        if window is not None:
            self.earlier_level += window.stale
            self.after_last_window += window.request_count + window.error_count
        self.after_last_window += unfinished.in_flight - unfinished.cancelled
        self.unfinished = unfinished

    def result(self) -> Unmeasured:
        return Unmeasured(
            self.warmup,
            self.between_levels,
            self.earlier_level,
            self.after_last_window,
            self.unfinished.in_flight,
            self.unfinished.cancelled,
        )


@dataclass(frozen=True)
class Prepared:
    """One model ready for load: its metadata and composition, its requests built once, and its run plan."""

    info: ModelInfo
    tree: Composition
    requests: Requests
    inputs: tuple[InputDescription, ...]
    run: RunPlan
    options: ConnectionOptions  # its load's connections' (the largest response its outputs allow)


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
    interrupted (before measuring, it has no levels). A run that fails midway (the server goes away, too many
    errors) raises `RunFailed`, whose `result` holds the same. Cancelling the call stops the load at once and
    returns nothing.
    """
    named = {key: value for key, value in (("url", url), ("model", model)) if value is not None}
    return await profile_against(make_settings(settings, **named, **options), None, progress, stop)


async def profile_against(
    settings: Settings,
    reference: LevelResult | None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> ProfileResult:
    """`profile`, with an earlier, less loaded level as the reference for how much the steps' compute grew (a
    mix's level: each model's against its own figures there; tune compares every trial with its first
    measurement)."""
    keep_memory_flat()
    session = _Session(plan(settings), ConnectionOptions.from_settings(settings), progress, stop or asyncio.Event())
    session.reference = reference
    try:
        return await session.profile()
    finally:
        await session.close()


class _Session:
    """One profiling run from connecting to the last level; every phase gives way to the stop event."""

    def __init__(
        self, run: RunPlan, options: ConnectionOptions, progress: Progress | None, stop: asyncio.Event
    ) -> None:
        self.run = run
        self.settings = run.settings
        self.options = options
        self.progress = progress
        self.stop = stop
        self.connection = connect(options)
        self.regions: list[Regions] = []  # shared-memory regions, one set per model
        self.model = self.settings.model_name or ""
        self.reference: LevelResult | None = None  # the reference for compute growth, before a level of its own
        self.solo: dict[str, tuple[LevelResult, ...]] = {}  # a mix's models alone (--solo-baseline), level by level
        self.server_idle: Idle | None = None  # how the wait for the server's other work on the model went

    async def close(self) -> None:
        try:
            for regions in self.regions:
                await asyncio.shield(regions.release())  # also when the call is cancelled
        finally:
            await self.connection.close()

    async def _until_stopped(self, step: Awaitable[T]) -> T:
        """Await a step of the preparation unless the user stops the run first."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Stopped

    async def profile(self) -> ProfileResult:
        mix = self.settings.model_mix
        try:
            if mix is None:
                models = [await self._until_stopped(self._prepare(self.settings))]
                self.run = models[0].run  # a fixed schedule's times come with its data
            else:
                models = [await self._until_stopped(self._prepare_in_mix(name)) for name in mix]
        except Stopped:
            return self._result((), (), "interrupted", "interrupted before measuring")
        info = models[0].info
        self.model = info.name if mix is None else "+".join(mix)
        inputs = tuple(description for model in models for description in model.inputs)
        description = RunDescription(
            self.model,
            self.settings.url,
            self.run.mode,
            inputs,
            self.run.windows,
            self.run.rule,
            self.run.loads,
            any(model.info.is_decoupled for model in models),
            any(model.info.is_sequence for model in models),
            _json_streams(models[0].requests),
        )
        log = WindowLog(self.settings.hdr_log, self.run.shard) if self.settings.hdr_log else None
        if mix is not None and self.settings.solo_baseline:
            try:
                await self._solo_baselines(mix)
            except Stopped:
                return self._result((), inputs, "interrupted", "stopped while measuring the solo baselines")
        sweep = _Sweep(self, models, log)
        if log:
            log.header(description, self.settings.to_dict(), sweep.trees)
        async with traced(self.connection, self.settings) as trace:
            if trace:
                shown = ", ".join(f"{key} {','.join(values)}" for key, values in trace.items())
                self._note(f"server tracing set for the run ({shown}); restored after it")
            if self.progress:
                self.progress.started(description)
            levels, abort = await sweep.sweep()
        status, message = (abort.status, abort.message) if abort else outcome(levels)
        unmeasured = sweep.tally.result()
        if log:
            log.end(status)
        experiments = await _in_daemon_thread(sweep.experiments)
        capped = sweep.records is not None and sweep.records.full and not sweep.records.per_level
        if capped:
            self._note(
                f"--record-requests {self.settings.record_requests}: the bound was reached, and later requests were "
                "not recorded for the profile export"
            )
        result = self._result(levels, inputs, status, message, experiments, capped, unmeasured)
        if abort and abort.status == "failed":
            raise RunFailed(abort.message, result)
        return result

    async def _solo_baselines(self, mix: Mapping[str, float]) -> None:
        """Each model of the mix alone at its own load, before the mix (--solo-baseline)."""
        for name in mix:
            settings = self.settings.for_model(name)
            self._note(f"solo baseline: {name} alone at {', '.join(str(load) for load in plan(settings).loads)}")
            solo = await self._until_stopped(profile_against(settings, None, None, self.stop))
            self.solo[name] = solo.levels

    def _result(
        self,
        levels: Sequence[LevelResult],
        inputs: tuple[InputDescription, ...],
        status: str,
        message: str,
        experiments: tuple[Experiment, ...] = (),
        capped: bool = False,
        unmeasured: Unmeasured | None = None,
    ) -> ProfileResult:
        return ProfileResult(
            model=self.model,
            url=self.settings.url,
            mode=self.run.mode,
            levels=tuple(levels),
            inputs=inputs,
            settings=self.settings.to_dict(),
            status=status,
            message=message,
            experiments=experiments,
            records_capped=capped,
            server_idle=self.server_idle,
            unmeasured=unmeasured,
        )

    def _note(self, text: str) -> None:
        note = getattr(self.progress, "note", None)  # optional in a receiver of progress
        if note is not None:
            note(text)

    async def _prepare_in_mix(self, name: str) -> Prepared:
        """One model of a mix, prepared with its own settings; a bad option names the model it is about."""
        try:
            return await self._prepare(self.settings.for_model(name))
        except OptionError as error:
            raise OptionError(f"{name} (in --model-mix; {name}=... forms give it its own): {error}") from None

    async def _prepare(self, settings: Settings) -> Prepared:
        """Connect, find the model, build its requests (in a thread: a large input file must not hold up signals)."""
        connection = self.connection
        run = self.run if settings is self.settings else plan(settings)
        await connection.check_reachable()
        name = settings.model_name or await connection.choose_model()
        info = await connection.model_info(name, settings.model_version)
        await connection.check_model_ready(info.name, info.version)
        tree = await composition(info.name, info.version, connection.model_config, settings.bls_composing_models)
        size = _input_bytes(settings.input_sources)
        started = time.perf_counter()
        if size > LARGE_INPUT_BYTES:
            self._note(f"loading {size / 1e6:.0f} MB of input data ...")
        if settings.token_run:
            return await self._prepare_tokens(settings, info, tree, run)
        data = await _in_daemon_thread(load_data, info, settings)
        _check_kind(info, data, settings)
        run = capped_at_threads(run, info.is_sequence)
        if data.timestamps_ms is not None:
            run = with_schedule(run, data.timestamps_ms)
        placements = None
        if settings.shared_memory == "system":
            regions, placements = await place(connection, info, data.samples, settings)
            self.regions.append(regions)
        requests = await _in_daemon_thread(encode_requests, connection.wire, info, data, settings, placements)
        if requests.sequential:
            check_sequence_ids(run)
        if size > LARGE_INPUT_BYTES:
            self._note(f"built {len(requests.payloads)} requests in {time.perf_counter() - started:.1f} s")
        options = self.options.for_model(info, settings)
        return Prepared(info, tree, requests, _describe(data.streams[0][0]), run, options)

    async def _prepare_tokens(self, settings: Settings, info: ModelInfo, tree: Composition, run: RunPlan) -> Prepared:
        """A generative model: its prompts encoded once for the endpoint, as a Triton pipeline's tensors over gRPC
        (kserve) or as an HTTP endpoint's bodies (Triton's generate extension, an OpenAI-compatible server)."""
        prompt_set, _ = await _in_daemon_thread(prompts_for, settings)
        prompts = prompt_set.prompts
        if settings.endpoint_type in (None, "kserve"):
            data = InputData((tuple(triton_sample(info, prompt, settings) for prompt in prompts),))
            _check_kind(info, data, settings)
            requests = await _in_daemon_thread(encode_requests, self.connection.wire, info, data, settings)
            inputs = _describe(data.streams[0][0])
        else:
            from loadgen.transport.endpoints import endpoint_for

            encode = endpoint_for(info.name, settings, self.options).encode
            payloads = tuple(encode(prompt) for prompt in prompts)
            requests = Requests(payloads, (tuple(range(len(payloads))),))
            inputs = (InputDescription("prompt", "TEXT", (len(prompts),)),)
        sessions = SessionPlan(sessions_of(prompt_set, settings), info) if settings.sessions else None
        requests = dataclasses.replace(
            requests,
            tokens=token_outputs(info),
            input_tokens=tuple(prompt.input_tokens for prompt in prompts),
            sessions=sessions,
        )
        if prompt_set.timestamps_ms is not None and settings.fixed_schedule:  # a trace's times
            run = with_schedule(run, prompt_set.timestamps_ms)
        return Prepared(info, tree, requests, inputs, run, self.options)


def _json_streams(requests: Requests) -> tuple[int, ...]:
    """Each stream's steps, when the data was JSON."""
    return tuple(len(stream) for stream in requests.streams) if requests.json else ()


async def _in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking function in a daemon thread: if the run is stopped meanwhile, it is left behind and does not
    hold up the process's exit (as a thread of the default executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result, error = None, None
        try:
            result = function(*args)
        except BaseException as caught:  # handed to the awaiting coroutine
            error = caught
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=work, name="loadgen-load", daemon=True).start()
    return await future


def _input_bytes(sources: Sequence[str]) -> int:
    """The size of the input files (0 for generated data and directories)."""
    return sum(Path(source).stat().st_size for source in sources if Path(source).is_file())


def _describe(sample: Sample) -> tuple[InputDescription, ...]:
    return tuple(InputDescription(t.name, t.datatype, t.shape) for t in sample)


def _check_kind(model: ModelInfo, data: InputData, settings: Settings) -> None:
    """A decoupled model answers over a stream only; validation compares one response per request."""
    if model.is_decoupled and not settings.streaming:
        raise OptionError(
            f"model {model.name} is decoupled (several responses per request): profile it with --streaming"
            + (" over gRPC (-i grpc): Triton streams over gRPC only" if settings.protocol != "grpc" else "")
        )
    if model.is_sequence and settings.mode in ("periodic_concurrency", "fixed_schedule"):
        raise OptionError(
            f"model {model.name} is a sequence model: --{settings.mode.replace('_', '-')} sends requests without "
            "sequences (profile it with --concurrency-range or --request-rate-range)"
        )
    if settings.streaming and data.expected is not None and model.is_sequence:
        raise OptionError("--input-data: validation_data with --streaming is not supported for a sequence model")
    if settings.shared_memory != "none" and data.expected is not None:
        raise OptionError(
            "--input-data: validation_data is not supported with --shared-memory (outputs land in one region per "
            "output, which requests in flight overwrite)"
        )


def _rejected(model: str, failure: RequestFailed, settings: Settings) -> ModelRejectedError:
    message = f"model {model} rejected the request: {failure}"
    if "shared memory size" in str(failure):  # Triton's words for an output region too small for the results
        message += " (hint: raise --output-shared-memory-size, the region per output for one request of the batch)"
    elif settings.input_data in GENERATED:
        message += f" (hint: the model needs real data; pass it with --input-data FILE, not {settings.input_data})"
    return ModelRejectedError(message)


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


async def binary_search(loads: Sequence[Load], measure: Measure, over: Judge) -> list[LevelResult]:
    """Bisect the range for its highest load under the latency threshold; levels in the order measured."""
    levels = [await measure(loads[0])]
    if over(levels[0]) or not levels[0].stable or len(loads) == 1:
        return levels
    levels.append(await measure(loads[-1]))
    if not over(levels[-1]) or not levels[-1].stable:
        return levels
    low, high = 0, len(loads) - 1  # loads[low] is under the threshold, loads[high] over it
    while high - low > 1:
        middle = (low + high) // 2
        level = await measure(loads[middle])
        levels.append(level)
        if not level.stable:
            break
        low, high = (low, middle) if over(level) else (middle, high)
    return levels


class _Failing(Exception):
    """The window's share of failed requests passed --max-error-rate before it ended."""


class _Abort(Exception):
    """Ends the sweep early; finished levels and the partial one are kept."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Sweep:
    """Runs the load generator over the levels, measuring each with windows and server statistics."""

    def __init__(self, session: _Session, models: Sequence[Prepared], log: WindowLog | None) -> None:
        self.session = session
        self.run = run = session.run
        self.settings = settings = run.settings
        self.models = models
        self.info = models[0].info
        self.log = log
        # a logged run measures a fixed number of windows per level, on a grid from --start-at shared by its shards
        self.grid: Grid | None = None
        self.finished: list[LevelResult] = []
        self.trees = {model.info.name: model.tree for model in models}  # each model's composition, by name
        self.connections: list[Connection] = []  # a mix's own, one per model
        mix = settings.model_mix
        self.mix: MixGenerator | None = self._mix(mix) if mix is not None else None
        if self.mix is not None:
            self.generator: Generator = self.mix
        elif settings.workers == 1:
            session.connection.limit_responses(models[0].options.max_response_bytes)
            self.generator = LocalGenerator(session.connection, models[0].requests, run)
        else:
            self.generator = ProcessGenerator(models[0].requests, run, models[0].options, settings.workers)
        # the profile export's records (one process only: Settings refuses them with --workers)
        self.records: RequestLog | None = self.generator.records if isinstance(self.generator, LocalGenerator) else None
        self.recorded: list[tuple[Load, list[Recorded], tuple[int, ...]]] = []  # per level: its requests, windows
        self.warmed_up = settings.warmup_request_count == 0
        self.tally = _Tally()

    async def sweep(self) -> tuple[list[LevelResult], _Abort | None]:
        """The measured levels, and why the sweep ended early if it did."""
        self.stopping = asyncio.ensure_future(self.session.stop.wait())
        watchdog = Watchdog(self.session.options)
        self.watching = watchdog.start()
        self.control = connect(self.session.options)  # statistics never queue behind the load's requests
        self.metrics: MetricsCollector | None = None
        abort = None
        rule = self.run.rule
        switch_interval = sys.getswitchinterval()
        if not self.run.closed_loop:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            if self.settings.collect_metrics and (not self.settings.openai or self.settings.metrics_url):
                self.metrics = await self._guarded(self._collect_metrics())
            if isinstance(self.generator, ProcessGenerator):
                await self._guarded(self.generator.start())
            await self._guarded(self._wait_idle())
            if self.log:
                self.grid = await self._guarded(self._start_grid(self.log))
            if self.run.periodic is not None:
                await self._guarded(self._ramp(*self.run.periodic))
            elif self.settings.binary_search:
                await binary_search(self.run.loads, self.measure, rule.over_threshold)
            elif self.grid is not None:
                await self._on_grid(self.grid)
            else:
                await linear(self.run.loads, self.measure, lambda level: ends_sweep(level, rule))
        except _Abort as stopped:
            abort = stopped
        finally:
            sys.setswitchinterval(switch_interval)
            self.stopping.cancel()
            watchdog.stop()
            await asyncio.gather(self.stopping, return_exceptions=True)
            tail = None
            with contextlib.suppress(LoadgenError):  # workers that failed have no tail to tell
                tail = await self.generator.rotate()
            grace = INTERRUPT_GRACE_S if self.session.stop.is_set() else STOP_GRACE_S
            self.tally.tail(tail, await self.generator.stop(grace))
            for connection in self.connections:
                await connection.close()
            await self.control.close()
            if self.metrics is not None:
                await self.metrics.stop()
        return self.finished, abort

    async def _start_grid(self, log: WindowLog) -> Grid:
        """Warm up, then wait for --start-at: the grid the logged windows fall on, logged with how late this run was
        ready (a warm-up that outlasts the wait makes it late too)."""
        if not self.warmed_up:
            self.tally.before(await self._warm_up(self.run.loads[0]), True)
        grid = await _wait_for_start(self.settings.start_at, log.clock, self.run.windows)
        start = LoggedStart(grid, max(time.perf_counter_ns() - grid.origin_ns, 0))
        log.start(start)
        if start.late:
            level, index = start.joined
            self.session._note(
                f"ready {start.late_ns / 1e9:.2f} s after --start-at: this run joins the grid at level {level} window "
                f"{index}; `loadgen merge` reports the windows it missed"
            )
        return grid

    async def _warm_up(self, load: Load) -> Window:
        """--warmup-request-count requests at `load`, in no level's windows; the window that closed at the last."""
        await self.generator.apply(load, time.perf_counter_ns())
        warm = await self.generator.fill(self.settings.warmup_request_count, WARMUP_TIMEOUT_S)
        self.warmed_up = True
        return warm

    async def _warm_up_apart(self, load: Load) -> Snapshot:
        """perf_analyzer's warm-up before a --request-count level: exactly its requests, every one returned and
        booked by the server before the level starts; the server's statistics then (the level's server figures hold
        its own requests alone)."""
        start = await self._statistics()
        count = self.settings.warmup_request_count
        self.tally.before(await self._guarded(self.generator.apply(load, time.perf_counter_ns(), count)), False)
        warm = await self._guarded(self.generator.fill(count, WARMUP_TIMEOUT_S))
        self.tally.before(warm, True)
        self.warmed_up = True
        return await self._booked(start, warm.request_count + warm.error_count)

    async def _on_grid(self, grid: Grid) -> None:
        """A logged run: every level in its place on the grid (its shards all measure every level; the merge applies
        the rule to the whole); a run that came late joins at the next window, leaving out what it missed."""
        joined, first = grid.position(time.perf_counter_ns())
        for number, load in enumerate(self.run.loads[joined:], joined):
            await self.measure(load, number, first if number == joined else 0)

    def _mix(self, mix: Mapping[str, float]) -> MixGenerator:
        """A generator per model, each on a connection of its own (its send and receive times are its own), driven
        as one: an open loop deals the mix's one schedule out to them in their shares."""
        pattern = dealing(list(mix.values()))
        rejection, failing = asyncio.Event(), asyncio.Event()
        members = {}
        for index, model in enumerate(self.models):
            connection = connect(model.options)
            self.connections.append(connection)
            select = None if self.run.closed_loop else selector(pattern, index, self.run.shard)
            members[model.info.name] = LocalGenerator(
                connection, model.requests, model.run, select=select, rejection=rejection, failing=failing
            )
        return MixGenerator(members, mix, self.run.closed_loop, self.run.windows, rejection, failing)

    async def _ramp(self, start: int, end: int, step: int) -> None:
        """perf_analyzer's periodic concurrency: no levels, no windows; every request goes to the profile export."""
        assert isinstance(self.generator, LocalGenerator)
        try:
            await self.generator.ramp(start, end, step, self.settings.request_period)
        except RequestFailed as failure:
            raise _Abort("failed", f"periodic concurrency stopped: a request failed: {failure}") from None

    def experiments(self) -> tuple[Experiment, ...]:
        """The recorded requests decoded, one experiment per level (a periodic run: one in all, as perf_analyzer
        writes it); run once the load has stopped."""
        if self.records is None:
            return ()
        if self.run.periodic is not None:
            self.recorded = [(Load(concurrency=1), self.records.take(*EVERYTHING), UNBOUNDED)]
        fixed = self.run.mode == "fixed_schedule"  # perf_analyzer records such a run at a rate of 0
        tokens = self.models[0].requests.tokens is not None  # a token run's records are its `tokens`
        return tuple(
            Experiment(
                mode="concurrency" if load.concurrency is not None else "request_rate",
                value=load.concurrency if load.concurrency is not None else 0.0 if fixed else load.rate or 0.0,
                requests=()
                if tokens
                else request_records(
                    exchanges,
                    self.session.connection.wire,
                    self._outputs(),
                    self.settings.streaming,
                    self.records.offset_ns,
                    self.settings.batch_size if self.info.max_batch_size > 0 else 1,
                ),
                window_boundaries=boundaries,
                tokens=self._token_records(exchanges),
            )
            for load, exchanges, boundaries in self.recorded
        )

    def _token_records(self, exchanges: list[Recorded]) -> tuple[TokenRecord, ...]:
        """A token run's recorded requests, its inputs read from the payloads as sent (an HTTP endpoint's JSON
        body; a Triton request's tensors), each event's text under the model's text output (`text_output` when
        it names none, as over an OpenAI-compatible endpoint)."""
        generator = self.generator
        if not isinstance(generator, LocalGenerator) or generator.counter is None or self.records is None:
            return ()
        connection = self.session.connection

        def tensors(payload: Payload) -> dict[str, Any]:  # a Triton request's (a server without Triton has no wire)
            sample = connection.wire.decode_request(payload)[1]
            return {tensor.name: tensor_value(tensor, lambda datatype: None) for tensor in sample}

        tokens = generator.requests.tokens
        return token_records(
            exchanges,
            body_inputs if generator.endpoint is not None else tensors,
            (tokens.text if tokens is not None else None) or TEXT_OUTPUT,
            generator.counter,
            generator.input_tokens,
            self.records.offset_ns,
        )

    def _outputs(self) -> tuple[TensorSpec, ...]:
        """The outputs every request asks for: --output, else all of the model's."""
        asked = set(self.settings.output)
        return tuple(spec for spec in self.info.outputs if not asked or spec.name in asked)

    def _record(self, load: Load, level: Level) -> None:
        """Keep the requests that completed in a level's windows, with the windows' boundaries."""
        if self.records is None or not level.bounds:
            return
        boundaries = tuple(level.bounds)
        exchanges = self.records.take(boundaries[0], boundaries[-1])
        self.recorded.append((load, exchanges, tuple(self.records.epoch(ns) for ns in boundaries)))

    async def _collect_metrics(self) -> MetricsCollector:
        """Scrape the server's metrics in the background; an endpoint that does not answer is said once."""
        settings = self.settings
        models = {step.model for model in self.models for step in model.tree.models()}
        return await MetricsCollector(
            metrics_url(settings.address, settings.metrics_url),
            settings.metrics_interval,
            models=models,
            notify=self.session._note,
        ).start()

    async def _guarded(self, step: Awaitable[T], failing: bool = False) -> T:
        """Await a step of the run unless the user stops it, the server goes away or the model rejects the data
        (with `failing`, also unless the window's failures pass --max-error-rate: `_Failing`)."""
        task = asyncio.ensure_future(step)
        events = [self.generator.rejection, *([self.generator.failing] if failing else [])]
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait({task, self.stopping, self.watching, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if task.done() and not any(event.is_set() for event in events):
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._check_rejected()
        if failing and self.generator.failing.is_set() and not self.stopping.done() and not self.watching.done():
            raise _Failing
        if self.stopping.done():
            raise _Abort("interrupted", "stopped before the sweep finished")
        raise _Abort("failed", self.watching.result())

    def _check_rejected(self) -> None:
        """The model rejected the run's first requests: the data does not suit it; stop with its message."""
        rejected = self.generator.rejected
        if rejected is None:
            return
        model = self.info.name
        if self.mix is not None:
            model = next(name for name, member in self.mix.members.items() if member.rejected is rejected)
            raise _rejected(model, rejected, self.settings.for_model(model))
        raise _rejected(model, rejected, self.settings)

    async def measure(self, load: Load, number: int | None = None, first: int = 0) -> LevelResult:
        """Back-to-back windows until the last three agree, or `max_windows` windows; server statistics per window.

        A logged run measures level `number` on the grid, from its window `first` (where a late run joins) to its end.
        """
        windows = self.run.windows
        number = len(self.finished) if number is None else number
        start_ns = self.grid.boundary(number, first) if self.grid is not None else None  # when window `first` starts
        initial = None  # a --request-count level's statistics before any of its requests
        if windows.single and self.mix is None:
            initial = await self._warm_up_apart(load) if not self.warmed_up else await self._statistics()
        count = None
        if windows.single:  # exactly --request-count requests (and the warm-up's) reach the server
            count = (windows.count or 0) + (0 if self.warmed_up else self.settings.warmup_request_count)
        # what completed up to the switch; a window of exactly --request-count requests counts from the switch on
        before = await self._guarded(self.generator.apply(load, start_ns or time.perf_counter_ns(), count))
        if not windows.single and start_ns is None:  # the previous level's requests are never counted at this one,
            # and its first window waits (a while) for them; a logged run's windows keep their place on the grid
            await self._guarded(self.generator.drain(windows.interval_ms / 1000))
        warmup = not self.warmed_up
        if start_ns is not None:  # a run that joins the level late: its load runs until the window it joins starts
            await self._guarded(_sleep_until(start_ns))
        if warmup:  # the warm-up's window closes at exactly its last request: the level starts there
            self.tally.before(before, warmup=False)
            before = await self._guarded(self.generator.fill(self.settings.warmup_request_count, WARMUP_TIMEOUT_S))
            self.warmed_up = True
        elif not windows.single:  # the level starts now: drop what completed since the switch
            self.tally.before(before, warmup=False)
            before = await self.generator.rotate()
        self.tally.before(before, warmup)
        if self.records is not None:
            self.records.drop_before(before.end_ns)
        reading = initial if initial is not None else await self._statistics()
        if self.metrics is not None:
            self.metrics.window()  # nor what was scraped before
        least = self.finished[0] if self.finished else self.session.reference  # the least-loaded level
        level = start_level(
            load, self.run.rule, self.trees, self.settings.model_mix, least, self.run.server_cores, self._solo(number)
        )
        self._audit(level, before)
        if self.records is not None:
            level.keep_bounds()
        try:
            while (not level.stable or self.log) and first + level.count < windows.max_windows:
                index = first + level.count  # its place in the level (a logged run's on the grid)
                deadline = self.grid.boundary(number, index + 1) if self.grid is not None else None
                try:
                    window = await self._guarded(next_window(self.generator, windows, deadline), failing=True)
                except _Failing:  # the window ends here: its failures are over the limit (said below)
                    window = await self.generator.rotate()
                self._check_rejected()
                previous, reading = reading, await self._statistics_after(reading, window)
                metrics = self.metrics.window() if self.metrics is not None else None
                server = delta(previous, reading)
                parts = self.mix.parts if self.mix is not None else {}
                logged = LoggedWindow(load, number, index, window, server, metrics, parts)
                await self._off_loop(self._close_window, level, logged)
                self.tally.measured(window)
                self._check_errors(load, window)
        except _Abort:
            if not level.count or level.summaries[-1].request_count + level.summaries[-1].error_count == 0:
                window = await self.generator.rotate()  # what completed of the window cut short
                level.add(window, {}, None, self.mix.parts if self.mix is not None else {})
                self.tally.measured(window)
            if level.windows[-1].request_count or level.windows[-1].error_count or level.count > 1:
                self._keep(level.result(complete=False))
            self._record(load, level)
            raise
        if not level.stable and self._asynchronous() and level.settle_on_throughput():
            self.session._note(LATENCY_NOT_SETTLING)
        self._record(load, level)
        return await self._off_loop(lambda: self._keep(level.result()))

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Control work (a window's figures, its log line and progress; a level's result) in a thread of its own
        in an open loop, so that the loop that sends on schedule never waits for it (see `SWITCH_INTERVAL_S`)."""
        if self.run.closed_loop:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def _close_window(self, level: Level, logged: LoggedWindow) -> None:
        """A measured window into its level, the window log and the progress."""
        summary = level.add(logged.window, logged.server, logged.metrics, logged.parts)
        if self.log:
            self.log.window(logged)
        if self.session.progress:
            self.session.progress.window(logged.load, level.count, summary, level.stable)

    def _asynchronous(self) -> bool:
        """perf_analyzer's asynchronous calls (-a, a stream or a sequence model), under its rules: a level whose
        windows are spent is stable on throughput alone (`Level.settle_on_throughput`)."""
        settings = self.settings
        asynchronous = settings.asynchronous or settings.streaming or (self.info.is_sequence and not settings.sync)
        return settings.perf_analyzer_rules and asynchronous and self.mix is None and not self.run.rule.single

    async def _wait_idle(self) -> None:
        """Before the first window: wait, bounded, until the server has no work left on the models and their steps
        (see `server.idle`); not in a shard of several, whose other shards' load is the run's own."""
        if self.run.shard.count > 1:
            return
        models = {step.model for tree in self.trees.values() for step in tree.models()}
        self.session.server_idle = await wait_until_idle(
            self._statistics,
            self.session.model,
            models,
            idle_timeout_s(self.run.windows),
            self._pending,
            self.session._note,
        )

    def _pending(self) -> dict[str, int]:
        """The requests pending per model in the latest metrics scrape (none without --collect-metrics)."""
        latest = self.metrics.recorder.latest if self.metrics is not None else None
        counts: dict[str, int] = {}
        for pending in latest.pending if latest is not None else ():
            counts[pending.model] = counts.get(pending.model, 0) + pending.count  # every version's
        return counts

    def _audit(self, level: Level, before: Window) -> None:
        """Compare the level's windows with the server's count of the model (see `server.sharing`), from the window
        that closed as it started; not in a run that is one shard of several (the server counts them all)."""
        if self.run.shard.count == 1:
            level.begin(before, self.mix.parts if self.mix is not None else {})

    def _solo(self, number: int) -> dict[str, LevelResult]:
        """Each model alone at the load it has in the mix's level `number` (--solo-baseline)."""
        return {name: levels[number] for name, levels in self.session.solo.items() if number < len(levels)}

    def _keep(self, level: LevelResult) -> LevelResult:
        self.finished.append(level)
        if self.session.progress:
            self.session.progress.level(level)
        return level

    async def _statistics_after(self, previous: Snapshot, window: Window) -> Snapshot:
        """The server's statistics after a window; after a --request-count window, once they count all of it."""
        if not self.run.windows.single or self.mix is not None:
            return await self._statistics()
        return await self._booked(previous, window.request_count + window.error_count)

    async def _booked(self, previous: Snapshot, expected: int) -> Snapshot:
        """The server's statistics once they count `expected` requests of the model since `previous`, read again
        for a bounded while: a request's response reaches loadgen before the server books it."""
        reading = await self._statistics()
        tree = self.trees[self.info.name]
        deadline = time.perf_counter() + STATISTICS_SETTLE_S
        while server_requests(tree, delta(previous, reading)) < expected and time.perf_counter() < deadline:
            await asyncio.sleep(STATISTICS_POLL_S)
            reading = await self._statistics()
        return reading

    async def _statistics(self) -> Snapshot:
        try:
            return snapshot(await self._guarded(self.control.statistics()))
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
            f"{window.error_count} of {completed} requests failed at {load}, over --max-error-rate "
            f"{self.settings.max_error_rate:g}: {shown}",
        )


async def _wait_for_start(start_at: float | None, clock: WallClock, windows: Windows) -> Grid:
    """Sleep until the shared UNIX start time (if any); the grid of the run's windows, in perf_counter_ns instants.

    The grid starts at the instant `start_at` maps to on `clock`, in the past for a run that comes late: its windows
    stay on the grid every other shard measures on (`_on_grid` joins it at the next window)."""
    now = time.perf_counter_ns()
    grid = Grid.of(windows, now if start_at is None else clock.perf_ns(round(start_at * 1e9)))
    await _sleep_until(grid.origin_ns)
    return grid


async def _sleep_until(instant_ns: int) -> None:
    """Sleep until a perf_counter_ns instant (at once when it has passed)."""
    await asyncio.sleep(max(instant_ns - time.perf_counter_ns(), 0) / 1e9)
