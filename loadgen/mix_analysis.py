"""The diagnosis across a mix's models: what they share (the host's CPU and GPUs), each step's part of the compute
time, how much each model slowed against its solo run (interference), and the bound named for the whole server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadgen.analysis import HOST_SATURATED, INFLATED, NEAR_CAPACITY, Diagnosis

if TYPE_CHECKING:
    from loadgen.results import LevelResult
    from loadgen.server.statistics import ServerFigures

INTERFERED = 1.5  # a model's p99 this many times its solo run's: the mix slows it down
HOST_SHARE = 0.5  # of the host's cores kept busy by the mix's steps: its compute is what fills a saturated host


@dataclass(frozen=True)
class StepShare:
    """One step's part of the server's compute: which models run it, and how much of all compute time it takes."""

    step: str
    models: tuple[str, ...]  # the mix's models whose requests reach it
    compute_share: float  # of the compute time all the mix's steps used per second
    compute_us: float  # per execution at this level
    solo_compute_us: float | None  # per execution when its model ran alone (--solo-baseline)

    @property
    def inflation(self) -> float | None:
        """Compute per execution against the solo run: above 1, the step waited for what it shares (a core)."""
        if self.solo_compute_us is None or self.solo_compute_us <= 0:
            return None
        return self.compute_us / self.solo_compute_us


@dataclass(frozen=True)
class ModelInterference:
    """One model in the mix against itself alone at the same load (--solo-baseline)."""

    model: str
    throughput: float
    p99_us: int
    bound: str | None  # its own diagnosis's bound in the mix
    solo_throughput: float | None = None
    solo_p99_us: int | None = None

    @property
    def p99_ratio(self) -> float | None:
        """p99 in the mix over p99 alone."""
        return self.p99_us / self.solo_p99_us if self.solo_p99_us else None


@dataclass(frozen=True)
class MixDiagnosis:
    """What bounds the mix at one level, across its models, and what to change."""

    # host_cpu, host_gpu (a shared resource is saturated), step (a model's step), offered_load, client, or shared (the
    # server served a model to someone else too: no bound named)
    bound: str
    cpu_utilization: float | None
    gpu_utilization: float | None
    steps: tuple[StepShare, ...]  # by compute share, largest first
    models: tuple[ModelInterference, ...]
    limiting_model: str | None  # the model whose own bound limits the mix (bound "step"), else the most slowed
    reason: str
    suggestions: tuple[str, ...]


def _steps(server: ServerFigures) -> list[ServerFigures]:
    """The steps whose instances do the work (a model on its own is its own step)."""
    return list(server.steps())


def _compute_per_execution(step: ServerFigures) -> float:
    """Compute time per execution, in microseconds (per-request averages times the batch)."""
    return step.compute_us * max(step.avg_batch, 1.0)


def diagnose_mix(level: LevelResult) -> MixDiagnosis | None:
    """The mix's diagnosis at one level: its models' figures (and their solo runs, when measured), and the host's
    metrics; None when no model reported server figures."""
    models = [model for model in level.models if model.server is not None]
    if not models:
        return None
    busy: dict[str, float] = {}  # compute time per second, by step (a step two models share counted once)
    users: dict[str, list[str]] = {}
    figures: dict[str, ServerFigures] = {}
    for model in models:
        assert model.server is not None
        for step in _steps(model.server):
            users.setdefault(step.model, []).append(model.model or "")
            if step.model in figures:
                continue
            figures[step.model] = step
            executions = step.execution_count / level.duration_s if level.duration_s else 0.0
            busy[step.model] = executions * _compute_per_execution(step) / 1e6
    solo_steps = {
        step.model: step
        for model in models
        if model.solo is not None and model.solo.server is not None
        for step in _steps(model.solo.server)
    }
    total = sum(busy.values())
    steps = tuple(
        sorted(
            (
                StepShare(
                    step=name,
                    models=tuple(users[name]),
                    compute_share=busy[name] / total if total else 0.0,
                    compute_us=_compute_per_execution(figures[name]),
                    solo_compute_us=_compute_per_execution(solo_steps[name]) if name in solo_steps else None,
                )
                for name in figures
            ),
            key=lambda share: share.compute_share,
            reverse=True,
        )
    )
    interference = tuple(
        ModelInterference(
            model=model.model or "",
            throughput=model.throughput,
            p99_us=model.latency_us.p99,
            bound=model.diagnosis.bound if model.diagnosis is not None else None,
            solo_throughput=model.solo.throughput if model.solo is not None else None,
            solo_p99_us=model.solo.latency_us.p99 if model.solo is not None else None,
        )
        for model in models
    )
    metrics = level.metrics
    cpu = metrics.cpu_utilization_avg if metrics is not None else None
    gpus = [gpu.utilization_avg for gpu in metrics.gpus if gpu.utilization_avg is not None] if metrics else []
    gpu = max(gpus) if gpus else None
    diagnoses = [model.diagnosis for model in models]
    cores = next((d.host.cores for d in diagnoses if d is not None and d.host.cores), None)
    # the mix's compute fills the host when its steps are busy for at least half of its cores' time (a step that
    # waits for a core counts its wait as compute: it is the contention itself)
    fills = cores is not None and total >= HOST_SHARE * cores
    return _bound(steps, interference, diagnoses, cpu, gpu, fills)


def _bound(
    steps: Sequence[StepShare],
    models: Sequence[ModelInterference],
    diagnoses: Sequence[Diagnosis | None],
    cpu: float | None,
    gpu: float | None,
    fills: bool,
) -> MixDiagnosis:
    """The bound across the models: a saturated shared resource first (when the mix's compute contends for it),
    then the model whose own step is nearest its capacity, else the load."""
    heaviest = steps[0] if steps else None
    slowed = max(
        (model for model in models if model.p99_ratio is not None), key=lambda m: m.p99_ratio or 0.0, default=None
    )
    slowdown = (
        f"; {slowed.model}'s p99 rose {slowed.p99_ratio:.1f}x against its solo run"
        if slowed is not None and slowed.p99_ratio is not None and slowed.p99_ratio >= INTERFERED
        else ""
    )
    contended = fills or bool(slowdown) or any((share.inflation or 0.0) >= INFLATED for share in steps)
    contended = contended or any(d is not None and d.bound in ("host_cpu", "host_gpu") for d in diagnoses)

    def diagnosis(bound: str, limiting: str | None, reason: str, suggestions: tuple[str, ...]) -> MixDiagnosis:
        return MixDiagnosis(bound, cpu, gpu, tuple(steps), tuple(models), limiting, reason, suggestions)

    shared = [found for found in diagnoses if found is not None and found.shared]
    if shared:  # no bound is named from figures another client's requests are part of
        return diagnosis("shared", None, "; ".join(found.reason for found in shared), shared[0].suggestions)
    for resource, used, bound in (("GPU", gpu, "host_gpu"), ("CPU", cpu, "host_cpu")):
        if used is None or used < HOST_SATURATED or not contended or heaviest is None:
            continue
        owners = " and ".join(heaviest.models)
        return diagnosis(
            bound,
            slowed.model if slowed is not None else None,
            f"{resource} saturated ({used:.0%}): {owners}'s {heaviest.step} uses {heaviest.compute_share:.0%} of the "
            f"compute{slowdown}",
            (
                f"the models compete for the {resource}: more instances will not help any of them",
                f"make {heaviest.step} cheaper, or send it less of the traffic, to free {resource} time for the others",
                f"or give {owners} a {'GPU' if resource == 'GPU' else 'host'} of its own",
            ),
        )
    limited = [
        (model, found)
        for model, found in zip(models, diagnoses, strict=True)
        if found is not None and found.bound == "step"
    ]
    if limited:
        model, found = max(limited, key=lambda pair: max(pair[1].utilization.values(), default=0.0))
        busiest = max(found.utilization.values(), default=0.0)
        room = f"; the host's CPU is {cpu:.0%} busy, so it has room for more instances" if cpu is not None else ""
        first = found.suggestions[0] if found.suggestions else "more instances of its limiting step"
        return diagnosis(
            "step",
            model.model,
            f"{model.model} is bound by its step {found.limiting_step} ({busiest:.0%} of its capacity){room}{slowdown}",
            (f"give the spare capacity to {model.model}: {first}",),
        )
    bounds = {found.bound for found in diagnoses if found is not None}
    if cpu is not None and cpu >= HOST_SATURATED:
        host = f"the host's CPU is {cpu:.0%} busy, but not with the mix (its steps keep less than half the cores busy)"
    else:
        host = "no shared resource is saturated" + (f" (CPU {cpu:.0%})" if cpu is not None else "")
    return diagnosis(
        "client" if bounds == {"client"} else "offered_load",
        slowed.model if slowed is not None else None,
        f"{host} and no model's step is near its capacity ({NEAR_CAPACITY:.0%}){slowdown}",
        ("raise the load: the server has room for more of the mix",),
    )
