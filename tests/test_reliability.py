"""Faults mid-run, bad input, interruption: loadgen says what went wrong and keeps what it measured."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.fake_triton import fake_triton
from tests.helpers import FAST, TEST_MODELS, one_line_error, only, registered_regions, run_cli

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
    """A server this test may kill, with the models these tests run alone."""
    with EmbeddedServer(TEST_MODELS, log_path=tmp_path / "server.log", **only("sleeper", "streamer")) as server:
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
    statuses = [row.rsplit(",", 1)[1] for row in csv.read_text().splitlines()[1:]]
    assert statuses == [
        "stable" if lv["stable"] else "partial" if not lv["complete"] else "unstable" for lv in document["levels"]
    ]
    assert _left_in_dev_shm(process.pid) == []


# each signal once, each transport once: the signal's handling does not depend on the transport
@pytest.mark.parametrize(
    ("signum", "status", "transport"),
    [(signal.SIGINT, 130, ["-i", "grpc"]), (signal.SIGTERM, 143, ["-i", "http", "--shared-memory", "system"])],
    ids=["sigint-grpc", "sigterm-http-shm"],
)
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
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert "Try a longer --measurement-interval" not in stdout  # stopped, not unstable
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
        (["-i", "grpc", "-u", "http://localhost:8001"], "without a scheme"),
        (["--concurrency-range", "1:100000000"], "more than 10000 levels"),
        (["--request-rate-range", "1:1000:0.0001"], "more than 10000 levels"),
        (["--concurrency-range", "1", "--workers", "2", *SLEEPER], "more worker processes than requests in flight"),
        (["--workers", "500"], "at most 4 per core"),
        (["--shape", "INPUT0:9000000000", *SLEEPER[:4]], "over the 2 GiB a request can hold"),
        (["-H", "bad name: v"], "a header name is letters"),
        (["-H", "x-key: a\x01b"], "printable ASCII"),
        (["-i", "http", "-H", "bad name: v"], "a header name is letters"),
        (["--proto", "http"], "unrecognized arguments: --proto"),
        (["-m", ":smile:"], "model ':smile:' is not on"),
        (["-u", "localhost:abc"], "-u localhost:abc: expected HOST:PORT"),
    ],
)
def test_bad_options_are_one_line_with_status_3(
    test_server: EmbeddedServer, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Through `main`, which `python -m loadgen` exits with (the tests around run the command itself): 24 processes
    would start loadgen 24 times."""
    try:
        status = main(["-u", test_server.grpc_url, *args, "-p", "300"])
    except SystemExit as exit_:  # argparse's own refusals (an unknown option) exit, as the command does
        status = exit_.code
    stderr = capsys.readouterr().err
    assert status == 3, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert message in stderr


@pytest.mark.server
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


def test_rich_markup_and_emoji_codes_in_user_text_come_out_as_typed(test_server: EmbeddedServer) -> None:
    done = _one_line_error("-u", test_server.grpc_url, "-m", "[bold]:smile:[/]")
    assert "'[bold]:smile:[/]'" in done.stderr and "\N{SMILING FACE WITH OPEN MOUTH}" not in done.stderr


def _listening_socket() -> tuple[socket.socket, str]:
    """A TCP port that accepts connections and never answers (a server hung before its first byte)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_connecting_stops_within_two_seconds(tmp_path: Path, signum: int, status: int) -> None:
    listener, url = _listening_socket()
    out = tmp_path / "r.json"
    with listener:
        process = _start("-u", url, *SLEEPER, "--json", str(out))
        listener.settimeout(30)
        connection, _ = listener.accept()  # loadgen is connecting: the server never answers
        time.sleep(0.5)
        process.send_signal(signum)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        connection.close()
    assert time.monotonic() - started < 2.5, "stopped within ~2 s of the signal"
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    document = json.loads(out.read_text())
    assert (document["status"], document["levels"]) == ("interrupted", [])


@pytest.mark.server
def test_a_signal_while_loading_a_large_input_file_stops_within_two_seconds(
    examples_server: EmbeddedServer, tmp_path: Path
) -> None:
    data = tmp_path / "large.json"
    step = {"INPUT0": {"content": list(range(16)), "shape": [16]}}  # object steps: read one by one, slowly
    data.write_text(json.dumps({"data": [step] * 300_000}))
    process = _start("-u", examples_server.grpc_url, "-m", "identity_uint8", "--input-data", str(data))
    seen = _wait_for(process, "loading")
    assert "MB of input data" in seen, seen
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 2.5, "stopped within ~2 s of the signal"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


def test_windows_without_a_single_request_are_measurements_too(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """A rate under one request per window: most windows hold no send at all; the result still has every level."""
    gaps = tmp_path / "gaps.txt"
    gaps.write_text("700000\n")  # one request every 0.7 s, windows of 0.3 s
    out, csv = tmp_path / "r.json", tmp_path / "r.csv"
    for load in (["--request-rate-range", "1"], ["--request-intervals", str(gaps)]):
        done = run_cli("-u", test_server.grpc_url, *SLEEPER, *load, *FAST, "--json", out, "-f", csv)
        assert done.returncode in (0, 2), done.stderr  # empty windows never agree: the level may be unstable
        assert "Traceback" not in done.stderr
        document = json.loads(out.read_text())
        assert len(document["levels"]) == 1 and document["levels"][0]["windows"] == 4
        assert csv.read_text().count("\n") == 2


def test_a_sweep_that_stops_unstable_says_so(test_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    process = run_cli(
        *("-u", test_server.grpc_url, *SLEEPER, "--concurrency-range", "1:3"),
        *("-p", "200", "-s", "0.0001", "-r", "3", "--json", out),
    )
    assert process.returncode == 2, process.stderr
    document = json.loads(out.read_text())
    assert document["status"] == "unstable" and not document["stable"]
    assert "no stable measurement at concurrency 1 after 3 windows" in document["message"]
    assert len(document["levels"]) == 1
    assert "no stable measurement at concurrency 1" in process.stdout
    assert process.returncode == 2


def test_a_window_that_never_ends_is_refused() -> None:
    line = one_line_error(run_cli("-u", "127.0.0.1:9", *SLEEPER, "-p", "99999999999"), status=3)
    assert "--measurement-interval 99999999999: must be between 1 ms and 3600000 ms" in line


def test_an_http_server_that_is_not_triton_is_named() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        line = one_line_error(run_cli("-i", "http", "-u", f"127.0.0.1:{server.server_port}", *SLEEPER), status=99)
    finally:
        server.shutdown()
        server.server_close()
    assert "answers HTTP but is not a Triton server" in line


def test_a_model_that_streams_without_end_neither_hangs_nor_ignores_ctrl_c(own_server: EmbeddedServer) -> None:
    """Random data asks the decoupled model for up to 2^31 responses: no request ever completes (and the model's
    instance stays busy with them: a server of the test's own, which the other tests do not share)."""
    test_server = own_server
    streaming = ["-m", "streamer", "--streaming", "-s", "1000"]
    done = run_cli("-u", test_server.grpc_url, *streaming, "-p", "300", "-r", "3", timeout_s=60)
    assert done.returncode == 2, done.stderr
    assert "no request completed at concurrency 1 in 3 windows" in done.stdout
    process = _start("-u", test_server.grpc_url, *streaming, "-p", "2000", "-r", "10")
    assert "window 1:" in _wait_for(process, "window 1:")  # two seconds in: the stream is busy all along
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 3.5, "stopped within ~2 s of the signal, plus the grace for requests in flight"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert own_server._process is not None  # its model is still streaming: it would take 30 s to stop gracefully
    os.killpg(own_server._process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_huge_concurrency_does_not_starve_the_liveness_check(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    """5,000 requests in flight keep loadgen's loop busy; its liveness check runs in a thread and on a connection of
    its own, so a server that answers is never reported gone."""
    out = tmp_path / "r.json"
    done = run_cli(
        "-u", examples_server.grpc_url, "-m", "identity_uint8", "--concurrency-range", "5000",
        "-p", "2000", "-s", "1000", "-r", "3", "--json", out, timeout_s=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "went away" not in done.stdout + done.stderr
    [level] = json.loads(out.read_text())["levels"]
    assert level["request_count"] > 0 and level["error_count"] == 0, level["errors"]
