"""The embedded server launcher and `loadgen serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from loadgen.server import EmbeddedServer, ServerStartError, free_port
from tests.conftest import TEST_MODELS


def test_serve_prints_its_urls_and_stops_on_sigterm(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadgen",
            "serve",
            "--model-repository",
            str(TEST_MODELS),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Triton ready" in line or not line:
                break
        assert f"gRPC localhost:{grpc_port}" in "".join(lines)
        client = grpcclient.InferenceServerClient(f"localhost:{grpc_port}")
        assert client.is_model_ready("sleeper")
        client.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Triton stopped" in out
    with socket.socket() as sock:  # the server released its port
        sock.bind(("127.0.0.1", grpc_port))


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedServer(TEST_MODELS, grpc_port=port, log_path=tmp_path / "log")
        with pytest.raises(ServerStartError, match="tritonserver exited"):
            server.start()
    assert not server.running


def test_a_missing_repository_is_a_clear_error() -> None:
    with pytest.raises(ServerStartError, match="is not a directory"):
        EmbeddedServer(Path("no/such/repository")).start()


def test_a_killed_server_leaves_nothing_in_dev_shm(tmp_path: Path) -> None:
    server = EmbeddedServer(TEST_MODELS, log_path=tmp_path / "log").start()
    try:
        regions = list(Path("/dev/shm").glob(f"{server._shm_prefix}*"))
        assert regions  # the Python backend's regions carry this server's prefix
        assert server._process is not None
        os.killpg(server._process.pid, signal.SIGKILL)  # no chance to clean up after itself
        server._process.wait()
        assert all(region.exists() for region in regions)
    finally:
        server.stop()
    assert not [region for region in regions if region.exists()]
