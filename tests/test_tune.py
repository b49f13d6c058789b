"""`tune` on the real server in explicit model-control mode: it moves the bottleneck and restores the models."""

from __future__ import annotations

import html
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
from loadgen.errors import OptionError
from loadgen.server import EmbeddedServer
from tests.helpers import TEST_MODELS, one_line_error, only, run_cli

PIPELINE = {"model_name": "pipeline_slow_tail", "input_data": "zero", "shape": {"INPUT0": [8]}}


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The models tune works on here, in explicit model-control mode."""
    log = tmp_path_factory.mktemp("tune-server") / "tritonserver.log"
    models = only("fast_step", "slow_step", "pipeline_slow_tail", "sleeper")
    with EmbeddedServer(TEST_MODELS, log_path=log, **models) as server:
        yield server


def _configs(url: str, models: tuple[str, ...] = ("fast_step", "slow_step")) -> dict[str, dict[str, object]]:
    client = grpcclient.InferenceServerClient(url)
    try:
        return {m: client.get_model_config(m, as_json=True)["config"] for m in models}
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


def test_tune_a_mix_within_each_models_budget(explicit_server: EmbeddedServer, tmp_path: Path) -> None:
    """sleeper (20 ms a request, one instance) at concurrency 2 waits for itself: its p99 (about 40 ms) breaks its
    38 ms budget, while slow_step at concurrency 1 is far within its 200 ms. Tune acts first on the model over its
    budget, keeps only what meets every budget once the configuration in force does, and says why each time."""
    mix = ("sleeper", "slow_step")
    before = _configs(explicit_server.grpc_url, mix)
    profile = loadgen.Settings(
        url=explicit_server.grpc_url,
        model_mix="sleeper:2,slow_step:1",
        input_data="zero",
        shape={"INPUT0": [4]},
        measurement_interval=1000,
        stability_percentage=50,
    )
    settings = loadgen.TuneSettings(profile, latency_budget_ms="sleeper:38,slow_step:200", max_trials=3)
    result = loadgen.run(loadgen.tune(settings))
    assert result.model == "sleeper+slow_step"
    sleeper, slow = result.initial.models
    assert [(m.model, m.load, m.budget_ms) for m in (sleeper, slow)] == [("sleeper", 2, 38), ("slow_step", 1, 200)]
    assert sleeper.over_budget and not slow.over_budget and result.initial.load == 3
    # the model over its budget waits in its own queue: more of it comes first, and brings it within its budget
    # (or, should a busy machine slow one request in a hundred, closer to it)
    first = result.trials[0]
    assert (first.change, first.model, first.kept) == ("sleeper: instance_group count 1 -> 2", "sleeper", True)
    assert first.reason == "every model's p99 within its budget now" or first.reason.startswith("closer"), first
    # every trial says why it was kept or reverted; a budget it breaks is named
    for trial in result.trials:
        over = [part.model or "" for part in trial.models if part.over_budget]
        assert trial.reason and all(model in trial.reason for model in over), trial
        assert not (trial.kept and over), trial
    # the kept configuration keeps every model within its budget, as measured
    assert [part.model for part in result.final.models] == list(mix)
    assert not any(part.over_budget for part in result.final.models), result.final
    assert result.final.throughput > result.initial.throughput
    assert "sleeper" in result.config_changes
    assert _configs(explicit_server.grpc_url, mix) == before  # restored
    # the per-model figures in the JSON, the dataframe and the HTML page
    document = result.to_dict()
    assert [(m["model"], m["budget_ms"]) for m in document["initial"]["models"]] == [
        ("sleeper", 38),
        ("slow_step", 200),
    ]
    assert {"sleeper_p99_us", "slow_step_throughput", "reason"} <= set(result.to_dataframe().columns)
    page = tmp_path / "tune.html"
    result.save_html(page)
    text = page.read_text()
    assert "<th>sleeper</th>" in text and "(over 38)" in text and html.escape(first.reason) in text


@pytest.mark.parametrize(
    ("profile", "budget", "message"),
    [
        ({"model_name": "m"}, "m:50", "budgets by model go with --model-mix"),
        ({"model_mix": "a:1,b:1"}, "c:50", "c not in --model-mix a:1,b:1"),
        ({"model_mix": "a:1,b:1"}, "a:50,b:0", "every budget must be above 0"),
        ({"model_mix": "a:1,b:1"}, "a:fast", "expected milliseconds, or MODEL:MS"),
        ({"model_name": "m"}, 0, "must be above 0"),
    ],
)
def test_bad_budgets_are_one_line_errors(profile: dict[str, str], budget: object, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        loadgen.TuneSettings(loadgen.Settings(**profile), latency_budget_ms=budget)  # type: ignore[arg-type]


def test_budgets_by_model() -> None:
    mix = loadgen.Settings(model_mix="a:2,b:1")
    assert loadgen.TuneSettings(mix, latency_budget_ms="a:50").budgets_ms(["a", "b"]) == {"a": 50.0}
    assert loadgen.TuneSettings(mix, latency_budget_ms=20).budgets_ms(["a", "b"]) == {"a": 20.0, "b": 20.0}
    assert loadgen.TuneSettings(loadgen.Settings(model_name="m"), latency_budget_ms="50").budgets_ms(["m"]) == {
        "m": 50.0
    }
    done = run_cli("tune", "--model-mix", "a:2,b:1", "--latency-budget-ms", "c:5")
    assert "c not in --model-mix a:2,b:1" in one_line_error(done, 3)
