"""Plots of a result with matplotlib (no pyplot, no display needed): the latency-throughput curve, latency
percentiles per level, and each step's queue and compute time per level; for a token run, from its recorded
requests, the first token against the prompt's length, the gaps by token position, and a timeline of a few
requests' tokens."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from loadgen.errors import MissingExtraError, OptionError
from loadgen.outputs import write_file
from loadgen.reports.table import step_names, step_time

if TYPE_CHECKING:
    from loadgen.results import Experiment, LevelResult, ProfileResult, TokenRecord, TuneResult

try:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError:
    raise MissingExtraError("plots and the HTML report", "matplotlib", "report") from None

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
PERCENTILES = ("p50", "p90", "p95", "p99")


def _legend_beside(axes: Axes) -> None:
    """The legend to the right of the plot, out of the data's way."""
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _ms(us: float) -> float:
    return us / 1000


def _label(level: LevelResult) -> str:
    return f"{level.load:g}" if level.concurrency is not None else f"{level.load:g}/s"


def _axes(title: str, size: tuple[float, float] = (8, 4.5)) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=12)
    axes.grid(alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _load_axis(axes: Axes, result: ProfileResult) -> None:
    axes.set_xticks(range(len(result.levels)), [_label(level) for level in result.levels])
    axes.set_xlabel("concurrency (requests in flight)" if result.closed_loop else "request rate")


def curve(*runs: ProfileResult, labels: Sequence[str] = ()) -> Figure:
    """p99 latency against throughput, one point per level labelled with its load; several runs overlaid."""
    names = list(labels) or [run.model for run in runs]
    title = f"{runs[0].model}: p99 latency vs throughput" if len(runs) == 1 else "p99 latency vs throughput"
    figure, axes = _axes(title)
    for index, (name, run) in enumerate(zip(names, runs, strict=True)):
        x = [level.throughput for level in run.levels]
        y = [_ms(level.latency_us.p99) for level in run.levels]
        axes.plot(x, y, marker="o", color=_color(index), label=name)
        for level, px, py in zip(run.levels, x, y, strict=True):
            text = _label(level) + ("" if level.stable else " (unstable)")
            axes.annotate(text, (px, py), textcoords="offset points", xytext=(6, 4), fontsize=9, color=_color(index))
    labelled = "concurrency" if runs[0].closed_loop else "request rate"
    axes.set_xlabel(f"throughput (infer/s); points labelled with their {labelled}")
    axes.set_ylabel("p99 latency (ms)")
    axes.margins(0.1)  # room for the last point's label
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    if len(runs) > 1:
        axes.legend(frameon=False)
    return figure


def percentiles(result: ProfileResult) -> Figure:
    """Average and percentile latencies at each level."""
    figure, axes = _axes(f"{result.model}: latency per level")
    positions = range(len(result.levels))
    for index, name in enumerate(PERCENTILES):
        latencies = [_ms(getattr(level.latency_us, name)) for level in result.levels]
        axes.plot(positions, latencies, marker="o", color=_color(index), label=name)
    axes.plot(positions, [_ms(lv.latency_us.avg) for lv in result.levels], "k--", marker=".", label="avg")
    _load_axis(axes, result)
    axes.set_ylabel("latency (ms)")
    axes.set_ylim(bottom=0)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def steps(result: ProfileResult) -> Figure:
    """Per level, a bar of each step's queue (hatched) and compute time per request, stacked, beside the client's
    average latency."""
    figure, axes = _axes(f"{result.model}: server time per request, by step")
    positions = list(range(len(result.levels)))
    bottom = [0.0] * len(positions)
    diagnosis = result.diagnosis
    for index, name in enumerate(step_names(result)):
        limiting = diagnosis is not None and diagnosis.limiting_step == name
        marked = f"{name} (limits throughput)" if limiting else name
        for part in ("queue", "compute"):
            heights = [_ms(step_time(level, name, part) or 0.0) for level in result.levels]
            queue = part == "queue"
            axes.bar(
                positions,
                heights,
                bottom=bottom,
                width=0.6,
                color=_color(index),
                alpha=0.45 if queue else 1.0,
                hatch="//" if queue else None,
                edgecolor="white",
                label=f"{marked} {part}",
            )
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    client = [_ms(level.latency_us.avg) for level in result.levels]
    axes.scatter(
        positions, client, marker="_", s=900, linewidths=2, color="black", label="client avg latency", zorder=3
    )
    _load_axis(axes, result)
    axes.set_ylabel("time per request (ms)")
    _legend_beside(axes)
    return figure


def server_metrics(result: ProfileResult) -> Figure | None:
    """Over the run's time, the host's CPU (and each GPU's) utilisation, and each model's pending requests, from
    the server's metrics of every level's last windows; None without metrics."""
    levels = [level for level in result.levels if level.metrics is not None and level.metrics.samples]
    if not levels:
        return None
    start = min(level.metrics.samples[0].time_s for level in levels if level.metrics is not None)
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    busy, pending = figure.subplots(2, 1, sharex=True)
    busy.set_title(f"{result.model}: the server's host during each level's last windows", loc="left", fontsize=12)
    used: dict[str, list[tuple[float, float]]] = {}
    queued: dict[str, list[tuple[float, float]]] = {}
    for level in levels:
        assert level.metrics is not None
        for sample in level.metrics.samples:
            at = sample.time_s - start
            if sample.cpu_utilization is not None:
                used.setdefault("host CPU", []).append((at, sample.cpu_utilization * 100))
            for gpu in sample.gpus:
                if gpu.utilization is not None:
                    used.setdefault(gpu.uuid, []).append((at, gpu.utilization * 100))
            for entry in sample.pending:
                queued.setdefault(entry.model, []).append((at, entry.count))
        begins = level.metrics.samples[0].time_s - start
        busy.axvline(begins, color="#c9ced8", linewidth=0.8)
        busy.annotate(_label(level), (begins, 103), fontsize=8, color="#5b6475")
    for index, (name, points) in enumerate(used.items()):
        busy.plot(*zip(*points, strict=True), marker=".", color=_color(index), label=name)
    for index, (name, points) in enumerate(queued.items()):
        pending.plot(*zip(*points, strict=True), marker=".", drawstyle="steps-post", color=_color(index), label=name)
    busy.set_ylim(0, 112)
    busy.set_ylabel("utilisation (%)")
    pending.set_ylabel("pending requests")
    pending.set_xlabel("seconds since the first scrape")
    for axes in (busy, pending):
        axes.grid(alpha=0.3)
        axes.spines[["top", "right"]].set_visible(False)
        _legend_beside(axes)
    return figure


TIMELINE_REQUESTS = 8  # requests the token timeline shows


def _token_levels(result: ProfileResult) -> list[tuple[str, tuple[TokenRecord, ...]]]:
    """Each level's recorded token requests, with the level's label."""

    def label(experiment: Experiment) -> str:
        value = f"{experiment.value:g}"
        return f"concurrency {value}" if experiment.mode == "concurrency" else f"{value} requests/s"

    return [(label(experiment), experiment.tokens) for experiment in result.experiments if experiment.tokens]


def first_token_by_input(result: ProfileResult) -> Figure | None:
    """Each recorded request's time to first token against its prompt's length, one colour per level; None
    without token records."""
    levels = _token_levels(result)
    if not levels:
        return None
    figure, axes = _axes(f"{result.model}: time to first token vs input length")
    for index, (label, records) in enumerate(levels):
        axes.scatter(
            [record.input_tokens for record in records],
            [record.time_to_first_token_ns / 1e6 for record in records],
            s=12,
            alpha=0.6,
            color=_color(index),
            label=label,
        )
    axes.set_xlabel("input tokens")
    axes.set_ylabel("time to first token (ms)")
    axes.set_ylim(bottom=0)
    _legend_beside(axes)
    return figure


def gaps_by_position(result: ProfileResult) -> Figure | None:
    """Per level, the median gap between an event and the one before it at each position of the stream (event
    k: the gap before the k-th); None without token records."""
    levels = _token_levels(result)
    if not levels:
        return None
    figure, axes = _axes(f"{result.model}: inter-token latency by token position")
    for index, (label, records) in enumerate(levels):
        gaps: dict[int, list[float]] = {}
        for record in records:
            times = record.response_timestamps
            for position in range(1, len(times)):
                gaps.setdefault(position + 1, []).append((times[position] - times[position - 1]) / 1e6)
        positions = sorted(gaps)
        medians = [sorted(gaps[k])[len(gaps[k]) // 2] for k in positions]
        axes.plot(positions, medians, marker=".", color=_color(index), label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("token position in the stream (event k: the gap before it)")
    axes.set_ylabel("median gap (ms)")
    axes.set_ylim(bottom=0)
    _legend_beside(axes)
    return figure


def token_timeline(result: ProfileResult) -> Figure | None:
    """The last level's first recorded requests over time: each from its send to its end, a mark at each event
    (the first token larger); None without token records."""
    levels = _token_levels(result)
    if not levels:
        return None
    label, records = levels[-1]
    shown = sorted(records, key=lambda record: record.timestamp)[:TIMELINE_REQUESTS]
    origin = shown[0].timestamp
    figure, axes = _axes(f"{result.model}: tokens over time ({label}, {len(shown)} requests)")
    for row, record in enumerate(shown):
        times = [(at - origin) / 1e6 for at in record.response_timestamps]
        axes.hlines(row, (record.timestamp - origin) / 1e6, (record.end_timestamp - origin) / 1e6, color="#c9ced8")
        axes.plot(times[1:], [row] * (len(times) - 1), "|", markersize=9, color=_color(0))
        axes.plot(times[:1], [row], "o", markersize=6, color=_color(1))
    axes.set_yticks(range(len(shown)), [f"request {row + 1}" for row in range(len(shown))])
    axes.invert_yaxis()
    axes.set_xlabel("ms since the first request was sent (circle: first token; bars: the next ones)")
    return figure


KINDS: dict[str, Callable[[ProfileResult], Figure]] = {"curve": curve, "percentiles": percentiles, "steps": steps}


def mix_timeline(result: ProfileResult) -> Figure:
    """A mix window by window through the sweep: each model's throughput and p99 latency, one line per model."""
    figure = Figure(figsize=(9, 6), layout="constrained")
    rate_axes, latency_axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(f"{result.model}: each model, window by window", x=0.02, ha="left", fontsize=12)
    for index, model in enumerate(result.models):
        summaries = [summary for level in model.levels for summary in level.trend]
        windows = range(1, len(summaries) + 1)
        rate_axes.plot(windows, [s.throughput for s in summaries], color=_color(index), label=model.model)
        latency_axes.plot(windows, [_ms(s.p99_us) for s in summaries], color=_color(index), label=model.model)
    boundary = 0
    for level in result.levels[:-1]:  # where each level ends
        boundary += level.windows
        for axes in (rate_axes, latency_axes):
            axes.axvline(boundary + 0.5, color="#c9ced8", linewidth=1)
    rate_axes.set_ylabel("infer/s")
    latency_axes.set_ylabel("p99 latency (ms)")
    latency_axes.set_xlabel("window (levels separated by lines)")
    for axes in (rate_axes, latency_axes):
        axes.grid(alpha=0.3)
        axes.spines[["top", "right"]].set_visible(False)
    rate_axes.legend(frameon=False)
    return figure


def trials(result: TuneResult) -> Figure:
    """Throughput after each tuning trial: kept changes solid, reverted ones hollow; the line follows what was kept."""
    figure, axes = _axes(f"{result.model}: throughput per tuning trial")
    rates = [result.initial.throughput, *(trial.throughput for trial in result.trials)]
    kept = [True, *(trial.kept for trial in result.trials)]
    best = [rates[0]]
    for rate, keep in zip(rates[1:], kept[1:], strict=True):
        best.append(rate if keep else best[-1])
    axes.step(range(len(rates)), best, where="post", color=_color(0), label="configuration in force")
    for index, (rate, keep) in enumerate(zip(rates, kept, strict=True)):
        axes.plot(index, rate, marker="o", color=_color(0 if keep else 3), fillstyle="full" if keep else "none")
    axes.set_xticks(range(len(rates)), ["baseline", *(str(n) for n in range(1, len(rates)))])
    axes.set_xlabel("trial (hollow: reverted)")
    axes.set_ylabel("infer/s")
    return figure


def plot(result: ProfileResult, kind: str = "curve") -> Figure:
    """One of the result's plots: "curve" (p99 latency vs throughput), "percentiles" or "steps"."""
    if kind not in KINDS:
        raise OptionError(f"plot kind {kind!r}: choose {', '.join(KINDS)}")
    return KINDS[kind](result)


def png(figure: Figure, dpi: int = 120) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _show_in_notebooks() -> None:
    """Let IPython show these figures, made without pyplot, as `%matplotlib inline` would show pyplot's."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, png)


_show_in_notebooks()


def write_png(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """The latency-throughput curve as a PNG file (`--plot`)."""
    write_file(path, png(curve(result)))
