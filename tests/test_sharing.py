"""A level served to someone else too, on synthetic counts: the pollution rule, the edges it allows for, a diagnosis
that computes no capacity from such figures, the flag on the level and in its JSON."""

from __future__ import annotations

from dataclasses import replace

from loadgen.analysis import Observation, diagnose
from loadgen.levels import Level, outcome, start_level
from loadgen.measurement import Window, new_histogram
from loadgen.plan import LevelRule, Load
from loadgen.results import LevelResult, ProfileResult
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


# the levels: each window compared as it is added

RULE = LevelRule(batch_size=1, percentile=None, stability_percentage=1000, latency_threshold_ms=None, single=False)
SECOND = 1_000_000_000


def _window(index: int, completed: int, sent: int = 0) -> Window:
    """Second `index` of a level: `completed` requests of 20 ms answered, and (open loop) `sent` sent."""
    histogram = new_histogram()
    for _ in range(completed):
        histogram.record_value(20_000)
    open_loop = {"service": histogram, "lag": new_histogram(), "sent": sent} if sent else {}
    return Window(start_ns=index * SECOND, end_ns=(index + 1) * SECOND, histogram=histogram, **open_loop)


def _closed_level(served: list[int], completed: int = 50, concurrency: int = 4) -> LevelResult:
    level = Level(Load(concurrency=concurrency), RULE, PIPELINE)
    level.begin(_window(0, 0), {})
    for index, count in enumerate(served):
        level.add(_window(index, completed), _server(count))
    return level.result()


def test_a_closed_loop_level_is_shared_only_beyond_its_concurrency_at_both_edges() -> None:
    clean = _closed_level([50 + 8, 50, 50 + 8])  # every window within 2 x concurrency 4 (and the margin)
    assert clean.sharing is not None and not clean.shared
    assert clean.diagnosis is not None and not clean.diagnosis.shared
    shared = _closed_level([50, 50, 350])
    assert shared.sharing is not None and shared.shared
    assert (shared.sharing.server_requests, shared.sharing.loadgen_requests) == (450, 150)


def test_a_shared_level_computes_no_capacity_and_names_no_bottleneck() -> None:
    level = _closed_level([350, 350, 350])
    diagnosis = level.diagnosis
    assert diagnosis is not None and diagnosis.shared and diagnosis.bound == "shared"
    assert diagnosis.limiting_step is None and diagnosis.predicted_max_throughput is None
    assert diagnosis.utilization == {} and diagnosis.what_if == ()
    assert "no capacity or bound is computed" in diagnosis.reason
    assert level.bottleneck is None
    assert level.server is not None  # the server's figures stay, for what they are


def test_a_level_stuck_behind_someone_else_s_queue_says_so() -> None:
    """Nothing of loadgen's came back while the server served the model: the leftovers of an earlier run."""
    level = _closed_level([140, 140, 140], completed=0)
    assert level.diagnosis is not None and level.diagnosis.shared  # though loadgen's throughput is 0
    status, message = outcome([level])
    assert status == "unstable"
    assert message.startswith("no request completed at concurrency 4 in 3 windows while the server completed 420")


def test_an_open_loop_counts_its_requests_in_flight_at_each_edge() -> None:
    level = Level(Load(rate=100.0), RULE, PIPELINE)
    before = _window(0, 5, sent=10)  # the level started with 5 requests in flight
    level.begin(before, {})
    # 100 sent, 90 back: 15 in flight at the end; the server may have counted up to 5 + 15 more than loadgen
    level.add(_window(0, 90, sent=100), _server(90 + 20 + int(SHARED_MARGIN * 90)))
    level.add(_window(1, 100, sent=100), _server(100 + 30 + int(SHARED_MARGIN * 100) + 1))  # 15 at both edges
    first, second = level.sharing
    assert (first.edge_requests, first.shared) == (20, False)
    assert (second.edge_requests, second.shared) == (30, True)


def test_a_level_without_begin_is_not_compared() -> None:
    """A shard's level (the server counts every shard's requests) and `loadgen merge`'s are not compared."""
    level = Level(Load(concurrency=4), RULE, PIPELINE)
    level.add(_window(0, 50), _server(500))
    result = level.result()
    assert result.sharing is None and not result.shared
    assert result.diagnosis is not None and not result.diagnosis.shared


def test_the_flag_is_in_the_json_and_comes_back() -> None:
    level = _closed_level([350, 350, 350])
    document = level.to_dict()
    assert document["sharing"]["shared"] is True
    assert document["sharing"]["server_requests"] == 1050
    result = ProfileResult("pipe", "localhost:8001", "concurrency", (level,), (), {"concurrency_range": [4, 4, 1]})
    again = ProfileResult.from_dict(result.to_dict())
    assert again.levels[0].sharing == level.sharing and again.levels[0].shared


def test_each_model_of_a_mix_is_compared_with_its_own_part() -> None:
    """A closed-loop mix: the pipeline at concurrency 2 is served to someone else too, `other` at 2 is not."""
    other = Composition("other", "1", 1, 0, False)
    level = start_level(
        Load(concurrency=4), RULE, {"pipe": PIPELINE, "other": other}, {"pipe": 2, "other": 2}, None, None
    )
    level.begin(_window(0, 0), {"pipe": _window(0, 0), "other": _window(0, 0)})
    for index in range(3):
        parts = {"pipe": _window(index, 50), "other": _window(index, 50)}
        server = _server(300) | {("other", "1"): Counters(success_count=52, success_ns=52 * 20_000_000)}
        level.add(_window(index, 100), server, None, parts)
    result = level.result()
    pipe, rest = result.models
    assert result.sharing is None  # the mix's total has no server count of its own
    assert pipe.shared and not rest.shared and rest.sharing is not None
    assert result.mix_diagnosis is not None and result.mix_diagnosis.bound == "shared"
