"""`tune` on the real server in explicit model-control mode: it moves the bottleneck and restores the models."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import loadgen
from loadgen.server import EmbeddedServer
from tests.helpers import TEST_MODELS

PIPELINE = {"model_name": "pipeline_slow_tail", "input_data": "zero", "shape": {"INPUT0": [8]}}


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    log = tmp_path_factory.mktemp("tune-server") / "tritonserver.log"
    with EmbeddedServer(TEST_MODELS, explicit_model_control=True, log_path=log) as server:
        yield server


def _configs(url: str) -> dict[str, dict[str, object]]:
    client = grpcclient.InferenceServerClient(url)
    try:
        return {m: client.get_model_config(m, as_json=True)["config"] for m in ("fast_step", "slow_step")}
    finally:
        client.close()


def test_tune_raises_the_slow_steps_instances_and_restores_the_models(
    explicit_server: EmbeddedServer, tmp_path: Path
) -> None:
    before = _configs(explicit_server.grpc_url)
    profile = loadgen.Settings(
        url=explicit_server.grpc_url, concurrency_range=4, measurement_interval=700, stability_percentage=50, **PIPELINE
    )
    result = loadgen.run(loadgen.tune(loadgen.TuneSettings(profile, max_trials=3, write_config=str(tmp_path))))
    assert result.initial.bottleneck == "slow_step"
    kept = [trial for trial in result.trials if trial.kept]
    assert kept and all(trial.model == "slow_step" for trial in kept)
    assert "instance_group count 1 -> 2" in result.trials[0].change
    assert result.final.throughput >= 2 * result.initial.throughput
    assert result.final.bottleneck is not None  # the next bottleneck is named
    # the improved config, as text and as a file the user can commit
    written = (tmp_path / "slow_step" / "config.pbtxt").read_text()
    assert written == result.config_changes["slow_step"]
    config = text_format.Parse(written, model_config_pb2.ModelConfig())
    assert config.instance_group[0].count == 1 + len(kept)
    # the server is back to where it was
    assert _configs(explicit_server.grpc_url) == before
    # the trial history as a dataframe and an HTML page with the throughput per trial
    frame = result.to_dataframe()
    assert frame["change"].iloc[0] == "(baseline)"
    assert list(frame["throughput"])[1:] == [trial.throughput for trial in result.trials]
    page = tmp_path / "tune.html"
    result.save_html(page)
    text = page.read_text()
    assert "data:image/png;base64," in text
    assert "instance_group count 1 -&gt; 2" in text
    assert "http://" not in text and "https://" not in text


def test_tune_json_and_cli(explicit_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "tune.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "tune",
            "-u",
            explicit_server.grpc_url,
            "-m",
            "pipeline_slow_tail",
            "--input-data",
            "zero",
            "--shape",
            "INPUT0:8",
            "--concurrency",
            "2",
            "--max-trials",
            "1",
            "-p",
            "500",
            "-s",
            "50",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Tuning pipeline_slow_tail" in done.stdout
    document = json.loads(out.read_text())
    assert set(document) >= {"model", "initial", "trials", "final", "config_changes"}
    assert set(document["initial"]) >= {"throughput", "p99_us", "bottleneck"}
    assert len(document["trials"]) == 1
    assert set(document["trials"][0]) >= {"change", "model", "throughput", "p99_us", "kept", "bottleneck"}


def test_tune_needs_explicit_model_control(test_server: EmbeddedServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "tune", "-u", test_server.grpc_url, "-m", "pipeline_slow_tail"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 99
    assert "--model-control-mode=explicit" in done.stderr
    assert "Traceback" not in done.stderr
