"""HTTP beside gRPC (`-i http`) against the real server: the same results, statistics and analysis over both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings, make_settings
from tests.helpers import SAMPLE_JPEG, successes

QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 4}
ENSEMBLE = "ensemble_python_resnet50"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args, "-p", "300", "-s", "1000", "-r", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("transport", ["raw", "library"])
def test_the_seeds_ensemble_over_both_protocols(
    examples_server: EmbeddedServer, tmp_path: Path, transport: str
) -> None:
    results = {}
    for protocol, url in (("grpc", examples_server.grpc_url), ("http", examples_server.http_url)):
        before = successes(examples_server, "preprocessing")
        out = tmp_path / f"{protocol}.json"
        image = ["--input-data", str(SAMPLE_JPEG)]
        done = _run("-i", protocol, "-u", url, "--transport", transport, "-m", ENSEMBLE, *image, "--json", str(out))
        assert done.returncode == 0, done.stderr
        results[protocol] = document = json.loads(out.read_text())
        level = document["levels"][0]
        assert level["error_count"] == 0 and level["request_count"] > 0, level["errors"]
        # the server saw every request loadgen counted, through every step of the ensemble
        assert successes(examples_server, "preprocessing") - before >= level["request_count"]
        assert [step["model"] for step in level["server"]["composing"]] == ["preprocessing", "classifier"]
        assert "the lowest capacity (preprocessing)" in done.stdout
    grpc_result, http_result = results["grpc"], results["http"]
    assert grpc_result["bottleneck"]["model"] == http_result["bottleneck"]["model"] == "preprocessing"
    size = SAMPLE_JPEG.stat().st_size
    assert grpc_result["inputs"] == http_result["inputs"] == [{"name": "INPUT", "datatype": "UINT8", "shape": [size]}]
    assert set(grpc_result["levels"][0]) == set(http_result["levels"][0])  # the same report, field for field
    assert http_result["settings"]["protocol"] == "http"


def test_an_open_loop_and_worker_processes_over_http(test_server: EmbeddedServer) -> None:
    options = {"url": test_server.http_url, "protocol": "http", "input_data": "zero", "shape": {"INPUT0": [8]}}
    opened = loadgen.profile_sync(model="sleeper", request_rate=20, **options, **QUICK)  # type: ignore[arg-type]
    level = opened.levels[0]
    assert level.error_count == 0 and level.request_count > 0 and level.send_rate is not None, level.errors
    spread = loadgen.profile_sync(model="fast_step", concurrency=4, workers=2, **options, **QUICK)  # type: ignore[arg-type]
    assert spread.levels[0].error_count == 0 and spread.levels[0].request_count > 0, spread.levels[0].errors


def test_timeouts_over_http_are_their_own_kind_of_error(test_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        test_server.http_url,
        "sleeper",  # 20 ms per request
        protocol="http",
        input_data="zero",
        shape={"INPUT0": [8]},
        request_timeout=5,
        request_count=4,
        max_error_rate=1,
    )
    assert result.levels[0].errors == {"timeout: no answer within 5 ms": 4}


def test_the_grpc_port_is_recognised_over_http(test_server: EmbeddedServer) -> None:
    done = _run("-i", "http", "-u", test_server.grpc_url, "-m", "sleeper")
    assert done.returncode == 99
    assert "looks like Triton's gRPC port" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_model_over_http_lists_the_ready_ones(examples_server: EmbeddedServer) -> None:
    done = _run("-i", "http", "-u", examples_server.http_url, "-m", "nope")
    assert done.returncode == 3
    assert "model 'nope' is not on" in done.stderr and "identity_uint8" in done.stderr


def test_the_default_url_follows_the_protocol() -> None:
    assert Settings().url == "localhost:8001"
    assert Settings(protocol="http").url == "localhost:8000"
    assert make_settings(Settings(), protocol="http").url == "localhost:8000"
    assert make_settings(Settings(url="host:9"), protocol="http").url == "host:9"
    with pytest.raises(loadgen.OptionError, match="choose grpc or http"):
        Settings(protocol="https")
