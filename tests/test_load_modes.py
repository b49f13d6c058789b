"""Open-loop rates, intervals, count windows and warm-up, end to end on the real server.

`sleeper` sleeps 20 ms per request with one instance: its capacity is 50 requests/s.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.helpers import QUICK

SLEEPER = {"model_name": "sleeper", "input_data": "zero", "shape": {"INPUT0": [8]}}


class _Threads:
    """A progress receiver that notes the thread each call came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def started(self, run: object) -> None:
        self.calls.append(("started", threading.get_ident()))

    def window(self, *args: object) -> None:
        self.calls.append(("window", threading.get_ident()))

    def level(self, level: object) -> None:
        self.calls.append(("level", threading.get_ident()))


LAG_KEYS = {"p50", "p99", "max"}


def test_half_capacity_is_sent_on_time_and_served_at_the_sleep_time(
    test_server: EmbeddedServer, tmp_path: Path
) -> None:
    out = tmp_path / "rate.json"
    status = main(
        [
            "-u",
            test_server.grpc_url,
            "-m",
            "sleeper",
            "--input-data",
            "zero",
            "--shape",
            "INPUT0:8",
            "--request-rate-range",
            "25",
            "-p",
            "2000",
            "-s",
            "1000",
            "-r",
            "3",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    document = json.loads(out.read_text())
    assert document["mode"] == "request_rate"
    [level] = document["levels"]
    assert "concurrency" not in level
    assert level["request_rate"] == 25.0
    assert abs(level["send_rate"] - 25.0) <= 0.05 * 25.0
    assert set(level["send_lag_us"]) == LAG_KEYS
    assert set(level["service_latency_us"]) == set(level["latency_us"])
    assert 0 <= level["delayed_share"] <= 1
    assert set(level["late_sends"]) == {"loop_busy", "descheduled", "in_flight_limit"}
    # nothing queues at half capacity: latency is the sleep plus overheads
    assert 20_000 <= level["latency_us"]["p50"] < 60_000
    assert level["saturated"] != "server"  # the server keeps up; the client may lag on a busy machine
    assert level["error_count"] == 0, level["errors"]


def test_twice_capacity_shows_queueing_in_response_time_and_names_the_server(test_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        url=test_server.grpc_url,
        request_rate_range=100,
        max_in_flight=4,
        measurement_interval=1000,
        stability_percentage=1,
        max_trials=4,
        **SLEEPER,  # type: ignore[arg-type]
    )
    [level] = result.levels
    first, last = level.trend[0], level.trend[-1]
    assert len(level.trend) == 4
    # response time counts from the schedule: the backlog grows window after window
    assert last.p99_us > 1.5 * first.p99_us
    # service time (from the actual send) is bounded by the 4 requests in flight on one 20 ms instance
    assert first.service_p99_us is not None and last.service_p99_us is not None
    # it grows far less than the response time, which includes the wait for a slot (its p99 still moves with the
    # machine's load, so the comparison is with the response time's growth, not a fixed bound)
    service_growth = last.service_p99_us / first.service_p99_us
    assert service_growth < (last.p99_us / first.p99_us) / 2
    assert level.saturated == "server"
    assert level.in_flight_limit_hits and level.in_flight_limit_hits > 0
    assert not level.stable


def test_poisson_and_intervals_schedules(test_server: EmbeddedServer, tmp_path: Path) -> None:
    poisson = loadgen.profile_sync(
        url=test_server.grpc_url,
        request_rate_range=20,
        request_distribution="poisson",
        measurement_interval=1000,
        stability_percentage=1000,
        max_trials=3,
        **SLEEPER,  # type: ignore[arg-type]
    )
    assert poisson.mode == "request_rate"
    assert poisson.levels[0].request_count > 20
    gaps = tmp_path / "gaps.txt"
    gaps.write_text("40000\n60000\n")  # 50 ms on average: 20 requests/s
    intervals = loadgen.profile_sync(
        url=test_server.grpc_url,
        request_intervals=str(gaps),
        measurement_interval=1000,
        stability_percentage=1000,
        max_trials=3,
        **SLEEPER,  # type: ignore[arg-type]
    )
    assert intervals.mode == "request_intervals"
    level = intervals.levels[0]
    assert level.request_rate == 20.0
    assert level.send_rate is not None and abs(level.send_rate - 20.0) <= 2.0


def test_request_count_measures_one_window_of_exactly_n_requests(examples_server: EmbeddedServer) -> None:
    before = _served(examples_server)
    result = loadgen.profile_sync(
        url=examples_server.grpc_url,
        model_name="identity_uint8",
        concurrency_range=4,
        request_count=120,
        warmup_request_count=30,
    )
    [level] = result.levels
    assert level.request_count == 120
    assert level.windows == 1
    assert level.stable
    assert _served(examples_server) - before == 120 + 30  # exactly: the warm-up went to the server, not the figures


def test_count_windows(examples_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        url=examples_server.grpc_url,
        model_name="identity_uint8",
        concurrency_range=2,
        measurement_mode="count_windows",
        measurement_request_count=40,
        stability_percentage=1000,
    )
    level = result.levels[0]
    # perf_analyzer's count windows: at least the count, and at least a second each
    assert all(window.request_count >= 40 for window in level.trend)
    assert level.duration_s >= 3 * 1.0


def test_percentile_and_latency_threshold(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    status = main(
        [
            "-u",
            examples_server.grpc_url,
            "-m",
            "identity_uint8",
            "--concurrency-range",
            "1:6",
            "--percentile",
            "95",
            "-l",
            "0.001",
            "-p",
            "300",
            "-s",
            "1000",
            "-r",
            "4",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    levels = json.loads(out.read_text())["levels"]
    assert len(levels) == 1  # 1 us is beaten at once: the sweep stops at the first level
    assert levels[0]["percentile"] == 95
    assert levels[0]["percentile_us"] >= levels[0]["latency_us"]["p90"]


def _served(server: EmbeddedServer) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sum(s.inference_count for s in client.get_inference_statistics("identity_uint8").model_stats)
    finally:
        client.close()


def test_an_open_loops_control_work_runs_off_the_senders_loop(test_server: EmbeddedServer) -> None:
    """Windows and levels are summed up and reported from another thread than the loop's that sends on schedule;
    a closed loop keeps them on its loop."""
    for load, apart in (({"request_rate_range": "25"}, True), ({"concurrency_range": "1"}, False)):
        threads = _Threads()
        loadgen.profile_sync(test_server.grpc_url, progress=threads, **SLEEPER, **QUICK, **load)  # type: ignore[arg-type]
        (_, loop), *reports = threads.calls
        assert {kind for kind, _ in reports} == {"window", "level"}
        assert all((thread != loop) is apart for _, thread in reports), threads.calls
