"""AIPerf's summary files for a token run (`profile_export_aiperf.json` and `.csv`), written beside the profile
export so that scripts and dashboards made for AIPerf (or GenAI-Perf, whose files AIPerf's follow) read loadgen's.

Each file is one load level, as an AIPerf run is: `<export stem>_aiperf.json` and `.csv` hold the sweep's last level
(a run of one level: that level); a sweep of several levels also writes each level's pair as
`<export stem>_concurrency<N>_aiperf.*` (`_request_rate<R>_` in an open loop). The figures are the level's
`TokenStats`, in AIPerf 0.x's names and units: times in ms, each record metric's avg, min, max, p1 to p99 and std,
then the metrics of one value (throughputs, counts, goodput). In the CSV, as AIPerf writes it, the record metrics
come first (`Metric,avg,min,max,p1,...,std`), a blank line, then `Metric,Value`; rows by metric tag; numbers with
two decimals.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.measurement import LatencyStats
from loadgen.outputs import write_file
from loadgen.tokens import MorePercentiles, TokenStats

if TYPE_CHECKING:
    from loadgen.results import LevelResult, ProfileResult

STATS = ("avg", "min", "max", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "std")  # the CSV's order
_JSON_ORDER = ("avg", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "min", "max", "std")
_BARE_UNITS = ("requests",)  # units AIPerf leaves out of a CSV row's name


@dataclass(frozen=True)
class RecordMetric:
    """A per-request metric as AIPerf names it, and the TokenStats figure (key, scale to AIPerf's unit) it is."""

    tag: str
    header: str
    unit: str
    key: str  # TokenStats' field
    divisor: int = 1  # from loadgen's unit to AIPerf's


RECORD_METRICS = (
    RecordMetric("request_latency", "Request Latency", "ms", "request_latency_us", 1000),
    RecordMetric("time_to_first_token", "Time to First Token", "ms", "time_to_first_token_us", 1000),
    RecordMetric("time_to_second_token", "Time to Second Token", "ms", "time_to_second_token_us", 1000),
    RecordMetric("inter_token_latency", "Inter Token Latency", "ms", "inter_token_latency_us", 1000),
    RecordMetric("inter_chunk_latency", "Inter Chunk Latency", "ms", "inter_event_gap_us", 1000),
    RecordMetric("output_sequence_length", "Output Sequence Length", "tokens", "output_tokens_per_request"),
    RecordMetric("input_sequence_length", "Input Sequence Length", "tokens", "input_tokens_per_request"),
    RecordMetric(
        "output_token_throughput_per_user",
        "Output Token Throughput Per User",
        "tokens/sec/user",
        "output_token_throughput_per_user",
    ),
)


@dataclass(frozen=True)
class ValueMetric:
    """A metric of one value per run as AIPerf names it, and how a level gives it (None: not in this run)."""

    tag: str
    header: str
    unit: str
    value: Callable[[LevelResult, TokenStats], float | None]


VALUE_METRICS = (
    ValueMetric("request_throughput", "Request Throughput", "requests/sec", lambda level, t: t.request_throughput),
    ValueMetric(
        "output_token_throughput", "Output Token Throughput", "tokens/sec", lambda level, t: t.output_token_throughput
    ),
    ValueMetric("request_count", "Request Count", "requests", lambda level, t: float(level.request_count)),
    ValueMetric("benchmark_duration", "Benchmark Duration", "sec", lambda level, t: level.duration_s),
    ValueMetric("goodput", "Goodput", "requests/sec", lambda level, t: t.goodput),
    ValueMetric(
        "good_request_count",
        "Good Request Count",
        "requests",
        lambda level, t: None if t.goodput is None else float(round(t.goodput * level.duration_s)),
    ),
    ValueMetric(
        "error_request_count",
        "Error Request Count",
        "requests",
        lambda level, t: float(level.error_count) if level.error_count else None,
    ),
)


def record_stats(metric: RecordMetric, tokens: TokenStats) -> dict[str, float]:
    """A record metric's statistics in AIPerf's unit, by AIPerf's names."""
    stats: LatencyStats = getattr(tokens, metric.key)
    more = tokens.more_percentiles.get(metric.key, MorePercentiles(0, 0, 0, 0, 0))
    values = {
        "avg": stats.avg,
        "min": stats.min,
        "max": stats.max,
        "p1": more.p1,
        "p5": more.p5,
        "p10": more.p10,
        "p25": more.p25,
        "p50": stats.p50,
        "p75": more.p75,
        "p90": stats.p90,
        "p95": stats.p95,
        "p99": stats.p99,
        "std": stats.stddev,
    }
    return {name: float(values[name]) / metric.divisor for name in _JSON_ORDER}


def summary(result: ProfileResult, level: LevelResult) -> dict[str, Any]:
    """A token level as AIPerf's `profile_export_aiperf.json`: each metric's unit and statistics, the errors, and
    what was run (AIPerf's `input_config`, in part)."""
    tokens = level.tokens
    assert tokens is not None
    document: dict[str, Any] = {}
    for metric in RECORD_METRICS:
        document[metric.tag] = {"unit": metric.unit, **record_stats(metric, tokens)}
    for value_metric in VALUE_METRICS:
        value = value_metric.value(level, tokens)
        document[value_metric.tag] = None if value is None else {"unit": value_metric.unit, "avg": value}
    settings = result.settings
    load = {"concurrency": level.concurrency} if level.concurrency is not None else {"request_rate": level.request_rate}
    document |= {
        "was_cancelled": not level.complete,
        "error_summary": [
            {"error_details": {"message": message}, "count": count} for message, count in level.errors.items()
        ],
        "input_config": {
            "endpoint": {
                "model_names": [result.model],
                "type": settings.get("endpoint_type") or "kserve",
                "streaming": bool(settings.get("streaming")),
                "url": result.url,
            },
            "loadgen": load,
        },
    }
    return document


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _name(header: str, unit: str) -> str:
    return header if unit in _BARE_UNITS else f"{header} ({unit})"


def summary_csv(level: LevelResult) -> str:
    """A token level as AIPerf's `profile_export_aiperf.csv`."""
    tokens = level.tokens
    assert tokens is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Metric", *STATS])
    for metric in sorted(RECORD_METRICS, key=lambda metric: metric.tag):
        stats = record_stats(metric, tokens)
        writer.writerow([_name(metric.header, metric.unit), *(_number(stats[name]) for name in STATS)])
    writer.writerow([])
    writer.writerow(["Metric", "Value"])
    for value_metric in sorted(VALUE_METRICS, key=lambda metric: metric.tag):
        value = value_metric.value(level, tokens)
        if value is not None:
            writer.writerow([_name(value_metric.header, value_metric.unit), _number(value)])
    return buffer.getvalue()


def _level_name(level: LevelResult) -> str:
    return f"concurrency{level.concurrency}" if level.concurrency is not None else f"request_rate{level.load:g}"


def write_summaries(result: ProfileResult, export: str | os.PathLike[str]) -> list[Path]:
    """AIPerf's files beside a token run's profile export (see the module); none for another run, or when the
    export went to a device or a pipe rather than a file."""
    target = Path(export)
    levels = [level for level in result.levels if level.tokens is not None]
    if not levels or not target.is_file():
        return []
    named = [(f"{target.stem}_aiperf", levels[-1])]
    if len(levels) > 1:
        named += [(f"{target.stem}_{_level_name(level)}_aiperf", level) for level in levels]
    written = []
    for stem, level in named:
        for path, text in (
            (target.with_name(f"{stem}.json"), json.dumps(summary(result, level), indent=2) + "\n"),
            (target.with_name(f"{stem}.csv"), summary_csv(level)),
        ):
            write_file(path, text)
            written.append(path)
    return written
