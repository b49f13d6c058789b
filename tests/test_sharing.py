"""A level served to someone else too, on synthetic counts: the pollution rule, the edges it allows for, and a
diagnosis that computes no capacity from such figures."""

from __future__ import annotations

from dataclasses import replace

from loadgen.analysis import Observation, diagnose
from loadgen.plan import Load
from loadgen.server.sharing import SHARED_FLOOR, SHARED_MARGIN, combined, is_shared, window_sharing
from loadgen.server.statistics import Composition, Counters, Snapshot, figures

TAIL = Composition("tail", "1", 1, 0, False)
PIPELINE = Composition("pipe", "1", 1, 0, False, steps=(Composition("head", "1", 1, 0, False), TAIL))


def _server(requests: int) -> Snapshot:
    """The server's counts over a window: the pipeline's requests, each through both steps at 20 ms."""

    def step(count: int) -> Counters:
        return Counters(
            success_count=count,
            success_ns=count * 20_000_000,
            inference_count=count,
            execution_count=count,
            compute_infer_ns=count * 20_000_000,
        )

    return {
        ("pipe", "1"): replace(step(requests), compute_infer_ns=0),
        ("head", "1"): step(requests),
        ("tail", "1"): step(requests),
    }


def test_the_rule_allows_for_requests_in_flight_at_the_edges_and_a_margin() -> None:
    assert not is_shared(100, 100, 8)
    assert not is_shared(20 + 8 + SHARED_FLOOR, 20, 8)  # the edges, and the floor of the margin
    assert is_shared(20 + 8 + SHARED_FLOOR + 1, 20, 8)
    margin = int(SHARED_MARGIN * 1000)  # a share of loadgen's count above the floor
    assert not is_shared(1000 + 8 + margin, 1000, 8)
    assert is_shared(1000 + 8 + margin + 1, 1000, 8)
    assert not is_shared(50, 100, 8)  # fewer than loadgen's: requests it counted that the server had counted before
    assert is_shared(349, 64, 8)  # the run of issue 23: the ensemble completed 349 requests while loadgen sent 64
    assert is_shared(40, 0, 8)  # loadgen got nothing back while the server kept serving
    one = window_sharing("pipe", 349, 64, 8)
    assert one.shared and one.foreign_requests == 277
    assert "at least 277 were someone else's" in one.describe()
    level = combined([window_sharing("pipe", 50, 50, 8), one])
    assert level is not None and level.shared and level.windows == 2
    assert combined([]) is None


def test_a_level_is_judged_on_its_windows_together() -> None:
    """Requests completed between a window's rotation and the statistics read count in the server's window one
    window earlier than in loadgen's: a window over the edges, evened out by the next one, leaves the level clean."""
    early, late = window_sharing("pipe", 1200, 1100, 32), window_sharing("pipe", 1000, 1100, 32)
    assert early.shared and not late.shared
    level = combined([early, late, window_sharing("pipe", 1100, 1100, 32)])
    assert level is not None and not level.shared


def test_a_diagnosis_of_shared_figures_computes_no_capacity_and_says_why() -> None:
    """Issue 23's figures: the pipeline completed 349 requests while loadgen's own 64 came back. Read as they are,
    the tail would be a step of 20 ms able to do about 64 / 349 x 50 infer/s of the pipeline's."""
    observation = Observation(
        load=Load(concurrency=4),
        throughput=64.0,
        duration_s=1.0,
        client_latency_us=60_000.0,
        loop_busy_share=0.01,
        client_cpu_s=0.01,
        saturated=None,
        server=figures(PIPELINE, _server(349)),
    )
    misread = diagnose(observation)
    assert misread is not None and misread.utilization  # capacities computed from polluted figures
    shared = diagnose(replace(observation, sharing=window_sharing("pipe", 349, 64, 8)))
    assert shared is not None and shared.shared and shared.bound == "shared"
    assert shared.limiting_step is None and shared.predicted_max_throughput is None
    assert shared.utilization == {} and shared.what_if == ()
    assert "no capacity or bound is computed" in shared.reason and "277 were someone else's" in shared.reason
    assert shared.name == "unknown (a shared server)"
