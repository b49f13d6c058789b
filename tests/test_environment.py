"""Issue 27's first-use findings: a local server's metrics are scraped where it serves them (not only at port 8002),
and `loadgen serve` refuses an environment whose numpy the embedded server's Python backend cannot use."""

from __future__ import annotations

import importlib.metadata

import pytest

from loadgen.server import EmbeddedServer
from loadgen.server import launcher as server_launcher
from loadgen.server.local import local_metrics_port, metrics_port_of
from loadgen.server.metrics import metrics_url
from tests.helpers import run_cli


def test_a_tritonserver_command_line_names_its_metrics_port() -> None:
    assert metrics_port_of(["/x/tritonserver", "--metrics-port", "9102"]) == 9102
    assert metrics_port_of(["tritonserver", "--model-repository=m", "--metrics-port=9103"]) == 9103
    assert metrics_port_of(["tritonserver", "--model-repository=m"]) == 8002  # its default
    assert metrics_port_of(["python3", "-m", "http.server"]) is None


def test_a_local_servers_metrics_url_comes_from_its_command_line(test_server: EmbeddedServer) -> None:
    """The test server listens on free ports: its metrics are found at its own metrics port, over either port."""
    assert local_metrics_port(test_server.grpc_port) == test_server.metrics_port
    expected = f"http://localhost:{test_server.metrics_port}/metrics"
    assert metrics_url(test_server.grpc_url) == metrics_url(test_server.http_url) == expected
    assert metrics_url("localhost:1") == "http://localhost:8002/metrics"  # nothing listens: perf_analyzer's default
    assert metrics_url("example.com:8001") == "http://example.com:8002/metrics"


def test_serve_refuses_numpy_2_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python backend's models fail with numpy 2 (misleading errors): the server is not started, and the error
    says how to fix it."""
    real = importlib.metadata.version
    monkeypatch.setattr(
        server_launcher.importlib.metadata, "version", lambda name: "2.1.0" if name == "numpy" else real(name)
    )
    with pytest.raises(server_launcher.ServerStartError, match=r"numpy 2\.1\.0 is installed.*pip install 'numpy<2'"):
        server_launcher._pytriton_root()


def test_serve_in_this_environment_passes_the_check() -> None:
    server_launcher._check_numpy()  # the project's own install keeps numpy 1 (pyproject: numpy<2)
    done = run_cli("serve", "--help")
    assert done.returncode == 0 and "--metrics-port" in done.stdout
