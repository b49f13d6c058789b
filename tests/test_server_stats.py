"""Statistics deltas and the ensemble walk, on messages recorded from the real server (pipeline_nested, 5 requests)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

from loadgen.server.statistics import Composition, Counters, add, composition, delta, figures, served_version, snapshot

RECORDED = json.loads((Path(__file__).parent / "data" / "pipeline_nested_5_requests.json").read_text())


def _stats(key: str) -> service_pb2.ModelStatisticsResponse:
    return json_format.ParseDict(RECORDED[key], service_pb2.ModelStatisticsResponse())


async def _config(name: str, version: str) -> model_config_pb2.ModelConfig:
    return json_format.ParseDict(RECORDED["configs"][name], model_config_pb2.ModelConfig())


def _tree() -> Composition:
    return asyncio.run(composition("pipeline_nested", "", _config))


def test_the_walk_is_recursive_and_keeps_step_order() -> None:
    tree = _tree()
    assert [step.model for step in tree.steps] == ["fast_step", "pipeline_slow_tail"]
    assert [step.model for step in tree.steps[1].steps] == ["fast_step", "slow_step"]
    assert [leaf.model for leaf in tree.leaves()] == ["fast_step", "fast_step", "slow_step"]
    assert tree.steps[0].version == "-1"
    assert tree.steps[1].steps[1].instances == 1
    assert tree.steps[1].steps[1].max_batch_size == 0


def test_delta_counts_what_happened_between_readings() -> None:
    changes = delta(snapshot(_stats("before")), snapshot(_stats("after")))
    assert changes[("pipeline_nested", "1")].success_count == 5
    assert changes[("pipeline_slow_tail", "1")].success_count == 5
    # fast_step serves both ensembles' first steps
    assert changes[("fast_step", "1")].success_count == 10
    assert changes[("sleeper", "1")] == Counters()


def test_a_model_loaded_between_readings_counts_from_zero() -> None:
    after = snapshot(_stats("after"))
    assert delta({}, after) == after


def test_add_sums_windows() -> None:
    changes = delta(snapshot(_stats("before")), snapshot(_stats("after")))
    doubled = add(changes, changes)
    assert doubled[("slow_step", "1")].success_ns == 2 * changes[("slow_step", "1")].success_ns
    assert add({}, changes) == changes


def test_version_minus_one_resolves_to_the_version_that_served() -> None:
    stats = {("m", "1"): Counters(success_count=3), ("m", "2"): Counters(success_count=9), ("x", "7"): Counters()}
    assert served_version("m", "-1", stats) == "2"
    assert served_version("m", "", stats) == "2"
    assert served_version("m", "1", stats) == "1"
    assert served_version("unknown", "-1", stats) == ""


def test_figures_follow_perf_analyzers_server_block() -> None:
    changes = delta(snapshot(_stats("before")), snapshot(_stats("after")))
    top = figures(_tree(), changes)
    slow = top.composing[1].composing[1]
    raw = changes[("slow_step", "1")]
    assert (slow.model, slow.version, slow.request_count) == ("slow_step", "1", 5)
    assert slow.queue_us == pytest.approx(raw.queue_ns / 1000 / 5)
    assert slow.compute_infer_us == pytest.approx(raw.compute_infer_ns / 1000 / 5)
    assert slow.request_us == pytest.approx(raw.success_ns / 1000 / 5)
    assert slow.overhead_us == pytest.approx(max(slow.request_us - slow.queue_us - slow.compute_us, 0))
    assert slow.avg_batch == 1.0
    # one instance, ~20 ms of compute per execution
    assert slow.capacity == pytest.approx(1e6 / slow.compute_us)
    # an ensemble's queue and compute are its steps' sums; its request time is its own
    assert top.queue_us == pytest.approx(sum(step.queue_us for step in top.composing))
    assert top.compute_infer_us == pytest.approx(sum(step.compute_infer_us for step in top.composing))
    assert top.request_us == pytest.approx(changes[("pipeline_nested", "1")].success_ns / 1000 / 5)
    assert top.capacity is None


def test_a_model_that_served_nothing_has_zero_figures() -> None:
    changes = delta(snapshot(_stats("before")), snapshot(_stats("after")))
    idle = figures(Composition("sleeper", "", 1, 0, False), changes)
    assert (idle.request_count, idle.request_us, idle.avg_batch, idle.capacity) == (0, 0.0, 0.0, None)
