"""Reports: the console table while a sweep runs, and the JSON file; all read the same result object."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rich.console import Console

from loadgen.measurement import WindowSummary
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.settings import Settings
from loadgen.transport import ModelInfo

_COLUMNS = ("concurrency", "infer/s", "avg us", "p50 us", "p90 us", "p95 us", "p99 us", "errors", "stable")
_WIDTHS = (11, 10, 9, 9, 9, 9, 9, 7, 7)


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, _WIDTHS, strict=True))


class ConsoleProgress:
    """Prints the level table row by row as the sweep runs; with `verbose`, every window too."""

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self.console = console or Console(highlight=False)
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
