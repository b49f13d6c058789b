"""Fixtures: real Triton servers (the embedded tritonserver 2.51) on free ports, always stopped; tests that need
one are marked `server` here, so that `pytest -m "not server"` runs the unit tests alone in seconds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.fake_openai import FakeOpenAI, fake_openai
from tests.helpers import EXAMPLES, QUICK, RUNNING, SAMPLE_JPEG, SHIPPED_TOKENIZER, TEST_MODELS, serve

RESULT_FIXTURES = {"ensemble_result", "rate_result"}  # runs against a server, shared by several tests
FAKE_SERVERS = {"openai_server"}  # no Triton behind them: unit tests
TORCH = "torch==2.13.0"  # the version tests/llm_compute's model was written for


@pytest.fixture(scope="session")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The example repository (the seed's ensemble, its steps, identity_uint8)."""
    yield from serve(EXAMPLES, tmp_path_factory.mktemp("examples-server"))


@pytest.fixture(scope="session")
def test_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The test repository (sleeping steps, pipelines with a slow last step, a nested ensemble); it writes request
    traces to a file when a run turns tracing on."""
    tmp = tmp_path_factory.mktemp("test-server")
    yield from serve(TEST_MODELS, tmp, extra_args=("--trace-config", f"triton,file={tmp / 'trace.json'}"))


@pytest.fixture(scope="session")
def tokenizer_file() -> Path:
    """The tokenizer.json loadgen ships (trained on Python's own documentation)."""
    return SHIPPED_TOKENIZER


@pytest.fixture(scope="session")
def torch_installed() -> None:
    """torch in this Python's environment, installed with pip the first time a test asks for it (the slow
    real-compute tests; about 800 MB with its dependencies in the CPU build), so that `make test`'s install and the
    unit tests never pull it. pip's own settings choose the index (PIP_EXTRA_INDEX_URL for PyTorch's CPU wheels).
    The test is skipped, with pip's last line, where it cannot be installed."""
    if importlib.util.find_spec("torch") is not None:
        return
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", TORCH], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"{TORCH} cannot be installed here: {(done.stderr.strip().splitlines() or ['pip failed'])[-1]}")


@pytest.fixture
def openai_server(tokenizer_file: Path) -> Iterator[FakeOpenAI]:
    """The FAKE OpenAI-compatible server (tests/fake_openai.py) on a free port, 20 ms to the first token and 5 ms
    between tokens; its `url`, and `emissions` for what it sent when."""
    with fake_openai(tokenizer_file, ttft_ms=20, token_ms=5) as fake:
        yield fake


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a Triton server fixture (named `*_server`, the fakes aside) needs a server; tests that start one themselves are
    marked where they are written."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if RESULT_FIXTURES & names or any(name.endswith("_server") for name in names - FAKE_SERVERS):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Attach the running servers' logs to a failing test's report."""
    report = yield
    if report.failed:
        for server in RUNNING:
            report.sections.append((f"tritonserver log ({server.model_repository.name})", server.log_tail(40)))
    return report
