"""Issue 24: requests and responses of 16 and 64 MiB through each transport (gRPC and HTTP, raw and library)
against the real server, counted as a run counts them (the benchmark, benchmarks/transport_cpu.py --large, adds
256 MiB and times them over both protocols)."""

from __future__ import annotations

import sys

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.helpers import interrupt_when, successes

TRANSPORTS = pytest.mark.parametrize("transport", ["raw", "library"])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mib", [16, 64])
@TRANSPORTS
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_large_request_and_response_are_counted(
    test_server: EmbeddedServer, protocol: str, transport: str, mib: int
) -> None:
    before = successes(test_server, "fast_step")
    result = loadgen.profile_sync(
        test_server.grpc_url if protocol == "grpc" else test_server.http_url,
        "fast_step",  # echoes its input: the response is as large as the request
        protocol=protocol,
        transport=transport,
        input_data="zero",
        shape={"INPUT0": [mib << 20]},
        request_count=3,
        max_error_rate=0,
    )
    level = result.levels[0]
    assert level.errors == {} and level.request_count == 3
    assert successes(test_server, "fast_step") - before == 3


@pytest.mark.timeout(240)
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ctrl_c_stops_a_run_of_64_mib_responses(test_server: EmbeddedServer, protocol: str) -> None:
    """Once a 64 MiB response has come (and the next is on its way), the first SIGINT stops the run within 2 s:
    reading and checking a large response never holds the event loop that long."""
    before = successes(test_server, "fast_step")
    url = test_server.grpc_url if protocol == "grpc" else test_server.http_url
    command = [sys.executable, "-m", "loadgen", "-u", url, "-i", protocol, "-m", "fast_step", "--input-data", "zero"]
    command += ["--shape", f"INPUT0:{64 << 20}"]
    interrupt_when(command, lambda: successes(test_server, "fast_step") > before)
