"""Fixtures: real Triton servers (the embedded tritonserver 2.51) on free ports, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "model_repository"
TEST_MODELS = Path(__file__).resolve().parent / "model_repository"
SAMPLE_JPEG = ROOT / "examples" / "sample.jpg"

_servers: list[EmbeddedServer] = []


def _serve(repository: Path, tmp: Path, **options: object) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(repository, log_path=tmp / "tritonserver.log", **options)  # type: ignore[arg-type]
    with server:
        _servers.append(server)
        try:
            yield server
        finally:
            _servers.remove(server)


@pytest.fixture(scope="session")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The example repository (the seed's ensemble, its steps, identity_uint8)."""
    yield from _serve(EXAMPLES, tmp_path_factory.mktemp("examples-server"))


@pytest.fixture(scope="session")
def test_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The test repository (sleeping steps, pipelines with a slow last step, a nested ensemble)."""
    yield from _serve(TEST_MODELS, tmp_path_factory.mktemp("test-server"))


def successes(server: EmbeddedServer, model: str) -> int:
    """The requests the server has completed successfully for a model so far (read over gRPC)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sum(s.inference_stats.success.count for s in client.get_inference_statistics(model).model_stats)
    finally:
        client.close()


def registered_regions(server: EmbeddedServer) -> list[str]:
    """The names of the system shared-memory regions the server has registered."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sorted(client.get_system_shared_memory_status().regions)
    finally:
        client.close()


QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 5}


@pytest.fixture(scope="session")
def ensemble_result(examples_server: EmbeddedServer) -> loadgen.ProfileResult:
    """Two closed-loop levels of the seed's ensemble: server breakdown with steps, a verdict, window trends."""
    return loadgen.profile_sync(
        examples_server.grpc_url, "ensemble_python_resnet50", concurrency="1:2", input_data=str(SAMPLE_JPEG), **QUICK
    )


@pytest.fixture(scope="session")
def rate_result(examples_server: EmbeddedServer) -> loadgen.ProfileResult:
    """An open-loop run of the identity model: service time, send lag and send rate."""
    return loadgen.profile_sync(examples_server.grpc_url, "identity_uint8", request_rate=[50, 100], **QUICK)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Attach the running servers' logs to a failing test's report."""
    report = yield
    if report.failed:
        for server in _servers:
            report.sections.append((f"tritonserver log ({server.model_repository.name})", server.log_tail(40)))
    return report
