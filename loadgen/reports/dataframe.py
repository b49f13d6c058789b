"""The sweep as a pandas DataFrame: one row per level, indexed by the load, the sweep table's columns."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from loadgen.errors import MissingExtraError
from loadgen.reports.table import columns

if TYPE_CHECKING:
    from loadgen.comparison import Comparison
    from loadgen.results import Measurement, ProfileResult, TuneResult

try:
    import pandas
except ImportError:
    raise MissingExtraError("result.to_dataframe()", "pandas", "dataframe") from None


def to_dataframe(result: ProfileResult) -> pandas.DataFrame:
    """Throughput, latency percentiles, each step's queue and compute time (us per request), per level."""
    table = columns(result)
    rows = [{column.key: column.value(level) for column in table} for level in result.levels]
    return pandas.DataFrame(rows, columns=[column.key for column in table]).set_index(table[0].key)


def comparison_frame(comparison: Comparison) -> pandas.DataFrame:
    """Both runs' rows for the loads they share, their columns under "before" and "after"."""
    loads = [level.load for level in comparison.levels]
    runs = {"before": comparison.before, "after": comparison.after}
    return pandas.concat({name: to_dataframe(run).loc[loads] for name, run in runs.items()}, axis=1)


def tune_frame(result: TuneResult) -> pandas.DataFrame:
    """One row per tuning trial, the baseline first as trial 0; a mix's adds each model's throughput and p99
    (`<model>_throughput`, `<model>_p99_us`)."""
    initial = result.initial
    rows = [
        {
            "change": "(baseline)",
            "model": None,
            "throughput": initial.throughput,
            "p99_us": initial.p99_us,
            "kept": None,
            "bottleneck": initial.bottleneck,
            "predicted_throughput": None,
            "load": initial.load,
            "reason": "",
            **_per_model(initial.models),
        }
    ]
    rows += [dataclasses.asdict(trial) | _per_model(trial.models) for trial in result.trials]
    columns = ["change", "model", "load", "predicted_throughput", "throughput", "p99_us", "kept", "reason"]
    columns += ["bottleneck", *_per_model(initial.models)]
    frame = pandas.DataFrame(rows, columns=columns)
    frame.index.name = "trial"
    return frame


def _per_model(models: tuple[Measurement, ...]) -> dict[str, float]:
    """A mix's figures, model by model, as columns."""
    columns: dict[str, float] = {}
    for part in models:
        columns |= {f"{part.model}_throughput": part.throughput, f"{part.model}_p99_us": part.p99_us}
    return columns
