"""`loadgen perf-analyzer` as tools that run perf_analyzer see it: its console script, and its endings on synthetic
sweeps (what perf_analyzer prints, writes and exits with, which Model Analyzer's retries read: `Failed to obtain
stable measurement`, `Please use a larger time window`)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from benchmarks.common import console_script
from loadgen.measurement import LatencyStats, WindowSummary
from loadgen.plan import level_rule
from loadgen.reports.files import write_csv
from loadgen.reports.perf_analyzer import NO_REQUESTS, PerfAnalyzerReport
from loadgen.results import LevelResult, ProfileResult
from loadgen.settings import Settings

SETTINGS = Settings(model_name="m", concurrency_range="1:2", measurement_mode="count_windows")


def _level(concurrency: int, requests: list[int], stable: bool) -> LevelResult:
    """A level whose windows recorded `requests` each (0: a window without a valid request)."""
    trend = tuple(
        WindowSummary(10.0 * count, 1000.0, 1000.0, 0.0, 1000, None, None, count, 0, 0.0) for count in requests
    )
    latency = LatencyStats(900, 1000.0, 50.0, 1000, 1100, 1200, 1300, 1400)
    return LevelResult(concurrency, None, 50.0, sum(requests[-3:]), 0, stable, latency, len(requests), 3.0, trend=trend)


def _sweep(*levels: LevelResult) -> tuple[int, str, str, ProfileResult]:
    """The report of a sweep as perf_analyzer prints it: exit status, stdout, stderr, and the result."""
    out, err = io.StringIO(), io.StringIO()
    report = PerfAnalyzerReport(SETTINGS, out=out, err=err)
    report.rule = level_rule(SETTINGS)
    for level in levels:
        report.level(level)
    result = ProfileResult("m", "localhost:8000", "concurrency", levels, (), SETTINGS.to_dict(), "unstable")
    return report.finished(result), out.getvalue(), err.getvalue(), result


def test_a_last_level_without_requests_ends_with_perf_analyzers_error_and_no_csv(tmp_path: Path) -> None:
    """perf_analyzer returns the window's error in place of the level's "not stable" message, then exits 3 without
    the summary and without the -f CSV, even when an earlier level was reported."""
    status, out, err, result = _sweep(_level(1, [50, 50, 50], True), _level(2, [50, 60, 0, 50], False))
    assert status == 3
    assert out.count("Request concurrency:") == 2
    assert "Client:" in out  # concurrency 1, printed as it settled
    assert "Inferences/Second vs." not in out
    assert "Failed to obtain stable measurement" not in err
    assert err.strip() == NO_REQUESTS
    assert write_csv(result, tmp_path / "report.csv", perf_analyzer=True) == []
    assert not (tmp_path / "report.csv").exists()


def test_an_unstable_last_level_with_requests_keeps_the_summary_and_csv(tmp_path: Path) -> None:
    """The same sweep whose last level only disagreed: its "not stable" message, then success with what settled."""
    status, out, err, result = _sweep(_level(1, [50, 50, 50], True), _level(2, [50, 60, 10, 50], False))
    assert status == 0
    assert "Failed to obtain stable measurement within 4 measurement windows for concurrency 2" in err
    assert "Please try to increase the --measurement-request-count." in err
    assert "Inferences/Second vs. Client Average Batch Latency\nConcurrency: 1, throughput: 50 infer/sec" in out
    assert write_csv(result, tmp_path / "report.csv", perf_analyzer=True) == [tmp_path / "report.csv"]
    assert len((tmp_path / "report.csv").read_text().splitlines()) == 2  # the header and concurrency 1


def test_an_unstable_first_level_exits_2_with_model_analyzers_retry_message() -> None:
    status, _, err, _ = _sweep(_level(1, [50, 60, 10, 50], False))
    assert status == 2
    assert err.splitlines() == [
        "Failed to obtain stable measurement within 4 measurement windows for concurrency 1. Please try to increase "
        "the --measurement-request-count.",
        "Failed to obtain stable measurement.",
        "",
    ]


def test_the_perf_analyzer_console_script_is_perf_analyzers_command_line() -> None:
    """`perf-analyzer` (hyphenated: the real binary is `perf_analyzer`, so both can be installed) is `loadgen
    perf-analyzer`: perf_analyzer's version line on stderr for tools that parse it, its 99 for a bad option."""
    script = console_script("perf-analyzer")
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert version.stderr.startswith("Perf Analyzer Version 2.51.0 (loadgen "), version.stderr
    bad = subprocess.run([script, "-m", "any", "--no-such-option"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 99, bad.stderr
    first, usage = bad.stderr.split("\n", 1)  # then its usage, as perf_analyzer prints it
    assert first == "perf_analyzer: error: unrecognized arguments: --no-such-option"
    assert usage.startswith("usage: perf_analyzer ")
