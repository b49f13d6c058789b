"""Tuning: move the bottleneck. Measure, change the slow step's config on the live server, measure again, keep
what helps; the search is guided by the bottleneck verdict instead of trying every combination."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from loadgen.analysis import WAITING_SHARE, Bottleneck
from loadgen.errors import OptionError
from loadgen.plan import plan
from loadgen.results import LevelResult, Measurement, Trial, TuneResult
from loadgen.server.statistics import ServerFigures, composition
from loadgen.settings import Settings
from loadgen.sweep import profile
from loadgen.transport import Connection, ConnectionOptions, connect

MIN_GAIN = 0.05  # a change must raise throughput by more than this share (or the run's noise, if larger)
QUEUE_DELAY_US = 100  # first max_queue_delay_microseconds tried when dynamic batching is enabled


@dataclass(frozen=True)
class TuneSettings:
    """What `tune` works on: one load level of `profile`, a goal, and how far to search."""

    profile: Settings
    latency_budget_ms: float | None = None
    max_trials: int = 8
    keep: bool = False
    write_config: str | None = None

    def __post_init__(self) -> None:
        if len(plan(self.profile).loads) != 1:
            raise OptionError("tune measures one load level: give one --concurrency or one --request-rate")
        if self.max_trials < 1:
            raise OptionError(f"--max-trials {self.max_trials}: must be at least 1")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise OptionError(f"--latency-budget-ms {self.latency_budget_ms}: must be above 0")


@dataclass(frozen=True)
class _Change:
    model: str
    description: str
    config: model_config_pb2.ModelConfig


def _with_instances(config: model_config_pb2.ModelConfig, count: int) -> model_config_pb2.ModelConfig:
    changed = model_config_pb2.ModelConfig()
    changed.CopyFrom(config)
    if not changed.instance_group:
        changed.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    del changed.instance_group[1:]
    changed.instance_group[0].count = count
    return changed


def candidates(step: ServerFigures, config: model_config_pb2.ModelConfig) -> list[_Change]:
    """The changes worth trying for a slow step, most promising first."""
    instances = sum(group.count for group in config.instance_group) or 1
    more = _Change(
        step.model,
        f"{step.model}: instance_group count {instances} -> {instances + 1}",
        _with_instances(config, instances + 1),
    )
    batching: list[_Change] = []
    if config.max_batch_size > 0:
        batched = model_config_pb2.ModelConfig()
        batched.CopyFrom(config)
        delay = batched.dynamic_batching.max_queue_delay_microseconds
        if not config.HasField("dynamic_batching"):
            batched.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
            batching.append(
                _Change(
                    step.model, f"{step.model}: enable dynamic_batching (max_queue_delay {QUEUE_DELAY_US} us)", batched
                )
            )
        elif step.avg_batch < 2:
            batched.dynamic_batching.max_queue_delay_microseconds = max(QUEUE_DELAY_US, 2 * delay)
            batching.append(
                _Change(
                    step.model,
                    f"{step.model}: dynamic_batching max_queue_delay {delay} -> "
                    f"{batched.dynamic_batching.max_queue_delay_microseconds} us",
                    batched,
                )
            )
    waiting = step.queue_us > WAITING_SHARE * step.compute_us
    return [more, *batching] if waiting else [*batching, more]


def _measurement(level: LevelResult) -> Measurement:
    verdict: Bottleneck | None = level.bottleneck
    rates = [window.throughput for window in level.trend[-3:]]
    return Measurement(
        throughput=level.throughput,
        p99_us=level.latency_us.p99,
        bottleneck=None if verdict is None else verdict.model or "client",
        noise=statistics.stdev(rates) / statistics.fmean(rates) / len(rates) ** 0.5 if len(rates) > 1 else 0.0,
    )


async def tune(settings: TuneSettings, on_trial: Callable[[Trial | Measurement], None] | None = None) -> TuneResult:
    """Tune the model's slow steps on a server in explicit model-control mode; see the module docstring."""
    connection = connect(ConnectionOptions.from_settings(settings.profile))
    try:
        await connection.check_reachable()
        await connection.check_model_control()
        name = settings.profile.model_name or await connection.choose_model()
        tree = await composition(name, settings.profile.model_version, connection.model_config)
        originals = {step.model: await connection.model_config(step.model) for step in tree.leaves()}
        touched: set[str] = set()  # models whose config on the server may differ from the original
        try:
            return await _search(settings, name, connection, dict(originals), touched, on_trial)
        finally:
            if not settings.keep:
                for model in sorted(touched):
                    await asyncio.shield(connection.load_model(model, originals[model]))
    finally:
        await connection.close()


async def _search(
    settings: TuneSettings,
    name: str,
    connection: Connection,
    current: dict[str, model_config_pb2.ModelConfig],
    touched: set[str],
    on_trial: Callable[[Trial | Measurement], None] | None,
) -> TuneResult:
    run = dataclasses.replace(settings.profile, model_name=name)

    async def measure() -> tuple[Measurement, LevelResult]:
        level = (await profile(settings=run)).levels[-1]
        return _measurement(level), level

    initial, level = await measure()
    if on_trial:
        on_trial(initial)
    best = initial
    trials: list[Trial] = []
    changed: set[str] = set()
    budget_us = settings.latency_budget_ms * 1000 if settings.latency_budget_ms else None
    reason = f"--max-trials {settings.max_trials} reached"
    while len(trials) < settings.max_trials:
        if budget_us is not None and best.p99_us <= budget_us:
            reason = f"p99 {best.p99_us / 1000:.1f} ms is within the {settings.latency_budget_ms:g} ms budget"
            break
        verdict = level.bottleneck
        if verdict is None or verdict.model is None or level.server is None:
            reason = "the client, not a model, limits throughput: raise the load" if verdict else "no verdict"
            break
        model = verdict.model
        step = next(s for s in level.server.leaves() if s.model == model)
        kept = False
        for change in candidates(step, current[model]):
            if len(trials) >= settings.max_trials:
                break
            touched.add(model)
            await connection.load_model(model, change.config)
            result, candidate_level = await measure()
            # beyond the noise: two standard errors of either measurement, and at least MIN_GAIN
            threshold = max(2 * max(best.noise, result.noise), MIN_GAIN)
            kept = result.throughput > best.throughput * (1 + threshold) or (
                budget_us is not None and best.p99_us > budget_us >= result.p99_us
            )
            trial = Trial(change.description, change.model, result.throughput, result.p99_us, kept, result.bottleneck)
            trials.append(trial)
            if on_trial:
                on_trial(trial)
            if kept:
                current[model] = change.config
                changed.add(model)
                best, level = result, candidate_level
                break
            await connection.load_model(model, current[model])  # revert
        if not kept:
            if len(trials) < settings.max_trials:
                reason = f"no change to {model} raised throughput beyond the run's noise"
            break
    config_changes = {model: text_format.MessageToString(current[model]) for model in sorted(changed)}
    if settings.write_config:
        for model, text in config_changes.items():
            target = Path(settings.write_config) / model / "config.pbtxt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return TuneResult(name, initial, tuple(trials), best, config_changes, reason)
