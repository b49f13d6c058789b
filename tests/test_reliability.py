"""Faults mid-run, bad input, interruption: loadgen says what went wrong and keeps what it measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.conftest import TEST_MODELS, registered_regions
from tests.fake_triton import fake_triton

QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 4}
SLEEPER = ["-m", "sleeper", "--input-data", "zero", "--shape", "INPUT0:8"]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadgen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(process: subprocess.Popen[str], text: str, timeout_s: float = 60) -> str:
    """Read the process's stdout until a line contains `text`."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if text in line or not line:
            break
    return "".join(seen)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server this test may kill."""
    with EmbeddedServer(TEST_MODELS, log_path=tmp_path / "server.log") as server:
        yield server


def _left_in_dev_shm(pid: int) -> list[Path]:
    """Shared-memory regions a loadgen process left behind."""
    return list(Path("/dev/shm").glob(f"loadgen_{pid}_*"))


# over HTTP with shared memory too: a dead server's regions are still freed on loadgen's side
TRANSPORTS = pytest.mark.parametrize(
    "transport", [["-i", "grpc"], ["-i", "http", "--shared-memory", "system"]], ids=["grpc", "http-shm"]
)


@TRANSPORTS
def test_the_server_dying_mid_sweep_keeps_every_finished_level(
    own_server: EmbeddedServer, tmp_path: Path, transport: list[str]
) -> None:
    out, csv = tmp_path / "r.json", tmp_path / "r.csv"
    process = _start(
        "-u", own_server.url(transport[1]), *transport, *SLEEPER, "--concurrency-range", "1:20", "-p", "500",
        "-s", "1000", "-r", "3", "--json", str(out), "-f", str(csv),
    )  # fmt: skip
    seen = _wait_for(process, "       2 ")  # the second level's row: one level is finished
    assert own_server._process is not None
    os.killpg(own_server._process.pid, signal.SIGKILL)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 15, "loadgen noticed the server went away within seconds"
    assert process.returncode == 99, seen + stdout + stderr
    assert "went away" in stderr or "cannot reach Triton" in stderr
    assert "Traceback" not in stderr
    document = json.loads(out.read_text())
    assert document["status"] == "failed"
    finished = [level for level in document["levels"] if level["complete"]]
    assert len(finished) >= 2
    assert csv.read_text().count("\n") == 1 + len(document["levels"])
    assert _left_in_dev_shm(process.pid) == []


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@TRANSPORTS
def test_a_signal_stops_the_run_and_writes_what_it_has(
    test_server: EmbeddedServer, tmp_path: Path, signum: int, status: int, transport: list[str]
) -> None:
    out = tmp_path / "r.json"
    process = _start(
        "-u", test_server.url(transport[1]), *transport, *SLEEPER, "--concurrency-range", "1:50", "-p", "400",
        "-s", "1000", "-r", "3", "--json", str(out),
    )  # fmt: skip
    _wait_for(process, "       1 ")
    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert "Task was destroyed" not in stderr
    document = json.loads(out.read_text())
    assert document["status"] == "interrupted"
    assert document["levels"][0]["complete"] is True
    assert len(document["levels"]) < 50
    assert _left_in_dev_shm(process.pid) == []
    assert not registered_regions(test_server)


def test_failed_requests_are_counted_by_message_and_are_not_fatal() -> None:
    with fake_triton(fail_every=4) as url:
        result = loadgen.profile_sync(url=url, input_data="zero", concurrency_range=2, max_error_rate=0.5, **QUICK)
    level = result.levels[0]
    assert result.status == "complete"
    assert level.error_count > 0
    assert level.errors == {"INTERNAL: injected failure": level.error_count}
    assert level.request_count > 2 * level.error_count


def test_an_error_rate_over_the_limit_stops_the_sweep_and_keeps_the_levels(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with fake_triton(fail_every=4) as url:
        status = main(
            ["-u", url, "--input-data", "zero", "--concurrency-range", "1:3", "-p", "300", "--json", str(out)]
        )
    assert status == 99
    document = json.loads(out.read_text())
    assert document["status"] == "failed"
    assert "over --max-error-rate 0.1" in document["message"]
    assert "injected failure" in document["message"]
    assert document["levels"] and document["levels"][-1]["complete"] is False


def test_requests_that_hang_time_out_as_their_own_kind_of_error() -> None:
    with fake_triton(hang_every=5, hang_s=3) as url:
        result = loadgen.profile_sync(
            url=url, input_data="zero", concurrency_range=4, request_timeout=100, max_error_rate=0.9, **QUICK
        )
    errors = result.levels[0].errors
    assert set(errors) == {"timeout: no answer within 100 ms"}
    assert result.levels[0].request_count > 0


def _one_line_error(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", *args, "-p", "300"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done


def test_the_http_port_is_recognised(test_server: EmbeddedServer) -> None:
    done = _one_line_error("-u", test_server.http_url, *SLEEPER)
    assert done.returncode == 99
    assert "looks like Triton's HTTP port" in done.stderr


def test_a_host_that_does_not_resolve() -> None:
    started = time.monotonic()
    done = _one_line_error("-u", "no-such-host.invalid:8001")
    assert done.returncode == 99
    assert "no-such-host.invalid:8001" in done.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency-range", "8:1"], "END must not be below START"),
        (["--concurrency-range", "0"], "at least 1"),
        (["--concurrency-range", "x"], "whole numbers"),
        (["--request-rate-range", "-5"], "above 0"),
        (["--concurrency-range", "2", "--request-rate-range", "5"], "cannot be combined"),
        (["-H", "no-colon"], "-H: expected 'Name: value'"),
        (["--shape", "NOPE:3", *SLEEPER[:2]], "no such input"),
        (["--input-data", "/no/such/file.jpg", *SLEEPER[:2]], "no such file"),
        (["-b", "2", *SLEEPER], "does not support batching"),
        (["--ssl-grpc-root-certifications-file", "ca.pem"], "needs --ssl-grpc-use-ssl"),
        (["-u", "localhost:notaport"], "expected HOST:PORT"),
        (["-i", "http", "-u", "localhost:99999"], "expected HOST:PORT"),
        (["-i", "http", "-u", "http://localhost:8000"], "without a scheme"),
    ],
)
def test_bad_options_are_one_line_with_status_3(test_server: EmbeddedServer, args: list[str], message: str) -> None:
    done = _one_line_error("-u", test_server.grpc_url, *args)
    assert done.returncode == 3, done.stderr
    assert message in done.stderr


def test_a_model_that_is_not_ready(tmp_path: Path) -> None:
    with EmbeddedServer(
        TEST_MODELS, explicit_model_control=True, load_models=("sleeper",), log_path=tmp_path / "log"
    ) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.unload_model("sleeper")
        client.close()
        done = _one_line_error("-u", server.grpc_url, *SLEEPER)
    assert done.returncode == 99
    assert "model 'sleeper' is in the repository" in done.stderr
    assert "UNAVAILABLE" in done.stderr or "UNLOADING" in done.stderr


def test_soak_memory_and_file_descriptors_stay_flat(examples_server: EmbeddedServer) -> None:
    """A bounded soak (LOADGEN_SOAK_S seconds, default 12) at moderate load."""
    seconds = float(os.environ.get("LOADGEN_SOAK_S", "12"))
    samples: list[tuple[int, int]] = []

    class Sampler:
        def started(self, *args: object) -> None: ...

        def window(self, *args: object) -> None:
            samples.append((_rss_kb(), len(os.listdir("/proc/self/fd"))))

        def level(self, *args: object) -> None: ...

    windows = max(int(seconds / 0.5), 6)
    loadgen.profile_sync(
        progress=Sampler(),  # type: ignore[arg-type]
        url=examples_server.grpc_url,
        model_name="identity_uint8",
        request_rate_range=300,
        measurement_interval=500,
        stability_percentage=0.0001,
        max_trials=windows,
    )
    assert len(samples) == windows
    settled = samples[2:]
    rss = [kb for kb, _ in settled]
    fds = [n for _, n in settled]
    assert max(rss) - rss[0] < 20_000, f"RSS grew from {rss[0]} kB to {max(rss)} kB"
    assert max(fds) - min(fds) <= 2, f"open file descriptors went from {min(fds)} to {max(fds)}"


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
