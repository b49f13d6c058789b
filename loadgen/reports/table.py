"""The sweep table: one row per level, its columns read from the result; as data, and as HTML with the verdict."""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.results import LevelResult, ProfileResult

Value = float | int | str | bool | None


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
    closed = result.mode == "concurrency"
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
    table.append(Column("bottleneck", "bottleneck", lambda lv: lv.bottleneck.name if lv.bottleneck else None))
    return table


def _head(table: list[Column]) -> str:
    """Header rows: step names over their columns when there are steps, then the column headers."""
    headers = "".join(f"<th>{html.escape(column.header)}</th>" for column in table)
    if not any(column.group for column in table):
        return f"<tr>{headers}</tr>"
    groups = "".join(
        f'<th colspan="{len(list(members))}" class="group">{html.escape(group)}</th>'
        for group, members in itertools.groupby(table, key=lambda column: column.group)
    )
    return f"<tr>{groups}</tr><tr>{headers}</tr>"


def html_table(result: ProfileResult) -> str:
    """The sweep table as an HTML table; unstable levels are marked."""
    table = columns(result)
    head = _head(table)
    rows = []
    for level in result.levels:
        cells = "".join(f"<td>{html.escape(column.text(level))}</td>" for column in table)
        rows.append(f"<tr{'' if level.stable else ' class=unstable'}>{cells}</tr>")
    return f'<table class="sweep"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def verdict_html(result: ProfileResult) -> str:
    """The bottleneck verdict: which step, why, and what to change."""
    verdict = result.bottleneck
    if verdict is None:
        return '<p class="verdict">No verdict: the server reported no requests for the model.</p>'
    suggestions = "".join(f"<li>{html.escape(suggestion)}</li>" for suggestion in verdict.suggestions)
    return (
        f'<div class="verdict"><p><strong>Bottleneck: {html.escape(verdict.name)}</strong> '
        f"({verdict.share:.0%} of the time)</p><p>{html.escape(verdict.reason)}</p><ul>{suggestions}</ul></div>"
    )


def summary_html(result: ProfileResult) -> str:
    """What a notebook shows for a result: the model and mode, the sweep table, and the verdict."""
    stable = "" if result.stable else '; <span class="unstable">a level did not reach a stable measurement</span>'
    return (
        f"<div><p><strong>{html.escape(result.model)}</strong> at {html.escape(result.url)}, "
        f"{html.escape(result.mode.replace('_', ' '))} sweep of {len(result.levels)} levels{stable}</p>"
        f"{html_table(result)}{verdict_html(result)}</div>"
    )
