"""The seed's hunt end to end, through the CLI and the library, against the real embedded Triton server."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.helpers import SAMPLE_JPEG

# Tests check behaviour, never timings: a generous stability bound keeps noisy machines from failing them.
FAST = ["-p", "300", "-s", "1000", "-r", "5"]
ENSEMBLE = "ensemble_python_resnet50"


def _inference_count(url: str, model: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model)
        return sum(s.inference_count for s in stats.model_stats)
    finally:
        client.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_seeds_ensemble_with_the_image_bytes(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    before = _inference_count(examples_server.grpc_url, ENSEMBLE)
    status = main(
        [
            "-u",
            examples_server.grpc_url,
            "-m",
            ENSEMBLE,
            "--concurrency-range",
            "1:2",
            "--input-data",
            str(SAMPLE_JPEG),
            *FAST,
            "--json",
            str(out),
        ]
    )
    assert status == 0
    result = json.loads(out.read_text())
    assert result["model"] == ENSEMBLE
    assert result["url"] == examples_server.grpc_url
    assert result["mode"] == "concurrency"
    assert result["inputs"] == [{"name": "INPUT", "datatype": "UINT8", "shape": [SAMPLE_JPEG.stat().st_size]}]
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert set(level) >= {"concurrency", "throughput", "request_count", "error_count", "stable", "latency_us"}
        assert set(level["latency_us"]) == {"min", "avg", "stddev", "p50", "p90", "p95", "p99", "max"}
        assert level["throughput"] > 0
        assert level["error_count"] == 0, level["errors"]
        lat = level["latency_us"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    served = _inference_count(examples_server.grpc_url, ENSEMBLE) - before
    assert served >= sum(level["request_count"] for level in result["levels"])


def test_random_bytes_into_the_image_model_stop_with_the_servers_message(examples_server: EmbeddedServer) -> None:
    done = _run("-u", examples_server.grpc_url, "-m", ENSEMBLE, "--shape", "INPUT:1000", *FAST)
    assert done.returncode == 99
    assert "Traceback" not in done.stderr
    assert "UnidentifiedImageError: cannot identify image file" in done.stderr
    assert "--input-data FILE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_dynamic_input_without_data_or_shape_is_a_clear_option_error(examples_server: EmbeddedServer) -> None:
    done = _run("-u", examples_server.grpc_url, "-m", ENSEMBLE, *FAST)
    assert done.returncode == 3
    assert "input INPUT has dynamic shape [-1]" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_only_ensemble_is_chosen_when_no_model_is_named(examples_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        url=examples_server.grpc_url, input_data=str(SAMPLE_JPEG), measurement_interval=300, stability_percentage=1000
    )
    assert result.model == ENSEMBLE


def test_no_model_named_and_several_candidates_lists_them(test_server: EmbeddedServer) -> None:
    done = _run("-u", test_server.grpc_url, *FAST)
    assert done.returncode == 3
    assert "-m/--model-name is required" in done.stderr
    for name in (
        "pipeline_nested",
        "pipeline_slow_tail",
        "sleeper",
        "fast_step",
        "slow_step",
        "accumulator",
        "bls_pair",
    ):
        assert name in done.stderr


@pytest.mark.server
def test_the_only_model_is_chosen(tmp_path: Path) -> None:
    with EmbeddedServer(
        SAMPLE_JPEG.parent / "model_repository",
        explicit_model_control=True,
        load_models=("identity_uint8",),
        log_path=tmp_path / "server.log",
    ) as server:
        result = loadgen.profile_sync(url=server.grpc_url, measurement_interval=300, stability_percentage=1000)
    assert result.model == "identity_uint8"
    assert result.inputs[0].shape == (1, 16)


def test_an_unknown_model_lists_the_ready_ones(examples_server: EmbeddedServer) -> None:
    done = _run("-u", examples_server.grpc_url, "-m", "resnet", *FAST)
    assert done.returncode == 3
    assert "model 'resnet' is not on" in done.stderr
    assert "ensemble_python_resnet50" in done.stderr and "preprocessing" in done.stderr


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    done = _run("-u", "localhost:1", *FAST)
    assert done.returncode == 99
    assert "cannot reach Triton at localhost:1" in done.stderr


def test_a_directory_of_images(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a.jpg").write_bytes(SAMPLE_JPEG.read_bytes())
    Image.open(SAMPLE_JPEG).resize((64, 48)).save(tmp_path / "b.png")
    result = loadgen.profile_sync(
        url=examples_server.grpc_url,
        model_name=ENSEMBLE,
        input_data=str(tmp_path),
        measurement_interval=300,
        stability_percentage=1000,
        concurrency_range=2,
    )
    assert result.levels[0].error_count == 0, result.levels[0].errors
    assert result.levels[0].request_count > 2


def test_json_input_data_with_b64_and_content(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    images = tmp_path / "image.json"
    images.write_text(json.dumps({"data": [{"INPUT": {"b64": base64.b64encode(SAMPLE_JPEG.read_bytes()).decode()}}]}))
    result = loadgen.profile_sync(url=examples_server.grpc_url, model_name=ENSEMBLE, input_data=str(images), **_quick())
    assert result.inputs[0].shape == (SAMPLE_JPEG.stat().st_size,)
    assert result.levels[0].error_count == 0, result.levels[0].errors

    rows = tmp_path / "rows.json"
    rows.write_text(
        json.dumps({"data": [{"INPUT0": list(range(16))}, {"INPUT0": {"content": [1] * 16, "shape": [16]}}]})
    )
    result = loadgen.profile_sync(
        url=examples_server.grpc_url, model_name="identity_uint8", input_data=str(rows), **_quick()
    )
    assert result.inputs[0].shape == (1, 16)
    assert result.levels[0].error_count == 0, result.levels[0].errors


@pytest.mark.parametrize("source", ["random", "zero"])
def test_generated_data_with_a_batch(examples_server: EmbeddedServer, source: str) -> None:
    before = _inference_count(examples_server.grpc_url, "identity_uint8")
    result = loadgen.profile_sync(
        url=examples_server.grpc_url, model_name="identity_uint8", input_data=source, batch_size=4, **_quick()
    )
    level = result.levels[0]
    assert result.inputs[0].shape == (4, 16)
    assert level.error_count == 0, level.errors
    # throughput counts inferences (requests x batch) as perf_analyzer does; the server counts them too
    assert _inference_count(examples_server.grpc_url, "identity_uint8") - before >= 4 * level.request_count


def test_an_unstable_level_stops_the_sweep_with_status_2(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "unstable.json"
    status = main(
        [
            "-u",
            examples_server.grpc_url,
            "-m",
            "identity_uint8",
            "--concurrency-range",
            "1:3",
            "-p",
            "200",
            "-s",
            "0.0001",
            "-r",
            "3",
            "--json",
            str(out),
        ]
    )
    assert status == 2
    levels = json.loads(out.read_text())["levels"]
    assert len(levels) == 1
    assert levels[0]["stable"] is False


def test_the_blocking_call_works_inside_a_running_event_loop(examples_server: EmbeddedServer) -> None:
    async def notebook_cell() -> loadgen.ProfileResult:
        return loadgen.profile_sync(url=examples_server.grpc_url, model_name="identity_uint8", **_quick())

    result = asyncio.run(notebook_cell())
    assert result.levels[0].request_count > 0


def _quick() -> dict[str, object]:
    return {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 5}
