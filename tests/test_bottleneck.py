"""Finding the slow step, end to end on the real server."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.helpers import SAMPLE_JPEG, TEST_MODELS, only

QUICK = {"measurement_interval": 500, "stability_percentage": 1000, "max_trials": 5}
SERVER_KEYS = {
    "model", "version", "request_count", "inference_count", "execution_count", "avg_batch", "queue_us",
    "compute_input_us", "compute_infer_us", "compute_output_us", "request_us", "overhead_us", "capacity", "composing",
}  # fmt: skip


def test_the_example_ensemble_names_preprocessing(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    status = main(
        [
            "-u",
            examples_server.grpc_url,
            "-m",
            "ensemble_python_resnet50",
            "--concurrency-range",
            "1:4",
            "--input-data",
            str(SAMPLE_JPEG),
            "-p",
            "500",
            "-s",
            "1000",
            "-r",
            "5",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    result = json.loads(out.read_text())
    assert result["bottleneck"]["model"] == "preprocessing"
    assert set(result["bottleneck"]) >= {"model", "share", "reason", "suggestions"}
    for level in result["levels"]:
        server = level["server"]
        assert set(server) >= SERVER_KEYS
        assert [step["model"] for step in server["composing"]] == ["preprocessing", "classifier"]
        assert all(step["version"] == "1" for step in server["composing"])
        for step in server["composing"]:
            assert set(step) >= SERVER_KEYS
        # the server saw at least the requests the client counted in the same windows (give or take the edges)
        assert server["request_count"] >= 0.9 * level["request_count"]
        assert level["bottleneck"]["model"] in ("preprocessing", "classifier")
        assert 0 < level["bottleneck"]["share"] <= 1
    # the sweep's verdict is the level where the ensemble was pushed hardest
    busiest = max(result["levels"], key=lambda level: level["throughput"])
    assert busiest["bottleneck"] == result["bottleneck"]


def test_the_console_shows_the_step_table_and_the_verdict(
    examples_server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "-u",
            examples_server.grpc_url,
            "--input-data",
            str(SAMPLE_JPEG),
            "--concurrency-range",
            "2",
            "-p",
            "400",
            "-s",
            "1000",
            "-r",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert "Server breakdown at concurrency 2" in out
    assert "preprocessing v1" in out and "classifier v1" in out
    assert "bounds throughput" in out and "the lowest capacity (preprocessing)" in out
    assert "if preprocessing: instance_group count 1 -> 2" in out  # the what-if for the limiting step


def test_csv_has_perf_analyzers_columns_and_one_file_per_step(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    report = tmp_path / "latency.csv"
    main(
        [
            "-u",
            examples_server.grpc_url,
            "--input-data",
            str(SAMPLE_JPEG),
            "--concurrency-range",
            "1:2",
            "-p",
            "400",
            "-s",
            "1000",
            "-r",
            "4",
            "-f",
            str(report),
        ]
    )
    with report.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
        "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
        "p50 latency", "p90 latency", "p95 latency", "p99 latency",
        "Confidence", "Inferences/Second Low", "Inferences/Second High", "p50 latency bound", "p90 latency bound",
        "p95 latency bound", "p99 latency bound", "Too Few Samples", "Status",
    ]  # fmt: skip
    assert sorted(row[0] for row in rows[1:]) == ["1", "2"]
    throughputs = [float(row[1]) for row in rows[1:]]
    assert throughputs == sorted(throughputs)  # perf_analyzer's order: by throughput
    assert all(float(row[1]) > 0 and int(row[6]) > 0 for row in rows[1:])
    assert [row[-1] for row in rows[1:]] == ["stable", "stable"]  # every row says whether it can be trusted
    for step in ("preprocessing", "classifier"):
        with (tmp_path / f"{step}_v1.latency.csv").open() as handle:
            step_rows = list(csv.reader(handle))
        assert step_rows[0] == [*rows[0][:9], "Status"]
        assert len(step_rows) == 3


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The test repository's pipeline_slow_tail in explicit model-control mode, so a test may change a model's
    config."""
    log = tmp_path_factory.mktemp("explicit-server") / "tritonserver.log"
    with EmbeddedServer(TEST_MODELS, log_path=log, **only("fast_step", "slow_step", "pipeline_slow_tail")) as server:
        yield server


def _set_instances(url: str, model: str, count: int) -> None:
    client = grpcclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(model, as_json=True)["config"]
        config["instance_group"] = [{"kind": "KIND_CPU", "count": count}]
        client.load_model(model, config=json.dumps(config))
        assert client.is_model_ready(model)
    finally:
        client.close()


def test_a_slow_last_step_is_named_and_more_instances_raise_throughput(explicit_server: EmbeddedServer) -> None:
    options = {"url": explicit_server.grpc_url, "model_name": "pipeline_slow_tail", "concurrency_range": 4, **QUICK}
    before = loadgen.profile_sync(input_data="random", shape={"INPUT0": [64]}, **options)  # type: ignore[arg-type]
    verdict = before.bottleneck
    assert verdict is not None and verdict.model == "slow_step"
    assert "queue" in verdict.reason
    assert any("instance_group count from 1 to 2" in s for s in verdict.suggestions)
    # one instance that sleeps 20 ms per request: about 50 infer/s
    assert verdict.capacity is not None and 30 < verdict.capacity < 60

    _set_instances(explicit_server.grpc_url, "slow_step", 3)
    after = loadgen.profile_sync(input_data="random", shape={"INPUT0": [64]}, **options)  # type: ignore[arg-type]
    level = after.levels[0]
    assert level.server is not None
    assert level.server.composing[1].instances == 3
    assert after.bottleneck is not None
    moved = after.bottleneck.model != "slow_step"
    assert moved or level.throughput > 1.5 * before.levels[0].throughput
