from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest

from loadgen import schedule
from loadgen.errors import OptionError
from loadgen.plan import read_intervals


def _take(offsets: object, n: int) -> list[int]:
    return list(itertools.islice(offsets, n))  # type: ignore[call-overload]


def test_constant_gaps_are_exact_and_do_not_drift() -> None:
    offsets = _take(schedule.constant(3.0), 10_001)
    gaps = {b - a for a, b in itertools.pairwise(offsets)}
    assert gaps <= {333_333_333, 333_333_334}
    assert offsets[-1] == round(10_000 * 1e9 / 3)


def test_poisson_gaps_have_the_rate_as_mean_and_a_coefficient_of_variation_of_one() -> None:
    offsets = _take(schedule.poisson(200.0, seed=3), 20_001)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(5e6, rel=0.03)
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.03)
    assert offsets[:50] == _take(schedule.poisson(200.0, seed=3), 50)  # a fixed seed repeats


def test_intervals_loop_over_the_gaps() -> None:
    assert _take(schedule.intervals([100, 300]), 5) == [0, 100_000, 400_000, 500_000, 800_000]


def test_intervals_file(tmp_path: Path) -> None:
    path = tmp_path / "gaps.txt"
    path.write_text("1000\n2000\n\n500\n")
    assert read_intervals(str(path)) == (1000, 2000, 500)
    for text, message in (
        ("10\nx\n", "entry 2 'x'"),
        ("-5\n", "negative"),
        ("", "at least one gap"),
        ("0\n0\n", "at least"),
    ):
        path.write_text(text)
        with pytest.raises(OptionError, match=message):
            read_intervals(str(path))
    with pytest.raises(OptionError, match="cannot read"):
        read_intervals(str(tmp_path / "missing.txt"))
