"""The console: the level table row by row and a live status while a sweep runs, then the steps and the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from loadgen.plan import Load

if TYPE_CHECKING:  # the rest where it is used: a command line's consoles come before its parsing (`--help`)
    import rich.progress
    from rich.table import Table

    from loadgen.analysis import Diagnosis
    from loadgen.comparison import Comparison, Gate, MetricChange
    from loadgen.confidence import LevelConfidence
    from loadgen.measurement import LatencyStats, WindowSummary
    from loadgen.mix_analysis import MixDiagnosis
    from loadgen.results import LevelResult, ProfileResult, RunDescription, Unmeasured
    from loadgen.server.sharing import Sharing
    from loadgen.tokens import TokenStats

_CLOSED = ("concurrency", "infer/s", "avg us", "p50 us", "p90 us", "p95 us", "p99 us", "errors", "stable")
_OPEN = ("req/s", "sent/s", "infer/s", "avg us", "p50 us", "p99 us", "svc p99", "lag p99", "late", "errors", "stable")


def make_console(stderr: bool = False) -> Console:
    """A console that does not wrap lines, and is wide enough for the tables when output is not a terminal.

    It reads no markup and no emoji codes: what it prints holds user text (model names, URLs, server messages),
    which must come out as given (`-m :smile:` is not an emoji); styles are given as `style=`.
    """
    probe = Console(stderr=stderr)
    return Console(
        stderr=stderr,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
        width=None if probe.is_terminal else 160,
    )


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.rjust(max(len(cell), 9)) for cell in cells)


def _load(load: Load | LevelResult) -> str:
    return str(load) if isinstance(load, Load) else load.load_label


class ConsoleProgress:
    """The sweep as it runs: the level table row by row, under it a live status of the window being measured.

    When the console is not a terminal (CI logs, pipes), the live status becomes one plain line per window;
    `verbose` prints those lines on a terminal too. `quiet` prints nothing until `finished`, which prints the
    summary. Use it as a context manager, so that the live status stops whatever happens to the sweep.
    """

    def __init__(self, console: Console | None = None, verbose: bool = False, quiet: bool = False) -> None:
        import rich.progress

        self.console = console or make_console()
        self.verbose = verbose
        self.quiet = quiet
        self._live: rich.progress.Progress | None = None
        self._task = rich.progress.TaskID(0)
        self._max_windows = 0
        self._levels = 0
        self._requests = 0

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_live()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def started(self, run: RunDescription) -> None:
        from loadgen.measurement import STABILITY_WINDOWS

        windows, rule = run.windows, run.rule
        self._max_windows = windows.max_windows
        if self.quiet:
            return
        sent = ", ".join(f"{i.name} {i.datatype} {list(i.shape)}" for i in run.inputs)
        self.console.print(f"Profiling {run.model} at {run.url}; inputs: {sent}")
        if run.mode == "periodic_concurrency":
            self.console.print("Periodic concurrency: no levels or windows; every request goes to the profile export")
            return
        if windows.single:
            self.console.print(f"One window of {windows.count} requests, no stability check")
        else:
            size = f"{windows.count} requests" if windows.count is not None else f"{windows.interval_ms} ms"
            on = f"p{rule.percentile} latency" if rule.percentile else "average latency"
            self.console.print(
                f"Windows of {size}, stable when throughput and {on} agree within {rule.stability_percentage:g}% "
                f"over {STABILITY_WINDOWS} windows, at most {windows.max_windows} windows per level"
            )
        if not run.closed_loop:
            self.console.print(
                "Open loop: latency counts from each request's scheduled send time (response time); "
                "svc = from the actual send (service time); lag = how late requests left"
            )
        self.console.print(_row(_header(run.closed_loop)), style="bold")
        if self.console.is_terminal:
            import rich.progress

            self._live = rich.progress.Progress(
                rich.progress.SpinnerColumn(),
                rich.progress.TextColumn("{task.description}", markup=False),
                rich.progress.TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._task = self._live.add_task("first level: window 1 running")
            self._live.start()

    def replay(self, result: ProfileResult) -> None:
        """Print a finished result (a merged run) as a live run would have: the table, then the verdict."""
        self.console.print(f"{result.model} at {result.url}: {result.settings.get('shard', '')}")
        self.console.print(_row(_header(result.closed_loop)), style="bold")
        for level in result.levels:
            self.level(level)
        self.finished(result)

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None:
        self._requests = summary.request_count + (self._requests if index > 1 else 0)
        state = "stable" if stable else _settling(index)
        if self._live is not None:
            self._live.update(
                self._task,
                description=f"level {self._levels + 1}, {_load(load)} | window {index}/{self._max_windows} | "
                f"{self._requests} requests | {summary.throughput:.1f} infer/s | p99 {summary.p99_us} us | {state}",
            )
        if (self.verbose or not self.console.is_terminal) and not self.quiet:
            sent = f", sent {summary.send_rate:.1f}/s" if summary.send_rate is not None else ""
            self.console.print(
                f"  {_load(load)} window {index}: {summary.throughput:.1f} infer/s{sent}, "
                f"avg {summary.avg_latency_us:.0f} us, p99 {summary.p99_us} us, {summary.request_count} requests, "
                f"{summary.error_count} errors, loop busy {summary.loop_busy_share:.0%}; {state}"
            )

    def level(self, level: LevelResult) -> None:
        self._levels += 1
        if self._live is not None:
            self._live.update(self._task, description=f"level {self._levels} done; next level: window 1 running")
        if not self.quiet:
            self._print_level(level)

    def _print_level(self, level: LevelResult) -> None:
        from loadgen.server.metrics import summary_line

        lat = level.latency_us
        stable = "yes" if level.stable else "NO"
        if level.concurrency is not None:
            cells: tuple[str, ...] = (
                str(level.concurrency),
                f"{level.throughput:.1f}",
                f"{lat.avg:.0f}",
                *(str(v) for v in (lat.p50, lat.p90, lat.p95, lat.p99, level.error_count)),
                stable,
            )
        else:
            assert level.service_latency_us is not None and level.send_lag_us is not None
            cells = (
                f"{level.request_rate:g}",
                f"{level.send_rate:.1f}",
                f"{level.throughput:.1f}",
                f"{lat.avg:.0f}",
                str(lat.p50),
                str(lat.p99),
                str(level.service_latency_us.p99),
                str(level.send_lag_us.p99),
                f"{level.delayed_share:.1%}",
                str(level.error_count),
                stable,
            )
        self.console.print(_row(cells), style=None if level.stable else "red")
        for model in level.models:
            lat = model.latency_us
            alone = ""
            if model.solo is not None and model.solo.latency_us.p99:
                alone = f" ({lat.p99 / model.solo.latency_us.p99:.1f}x its solo p99 {model.solo.latency_us.p99} us)"
            self.console.print(
                f"    {model.model}: {_load(model)}, {model.throughput:.1f} infer/s, avg {lat.avg:.0f} us, "
                f"p99 {lat.p99} us{alone}, {model.error_count} errors{'' if model.stable else ', NOT stable'}"
            )
            self._shared(model.sharing, "      ")
        if level.percentile_us is not None:
            self.console.print(f"    p{level.percentile} latency: {level.percentile_us} us")
        if level.first_response_latency_us is not None:
            first = level.first_response_latency_us
            self.console.print(
                f"    stream: first response avg {first.avg:.0f} us, p99 {first.p99} us (the columns: last response); "
                f"{level.responses_per_request:.2f} responses per request, {level.response_throughput:.1f} responses/s"
            )
        if level.tokens is not None:
            for line in token_lines(level.tokens):
                self.console.print(f"    {line}")
        if level.token_breakdown is not None:
            for line in (level.token_breakdown.first_token, level.token_breakdown.gaps):
                self.console.print(f"    {line}", style="bold")
        if level.confidence is not None:
            self._confidence(level.confidence)
        if level.metrics is not None and level.metrics.samples:
            self.console.print(f"    {summary_line(level.metrics)}")
        for description, count in list(level.errors.items())[:3]:
            self.console.print(f"    {count} x {description}", style="yellow")
        self._warn(level)

    def _confidence(self, confidence: LevelConfidence) -> None:
        """The level's bounds at the confidence, and the percentiles its samples are too few for."""
        self.console.print(f"    {confidence_line(confidence)}")
        short = confidence.too_few()
        if short:
            samples = next(iter(short.values())).samples  # (one histogram: one count)
            needed = ", ".join(f"{name} needs {bound.samples_needed}" for name, bound in short.items())
            self.console.print(
                f"    too few samples for a bound at {confidence.level:.4g} confidence: {samples} measured, {needed} "
                "(longer windows, -p, or a higher load give more)",
                style="yellow",
            )

    def _shared(self, sharing: Sharing | None, indent: str) -> None:
        """A level (or a mix's model) the server served to someone else too."""
        if sharing is not None and sharing.shared:
            self.console.print(
                f"{indent}SHARED: {sharing.describe()}; these figures are not this load's alone", style="bold red"
            )

    def _warn(self, level: LevelResult) -> None:
        from loadgen.levels import DELAYED_SHARE_LIMIT

        self._shared(level.sharing, "    ")
        late = level.late_sends.describe() if level.late_sends is not None else ""
        if late and (level.delayed_share or 0.0) > DELAYED_SHARE_LIMIT:
            self.console.print(f"    late sends ({level.delayed_share:.1%} over 1 ms): {late}", style="yellow")
        if level.saturated == "machine":
            self.console.print(
                f"    WARNING: {level.delayed_share:.1%} of requests left over 1 ms late at {level.request_rate:g} "
                f"req/s while loadgen's loop was only {level.loop_busy_share:.0%} busy: the machine is loaded (other "
                "processes take the CPU), not loadgen; latencies include that lag. Run on a quieter machine.",
                style="bold red",
            )
        elif level.saturated == "client":
            self.console.print(
                f"    WARNING: loadgen could not keep up with {level.request_rate:g} req/s: it sent "
                f"{level.send_rate:.1f}/s and {level.delayed_share:.1%} of requests left over 1 ms late "
                f"(loop busy {level.loop_busy_share:.0%}). Its latencies include that lag; "
                "use more worker processes, fewer levels, or a lower rate.",
                style="bold red",
            )
        elif level.saturated == "server":
            held = (
                f"; {level.in_flight_limit_hits} requests waited for the server (the in-flight limit, or the previous "
                "request of their sequence)"
                if level.in_flight_limit_hits
                else ""
            )
            self.console.print(
                f"    The server is saturated at {level.request_rate:g} req/s: it completed "
                f"{level.throughput:.1f} infer/s of {level.send_rate:.1f}/s sent{held}; "
                "queueing shows as response time growing window after window (loadgen itself kept up: "
                f"loop busy {level.loop_busy_share:.0%}).",
                style="yellow",
            )

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def finished(self, result: ProfileResult) -> None:
        """After the sweep (quiet: the level table first), the per-step breakdown where the model was pushed
        hardest, and the verdict."""
        from loadgen.server.metrics import summary_line

        self._stop_live()
        if result.mode == "periodic_concurrency":
            recorded = sum(len(experiment.requests) for experiment in result.experiments)
            self.console.print(f"{recorded} requests recorded for the profile export")
        elif self.quiet:
            self.console.print(_row(_header(result.closed_loop)), style="bold")
            for row in result.levels:
                self._print_level(row)
        if result.unmeasured is not None and result.unmeasured.in_flight_at_stop + result.unmeasured.total:
            self.console.print(unmeasured_line(result.unmeasured), style="dim")
        level = result.peak
        if level is not None and level.server is not None and level.diagnosis is not None:
            self.console.print(step_table(level))
            if level.metrics is not None:
                self.console.print(summary_line(level.metrics))
            self.console.print(
                "Bound per level: " + ", ".join(f"{lv.load:g}: {_bound(lv.diagnosis)}" for lv in result.levels)
            )
            self._diagnosis(level.diagnosis)
        if result.mix_diagnosis is not None:
            peak = max(reversed(result.levels), key=lambda level: level.throughput)
            for model in peak.models:
                if model.server is not None:
                    self.console.print(step_table(model, title=model.model))
            self._mix_diagnosis(result.mix_diagnosis)
        if result.status == "unstable":
            last = result.levels[-1]
            if last.request_count + last.error_count == 0:
                hint = "Send the model one request by hand to see whether it answers."
            elif last.saturated == "server":
                hint = (
                    "The server is saturated at this rate: response time grows window after window and cannot "
                    "settle; lower the request rate."
                )
            else:
                hint = "Try a longer --measurement-interval or a larger --stability-percentage."
            self.console.print(f"{result.message}. {hint}", style="red")
        elif result.status != "complete" and result.message:
            self.console.print(f"{result.status}: {result.message}", style="yellow")

    def _mix_diagnosis(self, diagnosis: MixDiagnosis) -> None:
        print = self.console.print
        print(f"Diagnosis across the mix: {diagnosis.bound.replace('_', ' ')}", style="bold")
        print(f"  {diagnosis.reason}")
        print(f"  compute by step: {_shares(diagnosis)}")
        for suggestion in diagnosis.suggestions:
            print(f"  - {suggestion}")

    def _diagnosis(self, diagnosis: Diagnosis) -> None:
        print = self.console.print
        if diagnosis.shared:
            print("Diagnosis: none, the server was shared", style="bold")
        else:
            print(f"Diagnosis: {_bound(diagnosis)} bounds throughput", style="bold")
        print(f"  {diagnosis.reason}")
        limit = diagnosis.predicted_max_throughput
        if diagnosis.limiting_step is not None and limit is not None:
            print(
                f"  Throughput limit: about {limit:.0f} infer/s, {diagnosis.limit_basis}; "
                f"the most latency: {diagnosis.latency_step}"
            )
        for change in diagnosis.what_if:
            at_load = "?" if change.predicted_throughput is None else f"{change.predicted_throughput:.0f}"
            most = "" if change.predicted_max is None else f", {change.predicted_max:.0f} with enough load"
            print(f"  if {change.change}: about {at_load} infer/s at this load{most}")
        for suggestion in diagnosis.suggestions:
            print(f"  - {suggestion}")


def unmeasured_line(unmeasured: Unmeasured) -> str:
    """Where the requests outside every window went, in one line (only what happened)."""
    parts = [
        (unmeasured.warmup, "warm-up"),
        (unmeasured.between_levels, "between levels"),
        (unmeasured.earlier_level, "sent at one level and answered at the next (not counted)"),
        (unmeasured.after_last_window, "after the last window"),
    ]
    shown = ", ".join(f"{count} {what}" for count, what in parts if count) or "none"
    return (
        f"Requests answered outside the windows: {shown}; {unmeasured.in_flight_at_stop} in flight when the load "
        f"stopped, {unmeasured.cancelled_at_stop} of them cancelled unanswered"
    )


def confidence_line(confidence: LevelConfidence) -> str:
    """A level's interval on throughput and upper bounds on its percentiles, in one line."""
    throughput = confidence.throughput
    parts = [
        f"{throughput[0]:.1f} to {throughput[1]:.1f} infer/s" if throughput else "one window: no throughput interval"
    ]
    parts += [f"{name} <= {bound.upper_bound} us" for name, bound in confidence.latency_us.items() if bound.enough]
    return f"at {confidence.level:.4g} confidence: " + ", ".join(parts)


def _shares(diagnosis: MixDiagnosis) -> str:
    return ", ".join(
        f"{share.step} {share.compute_share:.0%}"
        + (f" ({share.inflation:.1f}x its solo compute)" if share.inflation is not None else "")
        for share in diagnosis.steps
    )


def _bound(diagnosis: Diagnosis | None) -> str:
    """What bounds a level, in a few words."""
    if diagnosis is None:
        return "-"
    return f"step {diagnosis.name}" if diagnosis.bound == "step" else diagnosis.name


def _header(closed_loop: bool) -> tuple[str, ...]:
    return _CLOSED if closed_loop else _OPEN


def _settling(index: int) -> str:
    """The stability state after `index` windows of a level that is not stable yet."""
    from loadgen.measurement import STABILITY_WINDOWS

    if index < STABILITY_WINDOWS:
        return f"settling {index}/{STABILITY_WINDOWS}"
    return "not stable yet"


def step_table(level: LevelResult, title: str | None = None) -> Table:
    """Server-side time per step of one level, as perf_analyzer's "Server:" block, plus share and capacity."""
    from rich.table import Table

    assert level.server is not None
    table = Table(
        title=f"{title + ': ' if title else ''}Server breakdown at {_load(level)} ({level.throughput:.1f} infer/s, "
        f"client avg {level.latency_us.avg:.0f} us)",
        title_justify="left",
    )
    for column in ("step", "requests", "avg batch", "queue us", "input us", "infer us", "output us", "overhead us"):
        table.add_column(column, justify="left" if column == "step" else "right")
    table.add_column("share", justify="right")
    table.add_column("capacity/s", justify="right")
    table.add_column("busy", justify="right")
    total = level.server.request_us
    utilization = level.diagnosis.utilization if level.diagnosis else {}
    for depth, step in level.server.walk():
        table.add_row(
            "  " * depth + f"{step.model} v{step.version}",
            str(step.request_count),
            f"{step.avg_batch:.1f}",
            *(
                f"{v:.0f}"
                for v in (step.queue_us, step.compute_input_us, step.compute_infer_us, step.compute_output_us)
            ),
            f"{step.overhead_us:.0f}",
            f"{(step.queue_us + step.compute_us) / total:.0%}" if depth and total else "",
            f"{step.capacity:.0f}" if step.capacity else "",
            f"{utilization[step.model]:.0%}" if step.model in utilization else "",
        )
    return table


def _figure(metric: MetricChange, value: float) -> str:
    return f"{value:.1f}" if metric.metric == "throughput" else f"{value:.0f}"


def _significance(metric: MetricChange) -> str:
    if metric.shift is None:
        return f"untested: {metric.note}"
    return {1: "yes: higher", -1: "yes: lower"}.get(metric.shift, "no")


def comparison_table(comparison: Comparison) -> Table:
    """Each load both runs measured, each metric's change and whether it is significant at the confidence."""
    from rich.table import Table

    before, after = comparison.before, comparison.after
    table = Table(
        title=f"{before.model} -> {after.model}: significant at {comparison.confidence:.4g} confidence "
        "(throughput in infer/s, latencies in us)",
        title_justify="left",
    )
    for column in ("load", "metric", "base", "new", "change", "significant"):
        table.add_column(column, justify="left" if column in ("load", "metric", "significant") else "right")
    for level in comparison.levels:
        label = level.before.load_label + ("" if level.before.stable and level.after.stable else " (unstable)")
        for index, metric in enumerate(level.metrics):
            relative = metric.change
            table.add_row(
                label if index == 0 else "",
                metric.metric,
                _figure(metric, metric.before),
                _figure(metric, metric.after),
                "n/a" if relative is None else f"{relative:+.1%}",
                _significance(metric),
            )
    return table


def print_comparison(console: Console, comparison: Comparison, gates: list[Gate]) -> None:
    """The comparison's table, then each --fail-if threshold: crossed (where, by how much) or not."""
    console.print(comparison_table(comparison))
    for gate in gates:
        crossed = comparison.crossed(gate)
        if not crossed:
            console.print(f"pass {gate.text}: not crossed significantly at any load")
            continue
        where = "; ".join(f"{level.before.load_label} {metric.change:+.1%}" for level, metric in crossed)
        console.print(f"FAIL {gate.text}: {where} (significant)", style="bold red")


def _ms(stats: LatencyStats) -> str:
    return f"avg {stats.avg / 1000:.1f} ms, p99 {stats.p99 / 1000:.1f} ms"


def token_lines(tokens: TokenStats) -> list[str]:
    """A token-stream level in a few lines: first token, the gaps, tokens and their rates, goodput."""
    scheduled = tokens.time_to_first_token_from_schedule_us
    extra = (f"; goodput {tokens.goodput:.2f} requests/s" if tokens.goodput is not None else "") + (
        f"; {tokens.cancelled} cancelled on purpose" if tokens.cancelled else ""
    )
    if tokens.output_tokens_per_request.max == 0:  # embeddings: vectors come back, not tokens
        return [f"tokens: {tokens.input_tokens_per_request.avg:.1f} in per request, none out{extra}"]
    lines = [
        f"tokens: first token {_ms(tokens.time_to_first_token_us)}"
        + (f" (from the schedule {_ms(scheduled)})" if scheduled is not None else "")
        + f"; inter-token latency {_ms(tokens.inter_token_latency_us)}; gaps between events p99 "
        f"{tokens.inter_event_gap_us.p99 / 1000:.1f} ms",
        f"tokens: {tokens.output_tokens_per_request.avg:.1f} out and {tokens.input_tokens_per_request.avg:.1f} in per "
        f"request (counted by the {tokens.token_count_source}), {tokens.output_token_throughput:.1f} output tokens/s, "
        f"{tokens.output_token_throughput_per_user.p50:.0f} per user (median){extra}",
    ]
    counts = tokens.token_counts
    if counts is not None and counts.server != counts.tokenizer:
        lines.append(
            f"tokens: the server counted {counts.server} output tokens, the tokenizer {counts.tokenizer} over the same "
            "text"
        )
    return lines
