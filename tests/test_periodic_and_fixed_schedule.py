"""perf_analyzer's two load modes without levels of their own: periodic concurrency (streams added each time the
latest ones have had --request-period responses) and --fixed-schedule (each JSON entry once, at its timestamp);
checked from the profile export's requests (their order and counts, never their timings), and their refusals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.helpers import one_line_error, run_cli, successes

UINT64_MAX = 2**64 - 1


def _counts(tmp_path: Path, count: int = 3) -> Path:
    """Input data for `streamer`: every request asks for `count` responses (random data would ask for billions)."""
    data = tmp_path / "counts.json"
    data.write_text(json.dumps({"data": [{"COUNT": [count]}]}))
    return data


def _periodic(server: EmbeddedServer, tmp_path: Path, *extra: object) -> list[str]:
    return [
        "-u",
        server.grpc_url,
        "-m",
        "streamer",
        "--streaming",
        "--input-data",
        str(_counts(tmp_path)),
        *map(str, extra),
    ]


@pytest.mark.parametrize(("start", "end", "step", "period"), [(1, 4, 1, 2), (2, 6, 2, 3)])
def test_periodic_concurrency_adds_streams_each_time_the_latest_have_their_period(
    test_server: EmbeddedServer, tmp_path: Path, start: int, end: int, step: int, period: int
) -> None:
    export, csv = tmp_path / "export.json", tmp_path / "latency.csv"
    args = ["--periodic-concurrency-range", f"{start}:{end}:{step}", "--request-period", period]
    assert main([*_periodic(test_server, tmp_path, *args), "--profile-export-file", str(export), "-f", str(csv)]) == 0
    assert not csv.exists()  # no levels, no windows: only the export, as perf_analyzer
    [experiment] = json.loads(export.read_text())["experiments"]
    assert experiment["experiment"] == {"mode": "concurrency", "value": 1}
    assert experiment["window_boundaries"] == [0, UINT64_MAX]
    requests: list[dict[str, Any]] = sorted(experiment["requests"], key=lambda request: request["timestamp"])
    assert len(requests) == end  # every stream sends one request
    for request in requests:
        assert request["response_outputs"] == [{"INDEX": 0}, {"INDEX": 1}, {"INDEX": 2}, {"INDEX": ""}]
    batches = [requests[:start]] + [requests[i : i + step] for i in range(start, end, step)]
    for previous, batch in itertools.pairwise(batches):
        # a batch leaves only once every request of the one before has had its period's response
        reached = max(request["response_timestamps"][period - 1] for request in previous)
        assert min(request["timestamp"] for request in batch) > reached


def test_periodic_concurrency_refusals(tmp_path: Path) -> None:
    base = ["-m", "streamer", "--periodic-concurrency-range", "1:4:1"]
    needs_stream = one_line_error(run_cli(*base, "--profile-export-file", tmp_path / "x.json"), 3)
    assert "--periodic-concurrency-range needs --streaming" in needs_stream
    assert "--profile-export-file" in one_line_error(run_cli(*base, "--streaming"), 3)
    uneven = one_line_error(run_cli("--periodic-concurrency-range", "1:4:2", "--streaming"), 3)
    assert "STEP dividing END - START" in uneven


def test_a_period_longer_than_a_requests_responses_is_a_clear_error(
    test_server: EmbeddedServer, tmp_path: Path
) -> None:
    args = ["--periodic-concurrency-range", "1:2:1", "--request-period", "5"]  # 3 responses and the final one
    done = run_cli(*_periodic(test_server, tmp_path, *args), "--profile-export-file", tmp_path / "x.json")
    assert "--request-period 5: a request had only 4 responses" in one_line_error(done, 3)


def _schedule(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    data = tmp_path / "schedule.json"
    data.write_text(json.dumps({"data": entries}))
    return data


# (INPUT0's value, when in ms): not in order of time in the file
SCHEDULE = [(0, 50), (1, 0), (2, 150), (3, 100), (4, 250), (5, 200)]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_fixed_schedule_sends_each_entry_once_in_the_order_of_its_time(
    examples_server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    entries: list[dict[str, Any]] = [{"INPUT0": [value] * 16, "timestamp": [ms]} for value, ms in SCHEDULE[:3]]
    entries += [{"INPUT0": [value] * 16, "timestamp": ms} for value, ms in SCHEDULE[3:]]  # a bare number too
    url = examples_server.grpc_url if protocol == "grpc" else examples_server.http_url
    export, out = tmp_path / "export.json", tmp_path / "result.json"
    before = successes(examples_server, "identity_uint8")
    status = main(
        [
            *("-i", protocol, "-u", url, "-m", "identity_uint8", "--fixed-schedule"),
            *("--input-data", str(_schedule(tmp_path, entries)), "--warmup-request-count", "1"),
            *("--profile-export-file", str(export), "--json", str(out)),
        ]
    )
    assert status == 0
    assert successes(examples_server, "identity_uint8") - before == len(SCHEDULE)  # each entry once
    result = json.loads(out.read_text())
    assert result["mode"] == "fixed_schedule"
    [level] = result["levels"]
    assert level["windows"] == 1 and level["request_count"] == len(SCHEDULE) - 1 and level["stable"]
    [experiment] = json.loads(export.read_text())["experiments"]
    assert experiment["experiment"] == {"mode": "request_rate", "value": 0.0}  # as perf_analyzer records it
    assert len(experiment["window_boundaries"]) == 2
    sent = sorted(experiment["requests"], key=lambda request: request["timestamp"])
    # the warm-up took the earliest entry (1, at 0 ms); the others left in the order of their times
    in_time = [value for value, _ in sorted(SCHEDULE, key=lambda entry: entry[1])][1:]
    assert [request["request_inputs"]["INPUT0"][0] for request in sent] == in_time


def test_fixed_schedule_refusals_before_connecting(tmp_path: Path) -> None:
    assert "one --input-data JSON file" in one_line_error(run_cli("--fixed-schedule"), 3)
    data = _schedule(tmp_path, [{"INPUT0": [0] * 16, "timestamp": 0}])
    assert "not with --request-count" in one_line_error(
        run_cli("--fixed-schedule", "--input-data", data, "--request-count", "1"), 3
    )
    twice = one_line_error(run_cli("--fixed-schedule", "--input-data", data, "--input-data", data), 3)
    assert "one --input-data JSON file" in twice
    periodic = one_line_error(run_cli("--fixed-schedule", "--periodic-concurrency-range", "1:2"), 3)
    assert "cannot be combined" in periodic


def test_fixed_schedule_refusals_of_the_data(
    examples_server: EmbeddedServer, test_server: EmbeddedServer, tmp_path: Path
) -> None:
    def refusal(server: EmbeddedServer, model: str, entries: Any, *extra: object) -> str:
        data = _schedule(tmp_path, entries)
        done = run_cli("-u", server.grpc_url, "-m", model, "--fixed-schedule", "--input-data", data, *extra)
        return one_line_error(done, 3)

    entry = {"INPUT0": [0] * 16, "timestamp": 0}
    assert "must be below the 1 entries" in refusal(
        examples_server, "identity_uint8", [entry], "--warmup-request-count", 1
    )
    assert "no data for input(s) timestamp" in refusal(examples_server, "identity_uint8", [{"INPUT0": [0] * 16}])
    late = refusal(examples_server, "identity_uint8", [{**entry, "timestamp": -1}])
    assert '"timestamp" must be whole milliseconds' in late
    assert "several streams" in refusal(examples_server, "identity_uint8", [[entry], [entry]])
    assert 'expected {"data": [' in refusal(examples_server, "identity_uint8", [])  # no entry to send
    sequence = refusal(test_server, "accumulator", [{"VALUE": [1], "timestamp": 0}])
    assert "is a sequence model: --fixed-schedule" in sequence
