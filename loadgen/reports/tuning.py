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
            limit = f", limit about {event.predicted_max:.0f}" if event.predicted_max is not None else ""
            self.console.print(
                f"baseline at {event.load:g}: {event.throughput:.1f} infer/s, p99 {event.p99_us} us; "
                f"bound: {event.bottleneck}{limit}"
            )
            return
        verdict = "kept" if event.kept else "reverted"
        self.console.print(
            f"{event.change}: {event.throughput:.1f} infer/s (predicted {_predicted(event)}), p99 {event.p99_us} us "
            f"-> {verdict} (bound now: {event.bottleneck})",
        )

    def finished(self, result: TuneResult, restored: bool) -> None:
        table = Table(title=f"Tuning {result.model}", title_justify="left")
        for column in ("trial", "change", "predicted", "infer/s", "p99 us", "kept", "bound after"):
            table.add_column(column, justify="right" if column in ("predicted", "infer/s", "p99 us") else "left")
        initial = result.initial
        table.add_row(
            "0", f"(baseline at {initial.load:g})", "", f"{initial.throughput:.1f}", str(initial.p99_us), "",
            str(initial.bottleneck),
        )  # fmt: skip
        for number, trial in enumerate(result.trials, 1):
            table.add_row(
                str(number),
                trial.change,
                _predicted(trial),
                f"{trial.throughput:.1f}",
                str(trial.p99_us),
                "yes" if trial.kept else "no",
                str(trial.bottleneck),
            )
        self.console.print(table)
        gain = result.final.throughput / result.initial.throughput if result.initial.throughput else 0.0
        self.console.print(
            f"Final: {result.final.throughput:.1f} infer/s ({gain:.2f}x), p99 {result.final.p99_us} us, "
            f"at {result.final.load:g}, bound now: {result.final.bottleneck}. Stopped: {result.stop_reason}.",
        )
        for model, text in result.config_changes.items():
            self.console.print(f"Improved config.pbtxt for {model}:")
            self.console.print(Syntax(text, "protobuf", theme="ansi_dark", background_color="default"))
        if result.config_changes and restored:
            self.console.print("The server's models were restored to their original configs (--keep leaves them).")


def _predicted(trial: Trial) -> str:
    return "?" if trial.predicted_throughput is None else f"{trial.predicted_throughput:.1f}"
