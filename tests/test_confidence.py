"""Every figure with its confidence: the bounds checked against simulations (draws from known distributions), the
closed forms, and the level's confidence figures in JSON, on the console, in the CSV and in the HTML."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import loadgen
from loadgen.confidence import (
    Sample,
    binomial_cdf,
    lower_rank,
    mean_interval,
    mean_shift,
    percentile_bound,
    percentile_shift,
    samples_needed,
    student_t_quantile,
    upper_rank,
    value_at_rank,
)
from loadgen.errors import OptionError
from loadgen.plan import LevelRule
from loadgen.reports import ConsoleProgress
from loadgen.reports.files import write_csv
from loadgen.reports.table import confidence_html
from loadgen.settings import Settings
from tests.helpers import histogram_of, level_of, one_line_error, result_of, run_cli

LOGNORMAL = (7.0, 0.5)  # mu and sigma of log(latency in us): a median of about 1.1 ms and a long tail


def _lognormal_quantile(p: float) -> float:
    mu, sigma = LOGNORMAL
    return math.exp(mu + sigma * statistics.NormalDist().inv_cdf(p))


def _coverage_sd(confidence: float, trials: int) -> float:
    return math.sqrt(confidence * (1 - confidence) / trials)


def _exact_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_the_binomial_tail_is_the_exact_sum() -> None:
    for k, n, p in ((10, 20, 0.5), (97, 100, 0.99), (458, 459, 0.99), (890, 1000, 0.9), (0, 50, 0.3)):
        assert binomial_cdf(k, n, p) == pytest.approx(_exact_cdf(k, n, p), rel=1e-9, abs=1e-300)


def test_the_ranks_are_the_smallest_and_largest_that_hold() -> None:
    rng = random.Random(1)
    for _ in range(100):
        n, p, c = rng.randint(1, 200), rng.choice((0.5, 0.9, 0.95, 0.99, 0.3)), rng.choice((0.9, 0.99, 0.995))
        cdf = [_exact_cdf(k, n, p) for k in range(n + 1)]
        upper = next((k for k in range(1, n + 1) if cdf[k - 1] >= c), None)
        lower = max((k for k in range(1, n + 1) if 1 - cdf[k - 1] >= c), default=None)
        assert (upper_rank(n, p, c), lower_rank(n, p, c)) == (upper, lower), (n, p, c)


def test_samples_needed_is_the_closed_form() -> None:
    assert samples_needed(0.99, 0.99) == 459  # MLPerf's p99 at 99 %
    for p in (0.5, 0.9, 0.95, 0.99, 0.999):
        for c in (0.9, 0.95, 0.99, 0.999):
            n = samples_needed(p, c)
            assert n == math.ceil(math.log(1 - c) / math.log(p) - 1e-12)
            assert 1 - p**n >= c > 1 - p ** (n - 1)
            assert upper_rank(n, p, c) == n and upper_rank(n - 1, p, c) is None  # the largest sample, or nothing


def test_the_upper_bound_covers_the_true_quantile_as_often_as_it_says() -> None:
    rng = np.random.default_rng(7)
    trials, n = 4000, 600
    draws = np.sort(rng.lognormal(*LOGNORMAL, size=(trials, n)), axis=1)
    for percentile, confidence in ((99, 0.99), (90, 0.9), (50, 0.99), (95, 0.9)):
        p = percentile / 100
        k = upper_rank(n, p, confidence)
        assert k is not None
        promised = binomial_cdf(k - 1, n, p)  # the rank's exact coverage: at least the confidence
        assert promised >= confidence
        covered = float(np.mean(draws[:, k - 1] >= _lognormal_quantile(p)))
        assert covered >= confidence - 4 * _coverage_sd(confidence, trials)
        assert covered == pytest.approx(promised, abs=4 * _coverage_sd(promised, trials))


def test_the_lower_bound_covers_the_true_quantile_as_often_as_it_says() -> None:
    rng = np.random.default_rng(8)
    trials, n, confidence = 4000, 600, 0.95
    draws = np.sort(rng.exponential(1000.0, size=(trials, n)), axis=1)
    for p in (0.5, 0.99):
        k = lower_rank(n, p, confidence)
        assert k is not None
        truth = -1000.0 * math.log(1 - p)
        covered = float(np.mean(draws[:, k - 1] <= truth))
        assert covered >= confidence - 4 * _coverage_sd(confidence, trials)


def test_a_bound_from_the_histogram_covers_too_and_rounds_outward() -> None:
    rng = np.random.default_rng(9)
    trials, n, confidence, percentile = 150, 300, 0.9, 90
    truth = _lognormal_quantile(percentile / 100)
    covered = 0
    for _ in range(trials):
        values = np.rint(rng.lognormal(*LOGNORMAL, size=n)) + 1
        histogram = histogram_of(values)
        bound = percentile_bound(histogram, percentile, confidence)
        exact = np.sort(values)
        assert bound.upper_bound is not None and bound.lower_bound is not None
        upper, lower = upper_rank(n, 0.9, confidence), lower_rank(n, 0.9, confidence)
        assert upper is not None and lower is not None
        # the bucket's edge: never inside the exact order statistic, and within 3 significant digits of it
        assert exact[upper - 1] <= bound.upper_bound <= exact[upper - 1] * 1.001 + 1
        assert exact[lower - 1] * 0.999 - 1 <= bound.lower_bound <= exact[lower - 1]
        covered += bound.upper_bound >= truth
    assert covered / trials >= confidence - 4 * _coverage_sd(confidence, trials)


def test_too_few_samples_give_no_bound_and_say_how_many_are_needed() -> None:
    histogram = histogram_of(np.arange(1, 459))  # 458 samples: p99 at 0.99 needs 459
    bound = percentile_bound(histogram, 99, 0.99)
    assert (bound.upper_bound, bound.samples, bound.samples_needed, bound.enough) == (None, 458, 459, False)
    histogram.record_value(1000)
    bound = percentile_bound(histogram, 99, 0.99)
    assert bound.upper_bound == value_at_rank(histogram, 459, upper=True) == histogram.get_max_value()


def test_student_t_quantiles_are_the_tables() -> None:
    for probability, df, table in (
        (0.975, 2, 4.302653),
        (0.995, 2, 9.924843),
        (0.975, 30, 2.042272),
        (0.95, 1, 6.313752),
        (0.99, 10, 2.763769),
    ):
        assert student_t_quantile(probability, df) == pytest.approx(table, rel=1e-6)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), rel=1e-5)


def test_the_throughput_interval_covers_the_mean_as_often_as_it_says() -> None:
    rng = np.random.default_rng(10)
    trials, confidence, mean = 3000, 0.9, 500.0
    covered = 0
    for windows in rng.normal(mean, 25.0, size=(trials, 3)):
        interval = mean_interval(list(windows), confidence)
        assert interval is not None
        covered += interval[0] <= mean <= interval[1]
    assert covered / trials == pytest.approx(confidence, abs=4 * _coverage_sd(confidence, trials))
    assert mean_interval([500.0], confidence) is None  # one window: no spread to go by


def test_the_tests_of_two_runs_alarm_falsely_at_most_as_often_as_the_confidence_allows() -> None:
    rng = np.random.default_rng(11)
    confidence, trials = 0.9, 2000
    alarms = sum(
        mean_shift(Sample.of(list(rng.normal(100, 5, 3))), Sample.of(list(rng.normal(100, 5, 3))), confidence) == 1
        for _ in range(trials)
    )
    assert alarms / trials <= (1 - confidence) + 4 * _coverage_sd(1 - confidence, trials)
    slower = [mean_shift(Sample.of([100, 101, 99]), Sample.of([80, 81, 79]), confidence)]
    assert slower == [-1]
    trials = 60
    alarms = 0
    for _ in range(trials):
        before, after = (histogram_of(np.rint(rng.lognormal(*LOGNORMAL, size=500))) for _ in range(2))
        alarms += percentile_shift(before, after, 90, confidence) == 1
    assert alarms / trials <= (1 - confidence) + 4 * _coverage_sd(1 - confidence, trials)
    before = histogram_of(np.rint(rng.lognormal(*LOGNORMAL, size=2000)))
    after = histogram_of(np.rint(rng.lognormal(*LOGNORMAL, size=2000) * 2))
    assert (percentile_shift(before, after, 99, 0.99), percentile_shift(after, before, 50, 0.99)) == (1, -1)
    few = histogram_of(np.arange(1, 100))
    assert percentile_shift(few, few, 99, 0.99) is None  # 99 samples: no bound on either side


def test_a_level_carries_its_confidence_into_json_and_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    rule = LevelRule(1, 97, 10, None, False, confidence=0.95)
    level = level_of([np.rint(rng.lognormal(*LOGNORMAL, size=size)) for size in (900, 1000, 1100)], rule=rule)
    confidence = level.confidence
    assert confidence is not None and confidence.level == 0.95
    assert list(confidence.latency_us) == ["p50", "p90", "p95", "p97", "p99"]  # --percentile's among them
    low, high = confidence.throughput or (0, 0)
    assert low < 1000 < high  # the windows' mean
    p99 = confidence.latency_us["p99"]
    assert p99.samples == 3000 and p99.samples_needed == samples_needed(0.99, 0.95)
    assert p99.lower_bound is not None and p99.upper_bound is not None
    assert p99.lower_bound <= level.latency_us.p99 <= p99.upper_bound
    result = result_of(level)
    result.save_json(tmp_path / "run.json")
    document = json.loads((tmp_path / "run.json").read_text())
    shown = document["levels"][0]["confidence"]
    assert shown["level"] == 0.95 and shown["throughput"] == [low, high]
    assert shown["latency_us"]["p99"] == {
        "samples": 3000,
        "samples_needed": p99.samples_needed,
        "upper_bound": p99.upper_bound,
        "lower_bound": p99.lower_bound,
    }
    assert loadgen.load_result(tmp_path / "run.json").levels[0].confidence == confidence


def test_a_p99_on_too_few_samples_says_so_on_the_console_in_the_csv_and_the_html(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    few = level_of([np.rint(rng.lognormal(*LOGNORMAL, size=40)) for _ in range(3)])  # 120 samples
    many = level_of([np.rint(rng.lognormal(*LOGNORMAL, size=size)) for size in (390, 400, 410)], concurrency=2)
    assert few.confidence is not None and list(few.confidence.too_few()) == ["p99"]
    output = io.StringIO()
    progress = ConsoleProgress(Console(file=output, width=200), quiet=True)
    progress.finished(result_of(few, many))
    text = output.getvalue()
    assert "too few samples for a bound at 0.99 confidence: 120 measured, p99 needs 459" in text
    assert "at 0.99 confidence: " in text and "p99 <= " in text  # the level with enough

    written = write_csv(result_of(few, many), tmp_path / "run.csv")
    with written[0].open() as handle:
        rows = {row["Concurrency"]: row for row in csv.DictReader(handle)}
    assert rows["1"]["p99 latency bound"] == "" and rows["1"]["Too Few Samples"] == "p99 needs 459"
    assert int(rows["2"]["p99 latency bound"]) >= int(rows["2"]["p99 latency"])
    assert rows["2"]["Confidence"] == "0.99" and rows["2"]["Too Few Samples"] == ""
    assert float(rows["2"]["Inferences/Second Low"]) < 400 < float(rows["2"]["Inferences/Second High"])
    written = write_csv(result_of(few, many), tmp_path / "pa.csv", perf_analyzer=True)
    assert "bound" not in (tmp_path / "pa.csv").read_text().splitlines()[0]  # perf_analyzer's own columns alone

    table = confidence_html(result_of(few, many))
    assert "too few: needs 459" in table and "p99 bound us" in table


def test_an_older_result_without_confidence_still_reports() -> None:
    level = level_of([np.arange(1, 500)] * 3)
    old = result_of(replace(level, confidence=None))
    assert confidence_html(old) == ""
    output = io.StringIO()
    ConsoleProgress(Console(file=output, width=200), quiet=True).finished(old)
    assert "confidence" not in output.getvalue()


def test_a_confidence_out_of_range_is_refused() -> None:
    for bad in (1.0, 0.3, float("nan")):
        with pytest.raises(OptionError, match="--confidence"):
            Settings(confidence=bad)
    line = one_line_error(run_cli("-m", "m", "--confidence", "1.5"), 3)
    assert "--confidence 1.5: must be at least 0.5 and below 1" in line
    assert "expected a number" in one_line_error(run_cli("-m", "m", "--confidence", "high"), 3)
