"""Reports of real runs: JSON read back, and the same result object behind every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loadgen
from loadgen.errors import LoadgenError
from loadgen.reports import write_json
from loadgen.server import EmbeddedServer
from tests.conftest import SAMPLE_JPEG

QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 5}


@pytest.fixture(scope="module")
def ensemble_result(examples_server: EmbeddedServer) -> loadgen.ProfileResult:
    """Two closed-loop levels of the seed's ensemble: server breakdown with steps, a verdict, window trends."""
    return loadgen.profile_sync(
        examples_server.grpc_url, "ensemble_python_resnet50", concurrency="1:2", input_data=str(SAMPLE_JPEG), **QUICK
    )


@pytest.fixture(scope="module")
def rate_result(examples_server: EmbeddedServer) -> loadgen.ProfileResult:
    """An open-loop run: service time, send lag and send rate."""
    return loadgen.profile_sync(examples_server.grpc_url, "identity_uint8", request_rate=[50, 100], **QUICK)


@pytest.mark.parametrize("name", ["ensemble_result", "rate_result"])
def test_a_saved_run_reopens_as_the_same_result(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(name)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write_json(result, first)
    reloaded = loadgen.load_result(first)
    write_json(reloaded, second)
    assert second.read_text() == first.read_text()
    assert reloaded == result  # dataclass equality: every nested figure rebuilt as its own type
    level = reloaded.levels[-1]
    assert level.trend and (level.server is not None or level.send_lag_us is not None)


def test_a_file_that_is_not_a_result_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model": "m", "levels": []}))
    with pytest.raises(LoadgenError, match=r"cannot read a loadgen result from .*broken\.json"):
        loadgen.load_result(broken)
    with pytest.raises(LoadgenError, match="cannot read"):
        loadgen.load_result(tmp_path / "missing.json")
