"""Server statistics: Triton's per-model counters, their deltas per window, and an ensemble's composition."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

from tritonclient.grpc import model_config_pb2, service_pb2


@dataclass(frozen=True)
class Counters:
    """Triton's cumulative statistics of one model version (or the difference of two readings)."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    inference_count: int = 0
    execution_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    cache_hit_count: int = 0
    cache_hit_ns: int = 0
    cache_miss_count: int = 0
    cache_miss_ns: int = 0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


ZERO = Counters()
Snapshot = dict[tuple[str, str], Counters]
"""Counters per (model name, version)."""


def snapshot(response: service_pb2.ModelStatisticsResponse) -> Snapshot:
    """The counters of every model version in a `ModelStatistics` response."""
    result: Snapshot = {}
    for stats in response.model_stats:
        infer = stats.inference_stats
        result[(stats.name, stats.version)] = Counters(
            success_count=infer.success.count,
            success_ns=infer.success.ns,
            fail_count=infer.fail.count,
            inference_count=stats.inference_count,
            execution_count=stats.execution_count,
            queue_ns=infer.queue.ns,
            compute_input_ns=infer.compute_input.ns,
            compute_infer_ns=infer.compute_infer.ns,
            compute_output_ns=infer.compute_output.ns,
            cache_hit_count=infer.cache_hit.count,
            cache_hit_ns=infer.cache_hit.ns,
            cache_miss_count=infer.cache_miss.count,
            cache_miss_ns=infer.cache_miss.ns,
        )
    return result


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """What happened between two readings; a model loaded in between counts from zero."""
    return {key: counters - before.get(key, ZERO) for key, counters in after.items()}


def add(first: Snapshot, second: Snapshot) -> Snapshot:
    """The sum of two deltas (consecutive windows)."""
    return {key: first.get(key, ZERO) + second.get(key, ZERO) for key in first.keys() | second.keys()}


@dataclass(frozen=True)
class Composition:
    """A model and, for an ensemble, the models of its steps in order (recursively)."""

    model: str
    version: str  # "" or "-1" means: whichever version served the requests
    instances: int
    max_batch_size: int
    dynamic_batching: bool
    steps: tuple[Composition, ...] = ()
    calls: bool = False  # a BLS model: `steps` are the models its code calls, not ensemble steps
    response_cache: bool = False  # Triton's response cache is on for it

    def models(self) -> Iterator[Composition]:
        """This model and every model under it."""
        yield self
        for step in self.steps:
            yield from step.models()

    def leaves(self) -> Iterator[Composition]:
        """The models that do the work: every step that is not itself an ensemble."""
        if not self.steps:
            yield self
        for step in self.steps:
            yield from step.leaves()


ConfigGetter = Callable[[str, str], Awaitable[model_config_pb2.ModelConfig]]


async def composition(name: str, version: str, get_config: ConfigGetter, bls_models: Sequence[str] = ()) -> Composition:
    """Walk a model's `ensemble_scheduling.step` list recursively through the model configs.

    `bls_models` names the models a BLS (Python) model calls, each `NAME` or `NAME:VERSION`; they become its steps,
    as in perf_analyzer's --bls-composing-models.
    """
    config = await get_config(name, "" if version == "-1" else version)
    steps = [
        await composition(step.model_name, str(step.model_version), get_config)
        for step in config.ensemble_scheduling.step
    ]
    for model in bls_models:
        called, _, called_version = model.partition(":")
        steps.append(await composition(called, called_version, get_config))
    return Composition(
        model=name,
        version=version,
        instances=sum(group.count for group in config.instance_group) or 1,
        max_batch_size=config.max_batch_size,
        dynamic_batching=config.HasField("dynamic_batching"),
        steps=tuple(steps),
        calls=bool(bls_models),
        response_cache=config.response_cache.enable,
    )


@dataclass(frozen=True)
class StepTimes:
    """A model's own average queue and compute times per request, in microseconds."""

    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float


@dataclass(frozen=True)
class ServerFigures:
    """One model's server-side figures over a measurement, as perf_analyzer's "Server:" block shows them."""

    model: str
    version: str
    request_count: int
    inference_count: int
    execution_count: int
    failures: int
    avg_batch: float
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    request_us: float
    overhead_us: float
    capacity: float | None  # inferences per second its instances can do; None for an ensemble
    instances: int
    max_batch_size: int
    dynamic_batching: bool
    composing: tuple[ServerFigures, ...] = ()
    calls: bool = False  # a BLS model: `composing` are the models its code calls, and its own instances a step
    own: StepTimes | None = None  # an ensemble's own statistics (its queue and compute above are its steps' sums)
    response_cache: bool = False
    cache_hit_us: float = 0.0  # per cache hit: the lookup
    cache_miss_us: float = 0.0  # per cache miss: the lookup and the insertion

    @property
    def compute_us(self) -> float:
        return self.compute_input_us + self.compute_infer_us + self.compute_output_us

    def walk(self, depth: int = 0) -> Iterator[tuple[int, ServerFigures]]:
        """This model and its steps, depth first, with their nesting depth."""
        yield depth, self
        for step in self.composing:
            yield from step.walk(depth + 1)

    def leaves(self) -> Iterator[ServerFigures]:
        """The figures of the models that do the work (steps that are not ensembles)."""
        if not self.composing:
            yield self
        for step in self.composing:
            yield from step.leaves()

    def steps(self) -> Iterator[ServerFigures]:
        """Every model whose instances requests wait for: the leaves, and BLS models (their own instances hold a
        request while its calls run)."""
        if self.calls or not self.composing:
            yield self
        for step in self.composing:
            yield from step.steps()


def served_version(model: str, version: str, stats: Mapping[tuple[str, str], Counters]) -> str:
    """The version a step ran: the one named, else the version of the model that served most requests."""
    if version not in ("", "-1"):
        return version
    versions = [(counters.success_count, v) for (name, v), counters in stats.items() if name == model]
    return max(versions)[1] if versions else ""


def figures(model: Composition, stats: Mapping[tuple[str, str], Counters]) -> ServerFigures:
    """Per-request averages of a model and its steps over a delta of counters.

    As perf_analyzer does, an ensemble's queue and compute times are the sums of its steps' (Triton does not
    count the steps' queues in the ensemble's own statistics); its request time is its own. A BLS model keeps its
    own figures: its compute time includes the calls to its composing models.
    """
    version = served_version(model.model, model.version, stats)
    c = stats.get((model.model, version), ZERO)
    steps = tuple(figures(step, stats) for step in model.steps)
    per_request = 1 / 1000 / c.success_count if c.success_count else 0.0
    own = StepTimes(
        *(ns * per_request for ns in (c.queue_ns, c.compute_input_ns, c.compute_infer_ns, c.compute_output_ns))
    )
    if steps and not model.calls:
        queue = sum(step.queue_us for step in steps)
        c_in, c_infer, c_out = (
            sum(step.compute_input_us for step in steps),
            sum(step.compute_infer_us for step in steps),
            sum(step.compute_output_us for step in steps),
        )
    else:
        queue, c_in, c_infer, c_out = own.queue_us, own.compute_input_us, own.compute_infer_us, own.compute_output_us
    request = c.success_ns * per_request
    avg_batch = c.inference_count / c.execution_count if c.execution_count else 0.0
    compute_s = (c_in + c_infer + c_out) / 1e6
    capacity = None
    # a BLS model holds its instance while its calls wait in the called models' queues: that wait is their limit,
    # not its own, so its capacity counts its hold time without it
    held_s = compute_s - (sum(step.queue_us for step in steps) / 1e6 if model.calls else 0.0)
    if (not model.steps or model.calls) and held_s > 0:
        # each request of a batch is charged the whole execution, so this is the compute time per execution
        capacity = model.instances * max(avg_batch, 1.0) / held_s
    return ServerFigures(
        model=model.model,
        version=version,
        request_count=c.success_count,
        inference_count=c.inference_count,
        execution_count=c.execution_count,
        failures=c.fail_count,
        avg_batch=avg_batch,
        queue_us=queue,
        compute_input_us=c_in,
        compute_infer_us=c_infer,
        compute_output_us=c_out,
        request_us=request,
        overhead_us=max(request - queue - c_in - c_infer - c_out, 0.0),
        capacity=capacity,
        instances=model.instances,
        max_batch_size=model.max_batch_size,
        dynamic_batching=model.dynamic_batching,
        composing=steps,
        calls=model.calls,
        own=own if steps and not model.calls else None,
        response_cache=model.response_cache,
        cache_hit_us=c.cache_hit_ns / 1000 / c.cache_hit_count if c.cache_hit_count else 0.0,
        cache_miss_us=c.cache_miss_ns / 1000 / c.cache_miss_count if c.cache_miss_count else 0.0,
    )
