"""Reports: the console table while a sweep runs, and the JSON file; all read the same result object."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loadgen.analysis import Bottleneck
from loadgen.measurement import WindowSummary
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server_stats import ServerFigures
from loadgen.settings import Settings
from loadgen.transport import ModelInfo

_COLUMNS = ("concurrency", "infer/s", "avg us", "p50 us", "p90 us", "p95 us", "p99 us", "errors", "stable")
_WIDTHS = (11, 10, 9, 9, 9, 9, 9, 7, 7)


def make_console(stderr: bool = False) -> Console:
    """A console that does not wrap lines, and is wide enough for the tables when output is not a terminal."""
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if probe.is_terminal else 160)


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, _WIDTHS, strict=True))


class ConsoleProgress:
    """Prints the level table row by row as the sweep runs; with `verbose`, every window too."""

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self.console = console or make_console()
        self.verbose = verbose

    def started(self, model: ModelInfo, inputs: tuple[InputDescription, ...], settings: Settings) -> None:
        sent = ", ".join(f"{i.name} {i.datatype} {list(i.shape)}" for i in inputs)
        self.console.print(f"Profiling [bold]{model.name}[/] at {settings.url}; inputs: {sent}")
        self.console.print(
            f"Windows of {settings.measurement_interval} ms, stable within {settings.stability_percentage:g}% "
            f"over 3 windows, at most {settings.max_trials} windows per level"
        )
        self.console.print(_row(_COLUMNS), style="bold")

    def window(self, concurrency: int, index: int, summary: WindowSummary, stable: bool) -> None:
        if self.verbose:
            self.console.print(
                f"  concurrency {concurrency} window {index}: {summary.throughput:.1f} infer/s, "
                f"avg {summary.avg_latency_us:.0f} us, {summary.request_count} requests, "
                f"{summary.error_count} errors{', stable' if stable else ''}"
            )

    def level(self, level: LevelResult) -> None:
        lat = level.latency_us
        cells = (
            str(level.concurrency),
            f"{level.throughput:.1f}",
            f"{lat.avg:.0f}",
            *(str(v) for v in (lat.p50, lat.p90, lat.p95, lat.p99, level.error_count)),
            "yes" if level.stable else "NO",
        )
        self.console.print(_row(cells), style=None if level.stable else "red")
        for description, count in list(level.errors.items())[:3]:
            self.console.print(f"    {count} x {description}", style="yellow")

    def finished(self, result: ProfileResult) -> None:
        """After the sweep: the per-step breakdown where the model was pushed hardest, and the verdict."""
        verdict = result.bottleneck
        level = next((lv for lv in result.levels if lv.bottleneck is verdict), None)
        if verdict is not None and level is not None and level.server is not None:
            self.console.print(step_table(level))
            self.console.print(
                "Bottleneck per level: "
                + ", ".join(f"{lv.concurrency}: {_name(lv.bottleneck)}" for lv in result.levels)
            )
            self.console.print(f"[bold]Bottleneck: {_name(verdict)}[/] ({verdict.share:.0%} of the time)")
            self.console.print(f"  {verdict.reason}", markup=False)
            for suggestion in verdict.suggestions:
                self.console.print(f"  - {suggestion}", markup=False)
        if not result.stable:
            last = result.levels[-1]
            self.console.print(
                f"[red]No stable measurement at concurrency {last.concurrency} after {last.windows} windows; "
                "sweep stopped.[/] Try a longer --measurement-interval or a larger --stability-percentage."
            )


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a file so that it is either the old one or the complete new one, never half-written."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the result as JSON."""
    write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")


def _name(verdict: Bottleneck | None) -> str:
    if verdict is None:
        return "-"
    return verdict.model or "the client"


def _steps(figures: ServerFigures, depth: int = 0) -> Iterator[tuple[int, ServerFigures]]:
    yield depth, figures
    for step in figures.composing:
        yield from _steps(step, depth + 1)


def step_table(level: LevelResult) -> Table:
    """Server-side time per step of one level, as perf_analyzer's "Server:" block, plus share and capacity."""
    assert level.server is not None
    table = Table(
        title=f"Server breakdown at concurrency {level.concurrency} ({level.throughput:.1f} infer/s, "
        f"client avg {level.latency_us.avg:.0f} us)",
        title_justify="left",
    )
    for column in ("step", "requests", "avg batch", "queue us", "input us", "infer us", "output us", "overhead us"):
        table.add_column(column, justify="left" if column == "step" else "right")
    table.add_column("share", justify="right")
    table.add_column("capacity/s", justify="right")
    total = level.server.request_us
    for depth, step in _steps(level.server):
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
        )
    return table


_CSV_CLIENT = ("Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv")
_CSV_SERVER = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv")
_CSV_PERCENTILES = ("p50 latency", "p90 latency", "p95 latency", "p99 latency")


def _server_cells(server: ServerFigures | None) -> list[int]:
    if server is None:
        return [0, 0, 0, 0]
    return [
        round(v) for v in (server.queue_us, server.compute_input_us, server.compute_infer_us, server.compute_output_us)
    ]


def _csv_text(header: tuple[str, ...], rows: Sequence[Sequence[float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(result: ProfileResult, path: str | os.PathLike[str]) -> list[Path]:
    """perf_analyzer's latency report: one row per level, plus `<model>_v<version>.<name>` per composing model.

    loadgen serialises requests before the run and does not decode responses, so Client Send and Client Recv
    are 0; Network+Server Send/Recv is the client's average latency minus the server's queue and compute time.
    """
    target = Path(path)
    rows: list[list[float]] = []
    for level in result.levels:
        server = _server_cells(level.server)
        network = max(round(level.latency_us.avg) - sum(server), 0)
        lat = level.latency_us
        rows.append(
            [level.concurrency, round(level.throughput, 2), 0, network, *server, 0, lat.p50, lat.p90, lat.p95, lat.p99]
        )
    write_atomic(target, _csv_text(_CSV_CLIENT + _CSV_SERVER + _CSV_PERCENTILES, rows))
    written = [target]
    per_model: dict[str, list[list[float]]] = {}
    for level in result.levels:
        if level.server is None:
            continue
        for depth, step in _steps(level.server):
            if depth == 0:
                continue
            rate = round(step.inference_count / level.duration_s, 2) if level.duration_s else 0.0
            cells = [level.concurrency, rate, 0, 0, *_server_cells(step), 0]
            per_model.setdefault(f"{step.model}_v{step.version}", []).append(cells)
    for name, model_rows in per_model.items():
        composing = target.with_name(f"{name}.{target.name}")
        write_atomic(composing, _csv_text(_CSV_CLIENT + _CSV_SERVER, model_rows))
        written.append(composing)
    return written
