"""Result files: JSON (read back by `loadgen.load_result`), and perf_analyzer's CSV latency report."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.errors import LoadgenError
from loadgen.outputs import check_file, write_file

if TYPE_CHECKING:
    from loadgen.results import LevelResult, ProfileResult
    from loadgen.server.statistics import ServerFigures


def write_json(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the result as JSON."""
    write_file(path, json.dumps(result.to_dict(), indent=2) + "\n")


_CSV_SERVER = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv")
_CSV_PERCENTILES = ("p50 latency", "p90 latency", "p95 latency", "p99 latency")


def _client_columns(closed_loop: bool) -> tuple[str, ...]:
    first = "Concurrency" if closed_loop else "Request Rate"
    return (first, "Inferences/Second", "Client Send", "Network+Server Send/Recv")


def _server_cells(server: ServerFigures | None) -> list[float]:
    if server is None:
        return [0, 0, 0, 0]
    return [
        round(v) for v in (server.queue_us, server.compute_input_us, server.compute_infer_us, server.compute_output_us)
    ]


def level_status(level: LevelResult) -> str:
    """How far a level's figures can be trusted: stable, unstable (never settled) or partial (the run stopped)."""
    if not level.complete:
        return "partial"
    return "stable" if level.stable else "unstable"


def _csv_text(header: tuple[str, ...], rows: Sequence[Sequence[float | str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(result: ProfileResult, path: str | os.PathLike[str]) -> list[Path]:
    """perf_analyzer's latency report: one row per level, plus `<model>_v<version>.<name>` per composing model.

    loadgen serialises requests before the run and does not decode responses, so Client Send and Client Recv
    are 0; Network+Server Send/Recv is the client's average latency minus the server's queue and compute time.
    The composing models' files sit beside the main file (perf_analyzer puts them in the working directory). A last
    column, Status, says whether a row is stable, unstable or partial (perf_analyzer writes stable rows only).
    """
    target = Path(path)
    header = _client_columns(result.closed_loop)
    rows: list[list[float | str]] = []
    per_model: dict[str, list[list[float | str]]] = {}
    for level in result.levels:
        server = _server_cells(level.server)
        network = max(round(level.latency_us.avg) - sum(server), 0)
        lat = level.latency_us
        status = level_status(level)
        rows.append(
            [level.load, round(level.throughput, 2), 0, network, *server, 0, lat.p50, lat.p90, lat.p95, lat.p99, status]
        )
        if level.server is None:
            continue
        for depth, step in level.server.walk():
            if depth:
                rate = round(step.inference_count / level.duration_s, 2) if level.duration_s else 0.0
                per_model.setdefault(f"{step.model}_v{step.version}", []).append(
                    [level.load, rate, 0, 0, *_server_cells(step), 0, status]
                )
    write_file(target, _csv_text(header + _CSV_SERVER + _CSV_PERCENTILES + ("Status",), rows))
    written = [target]
    for name, model_rows in per_model.items():
        composing = target.with_name(f"{name}.{target.name}")
        write_file(composing, _csv_text(header + _CSV_SERVER + ("Status",), model_rows))
        written.append(composing)
    return written


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
    json_path: str | None = None, csv_path: str | None = None, html_path: str | None = None, png_path: str | None = None
) -> list[ReportFile]:
    """The files asked for, each checked writable now (one-line OptionError), before anything is measured."""
    files = [
        ReportFile(flag, path, write)
        for flag, path, write in (
            ("--json", json_path, write_json),
            ("-f", csv_path, write_csv),
            ("--html", html_path, _html),
            ("--plot", png_path, _png),
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
