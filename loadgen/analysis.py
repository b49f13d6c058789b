"""Analysis: what bounds throughput (a step, the offered load, the host's CPU or GPU, the client), the step that
limits it and how far the pipeline could go, what to change, and what each change would give.

It reasons from capacity, not from latency shares: a step's capacity is its instances times its average batch over
its compute time per execution, its utilisation is its throughput over that capacity, and the pipeline cannot go
faster than its lowest capacity, nor than the host's CPU (or GPU) allows at the cost per inference measured. In a
closed loop, Little's law bounds throughput by the concurrency over the latency without queueing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from loadgen.plan import Load
from loadgen.server.metrics import ServerMetrics
from loadgen.server.sharing import WAIT_SUGGESTION, Sharing
from loadgen.server.statistics import ServerFigures

NEAR_CAPACITY = 0.85  # a step this busy is the bound (its queue grows from here on)
HOST_SATURATED = 0.9  # the host's CPU (or a GPU) this busy is the bound: more instances get no more of it
INFLATED = 1.3  # compute per execution this much above the least-loaded level's: a shared resource is contended
CLIENT_BUSY = 0.5  # loadgen's loop busier than this, with most of the latency outside the server: the client
OUTSIDE_SHARE = 0.5  # share of the client's latency spent outside the server's accounting
OUTSIDE_FLOOR_US = 5000  # unaccounted time per request below this is the protocols' and network's own, not waiting
WAITING_SHARE = 0.2  # queue time above this share of compute time: requests wait for an instance
OWN_SHARE = 0.5  # a pipeline whose instances compute for this share of the host's busy CPU is what fills it
MEASURABLE = 0.05  # a host less busy than this tells nothing about its capacity
BOUNDS = ("step", "offered_load", "host_cpu", "host_gpu", "client", "shared")  # shared: none can be named


@dataclass(frozen=True)
class Observation:
    """What one level showed, as the diagnosis reads it."""

    load: Load
    throughput: float  # the profiled model's inferences per second
    duration_s: float
    client_latency_us: float
    loop_busy_share: float  # loadgen's event loop
    client_cpu_s: float  # loadgen's whole process over the level
    saturated: str | None  # open loop: who fell behind ("server", "client", "machine")
    server: ServerFigures
    metrics: ServerMetrics | None = None
    cores: int | None = None  # the server's host's cores, when it is this machine
    sharing: Sharing | None = None  # the server's count of the model's requests beside loadgen's


@dataclass(frozen=True)
class Reference:
    """The least-loaded level of a sweep, against which a later level's compute and waiting are compared."""

    server: ServerFigures
    outside_us: float  # client latency the server did not account for: the network, the client, the frontends

    @classmethod
    def of(cls, server: ServerFigures | None, client_latency_us: float) -> Reference | None:
        return None if server is None else cls(server, max(client_latency_us - server.request_us, 0.0))


@dataclass(frozen=True)
class WhatIf:
    """A change and the throughput predicted after it: at this level's load, and with enough load."""

    change: str
    predicted_throughput: float | None
    predicted_max: float | None = None
    load: float | None = None  # a change of the offered load: the concurrency or request rate it would take


@dataclass(frozen=True)
class HostFigures:
    """The server's host during the level, from its metrics (None where it exported none)."""

    cpu_utilization: float | None = None  # of all its cores, 0..1
    client_cpu_share: float | None = None  # loadgen's own part of that, when it runs on the same host
    gpu_utilization: float | None = None  # the busiest GPU, 0..1
    cores: int | None = None
    cpu_seconds_per_inference: float | None = None
    energy_per_inference_j: float | None = None
    throughput_limit: float | None = None  # inferences/s the host allows at this cost per inference


@dataclass(frozen=True)
class Diagnosis:
    """What bounds throughput at one level, the limit, and what to change."""

    bound: str  # one of BOUNDS
    limiting_step: str | None  # the step with the lowest capacity (None when none has one)
    predicted_max_throughput: float | None  # the lowest capacity, capped by the host
    latency_step: str | None  # the step that takes the most of a request's time
    utilization: dict[str, float]  # each step's throughput over its capacity
    inflation: dict[str, float] = field(default_factory=dict)  # compute per execution vs the least-loaded level
    host: HostFigures = field(default_factory=HostFigures)
    what_if: tuple[WhatIf, ...] = ()
    reason: str = ""
    suggestions: tuple[str, ...] = ()
    certain: bool = True  # False: no host metrics, so the prediction ignores the host

    @property
    def name(self) -> str:
        """What bounds throughput, in words: a step, or the load, the host or the client."""
        if self.bound == "step" and self.limiting_step:
            return self.limiting_step
        return {
            "offered_load": "the offered load",
            "host_cpu": "the host's CPU",
            "host_gpu": "a GPU",
            "shared": "unknown (a shared server)",
        }.get(self.bound, "the client")

    @property
    def shared(self) -> bool:
        """The server served the model to someone else too: no capacity or bound was computed."""
        return self.bound == "shared"

    @property
    def limit_basis(self) -> str:
        """Where the throughput limit comes from, in words."""
        if self.certain:
            return f"the lowest capacity ({self.limiting_step}) capped by the host"
        return (
            f"the lowest capacity ({self.limiting_step}), not capped by the host "
            "(no metrics, or a host busy with other work)"
        )


@dataclass(frozen=True)
class Bottleneck:
    """The verdict in its original shape, kept for readers of earlier results: the step that limits throughput
    (None: the client), its share of the request time, and the diagnosis's reason and suggestions."""

    model: str | None
    share: float  # of the profiled model's request time spent in this step's queue and compute
    queue_us: float
    compute_us: float
    capacity: float | None
    throughput: float
    reason: str
    suggestions: tuple[str, ...]

    @property
    def name(self) -> str:
        """What the verdict names: the model, or the client."""
        return self.model or "the client"


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 100 else f"{us:.0f} us"


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


@dataclass(frozen=True)
class _Step:
    """A step's figures as the diagnosis uses them; capacities in the profiled model's inferences per second."""

    figures: ServerFigures
    rate: float  # its own inferences per second
    capacity: float  # the profiled model's inferences/s it allows
    utilization: float

    @property
    def name(self) -> str:
        return self.figures.model


def _steps(observation: Observation) -> list[_Step]:
    steps = []
    top = observation.throughput
    for figures in observation.server.steps():
        if not figures.capacity or not observation.duration_s:
            continue
        rate = figures.inference_count / observation.duration_s
        if rate <= 0:
            continue
        # a step may run more (or fewer) inferences than the model it serves: count its capacity in the model's
        ratio = top / rate if top > 0 else 1.0
        steps.append(_Step(figures, rate, figures.capacity * ratio, rate / figures.capacity))
    return steps


def _host(observation: Observation) -> HostFigures:
    metrics = observation.metrics
    if metrics is None or not metrics.samples:
        return HostFigures(cores=observation.cores)
    cores = observation.cores
    cpu = metrics.cpu_utilization_avg
    client = None
    if cores and observation.duration_s:
        client = min(observation.client_cpu_s / observation.duration_s / cores, 1.0)
    inferences = round(observation.throughput * observation.duration_s)
    gpus = [gpu.utilization_avg for gpu in metrics.gpus if gpu.utilization_avg is not None]
    gpu = max(gpus) if gpus else None
    # what the host allows at this cost per inference (loadgen's own share included, where it shares the host):
    # the throughput at which its CPU, or its busiest GPU, would be fully used
    limits = [observation.throughput / used for used in (cpu, gpu) if used is not None and used > MEASURABLE]
    limit = min(limits) if limits and observation.throughput > 0 else None
    return HostFigures(
        cpu_utilization=cpu,
        client_cpu_share=client,
        gpu_utilization=gpu,
        cores=cores,
        cpu_seconds_per_inference=metrics.cpu_seconds_per_inference(inferences, cores) if cores else None,
        energy_per_inference_j=metrics.energy_per_inference_j(inferences),
        throughput_limit=limit,
    )


def _inflation(observation: Observation, baseline: Reference | None) -> dict[str, float]:
    if baseline is None:
        return {}
    before = {step.model: step for step in baseline.server.steps()}
    inflation = {}
    for step in observation.server.steps():
        first = before.get(step.model)
        if first is not None and first.compute_us > 0 and step.compute_us > 0:
            inflation[step.model] = step.compute_us / first.compute_us
    return inflation


def _queue_us(server: ServerFigures) -> float:
    """Time a request spends queued for instances, over every step (a BLS model's own queue too)."""
    return sum(step.queue_us for step in server.steps())


def _offered_limit(observation: Observation) -> float:
    """What the offered load allows: the rate itself, or (closed loop) the concurrency over the latency a request
    would see without queueing (Little's law)."""
    load = observation.load
    if load.rate is not None:
        return load.rate
    unqueued_s = max(observation.client_latency_us - _queue_us(observation.server), 1.0) / 1e6
    return (load.concurrency or 0) / unqueued_s


def diagnose(observation: Observation, baseline: Reference | None = None) -> Diagnosis | None:
    """What bounds the level's throughput, and what to change; None when the server reported no requests. A level the
    server served to someone else too gets no bound, only why."""
    if observation.sharing is not None and observation.sharing.shared:
        return _shared(observation.sharing)
    server = observation.server
    if server.request_count == 0 or observation.throughput <= 0:
        return None
    steps = _steps(observation)
    host = _host(observation)
    inflation = _inflation(observation, baseline)
    limiting = min(steps, key=lambda step: step.capacity) if steps else None
    busiest = max(steps, key=lambda step: step.utilization) if steps else None
    leaves = list(server.leaves())
    latency = max(leaves, key=lambda step: step.queue_us + step.compute_us) if leaves else None
    # the host's limit counts where this workload saturates it (its compute contends, or requests pile up between
    # the client and the models), never where other work does
    waiting = _waiting_outside(observation, baseline)
    attributable = not _saturated(host) or waiting or _contended(steps, busiest, inflation) or _fills(steps, host)
    if not attributable:
        host = replace(host, throughput_limit=None)
    caps = [step.capacity for step in steps]
    predicted = min(caps, default=None)
    if host.throughput_limit is not None:
        predicted = min(host.throughput_limit, predicted or math.inf)
    bound, reason, suggestions = _bound(observation, steps, busiest, latency, host, inflation, predicted, waiting)
    return Diagnosis(
        bound=bound,
        limiting_step=limiting.name if limiting else None,
        predicted_max_throughput=predicted,
        latency_step=latency.model if latency else None,
        utilization={step.name: step.utilization for step in steps},
        inflation=inflation,
        host=host,
        what_if=_what_ifs(observation, steps, limiting, host, predicted, _offered_limit(observation), bound),
        reason=reason,
        suggestions=suggestions,
        certain=host.throughput_limit is not None,
    )


def _shared(sharing: Sharing) -> Diagnosis:
    """A level the server served to someone else too: its steps' rates are not this load's, so no capacity (a step's
    in the model's inferences per second) and no bound is computed from them."""
    return Diagnosis(
        bound="shared",
        limiting_step=None,
        predicted_max_throughput=None,
        latency_step=None,
        utilization={},
        reason=f"{sharing.describe()}; no capacity or bound is computed from figures that are not this load's alone",
        suggestions=(WAIT_SUGGESTION,),
        certain=False,
    )


def _bound(
    observation: Observation,
    steps: Sequence[_Step],
    busiest: _Step | None,
    latency: ServerFigures | None,
    host: HostFigures,
    inflation: dict[str, float],
    predicted: float | None,
    waiting_outside: bool,
) -> tuple[str, str, tuple[str, ...]]:
    """The bound, why, and what would move it."""
    server = observation.server
    outside = observation.client_latency_us - server.request_us
    throughput = observation.throughput
    if observation.saturated == "client" or (waiting_outside and observation.loop_busy_share >= CLIENT_BUSY):
        return _client(observation, outside)
    if waiting_outside and host.cpu_utilization is not None and host.cpu_utilization >= HOST_SATURATED:
        return _host_cpu(observation, steps, host, inflation, outside)
    if waiting_outside:
        return _client(observation, outside)
    contended = _contended(steps, busiest, inflation)
    if host.gpu_utilization is not None and host.gpu_utilization >= HOST_SATURATED and contended:
        heaviest = _heaviest(steps)
        return (
            "host_gpu",
            f"a GPU is {host.gpu_utilization:.0%} busy at {_rate(throughput)} infer/s"
            + (f"; {heaviest.name} takes the most compute time" if heaviest else ""),
            (
                "more instances will not help: the GPU has no time to give them",
                "make the heaviest step cheaper (a smaller model, lower precision, larger batches), or add a GPU",
            ),
        )
    if (
        host.cpu_utilization is not None
        and host.cpu_utilization >= HOST_SATURATED
        and (contended or _fills(steps, host))
    ):
        return _host_cpu(observation, steps, host, inflation)
    if busiest is not None and busiest.utilization >= NEAR_CAPACITY:
        return _step(observation, busiest)
    return _offered(observation, steps, latency, predicted)


def _waiting_outside(observation: Observation, baseline: Reference | None) -> bool:
    """Whether requests wait outside the models (in loadgen, the network, Triton's frontends): most of the
    latency is unaccounted for by the server, more than protocols cost, and that part grew from the least-loaded
    level's (a network's constant delay does not grow)."""
    outside = observation.client_latency_us - observation.server.request_us
    return (
        outside > OUTSIDE_SHARE * observation.client_latency_us
        and outside > OUTSIDE_FLOOR_US
        and (baseline is None or outside > 2 * baseline.outside_us + 1000)
    )


def _fills(steps: Sequence[_Step], host: HostFigures) -> bool:
    """Whether, on a host without GPUs, the pipeline's own instances are busy computing for at least half of the
    CPU the host uses (busy instances = utilisation x instances; a BLS model's wait for its calls left out): its
    compute is then what fills the CPU, even before it inflates."""
    if host.gpu_utilization is not None or host.cpu_utilization is None or not host.cores:
        return False
    busy = sum(step.utilization * step.figures.instances for step in steps if not step.figures.calls)
    return busy >= OWN_SHARE * host.cpu_utilization * host.cores


def _contended(steps: Sequence[_Step], busiest: _Step | None, inflation: dict[str, float]) -> bool:
    """Whether the pipeline's own compute shows contention for the host: its compute per execution grew from the
    least-loaded level's, or, with no lighter level to compare with, a step is at capacity. A saturated host
    without it is busy with other work, which neither bounds nor predicts this pipeline."""
    if inflation:
        return max(inflation.values()) >= INFLATED
    return busiest is not None and busiest.utilization >= NEAR_CAPACITY


def _saturated(host: HostFigures) -> bool:
    return any(used is not None and used >= HOST_SATURATED for used in (host.cpu_utilization, host.gpu_utilization))


def _client(observation: Observation, outside: float) -> tuple[str, str, tuple[str, ...]]:
    server_us = observation.server.request_us
    where = (
        "requests waited in the client, not in the model"
        if observation.loop_busy_share >= CLIENT_BUSY or observation.saturated == "client"
        else "requests waited between the client and the models (the network, or Triton's frontend)"
    )
    return (
        "client",
        f"the client saw {_ms(observation.client_latency_us)} per request and the server accounted for "
        f"{_ms(server_us)} of it: {_ms(outside)} passed outside the server while loadgen's loop was "
        f"{observation.loop_busy_share:.0%} busy; {where}",
        (
            "lower the concurrency (or the rate): the server is not the limit at this load",
            "spread the load over processes or machines (--workers N, --shard i/K)",
        ),
    )


def _heaviest(steps: Sequence[_Step]) -> _Step | None:
    """The step that uses the most compute time per second (its share of the host's resources)."""
    return max(steps, key=lambda step: step.rate * step.figures.compute_us, default=None)


def _host_cpu(
    observation: Observation,
    steps: Sequence[_Step],
    host: HostFigures,
    inflation: dict[str, float],
    outside: float | None = None,
) -> tuple[str, str, tuple[str, ...]]:
    assert host.cpu_utilization is not None
    heaviest = _heaviest(steps)
    text = f"the host's CPU is {host.cpu_utilization:.0%} busy at {_rate(observation.throughput)} infer/s"
    if outside is not None:
        text += (
            f"; {_ms(outside)} of each request's {_ms(observation.client_latency_us)} passed outside the models "
            "(the client and Triton's frontends compete for the cores)"
        )
    if heaviest is not None:
        grown = inflation.get(heaviest.name)
        text += f"; {heaviest.name} uses the most of it"
        if grown is not None and grown >= INFLATED:
            text += f", its compute per execution {grown:.1f}x the least-loaded level's (waiting for a core)"
    if host.client_cpu_share:
        text += f"; loadgen itself takes {host.client_cpu_share:.0%} of the host"
    suggestions = [
        "more instances will not help: no core is free to run them",
        f"make {heaviest.name} cheaper, or remove a step" if heaviest else "make the steps cheaper",
        "give the server more cores, or move work to a GPU",
    ]
    if host.client_cpu_share and host.client_cpu_share >= 0.2:
        suggestions.append("run loadgen on another machine: it shares the server's cores")
    return "host_cpu", text, tuple(suggestions)


def _step(observation: Observation, step: _Step) -> tuple[str, str, tuple[str, ...]]:
    figures = step.figures
    instances = f"{figures.instances} instance{'s' if figures.instances != 1 else ''}"
    text = (
        f"{figures.model} is {step.utilization:.0%} busy: its {instances} can do about {_rate(step.capacity)} "
        f"infer/s ({_ms(figures.compute_us)} of compute per execution, batches of {max(figures.avg_batch, 1):.1f})"
    )
    if figures.queue_us > WAITING_SHARE * figures.compute_us:
        text += f", and requests wait {_ms(figures.queue_us)} in its queue"
    text += f"; {observation.server.model} reached {_rate(observation.throughput)} infer/s"
    return "step", text, _step_suggestions(figures)


def _step_suggestions(figures: ServerFigures) -> tuple[str, ...]:
    suggestions = [
        f"raise {figures.model}'s instance_group count from {figures.instances} to {figures.instances + 1} "
        "(where cores allow)"
    ]
    if figures.max_batch_size == 0:
        suggestions.append(
            f"dynamic batching is ruled out while {figures.model} has max_batch_size: 0; give it a batch dimension"
        )
    elif not figures.dynamic_batching:
        suggestions.append(f"enable dynamic_batching for {figures.model} (max_batch_size {figures.max_batch_size})")
    elif figures.avg_batch < 2:
        suggestions.append(
            f"{figures.model} batches only {figures.avg_batch:.1f} requests: raise max_queue_delay_microseconds"
        )
    suggestions.append(f"make {figures.model} itself faster: {_ms(figures.compute_us)} of compute per execution")
    return tuple(suggestions)


def _offered(
    observation: Observation,
    steps: Sequence[_Step],
    latency: ServerFigures | None,
    predicted: float | None,
) -> tuple[str, str, tuple[str, ...]]:
    busiest = max((step.utilization for step in steps), default=0.0)
    load = observation.load
    text = (
        f"no step is near its capacity (the busiest at {busiest:.0%}): {observation.server.model}'s "
        f"{_rate(observation.throughput)} infer/s is what the offered load asks for"
    )
    if predicted is not None:
        text += f"; the pipeline could do about {_rate(predicted)} infer/s"
    if latency is not None:
        text += (
            f"; {latency.model} takes the most of each request's time ({_ms(latency.queue_us + latency.compute_us)})"
        )
    if load.concurrency is not None and predicted is not None:
        needed = _concurrency_for(observation, predicted)
        return "offered_load", text, (f"raise the concurrency to about {needed} to reach it (Little's law)",)
    if predicted is not None:
        return "offered_load", text, (f"raise the request rate towards {_rate(predicted)}/s",)
    return "offered_load", text, ("raise the load",)


def _concurrency_for(observation: Observation, throughput: float) -> int:
    """The concurrency that offers `throughput` at the latency a request sees without queueing (Little's law),
    and at least one more than now: the offered load bounds throughput, so more of it helps."""
    unqueued_s = max(observation.client_latency_us - _queue_us(observation.server), 1.0) / 1e6
    return max(math.ceil(throughput * unqueued_s), (observation.load.concurrency or 0) + 1)


def _what_ifs(
    observation: Observation,
    steps: Sequence[_Step],
    limiting: _Step | None,
    host: HostFigures,
    predicted: float | None,
    offered: float,
    bound: str,
) -> tuple[WhatIf, ...]:
    """The predicted throughput after each change: at this load, and with enough load."""
    changes = []
    others = [step.capacity for step in steps if step is not limiting]
    host_cap = [host.throughput_limit] if host.throughput_limit is not None else []
    if limiting is not None:
        instances = limiting.figures.instances
        raised = limiting.capacity * (instances + 1) / instances
        best = min([raised, *others, *host_cap])
        changes.append(
            WhatIf(
                f"{limiting.name}: instance_group count {instances} -> {instances + 1}",
                min(best, offered),
                best,
            )
        )
    if predicted is not None and bound == "offered_load":
        load = observation.load
        target = float(_concurrency_for(observation, predicted)) if load.concurrency is not None else predicted
        label = "concurrency" if load.concurrency is not None else "request rate"
        shown = round(target, 1)  # a rate to a tenth (a concurrency is whole)
        changes.append(WhatIf(f"{label} {load.load_value:g} -> {shown:g}", predicted, predicted, target))
    if host.cores and host.throughput_limit is not None and steps:
        more = host.throughput_limit * (host.cores + 1) / host.cores
        best = min([more, *(step.capacity for step in steps)])
        changes.append(
            WhatIf(f"one more core for the server ({host.cores} -> {host.cores + 1})", min(best, offered), best)
        )
    return tuple(changes)


def verdict(diagnosis: Diagnosis, observation: Observation) -> Bottleneck:
    """The diagnosis in the original verdict's shape: the limiting step (or the client) and why."""
    server, throughput = observation.server, observation.throughput
    step = next((s for s in server.steps() if s.model == diagnosis.limiting_step), None)
    if diagnosis.bound == "client" or step is None:
        return Bottleneck(
            model=None,
            share=server.request_us / observation.client_latency_us if observation.client_latency_us else 0.0,
            queue_us=_queue_us(server),
            compute_us=server.compute_us,
            capacity=None,
            throughput=throughput,
            reason=diagnosis.reason,
            suggestions=diagnosis.suggestions,
        )
    share = (step.queue_us + step.compute_us) / server.request_us if server.request_us else 0.0
    return Bottleneck(
        model=step.model,
        share=share,
        queue_us=step.queue_us,
        compute_us=step.compute_us,
        capacity=step.capacity,
        throughput=throughput,
        reason=diagnosis.reason,
        suggestions=diagnosis.suggestions,
    )
