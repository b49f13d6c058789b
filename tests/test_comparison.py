"""Before and after: two runs compared load by load."""

from __future__ import annotations

from dataclasses import replace

import pytest

import loadgen
from loadgen.errors import OptionError


def _faster(result: loadgen.ProfileResult, factor: float) -> loadgen.ProfileResult:
    """The run as if a change had raised its throughput by `factor` (and measured only its first load)."""
    level = result.levels[0]
    return replace(result, levels=(replace(level, throughput=level.throughput * factor),))


def test_the_loads_both_runs_measured_are_compared(ensemble_result: loadgen.ProfileResult) -> None:
    after = _faster(ensemble_result, 2.0)
    comparison = loadgen.compare(ensemble_result, after)
    assert [level.load for level in comparison.levels] == [1]
    change = comparison.levels[0]
    assert change.before is ensemble_result.levels[0] and change.after is after.levels[0]
    assert change.throughput_change == pytest.approx(1.0)
    assert change.p99_change == 0
    assert str(comparison).splitlines()[2].startswith("  at 1: ")


def test_a_comparison_shows_as_a_table_a_dataframe_and_a_plot(ensemble_result: loadgen.ProfileResult) -> None:
    comparison = loadgen.compare(ensemble_result, _faster(ensemble_result, 1.5))
    shown = comparison._repr_html_()
    assert "+50%" in shown and '<th colspan="2" class="group">classifier</th>' in shown
    assert "peak throughput" in shown
    frame = comparison.to_dataframe()
    assert list(frame.index) == [1]
    assert frame.loc[1, ("after", "throughput")] == pytest.approx(1.5 * frame.loc[1, ("before", "throughput")])
    labels = [text.get_text() for text in comparison.plot().axes[0].get_legend().get_texts()]
    assert labels == ["before", "after"]


def test_runs_of_different_load_modes_are_not_compared(
    ensemble_result: loadgen.ProfileResult, rate_result: loadgen.ProfileResult
) -> None:
    with pytest.raises(OptionError, match="cannot compare a concurrency sweep with a request_rate sweep"):
        loadgen.compare(ensemble_result, rate_result)
