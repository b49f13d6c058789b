"""`loadgen compare BASE.json NEW.json --fail-if ...`: each metric's change and its significance, the thresholds'
grammar, untrusted files, and the gate on real runs of one server (the same model twice, then a slower one)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import loadgen
from loadgen.cli import main
from loadgen.comparison import Gate, parse_gate
from loadgen.errors import OptionError
from loadgen.measurement import new_histogram
from loadgen.results import LevelResult, ProfileResult
from loadgen.server import EmbeddedServer
from tests.helpers import QUICK, level_of, one_line_error, result_of, run_cli

LOGNORMAL = (7.0, 0.5)  # log of latencies in us: a median of about 1.1 ms


def _level(seed: int, counts: tuple[int, ...], scale: float = 1.0, concurrency: int = 1) -> LevelResult:
    """A level of windows of these many requests (one second each) drawn from one lognormal, `scale`d."""
    rng = np.random.default_rng(seed)
    return level_of(
        [np.rint(rng.lognormal(*LOGNORMAL, size=count) * scale) + 1 for count in counts], concurrency=concurrency
    )


BASE = result_of(_level(1, (1000, 1020, 980)), _level(2, (1500, 1480, 1520), concurrency=2))
AGAIN = result_of(_level(3, (1010, 990, 1000)), _level(4, (1490, 1510, 1500), concurrency=2))
SLOWER = result_of(_level(5, (700, 710, 690), scale=1.3), _level(6, (1000, 1010, 990), scale=1.3, concurrency=2))


def _compare(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`loadgen compare ARGS` in this process: its status, output and errors."""
    try:
        status = main(["compare", *map(str, args)])
    except SystemExit as leaving:  # the parser's own errors
        status = int(leaving.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def _saved(tmp_path: Path, **runs: ProfileResult) -> list[Path]:
    paths = []
    for name, run in runs.items():
        run.save_json(tmp_path / f"{name}.json")
        paths.append(tmp_path / f"{name}.json")
    return paths


def test_thresholds_parse_as_metric_direction_and_percent() -> None:
    assert parse_gate("p99>+5%") == Gate("p99", 1, 5.0, "p99>+5%")
    assert parse_gate("throughput<-3%") == Gate("throughput", -1, 3.0, "throughput<-3%")
    assert parse_gate(" AVG > +12.5 % ") == Gate("avg", 1, 12.5, " AVG > +12.5 % ")
    for bad, reason in (
        ("p99>5%", "expected METRIC>+N% or METRIC<-N%"),
        ("p99>+5", "expected METRIC>+N% or METRIC<-N%"),
        ("p99>+abc%", "expected METRIC>+N% or METRIC<-N%"),
        ("", "expected METRIC>+N% or METRIC<-N%"),
        ("p98>+5%", "the metric is one of throughput, avg, p50, p90, p95, p99"),
        ("p99>-5%", "> takes +N% (an increase), < takes -N% (a decrease)"),
        ("throughput<+3%", "> takes +N% (an increase), < takes -N% (a decrease)"),
    ):
        with pytest.raises(OptionError, match=reason.replace("+", r"\+").replace("(", r"\(").replace(")", r"\)")):
            parse_gate(bad)


def test_the_same_distribution_twice_is_no_significant_change() -> None:
    comparison = loadgen.compare(BASE, AGAIN)
    assert [level.load for level in comparison.levels] == [1, 2]
    for level in comparison.levels:
        assert [metric.metric for metric in level.metrics] == ["throughput", "avg", "p50", "p90", "p95", "p99"]
        assert all(metric.shift == 0 for metric in level.metrics), level.metrics
    for text in ("p99>+5%", "p50>+5%", "avg>+5%", "throughput<-3%"):
        assert comparison.crossed(parse_gate(text)) == []


def test_a_slower_run_is_significant_and_crosses_only_the_thresholds_it_passes() -> None:
    comparison = loadgen.compare(BASE, SLOWER)
    for level in comparison.levels:
        shifts = {metric.metric: metric.shift for metric in level.metrics}
        assert shifts == {"throughput": -1, "avg": 1, "p50": 1, "p90": 1, "p95": 1, "p99": 1}
        throughput = level.metric("throughput")
        assert throughput is not None and throughput.change is not None and -0.34 < throughput.change < -0.29
    assert [level.load for level, _ in comparison.crossed(parse_gate("p50>+5%"))] == [1, 2]
    assert [level.load for level, _ in comparison.crossed(parse_gate("throughput<-3%"))] == [1, 2]
    assert comparison.crossed(parse_gate("p50>+60%")) == []  # a 30 % change is under it
    assert comparison.crossed(parse_gate("p50<-5%")) == []  # the other direction
    assert comparison.crossed(parse_gate("throughput>+3%")) == []


def test_a_p99_from_too_few_samples_is_not_tested() -> None:
    few = result_of(_level(7, (40, 41, 39)))
    slower = result_of(_level(8, (30, 31, 29), scale=3.0))
    [level] = loadgen.compare(few, slower).levels
    p99 = level.metric("p99")
    assert p99 is not None and p99.shift is None and p99.note == "too few samples to test (528 needed in each run)"
    p50 = level.metric("p50")
    assert p50 is not None and p50.shift == 1  # a median needs far fewer


def test_a_file_of_an_older_loadgen_tests_what_it_can() -> None:
    old = result_of(*(replace(level, confidence=None) for level in BASE.levels))
    [first, _] = loadgen.compare(old, SLOWER).levels
    p99 = first.metric("p99")
    assert p99 is not None and p99.shift is None and "no histogram" in p99.note
    throughput = first.metric("throughput")
    assert throughput is not None and throughput.shift == -1  # from the windows' trend, which older files have


def test_the_command_exits_1_only_when_a_threshold_is_crossed_significantly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, again, slower = _saved(tmp_path, base=BASE, again=AGAIN, slower=SLOWER)
    gates = ("--fail-if", "p99>+5%", "--fail-if", "throughput<-3%")
    status, out, err = _compare(base, again, *gates, capsys=capsys)
    assert (status, err) == (0, "")
    assert "pass p99>+5%: not crossed significantly at any load" in out
    assert "significant at 0.99 confidence" in out and "concurrency 2" in out
    status, out, err = _compare(base, slower, *gates, capsys=capsys)
    assert (status, err) == (1, "")
    assert "FAIL p99>+5%: concurrency 1 +" in out and "FAIL throughput<-3%: concurrency 1 -" in out
    assert "yes: higher" in out and "yes: lower" in out
    status, out, _ = _compare(base, slower, "--fail-if", "p99>+60%", capsys=capsys)
    assert status == 0 and "pass p99>+60%" in out
    status, out, _ = _compare(base, slower, capsys=capsys)  # no threshold: a report, never a failure
    assert status == 0 and "yes: higher" in out


def _one_error(status: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "loadgen compare: error:"))]
    assert status == 3 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_thresholds_options_and_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, slower = _saved(tmp_path, base=BASE, slower=SLOWER)
    assert "p99>5%" in _one_error(*_compare(base, slower, "--fail-if", "p99>5%", capsys=capsys)[::2])
    assert "--confidence 1" in _one_error(*_compare(base, slower, "--confidence", "1", capsys=capsys)[::2])
    assert "NEW.json" in _one_error(*_compare(base, capsys=capsys)[::2])
    missing = tmp_path / "missing.json"
    assert f"cannot read a loadgen result from {missing}" in _one_error(*_compare(missing, base, capsys=capsys)[::2])
    document = json.loads(base.read_text())
    broken = {
        "text": "not json",
        "array": "[1, 2]",
        "levels": json.dumps(document | {"levels": {"a": 1}}),
        "level": json.dumps(document | {"levels": [3]}),
        "bound": json.dumps(document | {"levels": [_with(document["levels"][0], "latency_us", {"p99": "high"})]}),
        "histogram": json.dumps(
            document | {"levels": [_with(document["levels"][0], "histograms", {"latency_us": "AAAA"})]}
        ),
        "huge": json.dumps(
            document | {"levels": [_with(document["levels"][0], "histograms", {"latency_us": _huge()})]}
        ),
    }
    for name, text in broken.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        assert str(path) in _one_error(*_compare(path, slower, capsys=capsys)[::2]), name
    rates = result_of(*BASE.levels)
    rates = replace(rates, mode="request_rate")
    [rate] = _saved(tmp_path, rate=rates)
    assert "cannot compare a concurrency sweep" in _one_error(*_compare(slower, rate, capsys=capsys)[::2])
    [far] = _saved(tmp_path, far=result_of(_level(9, (100, 100, 100), concurrency=8)))
    line = _one_error(*_compare(base, far, capsys=capsys)[::2])
    assert line.endswith(f"no load in both runs: {base} measured 1, 2, {far} 8")


def _huge() -> str:
    """An encoded histogram of 10^18 latencies: more than any run measures, and past the tests' precision."""
    histogram = new_histogram()
    histogram.record_value(100, 10**18)
    return str(histogram.encode().decode("ascii"))


def _with(level: dict[str, object], key: str, value: object) -> dict[str, object]:
    """A level of a JSON document with one key of its confidence object replaced."""
    confidence = level["confidence"]
    assert isinstance(confidence, dict)
    return level | {"confidence": confidence | {key: value}}


def test_a_bad_threshold_in_a_real_process_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    base, slower = _saved(tmp_path, base=BASE, slower=SLOWER)
    assert "p99>+5" in one_line_error(run_cli("compare", base, slower, "--fail-if", "p99>+5"), 3)


@pytest.fixture(scope="module")
def runs(test_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two quick runs of the model that answers at once, and one of the model that sleeps 20 ms per request."""
    folder = tmp_path_factory.mktemp("runs")
    paths = {}
    for name, model in (("base", "fast_step"), ("again", "fast_step"), ("slower", "sleeper")):
        result = loadgen.profile_sync(test_server.grpc_url, model, concurrency=1, shape={"INPUT0": [4]}, **QUICK)
        paths[name] = folder / f"{name}.json"
        result.save_json(paths[name])
    return paths


# Generous thresholds: two runs on a busy test machine may differ by more than noise, never by half; the slower
# model takes twenty times as long.
GATES = ("--fail-if", "p50>+50%", "--fail-if", "throughput<-33%")


def test_two_runs_of_the_same_model_pass_the_gate(runs: dict[str, Path]) -> None:
    done = run_cli("compare", runs["base"], runs["again"], *GATES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pass p50>+50%" in done.stdout and "pass throughput<-33%" in done.stdout
    assert "concurrency 1" in done.stdout and "Traceback" not in done.stderr


def test_a_slower_model_fails_the_gate(runs: dict[str, Path]) -> None:
    done = run_cli("compare", runs["base"], runs["slower"], *GATES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL p50>+50%: concurrency 1 +" in done.stdout and "yes: higher" in done.stdout
    # (throughput's test has three windows a side, 2 degrees of freedom: on a busy machine the base's 300 ms windows
    # can spread too far for even this drop to be significant at 0.99, so its line may say pass)
    assert "throughput<-33%: " in done.stdout
