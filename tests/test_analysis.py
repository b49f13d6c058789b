from __future__ import annotations

from dataclasses import replace

from loadgen.analysis import find_bottleneck
from loadgen.server.statistics import ServerFigures


def _step(model: str, queue: float, compute: float, **extra: object) -> ServerFigures:
    fields: dict[str, object] = {
        "model": model,
        "version": "1",
        "request_count": 100,
        "inference_count": 100,
        "execution_count": 100,
        "failures": 0,
        "avg_batch": 1.0,
        "queue_us": queue,
        "compute_input_us": 0.0,
        "compute_infer_us": compute,
        "compute_output_us": 0.0,
        "request_us": queue + compute,
        "overhead_us": 0.0,
        "capacity": 1e6 / compute,
        "instances": 1,
        "max_batch_size": 0,
        "dynamic_batching": False,
    }
    fields.update(extra)
    return ServerFigures(**fields)  # type: ignore[arg-type]


def _ensemble(*steps: ServerFigures) -> ServerFigures:
    total = sum(s.request_us for s in steps)
    top = _step("pipeline", sum(s.queue_us for s in steps), sum(s.compute_us for s in steps), capacity=None)
    return replace(top, request_us=total, composing=steps)


def test_a_step_with_a_long_queue_is_named_with_its_evidence() -> None:
    server = _ensemble(_step("preprocessing", 26_000, 11_000), _step("classifier", 100, 1_000))
    verdict = find_bottleneck(server, throughput=88.0, client_latency_us=40_000)
    assert verdict is not None
    assert verdict.model == "preprocessing"
    assert verdict.share == (26_000 + 11_000) / 38_100
    assert "wait 26.0 ms in its queue for its 1 instance" in verdict.reason
    assert "saturates near 91 infer/s" in verdict.reason
    assert any("instance_group count from 1 to 2" in s for s in verdict.suggestions)
    assert any("max_batch_size: 0" in s for s in verdict.suggestions)


def test_an_empty_queue_with_dominant_compute_says_the_step_must_get_faster() -> None:
    server = _ensemble(_step("a", 10, 1_000), _step("b", 20, 9_000))
    verdict = find_bottleneck(server, throughput=100.0, client_latency_us=10_500)
    assert verdict is not None and verdict.model == "b"
    assert "queue is empty" in verdict.reason
    assert any("itself must get faster" in s for s in verdict.suggestions)
    assert not any("instance_group" in s for s in verdict.suggestions)


def test_batching_suggestions_follow_the_config() -> None:
    batchable = _step("m", 5_000, 1_000, max_batch_size=8)
    verdict = find_bottleneck(batchable, throughput=900.0, client_latency_us=6_500)
    assert verdict is not None
    assert any("enable dynamic_batching for m" in s for s in verdict.suggestions)
    batching = _step("m", 5_000, 1_000, max_batch_size=8, dynamic_batching=True, avg_batch=1.1)
    verdict = find_bottleneck(batching, throughput=900.0, client_latency_us=6_500)
    assert verdict is not None
    assert any("max_queue_delay_microseconds" in s for s in verdict.suggestions)


def test_the_client_is_named_when_the_server_is_idle() -> None:
    server = _ensemble(_step("a", 5, 100), _step("b", 5, 100))
    verdict = find_bottleneck(server, throughput=1000.0, client_latency_us=2_000)
    assert verdict is not None
    assert verdict.model is None
    assert "the client or the network" in verdict.reason


def test_no_requests_no_verdict() -> None:
    assert find_bottleneck(replace(_step("a", 0, 1), request_count=0), 0.0, 0.0) is None
