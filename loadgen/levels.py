"""The level rule, written once: how a level's windows become its figures, and when a sweep ends.

The sweep applies it to windows as they are measured; `loadgen merge` applies it to the windows of shards' logs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace

from loadgen.analysis import Observation, Reference, diagnose, verdict
from loadgen.confidence import level_confidence
from loadgen.measurement import (
    LATE_CAUSES,
    STABILITY_WINDOWS,
    LatencyStats,
    Window,
    WindowSummary,
    is_stable,
    last_windows,
    merge,
    summarize,
)
from loadgen.mix_analysis import diagnose_mix
from loadgen.plan import LevelRule, Load
from loadgen.results import LateCause, LateSends, LevelResult, SendLag
from loadgen.server import metrics as server_metrics
from loadgen.server.metrics import ServerMetrics
from loadgen.server.sharing import Sharing, combined, server_requests, window_sharing
from loadgen.server.statistics import Composition, Snapshot, add, figures
from loadgen.token_analysis import token_breakdown
from loadgen.tokens import token_stats

DELAYED_SHARE_LIMIT = 0.01  # more than 1 % of requests over 1 ms late: the generator fell behind
SEND_RATE_SHORTFALL = 0.95  # achieved send rate more than 5 % below the requested rate
CLIENT_BUSY_SHARE = 0.5  # a loop busier than this that sends late is the client's own limit; idler: the machine's

TREND_WINDOWS = 1000  # a level's trend keeps its last this many windows (a day-long soak stays bounded)


class Level:
    """One load level's windows as they are measured, with the server's statistics (and metrics) over each.

    `baseline` is the sweep's least-loaded level's server figures (compute there is the uncontended reference);
    `cores` the server host's cores when it is this machine.
    """

    def __init__(
        self,
        load: Load,
        rule: LevelRule,
        model: Composition | None,
        baseline: Reference | None = None,
        cores: int | None = None,
        models: Mapping[str, Level] | None = None,
        solo: Mapping[str, LevelResult] | None = None,
    ) -> None:
        """`model` None: a mix's total, which has no server figures of its own; `models` holds each model's level
        (see `start_level`), `solo` each model alone at the same load (--solo-baseline)."""
        self.load = load
        self.rule = rule
        self.model = model
        self.baseline = baseline
        self.cores = cores
        self.models = dict(models or {})
        self.solo = dict(solo or {})
        # a level can run for a day (a soak): what it keeps per window is bounded. Its figures merge the last
        # STABILITY_WINDOWS windows, whole; the trend keeps the last TREND_WINDOWS windows' summaries
        self.count = 0  # windows measured
        self.windows: deque[Window] = deque(maxlen=STABILITY_WINDOWS)
        self.server: deque[Snapshot] = deque(maxlen=STABILITY_WINDOWS)
        self.metrics: deque[ServerMetrics] = deque(maxlen=STABILITY_WINDOWS)
        self.summaries: deque[WindowSummary] = deque(maxlen=TREND_WINDOWS)
        self.bounds: list[int] | None = None  # every window's start and end, when `keep_bounds` was called
        self.throughput_only = False  # stable on throughput alone (`settle_on_throughput`)
        self.in_flight: int | None = None  # loadgen's requests in flight at the last window's end (None: no audit)
        self.sharing: deque[Sharing] = deque(maxlen=STABILITY_WINDOWS)  # each window's server count beside loadgen's

    def keep_bounds(self) -> None:
        """Keep every window's boundaries (the profile export places its requests in them)."""
        self.bounds = []

    def begin(self, window: Window, parts: Mapping[str, Window]) -> None:
        """Compare every window's server count of the model with loadgen's own (see `server.sharing`), from
        `window`, the one that closed as the level started (with each model's part of it, in a mix)."""
        for name, level in self.models.items():
            level.begin(parts[name], {})
        if self.model is not None:
            self.in_flight = self._in_flight_after(0, window)

    def _in_flight_after(self, start: int, window: Window) -> int:
        """Loadgen's requests in flight at a window's end: a closed loop's concurrency; an open loop's, counted from
        `start` (at the window's start) by what the window sent and what of it returned."""
        if self.load.concurrency is not None:
            return self.load.concurrency
        return max(start + window.sent - window.request_count - window.error_count - window.cancelled, 0)

    def _audit(self, window: Window, server: Snapshot) -> None:
        """The window's server count of the model beside loadgen's own and those in flight at its edges."""
        if self.in_flight is None or self.model is None:
            return
        start, self.in_flight = self.in_flight, self._in_flight_after(self.in_flight, window)
        # stale: an earlier level's, back now
        returned = window.request_count + window.error_count + window.cancelled + window.stale
        edges = start + self.in_flight
        self.sharing.append(window_sharing(self.model.model, server_requests(self.model, server), returned, edges))

    def add(
        self,
        window: Window,
        server: Snapshot,
        metrics: ServerMetrics | None = None,
        parts: Mapping[str, Window] | None = None,
    ) -> WindowSummary:
        """Add the next window and the server's statistics (and metrics) over it, and in a mix each model's part of
        the window (`parts`); the window's figures as the stability rule reads them."""
        for name, level in self.models.items():
            assert parts is not None  # a mix's window always comes with its models' parts
            level.add(parts[name], server, metrics)
        self._audit(window, server)
        if self.bounds is not None:
            self.bounds += (window.start_ns, window.end_ns) if not self.bounds else (window.end_ns,)
        self.count += 1
        self.windows.append(window)
        self.server.append(server)
        if metrics is not None:
            self.metrics.append(metrics)
        self.summaries.append(summarize(window, self.rule.batch_size, self.rule.percentile))
        return self.summaries[-1]

    @property
    def stable(self) -> bool:
        """perf_analyzer's rule: the last three windows agree (one window of --request-count needs no agreement);
        a mix's level, when every model's does too."""
        own = bool(self.count) if self.rule.single else is_stable(self.summaries, self.rule.stability_percentage)
        return (own or self.throughput_only) and all(level.stable for level in self.models.values())

    def settle_on_throughput(self) -> bool:
        """perf_analyzer's asynchronous fallback, once a level's windows are spent: stable when the last three
        windows' throughput agrees (latency need not); whether it now is."""
        self.throughput_only = is_stable(self.summaries, self.rule.stability_percentage, latency=False)
        return self.throughput_only

    def result(self, complete: bool = True) -> LevelResult:
        """The level's figures, merged from its last three windows (fewer when it has fewer); a mix's, with each
        model's figures."""
        server: Snapshot = {}
        for window_delta in self.server:
            server = add(server, window_delta)
        scraped = [window for window in self.metrics if window.samples]
        metrics = server_metrics.combine(scraped) if scraped else None
        total = _figures(self, merge(list(self.windows)), server, metrics, self.stable and complete, complete)
        if not self.models:
            return total
        models = tuple(
            replace(level.result(complete), model=name, solo=self.solo.get(name)) for name, level in self.models.items()
        )
        mixed = replace(total, models=models)
        return replace(mixed, mix_diagnosis=diagnose_mix(mixed))


def model_load(load: Load, share: float) -> Load:
    """A model's own load in a mix: its concurrency (a closed loop's mix gives each model its own), or its share
    of the mix's request rate."""
    return Load(concurrency=int(share)) if load.concurrency is not None else Load(rate=(load.rate or 0.0) * share)


def start_level(
    load: Load,
    rule: LevelRule,
    trees: Mapping[str, Composition],
    mix: Mapping[str, float] | None,
    least: LevelResult | None,
    cores: int | None,
    solo: Mapping[str, LevelResult] | None = None,
) -> Level:
    """A level about to be measured, against `least` (the sweep's least-loaded level, whose compute is the
    uncontended reference): one model's, or (`mix`) the mix's total with each model's level, at its own load and
    against its own figures at `least`."""
    if mix is None:
        [tree] = trees.values()
        return Level(load, rule, tree, _reference(least), cores)
    earlier = {model.model: model for model in least.models} if least is not None else {}
    models = {
        name: Level(model_load(load, share), rule, trees[name], _reference(earlier.get(name)), cores)
        for name, share in mix.items()
    }
    return Level(load, rule, None, None, cores, models, solo)


def _reference(level: LevelResult | None) -> Reference | None:
    return Reference.of(level.server, level.latency_us.avg) if level is not None else None


def _figures(
    level: Level, merged: Window, server: Snapshot, metrics: ServerMetrics | None, stable: bool, complete: bool
) -> LevelResult:
    """Client figures from the merged windows, server figures from their statistics, and the diagnosis."""
    rule = level.rule
    latency = LatencyStats.from_histogram(merged.histogram)
    throughput = merged.throughput(rule.batch_size)
    duration = merged.duration_s
    # none when the server keeps no statistics of the model (an OpenAI-compatible server)
    model = level.model
    counted = model is not None and any(name == model.model for name, _ in server)
    server_figures = figures(model, server) if model is not None and counted else None
    completed = merged.request_count + merged.error_count
    extra: dict[str, object] = {}
    if merged.lag is not None and merged.service is not None:
        send_rate = merged.sent / duration if duration else 0.0
        delayed_share = merged.delayed / merged.sent if merged.sent else 0.0
        requested = level.load.rate or send_rate
        server_behind = merged.limit_hits > 0 or completed < SEND_RATE_SHORTFALL * merged.sent
        behind = delayed_share > DELAYED_SHARE_LIMIT or send_rate < SEND_RATE_SHORTFALL * requested
        busy = merged.loop_cpu_ns / 1e9 / duration if duration else 0.0
        lag = LatencyStats.from_histogram(merged.lag)
        extra = {
            "send_rate": send_rate,
            "service_latency_us": LatencyStats.from_histogram(merged.service),
            "send_lag_us": SendLag(lag.p50, lag.p99, lag.max),
            "delayed_share": delayed_share,
            "in_flight_limit_hits": merged.limit_hits,
            "late_sends": LateSends(
                *(
                    LateCause(getattr(merged, f"late_{cause}"), getattr(merged, f"late_{cause}_max_us"))
                    for cause in LATE_CAUSES
                )
            ),
            "saturated": _saturated(server_behind, behind, busy),
        }
    if merged.first_response is not None:
        extra |= {
            "first_response_latency_us": LatencyStats.from_histogram(merged.first_response),
            "response_throughput": merged.responses / duration if duration else 0.0,
            "responses_per_request": merged.responses / merged.request_count if merged.request_count else 0.0,
        }
    tokens = token_stats(merged, merged.service or merged.histogram, rule.goodput)
    if tokens is not None:
        extra["tokens"] = tokens
        if server_figures is not None:
            extra["token_breakdown"] = token_breakdown(server_figures, tokens, duration)
    if merged.sequences:
        extra |= {"sequence_count": merged.sequences, "sequence_rate": merged.sequences / duration if duration else 0.0}
    percentile = rule.percentile
    loop_busy = merged.loop_cpu_ns / 1e9 / duration if duration else 0.0
    diagnosis, bottleneck = None, None
    sharing = combined(list(level.sharing))  # over the windows the figures come from
    if server_figures is not None:
        observation = Observation(
            load=level.load,
            throughput=throughput,
            duration_s=duration,
            client_latency_us=latency.avg,
            loop_busy_share=loop_busy,
            client_cpu_s=merged.process_cpu_ns / 1e9,
            saturated=extra.get("saturated"),  # type: ignore[arg-type]
            server=server_figures,
            metrics=metrics,
            cores=level.cores,
            sharing=sharing,
        )
        diagnosis = diagnose(observation, level.baseline)
        if diagnosis is not None and not diagnosis.shared:  # a shared level names no limiting step
            bottleneck = verdict(diagnosis, observation)
    calls = merged.client_calls
    sends = merged.client_sends or calls  # a window log of an earlier version counted successful calls alone
    return LevelResult(
        concurrency=level.load.concurrency,
        request_rate=level.load.rate,
        throughput=throughput,
        request_count=merged.request_count,
        error_count=merged.error_count,
        stable=stable,
        latency_us=latency,
        windows=level.count,
        duration_s=duration,
        errors=dict(merged.errors.most_common()),
        percentile=percentile,
        percentile_us=merged.histogram.get_value_at_percentile(percentile) if percentile else None,
        loop_busy_share=loop_busy,
        client_cpu_us_per_request=merged.process_cpu_ns / 1000 / completed if completed else 0.0,
        trend=tuple(level.summaries),
        complete=complete,
        server=server_figures,
        metrics=metrics,
        diagnosis=diagnosis,
        bottleneck=bottleneck,
        sharing=sharing,
        client_send_us=merged.client_send_ns / 1000 / sends if sends else 0.0,
        client_recv_us=merged.client_recv_ns / 1000 / calls if calls else 0.0,
        confidence=level_confidence(
            merged,
            [summary.throughput for summary in last_windows(level.summaries)],
            percentile,
            rule.confidence,
        ),
        **extra,  # type: ignore[arg-type]
    )


def _saturated(server_behind: bool, sent_late: bool, loop_busy: float) -> str | None:
    """Who could not keep up with an open-loop schedule: the server, loadgen's own loop, or the machine under it."""
    if server_behind:
        return "server"
    if not sent_late:
        return None
    return "client" if loop_busy >= CLIENT_BUSY_SHARE else "machine"


def ends_sweep(level: LevelResult, rule: LevelRule) -> bool:
    """perf_analyzer's rule: a sweep ends after an unstable level or the first one over the latency threshold."""
    return not level.stable or rule.over_threshold(level)


def outcome(levels: Sequence[LevelResult]) -> tuple[str, str]:
    """The status and message of a sweep that ran to its end: complete, or stopped at a level that never settled."""
    unstable = [level for level in levels if not level.stable]
    if not unstable:
        return "complete", ""
    level = unstable[-1]
    if level.request_count == 0 and level.error_count == 0 and level.sharing is not None and level.shared:
        return "unstable", (
            f"no request completed at {level.load_label} in {level.windows} windows while {level.sharing.describe()}; "
            "the sweep stopped there"
        )
    if level.request_count == 0 and level.error_count == 0:
        return "unstable", (
            f"no request completed at {level.load_label} in {level.windows} windows: the requests in flight never "
            "returned (a model that does not answer, or a decoupled model still streaming responses: random data "
            "can ask one for billions); the sweep stopped there"
        )
    return "unstable", (
        f"no stable measurement at {level.load_label} after {level.windows} windows: the last three windows' "
        "throughput and latency did not agree within the stability percentage; the sweep stopped there"
    )
