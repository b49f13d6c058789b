"""Tuning acts on the diagnosis: measure, then move what bounds throughput. When the offered load does, raise it
(up to --max-concurrency); when a step does, try its changes on the live server in the order of their predicted
gain, keeping what helps beyond the run's noise; when the host or the client does, stop and say so. With a latency
budget, the goal is the highest throughput whose p99 stays within it: the load goes down as well as up. Every trial
records what the diagnosis predicted beside what was measured, so the model is checked on every run."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from loadgen.analysis import WAITING_SHARE, Diagnosis
from loadgen.errors import OptionError
from loadgen.plan import plan
from loadgen.results import LevelResult, Measurement, Trial, TuneResult
from loadgen.server.statistics import ServerFigures, composition
from loadgen.settings import Settings, make_settings
from loadgen.sweep import profile_against
from loadgen.transport import Connection, ConnectionOptions, connect

MIN_GAIN = 0.05  # a change must raise throughput by more than this share (or the run's noise, if larger)
QUEUE_DELAY_US = 100  # first max_queue_delay_microseconds tried when dynamic batching is enabled
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class TuneSettings:
    """What `tune` works on: one load level of `profile`, a goal, and how far to search."""

    profile: Settings
    latency_budget_ms: float | None = None  # goal: the highest throughput whose p99 stays within this
    max_trials: int = 8
    keep: bool = False
    write_config: str | None = None
    max_concurrency: int = MAX_CONCURRENCY  # the closed loop's load is raised (or searched) up to this

    def __post_init__(self) -> None:
        if len(plan(self.profile).loads) != 1:
            raise OptionError("tune measures one load level: give one --concurrency or one --request-rate")
        if self.max_trials < 1:
            raise OptionError(f"--max-trials {self.max_trials}: must be at least 1")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise OptionError(f"--latency-budget-ms {self.latency_budget_ms}: must be above 0")
        if self.max_concurrency < 1:
            raise OptionError(f"--max-concurrency {self.max_concurrency}: must be at least 1")


@dataclass(frozen=True)
class _Change:
    """One trial's change: a model's config (`model` and `config`) or the offered load (`load`)."""

    description: str
    predicted: float | None  # the throughput the diagnosis predicts after it
    model: str | None = None
    config: model_config_pb2.ModelConfig | None = None
    load: float | None = None  # the new concurrency or request rate


def _with_instances(config: model_config_pb2.ModelConfig, count: int) -> model_config_pb2.ModelConfig:
    changed = model_config_pb2.ModelConfig()
    changed.CopyFrom(config)
    if not changed.instance_group:
        changed.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    del changed.instance_group[1:]
    changed.instance_group[0].count = count
    return changed


def candidates(step: ServerFigures, config: model_config_pb2.ModelConfig, diagnosis: Diagnosis) -> list[_Change]:
    """The config changes worth trying for a step, in the order of their predicted throughput (those the
    diagnosis cannot predict, batching changes, after; first when requests do not wait for an instance)."""
    instances = sum(group.count for group in config.instance_group) or 1
    description = f"{step.model}: instance_group count {instances} -> {instances + 1}"
    predicted = next(
        (w.predicted_throughput for w in diagnosis.what_if if w.change.startswith(f"{step.model}: instance_group")),
        None,
    )
    more = _Change(description, predicted, step.model, _with_instances(config, instances + 1))
    batching: list[_Change] = []
    if config.max_batch_size > 0:
        batched = model_config_pb2.ModelConfig()
        batched.CopyFrom(config)
        delay = batched.dynamic_batching.max_queue_delay_microseconds
        if not config.HasField("dynamic_batching"):
            batched.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
            text = f"{step.model}: enable dynamic_batching (max_queue_delay {QUEUE_DELAY_US} us)"
            batching.append(_Change(text, None, step.model, batched))
        elif step.avg_batch < 2:
            batched.dynamic_batching.max_queue_delay_microseconds = max(QUEUE_DELAY_US, 2 * delay)
            longer = batched.dynamic_batching.max_queue_delay_microseconds
            text = f"{step.model}: dynamic_batching max_queue_delay {delay} -> {longer} us"
            batching.append(_Change(text, None, step.model, batched))
    waiting = step.queue_us > WAITING_SHARE * step.compute_us
    return [more, *batching] if waiting else [*batching, more]


def _measurement(level: LevelResult) -> Measurement:
    diagnosis = level.diagnosis
    rates = [window.throughput for window in level.trend[-3:]]
    return Measurement(
        throughput=level.throughput,
        p99_us=level.latency_us.p99,
        bottleneck=None if diagnosis is None else diagnosis.name,
        noise=statistics.stdev(rates) / statistics.fmean(rates) / len(rates) ** 0.5 if len(rates) > 1 else 0.0,
        load=level.load,
        bound=None if diagnosis is None else diagnosis.bound,
        predicted_max=None if diagnosis is None else diagnosis.predicted_max_throughput,
    )


async def tune(settings: TuneSettings, on_trial: Callable[[Trial | Measurement], None] | None = None) -> TuneResult:
    """Tune the model on a server in explicit model-control mode; see the module docstring."""
    connection = connect(ConnectionOptions.from_settings(settings.profile))
    try:
        await connection.check_reachable()
        await connection.check_model_control()
        name = settings.profile.model_name or await connection.choose_model()
        tree = await composition(name, settings.profile.model_version, connection.model_config)
        originals = {step.model: await connection.model_config(step.model) for step in tree.leaves()}
        touched: set[str] = set()  # models whose config on the server may differ from the original
        try:
            search = _Search(settings, name, connection, dict(originals), touched, on_trial)
            return await search.run()
        finally:
            if not settings.keep:
                for model in sorted(touched):
                    await asyncio.shield(connection.load_model(model, originals[model]))
    finally:
        await connection.close()


class _Search:
    """The trials: each applies one change, measures, and keeps it or reverts it."""

    def __init__(
        self,
        settings: TuneSettings,
        name: str,
        connection: Connection,
        current: dict[str, model_config_pb2.ModelConfig],
        touched: set[str],
        on_trial: Callable[[Trial | Measurement], None] | None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.connection = connection
        self.current = current
        self.touched = touched
        self.on_trial = on_trial
        self.changed: set[str] = set()
        self.trials: list[Trial] = []
        self.run_settings = dataclasses.replace(settings.profile, model_name=name)
        self.closed_loop = plan(self.run_settings).closed_loop
        self.budget_us = settings.latency_budget_ms * 1000 if settings.latency_budget_ms else None
        self.too_slow: float | None = None  # the lowest load over the latency budget so far
        self.reference: LevelResult | None = None

    async def measure(self, load: float | None = None) -> tuple[Measurement, LevelResult]:
        """The configuration in force at `load` (None: the current one)."""
        settings = self.run_settings if load is None else self.at_load(load)
        level = (await profile_against(settings, self.reference)).levels[-1]
        if self.reference is None:  # later trials' compute and waiting are compared with the first measurement's
            self.reference = level
        return _measurement(level), level

    def at_load(self, load: float) -> Settings:
        """The run's settings at another concurrency (or request rate)."""
        if self.closed_loop:
            return make_settings(self.run_settings, concurrency_range=int(load))
        return make_settings(self.run_settings, request_rate_range=load)

    def meets(self, measurement: Measurement) -> bool:
        return self.budget_us is None or measurement.p99_us <= self.budget_us

    def better(self, result: Measurement, best: Measurement) -> bool:
        """Beyond the noise: two standard errors of either measurement, and at least MIN_GAIN; within the budget."""
        if not self.meets(result):
            return False
        threshold = max(2 * max(best.noise, result.noise), MIN_GAIN)
        return not self.meets(best) or result.throughput > best.throughput * (1 + threshold)

    async def run(self) -> TuneResult:
        settings = self.settings
        best, level = await self.measure()
        initial = best
        if self.on_trial:
            self.on_trial(best)
        reason = f"--max-trials {settings.max_trials} reached"
        while len(self.trials) < settings.max_trials:
            diagnosis = level.diagnosis
            changes, stop = self.changes(best, level, diagnosis)
            if stop:
                reason = stop
                break
            kept = False
            for change in changes:
                if len(self.trials) >= settings.max_trials:
                    break
                result, candidate = await self.attempt(change)
                kept = self.better(result, best)
                trial = Trial(
                    change.description,
                    change.model,
                    result.throughput,
                    result.p99_us,
                    kept,
                    result.bottleneck,
                    change.predicted,
                    result.load,
                )
                self.trials.append(trial)
                if self.on_trial:
                    self.on_trial(trial)
                if kept:
                    self.settle(change)
                    best, level = result, candidate
                    break
                if change.load is not None and self.budget_us is not None and not self.meets(result):
                    self.too_slow = min(self.too_slow or math.inf, change.load)
                await self.revert(change)
            if not kept and len(self.trials) < settings.max_trials:
                reason = "no change raised throughput beyond the run's noise" + (
                    f" within the {settings.latency_budget_ms:g} ms budget" if self.budget_us else ""
                )
                break
        return self.result(initial, best, reason)

    def changes(
        self, best: Measurement, level: LevelResult, diagnosis: Diagnosis | None
    ) -> tuple[list[_Change], str | None]:
        """What to try next, or why to stop: from the diagnosis (and, with a budget, from the latency)."""
        if diagnosis is None:
            return [], "the server reported no requests: no diagnosis to act on"
        if self.budget_us is not None and best.p99_us > self.budget_us:
            lower = self.lower_load(best)
            if lower is None:
                return [], f"p99 {best.p99_us / 1000:.1f} ms is over the budget even at the lowest load"
            return [lower], None
        if diagnosis.bound in ("host_cpu", "host_gpu"):
            return [], f"{diagnosis.name} is the limit: {diagnosis.reason}; more instances cannot help"
        if diagnosis.bound == "client":
            return [], f"the client limits throughput: {diagnosis.reason}"
        if diagnosis.bound == "offered_load":
            raised = self.raise_load(best, diagnosis)
            if raised is None:
                return [], self.load_ceiling(best, diagnosis)
            return [raised], None
        steps = level.server.steps() if level.server else iter(())
        step = next((s for s in steps if s.model == diagnosis.limiting_step), None)
        if step is None or step.model not in self.current:
            return [], f"{diagnosis.limiting_step} is not a model tune can reconfigure"
        return candidates(step, self.current[step.model], diagnosis), None

    def raise_load(self, best: Measurement, diagnosis: Diagnosis) -> _Change | None:
        """The load the diagnosis says would reach the throughput limit (Little's law), within the bounds."""
        what_if = next((w for w in diagnosis.what_if if w.load is not None), None)
        if what_if is None or what_if.load is None:
            return None
        target = what_if.load
        if self.closed_loop:
            target = min(math.ceil(target), self.settings.max_concurrency)
            if self.too_slow is not None:
                target = min(target, math.ceil((best.load + self.too_slow) / 2))
            if target <= best.load:
                return None
            return _Change(f"concurrency {best.load:g} -> {target:g}", what_if.predicted_throughput, load=target)
        return _Change(f"request rate {best.load:g} -> {target:g}", what_if.predicted_throughput, load=target)

    def lower_load(self, best: Measurement) -> _Change | None:
        """Half the load (or the midpoint with the last load within the budget), when p99 is over the budget."""
        lower = max(math.floor(best.load / 2), 1) if self.closed_loop else best.load / 2
        if lower >= best.load:
            return None
        self.too_slow = min(self.too_slow or math.inf, best.load)
        label = "concurrency" if self.closed_loop else "request rate"
        return _Change(f"{label} {best.load:g} -> {lower:g} (p99 over the budget)", None, load=lower)

    def load_ceiling(self, best: Measurement, diagnosis: Diagnosis) -> str:
        limit = diagnosis.predicted_max_throughput
        what_if = next((w for w in diagnosis.what_if if w.load is not None), None)
        needed = f" (it needs about {what_if.load:g})" if what_if and what_if.load is not None else ""
        ceiling = self.settings.max_concurrency if self.too_slow is None else self.too_slow
        return (
            f"the offered load bounds throughput, and the load cannot rise further (at most {ceiling:g}{needed}); "
            f"the pipeline could do about {limit:.0f} infer/s"
            if limit is not None
            else "the offered load bounds throughput, and the load cannot rise further"
        )

    async def attempt(self, change: _Change) -> tuple[Measurement, LevelResult]:
        if change.model is not None and change.config is not None:
            self.touched.add(change.model)
            await self.connection.load_model(change.model, change.config)
            return await self.measure()
        return await self.measure(change.load)

    def settle(self, change: _Change) -> None:
        """Keep a change: a model's config in force, or the offered load the next trials run at."""
        if change.model is not None and change.config is not None:
            self.current[change.model] = change.config
            self.changed.add(change.model)
        elif change.load is not None:
            self.run_settings = self.at_load(change.load)

    async def revert(self, change: _Change) -> None:
        if change.model is not None:
            await self.connection.load_model(change.model, self.current[change.model])

    def result(self, initial: Measurement, best: Measurement, reason: str) -> TuneResult:
        config_changes = {model: text_format.MessageToString(self.current[model]) for model in sorted(self.changed)}
        if self.settings.write_config:
            for model, text in config_changes.items():
                target = Path(self.settings.write_config) / model / "config.pbtxt"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        return TuneResult(self.name, initial, tuple(self.trials), best, config_changes, reason)
