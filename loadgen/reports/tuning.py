"""The console report of `tune`: one line per trial as it happens, then the table and the config changes."""

from __future__ import annotations

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from loadgen.results import Measurement, Trial, TuneResult


class TuneReport:
    """Prints tuning progress and its result."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def progress(self, event: Trial | Measurement) -> None:
        if isinstance(event, Measurement):
            self.console.print(
                f"baseline: {event.throughput:.1f} infer/s, p99 {event.p99_us} us, bottleneck {event.bottleneck}"
            )
            return
        verdict = "kept" if event.kept else "reverted"
        self.console.print(
            f"{event.change}: {event.throughput:.1f} infer/s, p99 {event.p99_us} us -> {verdict}"
            f" (bottleneck {event.bottleneck})",
        )

    def finished(self, result: TuneResult, restored: bool) -> None:
        table = Table(title=f"Tuning {result.model}", title_justify="left")
        for column in ("trial", "change", "infer/s", "p99 us", "kept", "bottleneck after"):
            table.add_column(column, justify="right" if column in ("infer/s", "p99 us") else "left")
        table.add_row(
            "0",
            "(baseline)",
            f"{result.initial.throughput:.1f}",
            str(result.initial.p99_us),
            "",
            str(result.initial.bottleneck),
        )
        for number, trial in enumerate(result.trials, 1):
            table.add_row(
                str(number),
                trial.change,
                f"{trial.throughput:.1f}",
                str(trial.p99_us),
                "yes" if trial.kept else "no",
                str(trial.bottleneck),
            )
        self.console.print(table)
        gain = result.final.throughput / result.initial.throughput if result.initial.throughput else 0.0
        self.console.print(
            f"Final: {result.final.throughput:.1f} infer/s ({gain:.2f}x), p99 {result.final.p99_us} us, "
            f"bottleneck now {result.final.bottleneck}. Stopped: {result.stop_reason}.",
        )
        for model, text in result.config_changes.items():
            self.console.print(f"Improved config.pbtxt for {model}:")
            self.console.print(Syntax(text, "protobuf", theme="ansi_dark", background_color="default"))
        if result.config_changes and restored:
            self.console.print("The server's models were restored to their original configs (--keep leaves them).")
