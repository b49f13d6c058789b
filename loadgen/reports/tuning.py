"""The console report of `tune`: one line per trial as it happens, then the table and the config changes."""

from __future__ import annotations

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from loadgen.reports.table import model_cell
from loadgen.results import Measurement, Trial, TuneResult


class TuneReport:
    """Prints tuning progress and its result."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def progress(self, event: Trial | Measurement) -> None:
        if isinstance(event, Measurement):
            limit = f", limit about {event.predicted_max:.0f}" if event.predicted_max is not None else ""
            bound = f"; bound: {event.bottleneck}{limit}" if not event.models else ""
            self.console.print(
                f"baseline at {event.load:g}: {event.throughput:.1f} infer/s, p99 {event.p99_us} us{bound}"
            )
            self._models(event.models)
            return
        verdict = "kept" if event.kept else "reverted"
        bound = f" (bound now: {event.bottleneck})" if not event.models else ""
        why = f": {event.reason}" if event.reason else ""
        self.console.print(
            f"{event.change}: {event.throughput:.1f} infer/s (predicted {_predicted(event)}), p99 {event.p99_us} us "
            f"-> {verdict}{why}{bound}",
        )
        self._models(event.models)

    def _models(self, models: tuple[Measurement, ...]) -> None:
        for part in models:
            self.console.print(f"  {part.model}: {model_cell(part)}")

    def finished(self, result: TuneResult, restored: bool) -> None:
        table = Table(title=f"Tuning {result.model}", title_justify="left")
        names = [part.model or "" for part in result.initial.models]
        columns = ["trial", "change", "predicted", "infer/s", "p99 us", *names, "kept", "why"]
        if not names:
            columns.append("bound after")
        for column in columns:
            table.add_column(column, justify="right" if column in ("predicted", "infer/s", "p99 us") else "left")
        initial = result.initial
        cells = [model_cell(part) for part in initial.models]
        table.add_row(
            "0", f"(baseline at {initial.load:g})", "", f"{initial.throughput:.1f}", str(initial.p99_us), *cells,
            "", "", *([] if names else [str(initial.bottleneck)]),
        )  # fmt: skip
        for number, trial in enumerate(result.trials, 1):
            table.add_row(
                str(number),
                trial.change,
                _predicted(trial),
                f"{trial.throughput:.1f}",
                str(trial.p99_us),
                *(model_cell(part) for part in trial.models),
                "yes" if trial.kept else "no",
                trial.reason,
                *([] if names else [str(trial.bottleneck)]),
            )
        self.console.print(table)
        gain = result.final.throughput / result.initial.throughput if result.initial.throughput else 0.0
        bound = f", bound now: {result.final.bottleneck}" if not result.final.models else ""
        self.console.print(
            f"Final: {result.final.throughput:.1f} infer/s ({gain:.2f}x), p99 {result.final.p99_us} us, "
            f"at {result.final.load:g}{bound}. Stopped: {result.stop_reason}.",
        )
        for part in result.final.models:
            self.console.print(f"  {part.model}: {model_cell(part)}")
        for model, text in result.config_changes.items():
            self.console.print(f"Improved config.pbtxt for {model}:")
            self.console.print(Syntax(text, "protobuf", theme="ansi_dark", background_color="default"))
        if result.config_changes and restored:
            self.console.print("The server's models were restored to their original configs (--keep leaves them).")


def _predicted(trial: Trial) -> str:
    return "?" if trial.predicted_throughput is None else f"{trial.predicted_throughput:.1f}"
