"""The embedded server launcher and `loadgen serve`."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from loadgen.server import EmbeddedServer, ServerStartError, free_port
from tests.helpers import TEST_MODELS, only, serve_process, stop_served


@pytest.mark.server
def test_serve_prints_its_urls_and_stops_on_sigterm(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    with serve_process(
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
            "--host",
            "0.0.0.0",
        ]
    ) as process:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Triton ready" in line or not line:
                break
        assert f"gRPC localhost:{grpc_port}" in "".join(lines)
        assert {_listening(port) for port in (grpc_port, http_port, metrics_port)} == {"0.0.0.0"}  # --host widened it
        client = grpcclient.InferenceServerClient(f"localhost:{grpc_port}")
        assert client.is_model_ready("sleeper")
        client.close()
        stop_served(process, signal.SIGTERM)
    with socket.socket() as sock:  # the server released its port
        sock.bind(("127.0.0.1", grpc_port))


def _listening(port: int) -> str:
    """The address a local TCP port listens on, from the kernel's tables ("0.0.0.0" for any address)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return "0.0.0.0" if ip.is_unspecified else str(ip)
    raise AssertionError(f"nothing listens on port {port}")


def test_every_port_of_the_embedded_server_listens_on_loopback_only(test_server: EmbeddedServer) -> None:
    """Its model-control API among them: nobody on the network can load or unload models."""
    ports = (test_server.grpc_port, test_server.http_port, test_server.metrics_port)
    assert {_listening(port) for port in ports} == {"127.0.0.1"}


def test_a_taken_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedServer(TEST_MODELS, grpc_port=port, log_path=tmp_path / "log")
        with pytest.raises(ServerStartError, match=f"the gRPC port {port} is taken"):
            server.start()
    assert not server.running


def _live_processes() -> Iterator[tuple[int, int, int]]:
    """Every live process as (pid, parent, process group); zombies, dead already, left out."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if state != "Z":
            yield int(entry.name), int(parent), int(group)


def _group(pid: int) -> list[int]:
    """The live processes of a process group."""
    return [member for member, _, group in _live_processes() if group == pid]


def test_a_missing_repository_is_a_clear_error() -> None:
    with pytest.raises(ServerStartError, match="is not a directory"):
        EmbeddedServer(Path("no/such/repository")).start()


@pytest.mark.server
def test_a_killed_server_leaves_nothing_in_dev_shm(tmp_path: Path) -> None:
    server = EmbeddedServer(TEST_MODELS, log_path=tmp_path / "log", **only("sleeper")).start()
    try:
        regions = list(Path("/dev/shm").glob(f"{server._shm_prefix}*"))
        assert regions  # the Python backend's regions carry this server's prefix
        assert server._process is not None
        group = server._process.pid
        stub = next(pid for pid in _group(group) if pid != group)
        os.kill(stub, signal.SIGSTOP)  # a stub too busy to notice its server died (stopped: it cannot)
        os.kill(group, signal.SIGKILL)  # the server only: no chance to clean up, that stub orphaned
        server._process.wait()
        assert stub in _group(group)
        assert all(region.exists() for region in regions)
    finally:
        server.stop()
    assert not [region for region in regions if region.exists()]
    assert _group(group) == []  # stop ended the whole process group


SLOW_START = """import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(600)  # a model that loads for minutes

    def execute(self, requests):
        return []
"""


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return [child for child, parent, _ in _live_processes() if parent == pid]


def _command_line(pid: int) -> list[str]:
    """A process's arguments (none once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_server_starts_stops_it_at_once_and_leaves_nothing(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C while a model loads ends `loadgen serve` then, not when the model is ready: status 130, the server and
    its model stubs gone, its work folder removed."""
    model = tmp_path / "repository" / "slow_start"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(SLOW_START)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X", data_type: TYPE_FP32, dims: [1] }]\noutput [{ name: "Y", data_type: TYPE_FP32, dims: [1] }]\n'
    )
    ports = [str(free_port()) for _ in range(3)]
    command = [sys.executable, "-m", "loadgen", "serve", "--model-repository", str(model.parent)]
    command += ["--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]]
    with serve_process(command) as process:
        assert process.stdout is not None
        assert "Starting tritonserver" in process.stdout.readline()
        launched: list[list[str]] = []
        while not launched and process.poll() is None:  # the server runs: the start now waits for the model
            commands = [(pid, _command_line(pid)) for pid in _children(process.pid)]
            launched = [[str(pid), *args] for pid, args in commands if args and args[0].endswith("tritonserver")]
            time.sleep(0.05)
        [[pid, *args]] = launched
        server = int(pid)
        [backends] = [arg.split("=", 1)[1] for arg in args if arg.startswith("--backend-directory=")]
        workdir = Path(backends).parent
        assert workdir.exists()
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)  # the model would take 600 s
    assert process.returncode == 130, err
    assert err.strip() == "interrupted"
    assert _group(server) == []  # the server and its model stubs
    assert not workdir.exists()
