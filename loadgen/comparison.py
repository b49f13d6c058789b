"""Two runs side by side: the loads both measured, before and after a change (an instance added, a config tuned),
each metric's change and whether it is significant at a confidence; `Gate`s (`loadgen compare --fail-if`) turn the
significant ones into a regression check."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadgen.confidence import (
    Sample,
    decode_histogram,
    mean_shift,
    percentile_shift,
    samples_needed,
)
from loadgen.errors import OptionError
from loadgen.measurement import STABILITY_WINDOWS
from loadgen.values import CONFIDENCE

if TYPE_CHECKING:
    import pandas
    from hdrh.histogram import HdrHistogram
    from matplotlib.figure import Figure

    from loadgen.results import LevelResult, ProfileResult

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
METRICS = ("throughput", "avg", *PERCENTILES)  # what a comparison tests, level by level


def change(before: float, after: float) -> float | None:
    """The relative change from `before` to `after` (0.5 is 50 % more); None when `before` is 0."""
    return after / before - 1 if before else None


@dataclass(frozen=True)
class MetricChange:
    """One metric at one load in both runs, and whether it moved at the comparison's confidence."""

    metric: str  # "throughput" (infer/s), "avg" or a percentile ("p99"), latencies in microseconds
    before: float
    after: float
    shift: int | None  # +1: significantly higher, -1: significantly lower, 0: not significant, None: not testable
    note: str = ""  # why it could not be tested

    @property
    def change(self) -> float | None:
        """The relative change (0.05 is 5 % more); None when `before` is 0."""
        return change(self.before, self.after)

    @property
    def significant(self) -> bool:
        return bool(self.shift)


@dataclass(frozen=True)
class LevelChange:
    """One load measured in both runs, and each metric's change (see `METRICS`)."""

    load: float
    before: LevelResult
    after: LevelResult
    metrics: tuple[MetricChange, ...] = ()

    def metric(self, name: str) -> MetricChange | None:
        """One metric's change, by name."""
        return next((metric for metric in self.metrics if metric.metric == name), None)

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
    confidence: float = CONFIDENCE  # of the significance tests

    def crossed(self, gate: Gate) -> list[tuple[LevelChange, MetricChange]]:
        """The loads at which a gate's metric changed beyond its threshold, significantly, in its direction."""
        found = [(level, level.metric(gate.metric)) for level in self.levels]
        return [(level, metric) for level, metric in found if metric is not None and gate.crossed_by(metric)]

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


def _histogram(level: LevelResult) -> HdrHistogram | None:
    """A level's latency histogram, as its file carries it (None in a file of an older loadgen)."""
    encoded = level.confidence.histograms.get("latency_us") if level.confidence is not None else None
    return decode_histogram(encoded) if encoded is not None else None


def _throughput(before: LevelResult, after: LevelResult, confidence: float) -> MetricChange:
    """Throughput: Welch's t test on the windows each level's figures merge."""
    windows = [[w.throughput for w in level.trend[-STABILITY_WINDOWS:]] for level in (before, after)]
    shift = mean_shift(Sample.of(windows[0]), Sample.of(windows[1]), confidence) if all(windows) else None
    note = "" if shift is not None else "one window: no spread to test against"
    return MetricChange("throughput", before.throughput, after.throughput, shift, note)


def _latency_sample(level: LevelResult) -> Sample:
    """The level's latencies as a test of means reads them (the histogram's deviation, with n - 1)."""
    stats, count = level.latency_us, level.request_count
    return Sample(stats.avg, stats.stddev * math.sqrt(count / (count - 1)) if count > 1 else 0.0, count)


def _average(before: LevelResult, after: LevelResult, confidence: float) -> MetricChange:
    """Average latency: Welch's t test on the requests' latencies."""
    shift = mean_shift(_latency_sample(before), _latency_sample(after), confidence)
    note = "" if shift is not None else "fewer than two requests"
    return MetricChange("avg", before.latency_us.avg, after.latency_us.avg, shift, note)


def _percentiles(before: LevelResult, after: LevelResult, confidence: float) -> list[MetricChange]:
    """Each percentile: do the two runs' order-statistic intervals overlap?"""
    histograms = (_histogram(before), _histogram(after))
    changes = []
    for name, percentile in PERCENTILES.items():
        values = (getattr(before.latency_us, name), getattr(after.latency_us, name))
        if histograms[0] is None or histograms[1] is None:
            changes.append(MetricChange(name, *values, None, "no histogram in the file (an older loadgen's)"))
            continue
        shift = percentile_shift(histograms[0], histograms[1], percentile, confidence)
        needed = samples_needed(percentile / 100, (1 + confidence) / 2)
        note = "" if shift is not None else f"too few samples to test ({needed} needed in each run)"
        changes.append(MetricChange(name, *values, shift, note))
    return changes


def level_change(load: float, before: LevelResult, after: LevelResult, confidence: float) -> LevelChange:
    """One load in both runs, each metric tested at `confidence`."""
    metrics = (
        _throughput(before, after, confidence),
        _average(before, after, confidence),
        *_percentiles(before, after, confidence),
    )
    return LevelChange(load, before, after, metrics)


def compare(before: ProfileResult, after: ProfileResult, confidence: float = CONFIDENCE) -> Comparison:
    """Compare two runs of the same load mode, load by load (the loads both measured), each metric's change tested
    at `confidence`."""
    if before.mode != after.mode:
        raise OptionError(f"cannot compare a {before.mode} sweep with a {after.mode} sweep")
    measured = {level.load: level for level in after.levels}
    shared = tuple(
        level_change(lv.load, lv, measured[lv.load], confidence) for lv in before.levels if lv.load in measured
    )
    return Comparison(before, after, shared, confidence)


_GATE = re.compile(r"(?P<metric>[a-z0-9]+)(?P<op>[<>])(?P<sign>[+-])(?P<percent>\d+(?:\.\d*)?|\.\d+)%")


@dataclass(frozen=True)
class Gate:
    """A regression threshold (`--fail-if "p99>+5%"`): crossed by a change of the metric beyond `percent` in
    `direction` that is significant in that direction."""

    metric: str
    direction: int  # +1: an increase beyond the threshold fails; -1: a decrease
    percent: float
    text: str  # as given

    def crossed_by(self, metric: MetricChange) -> bool:
        relative = metric.change
        return (
            metric.metric == self.metric
            and metric.shift == self.direction
            and relative is not None
            and relative * self.direction > self.percent / 100
        )


def parse_gate(text: str) -> Gate:
    """`METRIC>+N%` (an increase of more than N %) or `METRIC<-N%` (a decrease of more than N %)."""
    match = _GATE.fullmatch(text.replace(" ", "").lower())
    if match is None:
        raise OptionError(f"--fail-if {text!r}: expected METRIC>+N% or METRIC<-N% (e.g. p99>+5%, throughput<-3%)")
    if match["metric"] not in METRICS:
        raise OptionError(f"--fail-if {text!r}: the metric is one of {', '.join(METRICS)}")
    if (match["op"] == ">") != (match["sign"] == "+"):
        raise OptionError(f"--fail-if {text!r}: > takes +N% (an increase), < takes -N% (a decrease)")
    return Gate(match["metric"], 1 if match["op"] == ">" else -1, float(match["percent"]), text)
