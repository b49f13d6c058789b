"""Tuning acts on the diagnosis: measure, then move what bounds throughput. When the offered load does, raise it
(up to --max-concurrency); when a step does, try its changes on the live server in the order of their predicted
gain, keeping what helps beyond the run's noise; when the host or the client does, stop and say so. With a latency
budget, the goal is the highest throughput whose p99 stays within it: the load goes down as well as up, and while a
p99 is over its budget, the step its requests wait in is tried before a lower load. Every trial records what the
diagnosis predicted beside what was measured, and why it was kept or reverted.

A mix (`--model-mix`) is tuned as one load: the goal is its total throughput with every model's p99 within that
model's own budget. Each model's level carries its own diagnosis, and tune acts on each: a model over its budget
has the step it waits in changed (or the mix's load lowered); within every budget, the steps that bound models are
tried in the order of the gain predicted for the mix, then the load is raised for the models it bounds, as a whole
(every model's concurrency scaled in its proportion, or the mix's total rate).

A token run with `--goodput` objectives is tuned for goodput (requests per second meeting every objective): each
trial adds an instance to the step the token breakdown names as the bound of the gaps or of the first token, or
moves the load: up while nearly every request meets the objectives, down when most miss them."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from loadgen.analysis import WAITING_SHARE, Diagnosis
from loadgen.errors import OptionError
from loadgen.mix import split_count
from loadgen.options import at_least, check_fields, declared, option
from loadgen.plan import plan
from loadgen.results import LevelResult, Measurement, Trial, TuneResult
from loadgen.server.statistics import ServerFigures, composition
from loadgen.settings import Settings, format_mix, make_settings, parse_latency_budgets
from loadgen.sweep import profile_against
from loadgen.transport import Connection, ConnectionOptions, connect

MIN_GAIN = 0.05  # a change must raise throughput by more than this share (or the run's noise, if larger)
QUEUE_DELAY_US = 100  # first max_queue_delay_microseconds tried when dynamic batching is enabled
MAX_CONCURRENCY = 64
GOOD_SHARE = 0.9  # tuning for goodput raises the load while this share of requests meets the objectives


@dataclass(frozen=True)
class TuneSettings:
    """What `tune` works on: one load level of `profile`, a goal, and how far to search."""

    profile: Settings  # one model, or a mix (`model_mix`)
    # goal: the highest throughput whose p99 stays within this many ms: one number (in a mix, every model's), or
    # in a mix each model's own ("A:50,B:200", or a mapping; a model without one has none)
    latency_budget_ms: float | str | Mapping[str, float] | None = option(
        help="goal: the highest throughput whose p99 stays at or under this (the load is searched too); a mix: "
        "each model's own budget (A:50,B:200), or one for every model",
        metavar="MS|A:MS,B:MS",
        perf_analyzer=False,
    )
    max_trials: int = option(
        8, "configuration changes tried at most (default 8)", checks=(at_least(1),), perf_analyzer=False
    )
    keep: bool = option(False, "leave the improved configs loaded on the server", perf_analyzer=False)
    write_config: str | None = option(
        help="write each improved config.pbtxt under DIR/<model>/", metavar="DIR", perf_analyzer=False
    )
    max_concurrency: int = option(  # the closed loop's load (a mix's total) is raised up to this
        MAX_CONCURRENCY,
        f"the offered load (a mix's total concurrency) is raised up to this when it bounds throughput (default "
        f"{MAX_CONCURRENCY})",
        checks=(at_least(1),),
        perf_analyzer=False,
    )

    def __post_init__(self) -> None:
        if len(plan(self.profile).loads) != 1:
            raise OptionError("tune measures one load level: give one --concurrency or one --request-rate")
        if self.profile.goodput and self.profile.model_mix is not None:
            raise OptionError("tune --goodput tunes one model's token streams: not with --model-mix")
        check_fields(self, TuneSettings)
        budgets = parse_latency_budgets(self.latency_budget_ms, self.profile.model_mix)
        object.__setattr__(self, "latency_budget_ms", budgets)

    def budgets_ms(self, models: Sequence[str]) -> dict[str, float]:
        """Each model's p99 budget in ms (a model without one is left out)."""
        budget = self.latency_budget_ms
        if budget is None:
            return {}
        if isinstance(budget, Mapping):
            return {name: budget[name] for name in models if name in budget}
        return dict.fromkeys(models, float(budget))


TUNE_FIELDS = tuple(item.name for _, item in declared([TuneSettings]))  # tune's own options


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


def _more_instances(model: str, config: model_config_pb2.ModelConfig, predicted: float | None = None) -> _Change:
    """One instance more of a model."""
    instances = sum(group.count for group in config.instance_group) or 1
    description = f"{model}: instance_group count {instances} -> {instances + 1}"
    return _Change(description, predicted, model, _with_instances(config, instances + 1))


def candidates(step: ServerFigures, config: model_config_pb2.ModelConfig, diagnosis: Diagnosis) -> list[_Change]:
    """The config changes worth trying for a step, in the order of their predicted throughput (those the
    diagnosis cannot predict, batching changes, after; first when requests do not wait for an instance)."""
    predicted = next(
        (w.predicted_throughput for w in diagnosis.what_if if w.change.startswith(f"{step.model}: instance_group")),
        None,
    )
    more = _more_instances(step.model, config, predicted)
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


def _measurement(
    level: LevelResult, model: str | None, budgets_ms: Mapping[str, float], goodput: bool = False
) -> Measurement:
    """A level as tuning reads it (`model` None: a mix's total), with a mix's models, each with its budget; with
    `goodput`, its throughput is the token run's goodput (requests per second meeting every --goodput objective)."""
    diagnosis = level.diagnosis
    rates = [window.throughput for window in level.trend[-3:]]
    good = level.tokens.goodput if goodput and level.tokens is not None else None
    return Measurement(
        throughput=level.throughput if good is None else good,
        p99_us=level.latency_us.p99,
        bottleneck=None if diagnosis is None else diagnosis.name,
        noise=statistics.stdev(rates) / statistics.fmean(rates) / len(rates) ** 0.5 if len(rates) > 1 else 0.0,
        load=level.load,
        bound=None if diagnosis is None else diagnosis.bound,
        predicted_max=None if diagnosis is None else diagnosis.predicted_max_throughput,
        model=model,
        models=tuple(_measurement(part, part.model, budgets_ms) for part in level.models),
        budget_ms=budgets_ms.get(model) if model is not None else None,
    )


async def tune(settings: TuneSettings, on_trial: Callable[[Trial | Measurement], None] | None = None) -> TuneResult:
    """Tune the model (or the mix) on a server in explicit model-control mode; see the module docstring."""
    profile = settings.profile
    connection = connect(ConnectionOptions.from_settings(profile))
    try:
        await connection.check_reachable()
        await connection.check_model_control()
        mix = profile.model_mix
        names = tuple(mix) if mix is not None else (profile.model_name or await connection.choose_model(),)
        originals: dict[str, model_config_pb2.ModelConfig] = {}
        for name in names:
            tree = await composition(name, profile.model_version, connection.model_config)
            for step in tree.leaves():
                if step.model not in originals:
                    originals[step.model] = await connection.model_config(step.model)
        touched: set[str] = set()  # models whose config on the server may differ from the original
        try:
            search = _Search(settings, names, connection, dict(originals), touched, on_trial)
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
        names: tuple[str, ...],
        connection: Connection,
        current: dict[str, model_config_pb2.ModelConfig],
        touched: set[str],
        on_trial: Callable[[Trial | Measurement], None] | None,
    ) -> None:
        self.settings = settings
        self.names = names
        self.name = "+".join(names)
        self.connection = connection
        self.current = current
        self.touched = touched
        self.on_trial = on_trial
        self.changed: set[str] = set()
        self.trials: list[Trial] = []
        profile = settings.profile
        self.mix = profile.model_mix  # None: one model; a closed loop's concurrencies: the proportions it keeps
        self.run_settings = profile if self.mix is not None else dataclasses.replace(profile, model_name=names[0])
        self.closed_loop = plan(self.run_settings).closed_loop
        self.budgets_ms = settings.budgets_ms(names)
        self.goodput = bool(profile.goodput)  # the goal: goodput under the objectives, not throughput
        self.unit = "good requests/s" if self.goodput else "infer/s"
        self.too_slow: float | None = None  # the lowest load over a latency budget so far, in the configs in force
        self.reference: LevelResult | None = None

    async def measure(self, load: float | None = None) -> tuple[Measurement, LevelResult]:
        """The configuration in force at `load` (None: the current one)."""
        settings = self.run_settings if load is None else self.at_load(load)
        level = (await profile_against(settings, self.reference)).levels[-1]
        if self.reference is None:  # later trials' compute and waiting are compared with the first measurement's
            self.reference = level
        model = None if self.mix is not None else self.names[0]
        return _measurement(level, model, self.budgets_ms, self.goodput), level

    def at_load(self, load: float) -> Settings:
        """The run's settings at another concurrency (a mix's: every model's, scaled) or request rate."""
        if self.closed_loop and self.mix is not None:
            return make_settings(self.run_settings, model_mix=self.scaled(int(load)), concurrency_range=None)
        if self.closed_loop:
            return make_settings(self.run_settings, concurrency_range=int(load))
        return make_settings(self.run_settings, request_rate_range=load)

    def scaled(self, total: int) -> dict[str, int]:
        """A closed-loop mix's concurrencies at another total, in the proportions the mix started with."""
        assert self.mix is not None
        return split_count(total, self.mix)

    def shown(self, load: float) -> str:
        """A load in words: a closed-loop mix's total with each model's part."""
        if self.closed_loop and self.mix is not None:
            return f"{load:g} ({format_mix(self.scaled(int(load)))})"
        return f"{load:g}"

    def meets(self, measurement: Measurement) -> bool:
        return not any(part.over_budget for part in measurement.parts)

    def broken(self, measurement: Measurement) -> str:
        """The budgets a measurement breaks, in words (empty: none)."""
        return "; ".join(
            f"{part.model} p99 {part.p99_us / 1000:.1f} ms over its {part.budget_ms:g} ms budget"
            for part in measurement.parts
            if part.over_budget
        )

    def judge(self, result: Measurement, best: Measurement) -> tuple[bool, str]:
        """Whether a trial beats the configuration in force, and why (or why not): within every budget, throughput
        beyond the noise (two standard errors of either measurement, and at least MIN_GAIN); when the
        configuration in force breaks a budget, a result that meets every budget, or comes clearly closer."""
        broken = self.broken(result)
        if not self.meets(best):
            if not broken:
                return True, "every model's p99 within its budget now" if self.mix else "p99 within the budget now"
            if _excess(result) < _excess(best) * (1 - MIN_GAIN):
                return True, f"closer to the budget: {broken}"
            return False, f"no closer to the budget: {broken}"
        if broken:
            return False, broken
        threshold = max(2 * max(best.noise, result.noise), MIN_GAIN)
        goal = "goodput" if self.goodput else "throughput"
        change = f"{goal} {best.throughput:.1f} -> {result.throughput:.1f} {self.unit}"
        if result.throughput > best.throughput * (1 + threshold):
            return True, f"{change}, beyond the noise ({threshold:.0%})"
        return False, f"{change}, not beyond the noise ({threshold:.0%})"

    async def run(self) -> TuneResult:
        settings = self.settings
        best, level = await self.measure()
        initial = best
        if self.on_trial:
            self.on_trial(best)
        reason = f"--max-trials {settings.max_trials} reached"
        while len(self.trials) < settings.max_trials:
            changes, stop = self.changes(best, level)
            if stop:
                reason = stop
                break
            kept = False
            for change in changes:
                if len(self.trials) >= settings.max_trials:
                    break
                result, candidate = await self.attempt(change)
                kept, why = self.judge(result, best)
                trial = Trial(
                    change.description,
                    change.model,
                    result.throughput,
                    result.p99_us,
                    kept,
                    result.bottleneck,
                    change.predicted,
                    result.load,
                    why,
                    result.models,
                )
                self.trials.append(trial)
                if self.on_trial:
                    self.on_trial(trial)
                if kept:
                    self.settle(change)
                    best, level = result, candidate
                    break
                await self.revert(change)
                if change.load is not None and not self.meets(result):
                    self.too_slow = min(self.too_slow or math.inf, change.load)
                    if change.load > best.load:  # the load rose too far for a budget: try halfway to it
                        halfway = self.raise_load(best, _loaded(level))
                        if halfway is not None:
                            changes.append(halfway)
            if not kept and len(self.trials) < settings.max_trials:
                reason = self.no_gain(best)
                break
        return self.result(initial, best, reason)

    def no_gain(self, best: Measurement) -> str:
        """Why tuning stops when no change of a round was kept."""
        if not self.meets(best):
            return f"no change brought every p99 within its budget ({self.broken(best)})"
        within = ""
        if best.budget_ms is not None:
            within = f" within the {best.budget_ms:g} ms budget"
        elif self.budgets_ms:
            within = " within every model's budget"
        return f"no change raised {'goodput' if self.goodput else 'throughput'} beyond the run's noise" + within

    def changes(self, best: Measurement, level: LevelResult) -> tuple[list[_Change], str | None]:
        """What to try next, or why to stop: from each model's diagnosis (and, with budgets, from the latency)."""
        if self.goodput:
            return self.for_goodput(best, level)
        parts = list(zip(best.parts, level.models or (level,), strict=True))
        if all(part.diagnosis is None for _, part in parts):
            return [], "the server reported no requests: no diagnosis to act on"
        if not self.meets(best):
            return self.within_budget(best, parts)
        for _, part in parts:
            diagnosis = part.diagnosis
            who = f"{part.model}: " if self.mix is not None else ""
            if diagnosis is not None and diagnosis.bound in ("host_cpu", "host_gpu"):
                return [], f"{who}{diagnosis.name} is the limit: {diagnosis.reason}; more instances cannot help"
            if diagnosis is not None and diagnosis.bound == "client":
                return [], f"{who}the client limits throughput: {diagnosis.reason}"
            if diagnosis is not None and diagnosis.shared:
                return [], f"{who}the server served the model to someone else too: {diagnosis.reason}"
        ranked: list[list[_Change]] = []
        fixed: list[str] = []
        for _, part in parts:
            diagnosis = part.diagnosis
            if diagnosis is None or diagnosis.bound != "step":
                continue
            step = self.step(part, diagnosis.limiting_step)
            if step is None:
                fixed.append(str(diagnosis.limiting_step))
            else:
                ranked.append(self.for_step(best, part, step))
        # the steps whose change the diagnoses predict the largest gain for first; then the load
        ranked.sort(key=lambda changes: -max((c.predicted or 0.0 for c in changes), default=0.0))
        changes = _distinct([change for group in ranked for change in group])
        loaded = _loaded(level)
        raised = self.raise_load(best, loaded)
        if raised is not None:
            changes.append(raised)
        if changes:
            return changes, None
        if loaded:
            return [], self.load_ceiling(best, loaded[0])
        return [], f"{', '.join(fixed)} is not a model tune can reconfigure"

    def for_goodput(self, best: Measurement, level: LevelResult) -> tuple[list[_Change], str | None]:
        """What may raise goodput: an instance more of each step the token breakdown names (the gaps' bound, then
        the first token's), then the load: raised while nearly every request meets the objectives, else lowered."""
        breakdown, tokens = level.token_breakdown, level.tokens
        if breakdown is None or tokens is None:
            return [], "the server reported no requests: no token breakdown to act on"
        named = dict.fromkeys(name for name in (breakdown.gaps_step, breakdown.first_token_step) if name)
        changes = [_more_instances(name, self.current[name]) for name in named if name in self.current]
        good = tokens.goodput / tokens.request_throughput if tokens.goodput and tokens.request_throughput else 0.0
        load = best.load
        if good >= GOOD_SHARE:
            higher = min(load * 2, self.settings.max_concurrency) if self.closed_loop else load * 2
            target, why = higher, f"{good:.0%} of requests meet the objectives"
        else:
            target = max(math.floor(load / 2), 1) if self.closed_loop else load / 2
            why = f"only {good:.0%} of requests meet the objectives"
        if target != load:
            label = "concurrency" if self.closed_loop else "request rate"
            changes.append(_Change(f"{label} {load:g} -> {target:g} ({why})", None, load=target))
        if not changes:
            return [], "the token breakdown names no step to add an instance to, and the load is at its bound"
        return changes, None

    def within_budget(
        self, best: Measurement, parts: list[tuple[Measurement, LevelResult]]
    ) -> tuple[list[_Change], str | None]:
        """What may bring every p99 within its budget: for each model over it (the worst first), more of the step
        its requests wait in, then a lower load."""
        over = sorted((pair for pair in parts if pair[0].over_budget), key=lambda pair: -_excess(pair[0]))
        changes: list[_Change] = []
        for _, part in over:
            step = self.waited_in(part)
            if step is not None:
                changes += self.for_step(best, part, step)
        lower = self.lower_load(best)
        if lower is not None:
            changes.append(lower)
        if not changes:
            return [], f"{self.broken(best)}, even at the lowest load"
        return _distinct(changes), None

    def step(self, part: LevelResult, name: str | None) -> ServerFigures | None:
        """A model's step by name, when tune can reconfigure it."""
        steps = part.server.steps() if part.server else iter(())
        return next((step for step in steps if step.model == name and step.model in self.current), None)

    def waited_in(self, part: LevelResult) -> ServerFigures | None:
        """The step whose queue a model's requests wait in the longest, when they wait there (more of it would
        shorten their latency)."""
        steps = [step for step in part.server.steps() if step.model in self.current] if part.server else []
        step = max(steps, key=lambda step: step.queue_us, default=None)
        return step if step is not None and step.queue_us > WAITING_SHARE * step.compute_us else None

    def for_step(self, best: Measurement, part: LevelResult, step: ServerFigures) -> list[_Change]:
        """A step's candidate changes, their predictions as the whole load's throughput (in a mix: the others'
        throughput plus the model's predicted one)."""
        if part.diagnosis is None:
            return []
        return [
            dataclasses.replace(change, predicted=best.throughput - part.throughput + change.predicted)
            if change.predicted is not None
            else change
            for change in candidates(step, self.current[step.model], part.diagnosis)
        ]

    def raise_load(self, best: Measurement, loaded: list[LevelResult]) -> _Change | None:
        """The load the diagnoses say would take the models the load bounds to their limits (Little's law), within
        the bounds: a mix's load is scaled as a whole, to the largest of its models' needs."""
        needs = []  # each model the load bounds: the factor its load needs, and its predicted throughput there
        for part in loaded:
            assert part.diagnosis is not None
            what_if = next((w for w in part.diagnosis.what_if if w.load is not None), None)
            if what_if is None or what_if.load is None or not part.load:
                continue
            needs.append((part, what_if.load / part.load, what_if.predicted_throughput))
        if not needs:
            return None
        target = best.load * max(factor for _, factor, _ in needs)
        if self.too_slow is not None:
            target = min(target, (best.load + self.too_slow) / 2)
        if self.closed_loop:
            target = min(math.ceil(round(target, 6)), self.settings.max_concurrency)
        else:
            target = float(f"{target:.3g}")  # a rate of 3 significant digits
        if target <= best.load:
            return None
        # short of the load a model needs, its throughput grows with the load (the load bounds it)
        scale = target / best.load
        predicted = best.throughput + sum(
            min(limit or math.inf, part.throughput * scale) - part.throughput for part, _, limit in needs
        )
        label = "concurrency" if self.closed_loop else "request rate"
        return _Change(f"{label} {self.shown(best.load)} -> {self.shown(target)}", predicted, load=target)

    def lower_load(self, best: Measurement) -> _Change | None:
        """Half the load (a closed-loop mix keeps at least one request in flight per model), when a p99 is over
        its budget."""
        least = len(self.names) if self.closed_loop else 1
        lower = max(math.floor(best.load / 2), least) if self.closed_loop else best.load / 2
        if lower >= best.load:
            return None
        self.too_slow = min(self.too_slow or math.inf, best.load)
        label = "concurrency" if self.closed_loop else "request rate"
        return _Change(
            f"{label} {self.shown(best.load)} -> {self.shown(lower)} (p99 over the budget)", None, load=lower
        )

    def load_ceiling(self, best: Measurement, part: LevelResult) -> str:
        diagnosis = part.diagnosis
        assert diagnosis is not None
        limit = diagnosis.predicted_max_throughput
        what_if = next((w for w in diagnosis.what_if if w.load is not None), None)
        needed = f" (it needs about {what_if.load:g})" if what_if and what_if.load is not None else ""
        ceiling = self.settings.max_concurrency if self.too_slow is None else self.too_slow
        who = f"{part.model}'s " if self.mix is not None else ""
        return (
            f"the offered load bounds {who}throughput, and the load cannot rise further (at most {ceiling:g}{needed}); "
            f"the pipeline could do about {limit:.0f} infer/s"
            if limit is not None
            else f"the offered load bounds {who}throughput, and the load cannot rise further"
        )

    async def attempt(self, change: _Change) -> tuple[Measurement, LevelResult]:
        if change.model is not None and change.config is not None:
            self.touched.add(change.model)
            await self.connection.load_model(change.model, change.config)
            return await self.measure()
        return await self.measure(change.load)

    def settle(self, change: _Change) -> None:
        """Keep a change: a model's config in force (the loads found too slow before may not be now), or the
        offered load the next trials run at."""
        if change.model is not None and change.config is not None:
            self.current[change.model] = change.config
            self.changed.add(change.model)
            self.too_slow = None
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


def _loaded(level: LevelResult) -> list[LevelResult]:
    """The models (or the model) whose throughput the offered load bounds."""
    return [part for part in level.models or (level,) if part.diagnosis and part.diagnosis.bound == "offered_load"]


def _excess(measurement: Measurement) -> float:
    """The largest p99 over its model's budget, as a ratio (at most 1: every budget holds)."""
    return max((part.p99_us / 1000 / part.budget_ms for part in measurement.parts if part.budget_ms), default=0.0)


def _distinct(changes: list[_Change]) -> list[_Change]:
    """The changes without repeats (two models of a mix may share the step to change), in their order."""
    distinct: dict[str, _Change] = {}
    for change in changes:
        distinct.setdefault(change.description, change)
    return list(distinct.values())
