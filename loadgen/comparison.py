"""Two runs side by side: the loads both measured, before and after a change (an instance added, a config tuned)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadgen.errors import OptionError

if TYPE_CHECKING:
    from loadgen.results import LevelResult, ProfileResult

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


def change(before: float, after: float) -> float | None:
    """The relative change from `before` to `after` (0.5 is 50 % more); None when `before` is 0."""
    return after / before - 1 if before else None


@dataclass(frozen=True)
class LevelChange:
    """One load measured in both runs."""

    load: float
    before: LevelResult
    after: LevelResult

    @property
    def throughput_change(self) -> float | None:
        return change(self.before.throughput, self.after.throughput)

    @property
    def p99_change(self) -> float | None:
        return change(self.before.latency_us.p99, self.after.latency_us.p99)


def _peak(result: ProfileResult) -> LevelResult:
    return max(result.levels, key=lambda level: level.throughput)


@dataclass(frozen=True)
class Comparison:
    """Before and after: each load both runs measured, the peaks and the verdicts."""

    before: ProfileResult
    after: ProfileResult
    levels: tuple[LevelChange, ...]

    @property
    def peak_change(self) -> float | None:
        """The relative change of the highest throughput either run reached at any load."""
        return change(_peak(self.before).throughput, _peak(self.after).throughput)

    def __str__(self) -> str:
        before, after = _peak(self.before), _peak(self.after)
        lines = [
            f"peak throughput {before.throughput:.1f} -> {after.throughput:.1f} infer/s ({_percent(self.peak_change)}),"
            f" p99 there {before.latency_us.p99} -> {after.latency_us.p99} us",
            f"bottleneck {_name(self.before)} -> {_name(self.after)}",
        ]
        for level in self.levels:
            lines.append(
                f"  at {level.load:g}: {level.before.throughput:.1f} -> {level.after.throughput:.1f} infer/s "
                f"({_percent(level.throughput_change)}), p99 {level.before.latency_us.p99} -> "
                f"{level.after.latency_us.p99} us ({_percent(level.p99_change)})"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from loadgen.reports.table import comparison_html

        return comparison_html(self)

    def to_dataframe(self) -> pandas.DataFrame:
        """Both runs' tables for the loads they share, side by side under "before" and "after" (needs pandas)."""
        from loadgen.reports.dataframe import comparison_frame

        return comparison_frame(self)

    def plot(self) -> Figure:
        """Both latency-throughput curves on one plot (needs matplotlib)."""
        from loadgen.reports.plot import curve

        return curve(self.before, self.after, labels=("before", "after"))


def _percent(value: float | None) -> str:
    return f"{value:+.0%}" if value is not None else "n/a"


def _name(result: ProfileResult) -> str:
    return result.bottleneck.name if result.bottleneck else "none"


def compare(before: ProfileResult, after: ProfileResult) -> Comparison:
    """Compare two runs of the same load mode, load by load (the loads both measured)."""
    if before.mode != after.mode:
        raise OptionError(f"cannot compare a {before.mode} sweep with a {after.mode} sweep")
    measured = {level.load: level for level in after.levels}
    shared = tuple(LevelChange(lv.load, lv, measured[lv.load]) for lv in before.levels if lv.load in measured)
    return Comparison(before, after, shared)
