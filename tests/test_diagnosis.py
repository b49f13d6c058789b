"""The diagnosis and tune on pipelines built to tell the bounds apart, on the real server: a wide slow step beside
a narrow fast one, CPU-burning steps that saturate this host, a closed loop too shallow to load anything, a client
whose own loop is the limit, and a BLS model whose own instance is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loadgen
from loadgen.analysis import Diagnosis
from loadgen.server import EmbeddedServer
from tests.helpers import serve

DIAGNOSIS = Path(__file__).resolve().parent / "diagnosis_repository"


@pytest.fixture(scope="module")
def diagnosis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The diagnosis pipelines, in explicit model-control mode so that tune can reconfigure them."""
    yield from serve(DIAGNOSIS, tmp_path_factory.mktemp("diagnosis-server"), explicit_model_control=True)


def _options(server: EmbeddedServer, **extra: Any) -> dict[str, Any]:
    """Windows long enough for a few metrics scrapes each; stability never in the way."""
    return {
        "url": server.grpc_url,
        "input_data": "zero",
        "shape": {"INPUT0": [8]},
        "measurement_interval": 1500,
        "stability_percentage": 1000,
        "max_trials": 3,
        "metrics_url": server.metrics_url,
        "metrics_interval": 250,
        **extra,
    }


def _diagnoses(result: loadgen.ProfileResult) -> list[Diagnosis]:
    diagnoses = [level.diagnosis for level in result.levels]
    assert all(diagnosis is not None for diagnosis in diagnoses), [level.errors for level in result.levels]
    return [diagnosis for diagnosis in diagnoses if diagnosis is not None]


def test_the_step_that_caps_throughput_is_not_the_one_that_takes_the_latency(diagnosis_server: EmbeddedServer) -> None:
    """wide_step (4 instances of 40 ms) takes most of each request; narrow_step (1 of 12 ms) caps throughput.
    At concurrency 1 the closed loop is too shallow to load anything; at 8 the narrow step is saturated."""
    result = loadgen.profile_sync(model_name="wide_then_narrow", concurrency_range=[1, 8], **_options(diagnosis_server))
    shallow, deep = _diagnoses(result)
    assert (shallow.bound, shallow.limiting_step, shallow.latency_step) == ("offered_load", "narrow_step", "wide_step")
    assert any(w.load is not None and w.load > 1 for w in shallow.what_if)  # raise the concurrency, by Little's law
    assert (deep.bound, deep.limiting_step) == ("step", "narrow_step")
    assert deep.utilization["narrow_step"] > deep.utilization["wide_step"]
    assert deep.host.cpu_utilization is not None  # the server's metrics were read
    assert result.diagnosis is deep and result.bottleneck is not None and result.bottleneck.model == "narrow_step"


def test_cpu_burning_steps_that_saturate_the_host_bound_it(diagnosis_server: EmbeddedServer) -> None:
    """Four instances burning 8 ms of CPU each on a 2-core host: compute per execution grows with the load, and
    more instances cannot help."""
    result = loadgen.profile_sync(model_name="burning_pipeline", concurrency_range=[1, 8], **_options(diagnosis_server))
    deep = _diagnoses(result)[-1]
    assert deep.bound == "host_cpu", deep.reason
    assert deep.limiting_step in ("burn_first", "burn_second")
    assert max(deep.inflation.values()) >= 1.3
    assert deep.suggestions[0].startswith("more instances will not help")


def test_a_bls_models_own_instance_is_the_limit(diagnosis_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        model_name="bls_front", bls_composing_models="wide_step", concurrency_range=4, **_options(diagnosis_server)
    )
    [diagnosis] = _diagnoses(result)
    assert (diagnosis.bound, diagnosis.limiting_step, diagnosis.latency_step) == ("step", "bls_front", "wide_step")
    assert "raise bls_front's instance_group count from 1 to 2" in diagnosis.suggestions[0]


def test_a_client_whose_own_loop_is_busy_is_the_limit(diagnosis_server: EmbeddedServer) -> None:
    """loadgen in a process whose event loop is busy with other work (a notebook's, an application's): responses
    wait for the loop, and the time outside the server is the client's."""

    async def busy_loop() -> None:
        while True:
            end = time.perf_counter() + 0.01
            while time.perf_counter() < end:  # 10 ms of the loop's time at a stretch
                pass
            await asyncio.sleep(0)

    async def profile() -> loadgen.ProfileResult:
        hog = asyncio.ensure_future(busy_loop())
        try:
            return await loadgen.profile(model_name="echo_step", concurrency_range=32, **_options(diagnosis_server))
        finally:
            hog.cancel()

    [diagnosis] = _diagnoses(asyncio.run(profile()))
    assert (diagnosis.bound, diagnosis.limiting_step) == ("client", "echo_step"), diagnosis.reason
    assert "passed outside the server" in diagnosis.reason


def test_tune_raises_a_shallow_load_then_the_limiting_step(diagnosis_server: EmbeddedServer) -> None:
    """A one-instance step caps throughput at a concurrency too low to load the rest: tune raises the load, then
    acts on the step, and reaches 1.8x the start within 3 trials; every trial has its prediction."""
    settings = loadgen.Settings(model_name="wide_then_narrow", concurrency_range=2, **_options(diagnosis_server))
    result = loadgen.run(loadgen.tune(loadgen.TuneSettings(settings, max_trials=3, max_concurrency=16)))
    assert result.initial.bound == "offered_load"
    assert result.trials[0].change.startswith("concurrency 2 -> ") and result.trials[0].model is None
    assert all(trial.predicted_throughput is not None for trial in result.trials if trial.model is None)
    assert result.final.throughput >= 1.8 * result.initial.throughput, [
        (t.change, t.throughput, t.kept) for t in result.trials
    ]


def test_tune_stops_at_once_on_a_saturated_host(diagnosis_server: EmbeddedServer) -> None:
    settings = loadgen.Settings(model_name="burning_pipeline", concurrency_range=8, **_options(diagnosis_server))
    result = loadgen.run(loadgen.tune(loadgen.TuneSettings(settings, max_trials=4)))
    assert len(result.trials) <= 2
    assert result.final.bound == "host_cpu", result.stop_reason
    assert "the host's CPU is the limit" in result.stop_reason and "more instances cannot help" in result.stop_reason


def test_a_cpu_heavy_model_slows_a_light_one_and_the_mix_names_it(diagnosis_server: EmbeddedServer) -> None:
    """burning_pipeline's four busy instances take this 2-core host's CPU from echo_step, a light model beside it:
    against each model alone (--solo-baseline), echo_step slows down, and the diagnosis across the mix names the
    saturated CPU and the step that uses most of it."""
    result = loadgen.profile_sync(
        model_mix={"burning_pipeline": 4, "echo_step": 1}, solo_baseline=True, **_options(diagnosis_server)
    )
    [level] = result.levels
    burning, echo = level.models
    assert burning.solo is not None and echo.solo is not None  # each alone at its own load first
    assert (burning.solo.concurrency, echo.solo.concurrency) == (4, 1)
    assert echo.latency_us.p99 > echo.solo.latency_us.p99  # the interference is visible
    diagnosis = result.mix_diagnosis
    assert diagnosis is not None and diagnosis.bound == "host_cpu", diagnosis
    heaviest = diagnosis.steps[0]
    assert heaviest.step in ("burn_first", "burn_second") and heaviest.models == ("burning_pipeline",)
    burning_share = sum(share.compute_share for share in diagnosis.steps if share.models == ("burning_pipeline",))
    assert burning_share > 0.5 and "CPU saturated" in diagnosis.reason
    assert [m.model for m in diagnosis.models] == ["burning_pipeline", "echo_step"]
