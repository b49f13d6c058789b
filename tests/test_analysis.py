"""The diagnosis on synthetic observations: capacity, not latency share; the host; the client; the offered load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadgen.analysis import Observation, Reference, diagnose, verdict
from loadgen.plan import Load
from loadgen.server.metrics import ServerMetrics, aggregate, parse_metrics
from loadgen.server.statistics import ServerFigures

DATA = Path(__file__).resolve().parent / "data"
SECONDS = 10.0


def _step(model: str, compute_us: float, instances: int = 1, rate: float = 50.0, **extra: object) -> ServerFigures:
    """A step that ran `rate` inferences/s for SECONDS with this compute time per execution."""
    fields: dict[str, object] = {
        "model": model,
        "version": "1",
        "request_count": int(rate * SECONDS),
        "inference_count": int(rate * SECONDS),
        "execution_count": int(rate * SECONDS),
        "failures": 0,
        "avg_batch": 1.0,
        "queue_us": 0.0,
        "compute_input_us": 0.0,
        "compute_infer_us": compute_us,
        "compute_output_us": 0.0,
        "request_us": compute_us,
        "overhead_us": 0.0,
        "capacity": instances * 1e6 / compute_us,
        "instances": instances,
        "max_batch_size": 0,
        "dynamic_batching": False,
    }
    fields.update(extra)
    return ServerFigures(**fields)  # type: ignore[arg-type]


def _pipeline(*steps: ServerFigures) -> ServerFigures:
    top = _step("pipeline", 0.0 + 1, rate=steps[0].inference_count / SECONDS, capacity=None)
    queue = sum(s.queue_us for s in steps)
    compute = sum(s.compute_us for s in steps)
    return replace(top, queue_us=queue, compute_infer_us=compute, request_us=queue + compute, composing=steps)


def _observe(server: ServerFigures, load: Load, latency_us: float | None = None, **extra: object) -> Observation:
    throughput = server.inference_count / SECONDS
    fields: dict[str, object] = {
        "load": load,
        "throughput": throughput,
        "duration_s": SECONDS,
        "client_latency_us": latency_us if latency_us is not None else server.request_us + 500,
        "loop_busy_share": 0.05,
        "client_cpu_s": 0.2,
        "saturated": None,
        "server": server,
    }
    fields.update(extra)
    return Observation(**fields)  # type: ignore[arg-type]


def _host(cpu: float) -> ServerMetrics:
    page = (DATA / "metrics_cpu.txt").read_text()
    sample = replace(parse_metrics(page, 0.0), cpu_utilization=cpu)
    return aggregate([sample], 0.0, SECONDS, {})


def test_latency_share_is_not_capacity() -> None:
    """A wide step (4 instances of 40 ms: 100/s) takes most of the latency; a narrow one (1 of 12 ms: 83/s) caps
    throughput. At concurrency 2 nothing is busy: the offered load is the bound, and the narrow step the limit."""
    wide, narrow = _step("wide", 40_000, instances=4, rate=38), _step("narrow", 12_000, rate=38)
    diagnosis = diagnose(_observe(_pipeline(wide, narrow), Load(concurrency=2)))
    assert diagnosis is not None
    assert (diagnosis.bound, diagnosis.limiting_step, diagnosis.latency_step) == ("offered_load", "narrow", "wide")
    assert diagnosis.predicted_max_throughput == pytest.approx(1e6 / 12_000)
    assert diagnosis.utilization == {"wide": pytest.approx(0.38), "narrow": pytest.approx(38 / 83.33, rel=1e-3)}
    raise_load = [w for w in diagnosis.what_if if w.load is not None]
    # Little's law: 83/s at the 52.5 ms a request takes without queueing needs 5 in flight
    assert [(w.change, w.load) for w in raise_load] == [("concurrency 2 -> 5", 5.0)]
    assert "raise the concurrency to about 5" in diagnosis.suggestions[0]


def test_a_rate_to_raise_to_reads_to_a_tenth_and_keeps_its_exact_value() -> None:
    diagnosis = diagnose(_observe(_pipeline(_step("slow", 7_000, rate=38)), Load(rate=40)))
    assert diagnosis is not None and diagnosis.bound == "offered_load"
    [raise_rate] = [w for w in diagnosis.what_if if w.load is not None]
    assert raise_rate.change == "request rate 40 -> 142.9" and raise_rate.load == pytest.approx(1e6 / 7_000)


def test_a_step_at_capacity_is_the_bound_and_one_more_instance_moves_the_limit_to_the_next() -> None:
    wide = _step("wide", 40_000, instances=4, rate=80)
    narrow = _step("narrow", 12_000, rate=80, queue_us=30_000)
    diagnosis = diagnose(_observe(_pipeline(wide, narrow), Load(concurrency=8)))
    assert diagnosis is not None and (diagnosis.bound, diagnosis.limiting_step) == ("step", "narrow")
    assert "narrow is 96% busy" in diagnosis.reason and "wait 30.0 ms in its queue" in diagnosis.reason
    [more] = [w for w in diagnosis.what_if if w.change.startswith("narrow")]
    assert more.change == "narrow: instance_group count 1 -> 2"
    assert more.predicted_max == pytest.approx(100.0)  # the narrow step doubles to 167/s: the wide one's 100 holds
    assert any("instance_group count from 1 to 2" in s for s in diagnosis.suggestions)
    legacy = verdict(diagnosis, _observe(_pipeline(wide, narrow), Load(concurrency=8)))
    assert (legacy.model, legacy.capacity) == ("narrow", pytest.approx(1e6 / 12_000))


def test_a_saturated_host_whose_compute_inflates_is_the_bound_and_instances_will_not_help() -> None:
    quiet = _pipeline(_step("a", 8_000, instances=2, rate=60), _step("b", 8_000, instances=2, rate=60))
    busy = _pipeline(_step("a", 17_000, instances=2, rate=118), _step("b", 16_000, instances=2, rate=118))
    observation = _observe(busy, Load(concurrency=8), metrics=_host(0.98), cores=2)
    diagnosis = diagnose(observation, Reference(quiet, 500.0))
    assert diagnosis is not None and diagnosis.bound == "host_cpu"
    assert diagnosis.inflation["a"] == pytest.approx(17 / 8)
    assert "compute per execution 2.1x the least-loaded level's" in diagnosis.reason
    assert diagnosis.suggestions[0].startswith("more instances will not help")
    # the lowest capacity, its compute grown by the contention (2 / 17 ms), under the host's 118 / 0.98
    assert diagnosis.predicted_max_throughput == pytest.approx(2e6 / 17_000)
    assert diagnosis.host.throughput_limit == pytest.approx(118 / 0.98)
    assert diagnosis.limit_basis == "the lowest capacity (a) capped by the host"
    assert diagnosis.host.client_cpu_share == pytest.approx(0.2 / SECONDS / 2)


def test_a_host_busy_with_other_work_neither_bounds_nor_predicts() -> None:
    quiet = _pipeline(_step("a", 8_000, rate=20), _step("b", 8_000, rate=20))
    observation = _observe(quiet, Load(concurrency=1), metrics=_host(0.99), cores=2)
    diagnosis = diagnose(observation, Reference(quiet, 500.0))
    assert diagnosis is not None and diagnosis.bound == "offered_load"
    assert diagnosis.host.throughput_limit is None and not diagnosis.certain
    assert diagnosis.predicted_max_throughput == pytest.approx(125.0)
    assert "a), not capped by the host (no metrics" in diagnosis.limit_basis  # the limit says the host is left out


def test_a_host_the_pipeline_fills_caps_the_prediction_before_its_compute_inflates() -> None:
    """Two CPU steps of 2 instances, 8 ms each, at 110/s: their instances compute for 1.76 of the 2 cores the host
    uses (95 %): the host is this pipeline's limit, and its bound, even though compute per execution has not grown
    yet."""
    steps = _pipeline(_step("a", 8_000, instances=2, rate=110), _step("b", 8_000, instances=2, rate=110))
    observation = _observe(steps, Load(concurrency=2), metrics=_host(0.95), cores=2)
    diagnosis = diagnose(observation, Reference(steps, 500.0))
    assert diagnosis is not None and not diagnosis.inflation["a"] > 1
    assert diagnosis.host.throughput_limit == pytest.approx(110 / 0.95)
    assert diagnosis.predicted_max_throughput == pytest.approx(110 / 0.95)  # not the steps' 250/s
    assert diagnosis.bound == "host_cpu" and diagnosis.suggestions[0].startswith("more instances will not help")


def test_a_busy_gpu_is_the_bound_when_the_steps_saturate() -> None:
    page = (DATA / "metrics_gpu.txt").read_text()
    sample = parse_metrics(page, 0.0)
    busy_gpus = tuple(replace(gpu, utilization=0.97) for gpu in sample.gpus)
    metrics = aggregate([replace(sample, gpus=busy_gpus, cpu_utilization=0.3)], 0.0, SECONDS, {})
    server = _step("model", 10_000, rate=95)
    diagnosis = diagnose(_observe(server, Load(concurrency=4), metrics=metrics))
    assert diagnosis is not None and diagnosis.bound == "host_gpu"
    assert diagnosis.host.gpu_utilization == pytest.approx(0.97)
    assert diagnosis.predicted_max_throughput == pytest.approx(95 / 0.97)


def test_time_outside_the_server_with_a_busy_loop_is_the_client() -> None:
    """Case 5 of the issue: 701 ms per request at the client, 3.7 ms at the server, loadgen's loop saturated."""
    server = _step("tiny", 3_700, instances=2, rate=2800)
    observation = _observe(server, Load(concurrency=2000), latency_us=701_000, loop_busy_share=0.97)
    diagnosis = diagnose(observation)
    assert diagnosis is not None and diagnosis.bound == "client"
    assert "697.3 ms passed outside the server" in diagnosis.reason
    assert verdict(diagnosis, observation).model is None
    # the same with an idle loop and a saturated host: the client and Triton's frontends share the cores
    hosted = replace(observation, loop_busy_share=0.3, metrics=_host(0.99), cores=2)
    assert diagnose(hosted).bound == "host_cpu"  # type: ignore[union-attr]


def test_protocol_overhead_at_one_request_in_flight_is_not_the_client() -> None:
    """0.8 ms of unaccounted time around a 0.5 ms model is what gRPC and the loopback cost, not waiting."""
    diagnosis = diagnose(_observe(_step("tiny", 500, rate=700), Load(concurrency=1), latency_us=1_300))
    assert diagnosis is not None and diagnosis.bound == "offered_load"


def test_a_bls_models_own_instances_are_a_step() -> None:
    """A BLS model with one instance calling a four-instance step: its own queue is the limit."""
    called = _step("wide", 40_000, instances=4, rate=23)
    bls = _step("bls", 43_000, rate=23, queue_us=120_000, composing=(called,), calls=True)
    diagnosis = diagnose(_observe(replace(bls, request_us=163_000), Load(concurrency=4)))
    assert diagnosis is not None and (diagnosis.bound, diagnosis.limiting_step) == ("step", "bls")
    assert diagnosis.latency_step == "wide"
    assert set(diagnosis.utilization) == {"bls", "wide"}


def test_no_requests_no_diagnosis() -> None:
    assert diagnose(_observe(replace(_step("a", 1), request_count=0), Load(concurrency=1))) is None
