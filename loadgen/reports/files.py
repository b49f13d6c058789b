"""Result files: JSON (read back by `loadgen.load_result`), and perf_analyzer's CSV latency report."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.errors import LoadgenError
from loadgen.outputs import check_file, write_file
from loadgen.reports.profile_export import write_export
from loadgen.server.statistics import ServerFigures, StepTimes

if TYPE_CHECKING:
    from loadgen.results import LevelResult, ProfileResult


def write_json(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the result as JSON."""
    write_file(path, json.dumps(result.to_dict(), indent=2) + "\n")


_SERVER_COLUMNS = (
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
)
_CACHE_COLUMNS = ("Server Cache Hit", "Server Cache Miss")


def level_status(level: LevelResult) -> str:
    """How far a level's figures can be trusted: stable, unstable (never settled) or partial (the run stopped)."""
    if not level.complete:
        return "partial"
    return "stable" if level.stable else "unstable"


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _own(server: ServerFigures) -> StepTimes:
    """A model's own queue and compute times (an ensemble's own, not its steps' sums), as perf_analyzer writes them."""
    return server.own or StepTimes(
        server.queue_us, server.compute_input_us, server.compute_infer_us, server.compute_output_us
    )


def _server_cells(server: ServerFigures | None, cache: bool, wait_us: int) -> list[int]:
    """Network+Server Send/Recv (what the wait leaves beyond the server's queue and compute), then the server's own
    queue and compute times (and cache times), in whole microseconds."""
    if server is None:
        return [0] * (7 if cache else 5)
    own = _own(server)
    times = [int(t) for t in (own.queue_us, own.compute_input_us, own.compute_infer_us, own.compute_output_us)]
    if cache:
        times += [int(server.cache_hit_us), int(server.cache_miss_us)]
    return [max(wait_us - sum(times), 0), *times]


def write_csv(result: ProfileResult, path: str | os.PathLike[str], perf_analyzer: bool = False) -> list[Path]:
    """perf_analyzer's latency report, column for column: one row per level in order of throughput, plus
    `<model>_v<version>.<name>` beside it for each model an ensemble (or BLS model) calls directly.

    Times are whole microseconds. Client Send and Client Recv (and `request/response`, their sum) are loadgen's own:
    the time to hand a request to the socket, and from a response's first byte to its completion. With `perf_analyzer`, only
    perf_analyzer's reported levels are written (stable, under -l), and no file when there is none or the run ended
    with its "no valid requests" error; otherwise every level, and a last column, Status, says whether a row is
    stable, unstable or partial.
    """
    from loadgen.reports.perf_analyzer import ended_without_requests, number, percentiles
    from loadgen.server.metrics import CSV_COLUMNS, csv_cells

    settings = result.settings
    levels = sorted(result.reported if perf_analyzer else result.levels, key=lambda level: level.throughput)
    target = Path(path)
    if not levels or (perf_analyzer and ended_without_requests(result)):
        return []
    streaming = any(level.response_throughput is not None for level in levels)
    with_server = any(level.server is not None for level in levels)
    cache = any(level.server is not None and _cached(level.server) for level in levels)
    verbose = bool(settings.get("verbose_csv"))
    metrics = verbose and bool(settings.get("collect_metrics"))
    average = verbose and levels[0].percentile is None
    client = ["Concurrency" if result.closed_loop else "Request Rate", "Inferences/Second"]
    client += ["Response Throughput"] if streaming else []
    server_columns = [*_SERVER_COLUMNS, *(_CACHE_COLUMNS if cache else ())] if with_server else []
    header = [*client, "Client Send", *server_columns, "Client Recv"]
    header += [f"p{p} latency" for p, _ in percentiles(levels[0])]
    header += ["Avg latency"] * average + ["request/response", "response wait"] * verbose
    header += list(CSV_COLUMNS) * metrics
    tokens = not perf_analyzer and any(level.tokens is not None for level in levels)
    header += list(TOKEN_COLUMNS) * tokens
    bounded = [] if perf_analyzer else _bounded(levels)
    header += [] if perf_analyzer else [*CONFIDENCE_COLUMNS, *(f"{name} latency bound" for name in bounded), SHORT]
    header += ["Status"] * (not perf_analyzer)
    rows: list[list[object]] = []
    per_model: dict[str, list[list[object]]] = {}
    for level in levels:
        send, recv, avg = int(level.client_send_us), int(level.client_recv_us), int(level.latency_us.avg)
        load = level.concurrency if level.concurrency is not None else number(level.request_rate or 0.0)
        row: list[object] = [load, number(level.throughput)]
        row += [number(level.response_throughput or 0.0)] if streaming else []
        row += [send, *(_server_cells(level.server, cache, avg - send - recv) if with_server else []), recv]
        row += [value for _, value in percentiles(level)]
        row += [avg] * average + [send + recv, avg - send - recv] * verbose
        if metrics:
            row += list(csv_cells(level.metrics)) if level.metrics is not None else [""] * len(CSV_COLUMNS)
        row += _token_cells(level) if tokens else []
        row += [] if perf_analyzer else _confidence_cells(level, bounded)
        rows.append(row + [level_status(level)] * (not perf_analyzer))
        top = level.server
        for step in top.composing if top is not None else ():
            share = step.request_count / top.request_count if top is not None and top.request_count else 0.0
            step_wait = int(step.request_us)
            cells = _server_cells(step, cache, step_wait)
            step_row: list[object] = [load, number(level.throughput * share), 0, *cells, 0]
            per_model.setdefault(f"{step.model}_v{step.version}", []).append(
                step_row + [level_status(level)] * (not perf_analyzer)
            )
    write_file(target, _csv_text(header, rows))
    written = [target]
    for model in result.models:  # a mix: each model's own report beside it (and its composing models')
        written += write_csv(
            result.of_model(model.model), target.with_name(f"{model.model}.{target.name}"), perf_analyzer
        )
    composing_header = [*client[:2], "Client Send", *server_columns, "Client Recv"] + ["Status"] * (not perf_analyzer)
    for name, model_rows in per_model.items():
        composing = target.with_name(f"{name}.{target.name}")
        write_file(composing, _csv_text(composing_header, model_rows))
        written.append(composing)
    return written


# a token run's figures (`loadgen.tokens`): times in whole microseconds, tokens and rates per request or second
TOKEN_COLUMNS = (
    "Time To First Token avg",
    "Time To First Token p50",
    "Time To First Token p90",
    "Time To First Token p99",
    "Inter Token Latency avg",
    "Inter Token Latency p50",
    "Inter Token Latency p90",
    "Inter Token Latency p99",
    "Inter Event Gap p99",
    "Output Tokens Per Request",
    "Input Tokens Per Request",
    "Output Token Throughput",
    "Output Token Throughput Per User",
    "Goodput",
    "Token Count Source",
)


def _token_cells(level: LevelResult) -> list[object]:
    """A level's token figures under TOKEN_COLUMNS; empty cells for a level without them (Goodput: without
    --goodput)."""
    from loadgen.reports.perf_analyzer import number

    tokens = level.tokens
    if tokens is None:
        return [""] * len(TOKEN_COLUMNS)
    ttft, itl = tokens.time_to_first_token_us, tokens.inter_token_latency_us
    return [
        *(int(value) for value in (ttft.avg, ttft.p50, ttft.p90, ttft.p99, itl.avg, itl.p50, itl.p90, itl.p99)),
        tokens.inter_event_gap_us.p99,
        number(tokens.output_tokens_per_request.avg),
        number(tokens.input_tokens_per_request.avg),
        number(tokens.output_token_throughput),
        number(tokens.output_token_throughput_per_user.avg),
        "" if tokens.goodput is None else number(tokens.goodput),
        tokens.token_count_source,
    ]


CONFIDENCE_COLUMNS = ("Confidence", "Inferences/Second Low", "Inferences/Second High")
SHORT = "Too Few Samples"  # the percentiles a level cannot bound at the confidence, and the samples each needs


def _bounded(levels: Sequence[LevelResult]) -> list[str]:
    """The percentiles the levels bound ("p50", ...), as the first level with confidence figures lists them."""
    return next((list(level.confidence.latency_us) for level in levels if level.confidence is not None), [])


def _confidence_cells(level: LevelResult, names: Sequence[str]) -> list[object]:
    """The confidence, the throughput's interval, each percentile's upper bound (empty: too few samples) and
    which percentiles need more samples, with how many; empty cells for a level without confidence figures."""
    confidence = level.confidence
    if confidence is None:
        return [""] * (len(CONFIDENCE_COLUMNS) + len(names) + 1)
    interval = [f"{value:.6g}" for value in confidence.throughput] if confidence.throughput else ["", ""]
    bounds = [confidence.latency_us[name].upper_bound if name in confidence.latency_us else None for name in names]
    short = "; ".join(f"{name} needs {bound.samples_needed}" for name, bound in confidence.too_few().items())
    return [f"{confidence.level:g}", *interval, *("" if bound is None else bound for bound in bounds), short]


def _cached(server: ServerFigures) -> bool:
    """Whether the response cache is on for the model or any model it calls."""
    return server.response_cache or any(_cached(step) for step in server.composing)


@dataclass(frozen=True)
class ReportFile:
    """One output file a run was asked for: its flag, its path, and how it is written from a result."""

    flag: str
    path: str
    write: Callable[[ProfileResult, str], object]


def _html(result: ProfileResult, path: str) -> None:
    from loadgen.reports.html import write_html

    write_html(result, path)


def _png(result: ProfileResult, path: str) -> None:
    from loadgen.reports.plot import write_png

    write_png(result, path)


def report_files(
    json_path: str | None = None,
    csv_path: str | None = None,
    html_path: str | None = None,
    png_path: str | None = None,
    export_path: str | None = None,
    perf_analyzer: bool = False,
) -> list[ReportFile]:
    """The files asked for, each checked writable now (one-line OptionError), before anything is measured; with
    `perf_analyzer`, the CSV holds perf_analyzer's reported levels only."""
    files = [
        ReportFile(flag, path, write)
        for flag, path, write in (
            ("--json", json_path, write_json),
            ("-f", csv_path, functools.partial(write_csv, perf_analyzer=perf_analyzer)),
            ("--html", html_path, _html),
            ("--plot", png_path, _png),
            ("--profile-export-file", export_path, write_export),
        )
        if path
    ]
    for file in files:
        check_file(file.path, file.flag)
    return files


def write_reports(result: ProfileResult, files: Sequence[ReportFile]) -> list[str]:
    """Write every file; one that fails does not stop the others. The failures, one line each."""
    failures = []
    for file in files:
        try:
            file.write(result, file.path)
        except (OSError, LoadgenError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            failures.append(f"{file.flag} {file.path}: not written: {reason}")
    return failures
