"""The tables of a run: the sweep table (one row per level, its columns read from the result) as data and as HTML,
the verdict, and a comparison of two runs; the HTML carries inline styles, so that notebooks show it as the report."""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadgen.comparison import Comparison
    from loadgen.results import LevelResult, Measurement, ProfileResult


Value = float | int | str | bool | None
# Inline styles, so that a notebook shows the tables as the report page does.
UNSTABLE = 'style="color: #b3261e"'
TABLE = 'class="sweep" style="white-space: nowrap"'


@dataclass(frozen=True)
class Column:
    """One column: its name in a dataframe, its header in a table, and how a level's figure is read and shown."""

    key: str
    header: str
    value: Callable[[LevelResult], Value]
    spec: str = ""  # format spec for display
    group: str = ""  # a heading over several columns (a step's name)

    def text(self, level: LevelResult) -> str:
        value = self.value(level)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return format(value, self.spec)


def step_names(result: ProfileResult) -> list[str]:
    """The models that do the work (an ensemble's steps, or the model itself), in order, over all levels."""
    names: dict[str, None] = {}
    for level in result.levels:
        if level.server is not None:
            names.update((step.model, None) for step in level.server.leaves())
    return list(names)


def step_time(level: LevelResult, model: str, part: str) -> float | None:
    """A step's queue or compute time per request at a level, in microseconds."""
    if level.server is None:
        return None
    step = next((s for s in level.server.leaves() if s.model == model), None)
    if step is None:
        return None
    return step.queue_us if part == "queue" else step.compute_us


def _latency(name: str) -> Callable[[LevelResult], Value]:
    return lambda level: getattr(level.latency_us, name)


def _step(model: str, part: str) -> Callable[[LevelResult], Value]:
    return lambda level: step_time(level, model, part)


def columns(result: ProfileResult) -> list[Column]:
    """The sweep table's columns for this result's load mode, steps and options."""
    closed = result.closed_loop
    table = [
        Column("concurrency", "concurrency", lambda lv: lv.concurrency)
        if closed
        else Column("request_rate", "req/s", lambda lv: lv.request_rate, "g"),
        Column("throughput", "infer/s", lambda lv: lv.throughput, ".1f"),
    ]
    if not closed:
        table.append(Column("send_rate", "sent/s", lambda lv: lv.send_rate, ".1f"))
    table += [Column(f"{name}_us", f"{name} us", _latency(name), ".0f") for name in ("avg", "p50", "p90", "p95", "p99")]
    table.append(Column("max_us", "max us", _latency("max")))
    if any(level.percentile_us is not None for level in result.levels):
        table.append(Column("percentile_us", f"p{result.levels[0].percentile} us", lambda lv: lv.percentile_us))
    if not closed:
        table += [
            Column(
                "service_p99_us", "svc p99 us", lambda lv: lv.service_latency_us.p99 if lv.service_latency_us else None
            ),
            Column("send_lag_p99_us", "lag p99 us", lambda lv: lv.send_lag_us.p99 if lv.send_lag_us else None),
            Column("delayed_share", "late", lambda lv: lv.delayed_share, ".1%"),
        ]
    table += [
        Column("request_count", "requests", lambda lv: lv.request_count),
        Column("error_count", "errors", lambda lv: lv.error_count),
        Column("stable", "stable", lambda lv: lv.stable),
    ]
    for name in step_names(result):
        table += [
            Column(f"{name}.queue_us", "queue us", _step(name, "queue"), ".0f", group=name),
            Column(f"{name}.compute_us", "compute us", _step(name, "compute"), ".0f", group=name),
        ]
    table.append(Column("bottleneck", "limiting step", lambda lv: lv.bottleneck.name if lv.bottleneck else None))
    table.append(Column("bound", "bound", lambda lv: lv.diagnosis.name if lv.diagnosis else None))
    table.append(
        Column(
            "predicted_max",
            "limit infer/s",
            lambda lv: lv.diagnosis.predicted_max_throughput if lv.diagnosis else None,
            ".0f",
        )
    )
    return table


def _html(head: list[tuple[str, str]], rows: list[tuple[list[str], bool]]) -> str:
    """An HTML table from (group, header) pairs, with a row of groups over their columns when there are groups,
    and rows of cell texts (False marks a row as unstable)."""
    headers = "".join(f"<th>{html.escape(header)}</th>" for _, header in head)
    groups = "".join(
        f'<th colspan="{len(list(members))}" class="group">{html.escape(group)}</th>'
        for group, members in itertools.groupby(head, key=lambda pair: pair[0])
    )
    top = f"<tr>{groups}</tr>" if any(group for group, _ in head) else ""
    body = "".join(
        f"<tr{'' if stable else ' ' + UNSTABLE}>{''.join(f'<td>{html.escape(c)}</td>' for c in cells)}</tr>"
        for cells, stable in rows
    )
    return f"<table {TABLE}><thead>{top}<tr>{headers}</tr></thead><tbody>{body}</tbody></table>"


def html_table(result: ProfileResult) -> str:
    """The sweep table as an HTML table; unstable levels are marked."""
    table = columns(result)
    rows = [([column.text(level) for column in table], level.stable) for level in result.levels]
    return _html([(column.group, column.header) for column in table], rows)


def _bound_text(level: LevelResult, name: str) -> str:
    """A percentile's upper bound at the level's confidence, or the samples it needs for one."""
    bound = level.confidence.latency_us.get(name) if level.confidence is not None else None
    if bound is None:
        return ""
    return str(bound.upper_bound) if bound.upper_bound is not None else f"too few: needs {bound.samples_needed}"


def confidence_html(result: ProfileResult) -> str:
    """Each level's figures with their confidence: the interval on its throughput and the upper bound on each
    percentile, or how many samples a percentile needs for one; empty for a result without them."""
    judged = [(level, confidence) for level in result.levels if (confidence := level.confidence) is not None]
    if not judged:
        return ""
    names = list(dict.fromkeys(name for _, confidence in judged for name in confidence.latency_us))
    head = [("", "load"), ("", "infer/s interval"), ("", "requests"), *(("", f"{name} bound us") for name in names)]
    rows = []
    for level, confidence in judged:
        interval = confidence.throughput
        cells = [
            level.load_label,
            f"{interval[0]:.1f} \u2013 {interval[1]:.1f}" if interval else "one window",
            str(level.request_count),
            *(_bound_text(level, name) for name in names),
        ]
        rows.append((cells, level.stable and not confidence.too_few()))
    return _html(head, rows)


def verdict_html(result: ProfileResult) -> str:
    """The diagnosis where the model was pushed hardest: what bounds throughput, why, the limit, what to change
    and what each change would give."""
    diagnosis = result.diagnosis
    if diagnosis is None:
        return '<p class="verdict">No diagnosis: the server reported no requests for the model.</p>'
    paragraphs = [
        f"<p><strong>Bound: {html.escape(diagnosis.name)}</strong> ({diagnosis.bound})</p>",
        f"<p>{html.escape(diagnosis.reason)}</p>",
    ]
    if diagnosis.predicted_max_throughput is not None:
        paragraphs.append(
            f"<p>Throughput limit: about {diagnosis.predicted_max_throughput:.0f} infer/s, "
            f"{html.escape(diagnosis.limit_basis)}; the most latency: {html.escape(str(diagnosis.latency_step))}</p>"
        )
    changes = "".join(
        f"<li>if {html.escape(change.change)}: about {_number(change.predicted_throughput, '.0f')} infer/s</li>"
        for change in diagnosis.what_if
    )
    suggestions = "".join(f"<li>{html.escape(suggestion)}</li>" for suggestion in diagnosis.suggestions)
    return f'<div class="verdict">{"".join(paragraphs)}<ul>{changes}{suggestions}</ul></div>'


def summary_html(result: ProfileResult) -> str:
    """What a notebook shows for a result: the model and mode, the sweep table, and the verdict."""
    stable = "" if result.stable else f"; <span {UNSTABLE}>a level did not reach a stable measurement</span>"
    return (
        f"<div><p><strong>{html.escape(result.model)}</strong> at {html.escape(result.url)}, "
        f"{html.escape(result.mode.replace('_', ' '))} sweep of {len(result.levels)} levels{stable}</p>"
        f"{html_table(result)}{verdict_html(result)}</div>"
    )


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(level: LevelResult) -> str:
    return level.bottleneck.name if level.bottleneck else "-"


def _change(value: float | None) -> str:
    return "" if value is None else f"{value:+.0%}"


def comparison_html(comparison: Comparison) -> str:
    """Before and after, load by load: throughput, p99, each step's queue and compute time, and the verdicts."""
    names = list(dict.fromkeys(step_names(comparison.before) + step_names(comparison.after)))
    head = [("", "load"), ("", "infer/s"), ("", "change"), ("", "p99 us"), ("", "change")]
    head += [(name, header) for name in names for header in ("queue us", "compute us")]
    head.append(("", "bottleneck"))
    rows = []
    for level in comparison.levels:
        pair = (level.before, level.after)
        cells = [
            f"{level.load:g}",
            " \u2192 ".join(_number(lv.throughput, ".1f") for lv in pair),
            _change(level.throughput_change),
            " \u2192 ".join(_number(lv.latency_us.p99, "d") for lv in pair),
            _change(level.p99_change),
        ]
        for name in names:
            for part in ("queue", "compute"):
                cells.append(" \u2192 ".join(_number(step_time(lv, name, part), ".0f") for lv in pair))
        cells.append(" \u2192 ".join(_verdict(lv) for lv in pair))
        rows.append((cells, level.before.stable and level.after.stable))
    summary = "<br>".join(html.escape(line) for line in str(comparison).splitlines()[:2])
    return f"<div><p>{summary}</p>{_html(head, rows)}</div>"


def model_cell(part: Measurement) -> str:
    """One model's figures in a mix's measurement: its load, throughput, p99 against its budget, and its bound."""
    p99 = f"p99 {part.p99_us / 1000:.1f} ms"
    if part.budget_ms is not None:
        p99 += f" ({'over' if part.over_budget else 'within'} {part.budget_ms:g})"
    return f"at {part.load:.4g}: {part.throughput:.1f} infer/s, {p99}, bound {part.bottleneck}"
