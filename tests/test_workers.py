"""Load split over worker processes: shards, exact merges, and runs identical in shape to one process."""

from __future__ import annotations

import itertools
import random

import loadgen
from loadgen import schedule
from loadgen.measurement import LatencyStats, Recorder, Window, combine, new_histogram
from loadgen.plan import Shard
from loadgen.server import EmbeddedServer


def test_shards_split_concurrency_slots_exactly() -> None:
    for total in range(1, 20):
        for count in range(1, 6):
            assert sum(Shard(i, count).concurrency(total) for i in range(count)) == total


def test_shards_of_a_schedule_together_are_the_schedule() -> None:
    whole = list(itertools.islice(schedule.poisson(500.0), 999))
    parts = [list(Shard(i, 3).schedule(iter(whole))) for i in range(3)]
    assert sorted(itertools.chain(*parts)) == whole
    assert [len(p) for p in parts] == [333, 333, 333]


def test_combined_windows_equal_one_histogram_of_all_values() -> None:
    rng = random.Random(11)
    reference = new_histogram()
    parts = []
    for _ in range(4):
        recorder = Recorder(open_loop=True)
        for _ in range(2000):
            response, service = rng.randint(100, 90_000), rng.randint(50, 40_000)
            recorder.record_sent(rng.randint(0, 3000), recorder.start())
            recorder.record_response(response, service, recorder.generation)
            reference.record_value(response)
        recorder.record_error("INTERNAL: boom", recorder.start())
        parts.append(Window.decode(recorder.rotate().encode()))  # as workers send them
    window = combine(parts)
    assert window.request_count == 8000
    assert window.sent == 8000
    assert window.errors == {"INTERNAL: boom": 4}
    assert LatencyStats.from_histogram(window.histogram) == LatencyStats.from_histogram(reference)
    assert window.start_ns == min(p.start_ns for p in parts)
    assert window.end_ns == max(p.end_ns for p in parts)


def test_two_workers_closed_loop(examples_server: EmbeddedServer) -> None:
    options = {"url": examples_server.grpc_url, "model_name": "identity_uint8", "concurrency_range": "2:3"}
    quick = {"measurement_interval": 500, "stability_percentage": 1000, "max_trials": 4}
    single = loadgen.profile_sync(**options, **quick)  # type: ignore[arg-type]
    split = loadgen.profile_sync(workers=2, **options, **quick)  # type: ignore[arg-type]
    assert split.to_dict().keys() == single.to_dict().keys()
    assert [level.concurrency for level in split.levels] == [2, 3]
    for level in split.levels:
        assert level.request_count > 0 and level.error_count == 0, level.errors
        assert level.server is not None
        # the server saw what the workers sent, give or take requests in flight at the window edges
        assert level.server.request_count >= 0.9 * level.request_count
        assert level.to_dict().keys() == single.levels[0].to_dict().keys()


def test_two_workers_share_a_request_rate(test_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        url=test_server.grpc_url,
        model_name="sleeper",
        input_data="zero",
        shape={"INPUT0": [4]},
        request_rate_range=30,
        workers=2,
        measurement_interval=2000,
        stability_percentage=1000,
        max_trials=3,
    )
    [level] = result.levels
    assert level.send_rate is not None and abs(level.send_rate - 30) <= 0.05 * 30
    assert level.request_count > 0
