"""Every mode counts exactly: requests split over workers by their slots, windows that fill in one burst, levels
that never count each other's requests, failures nobody expected, and where every request outside the windows went.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import aiohttp
import pytest

import loadgen
from loadgen.errors import RunFailed
from loadgen.load import ClosedLoop, OpenLoop, _Failures
from loadgen.measurement import FAILING_MIN_COMPLETED, Recorder
from loadgen.plan import Shard
from loadgen.server import EmbeddedServer
from loadgen.transport import RequestFailed
from tests.helpers import QUICK, successes


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("concurrency", [1, 2, 3, 5, 16])
def test_a_count_splits_by_slots_and_a_shard_without_slots_takes_none(workers: int, concurrency: int) -> None:
    for count in (1, 2, 7, 100, 201):
        shards = [Shard(index, workers) for index in range(workers)]
        parts = [shard.by_slots(count, concurrency) for shard in shards]
        assert sum(parts) == count
        for shard, part in zip(shards, parts, strict=True):
            if shard.concurrency(concurrency) == 0:
                assert part == 0


def test_a_window_filled_in_one_burst_loses_nothing() -> None:
    """Seven completions in one loop turn (a dynamically batched model) against a window of two: two close it, the
    other five are the next window's."""

    async def scenario() -> tuple[int, int]:
        recorder = Recorder()
        filling = asyncio.ensure_future(recorder.fill(2, timeout_s=5))
        await asyncio.sleep(0)  # the fill waits
        for _ in range(7):
            recorder.record(100, recorder.start())
        filled = await filling
        return filled.request_count, recorder.rotate().request_count

    assert asyncio.run(scenario()) == (2, 5)


def test_a_request_of_an_earlier_level_is_not_counted_and_the_level_waits_for_it() -> None:
    async def scenario() -> tuple[int, int, int, int]:
        recorder = Recorder()
        old = recorder.start()
        recorder.next_level()
        new = recorder.start()
        assert await recorder.drained(0.01) == 1  # the old request is still out
        recorder.record(100, new)
        recorder.record(5_000_000, old)  # a slow request of the previous level comes back
        assert await recorder.drained(0.01) == 0
        window = recorder.rotate()
        return window.request_count, window.stale, window.histogram.get_max_value(), recorder.outstanding

    count, stale, slowest, outstanding = asyncio.run(scenario())
    assert (count, stale, outstanding) == (1, 1, 0)
    assert slowest < 1000  # the old request's latency is in no figure


def test_clamped_values_of_every_histogram_are_counted() -> None:
    recorder = Recorder(open_loop=True, streaming=True)
    generation = recorder.start()
    recorder.record_sent(10**13, generation)  # the lag is out of range
    recorder.record_stream_response(10**13, 10**13, 10**13, 1, generation)  # and the three latencies
    assert recorder.rotate().clamped == 4


class _Boom(Exception):
    pass


def _payloads(slot: int) -> Iterator[bytes]:
    return itertools.repeat(b"x")


def test_an_unexpected_exception_is_a_counted_failure_and_the_slot_goes_on() -> None:
    """A call that raises what no transport maps (a malformed response, a parser's bug) is an `internal` failure;
    the closed loop keeps its concurrency and the open loop counts it."""
    calls = 0

    async def call(payload: bytes) -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls % 3 == 0:
            raise _Boom("a header the parser chokes on")
        if calls % 3 == 1:
            raise aiohttp.ClientResponseError(None, (), status=400, message="bad status line")  # type: ignore[arg-type]
        return b"ok"

    async def closed() -> tuple[int, dict[str, int], bool]:
        recorder = Recorder()
        failures = _Failures(recorder, (RequestFailed,), lambda error: RequestFailed(str(error)))
        loop = ClosedLoop(call, _payloads, recorder, failures)
        loop.resize(2)
        await asyncio.sleep(0.05)
        alive = all(not task.done() for task in loop._workers)
        await loop.stop()
        window = recorder.rotate()
        return window.request_count, dict(window.errors), alive

    done, errors, alive = asyncio.run(closed())
    assert alive and done > 0
    assert sum(errors.values()) > 0
    assert any(text.startswith("internal: _Boom: a header the parser chokes on") for text in errors)
    assert any(text.startswith("internal: ClientResponseError") for text in errors)

    async def opened() -> tuple[int, int, int]:
        recorder = Recorder(open_loop=True)
        failures = _Failures(recorder, (RequestFailed,), lambda error: RequestFailed(str(error)))
        loop = OpenLoop(call, itertools.repeat(b"x"), recorder, failures, max_in_flight=8)
        loop.start(iter(range(0, 30_000_000, 1_000_000)), time.perf_counter_ns())
        await asyncio.sleep(0.1)
        await loop.stop(grace_s=1)
        window = recorder.rotate()
        return window.sent, window.request_count, window.error_count

    sent, answered, failed = asyncio.run(opened())
    assert sent == 30 and answered + failed == 30 and failed > 0


def _count_windows(server: EmbeddedServer, **options: object) -> loadgen.ProfileResult:
    return loadgen.profile_sync(
        server.grpc_url,
        "identity_uint8",
        measurement_mode="count_windows",
        measurement_request_count=60,
        stability_percentage=1000,
        max_trials=3,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.timeout(150)  # a hang, not a speed: each window waited out its 100 s timeout before the fix
def test_workers_without_slots_take_no_part_in_a_count_window(examples_server: EmbeddedServer) -> None:
    """Two workers at concurrency 1: the one with no slot has no share of the count, so every window closes once
    its count completed and a second passed (it used to wait for completions that never came, the whole timeout)."""
    result = _count_windows(examples_server, workers=2, concurrency_range="1:2")
    assert [level.concurrency for level in result.levels] == [1, 2]
    for level in result.levels:
        assert level.error_count == 0, level.errors
        assert all(window.request_count >= 60 for window in level.trend)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_request_count_reaches_the_server_exactly_whatever_the_workers(
    examples_server: EmbeddedServer, workers: int
) -> None:
    """At concurrency 1 two of three workers have no slot: the one that has sends the whole count."""
    before = successes(examples_server, "identity_uint8")
    result = loadgen.profile_sync(
        examples_server.grpc_url, "identity_uint8", concurrency_range="1:3:2", request_count=25, workers=workers
    )
    assert [level.request_count for level in result.levels] == [25, 25]
    assert successes(examples_server, "identity_uint8") - before == 50


@pytest.mark.parametrize("mode", [{"concurrency_range": "1:4:3"}, {"request_rate_range": "40:100:60"}])
def test_every_request_the_server_answered_is_in_a_window_or_accounted_for(
    test_server: EmbeddedServer, mode: dict[str, str]
) -> None:
    """The server's count of a run's requests is its windows' plus what `unmeasured` says went elsewhere: the
    warm-up, between levels, an earlier level's (never counted at the next), after the last window."""
    before = successes(test_server, "sleeper")
    result = loadgen.profile_sync(
        test_server.grpc_url,
        "sleeper",
        input_data="zero",
        shape={"INPUT0": [4]},
        warmup_request_count=5,
        **QUICK,  # type: ignore[arg-type]
        **mode,  # type: ignore[arg-type]
    )
    served = successes(test_server, "sleeper") - before
    unmeasured = result.unmeasured
    assert unmeasured is not None and unmeasured.cancelled_at_stop == 0
    assert unmeasured.warmup >= 5
    in_windows = sum(window.request_count for level in result.levels for window in level.trend)
    assert in_windows + unmeasured.total == served, unmeasured
    assert result.to_dict()["unmeasured"]["warmup"] == unmeasured.warmup


def test_a_spent_budget_draws_no_further_request() -> None:
    """A slot whose budget is spent takes no payload more from its source (a sequence slot's position stays where
    its last request left it, so that the sequence's ending is the right one)."""
    drawn = 0

    def source(slot: int) -> Iterator[bytes]:
        nonlocal drawn
        while True:
            drawn += 1
            yield b"x"

    async def call(payload: bytes) -> bytes:
        await asyncio.sleep(0)
        return b"ok"

    async def scenario() -> int:
        recorder = Recorder()
        failures = _Failures(recorder, (RequestFailed,), lambda error: RequestFailed(str(error)))
        loop = ClosedLoop(call, source, recorder, failures)
        loop.resize(1, itertools.repeat(None, 5))
        await asyncio.sleep(0.05)
        await loop.stop()
        return recorder.rotate().request_count

    assert asyncio.run(scenario()) == 5
    assert drawn == 5


def test_a_run_that_had_only_failures_keeps_them_and_stops_as_they_arrive(test_server: EmbeddedServer) -> None:
    """Every request times out: the run stops over --max-error-rate as soon as a hundred requests failed (not at the
    end of its 20 s window, thousands of failures later), and its result still holds the level with its failures (it
    used to hold no level at all)."""
    with pytest.raises(RunFailed) as failed:
        loadgen.profile_sync(
            test_server.grpc_url,
            "sleeper",
            input_data="zero",
            shape={"INPUT0": [4]},
            concurrency_range="2",
            request_timeout=2,  # ms; the model sleeps 20
            measurement_interval=20_000,
        )
    result = failed.value.result
    assert result is not None
    [level] = result.levels
    assert level.request_count == 0 and FAILING_MIN_COMPLETED <= level.error_count < 2 * FAILING_MIN_COMPLETED
    assert all(text.startswith("timeout") for text in level.errors), level.errors
    assert result.to_dict()["levels"][0]["error_count"] == level.error_count
    # Client Send is averaged over every request sent, failed ones too (it was over successful calls: none here)
    assert level.client_send_us > 0


def test_a_servers_message_is_one_short_safe_line() -> None:
    """Escape sequences (a window title, a clear screen) never reach the terminal, and a 20 MB message is cut with its
    length said, on the failure path alone."""
    from loadgen.transport import Rejected, clipped

    huge = "\x1b]0;owned\x07\x1b[2J" + "model failed: " + "x" * 20_000_000
    shown = clipped(huge)
    assert "\x1b" not in shown and "\x07" not in shown
    assert len(shown) < 400 and shown.endswith(f"({len(huge)} characters)")

    recorder = Recorder()
    failures = _Failures(recorder, (RequestFailed,), lambda error: RequestFailed(str(error)))
    asyncio.run(failures.record(Rejected(huge), recorder.start()))
    [(text, count)] = recorder.rotate().errors.items()
    assert count == 1 and text == shown


def test_failures_of_many_kinds_are_kept_to_a_bounded_number() -> None:
    """20,000 distinct messages: the first kinds by name, the rest counted together; no failure is lost."""
    from loadgen.measurement import MAX_ERROR_KINDS, OTHER_ERRORS, merge

    recorder = Recorder()
    windows = []
    for window in range(4):
        for index in range(5000):
            recorder.record_error(f"error {window}-{index}", recorder.start())
        windows.append(recorder.rotate())
    assert all(len(window.errors) == MAX_ERROR_KINDS + 1 for window in windows)
    merged = merge(windows)
    assert len(merged.errors) == MAX_ERROR_KINDS + 1
    assert merged.error_count == 20_000
    assert merged.errors[OTHER_ERRORS] == 20_000 - MAX_ERROR_KINDS


def test_text_that_utf8_cannot_carry_is_a_one_line_error() -> None:
    """A lone surrogate in a JSON string input, or bytes the shell could not decode in an argument (the model name,
    --string-data), is an option error (exit 3), not a UnicodeEncodeError traceback."""
    from loadgen.errors import OptionError
    from loadgen.inputs import _string
    from tests.helpers import run_cli

    with pytest.raises(OptionError, match="not valid text"):
        _string("\ud800", "--input-data data.json: INPUT0")
    done = run_cli("-u", "localhost:1", "-m", "model\udcff", "--concurrency-range", "1")
    assert done.returncode == 3
    assert done.stderr.strip() == r"error: model\xff: not valid UTF-8 text (check the shell's quoting and encoding)"
    assert "Traceback" not in done.stderr


def test_a_window_says_it_is_failing_once_its_share_of_failures_passes_the_limit() -> None:
    recorder = Recorder(max_error_rate=0.1)
    for _ in range(FAILING_MIN_COMPLETED):
        recorder.record(100, recorder.start())
    for _ in range(11):
        recorder.record_error("UNAVAILABLE: gone", recorder.start())
    assert not recorder.failing.is_set()  # 11 of 111: under a tenth
    for _ in range(2):
        recorder.record_error("UNAVAILABLE: gone", recorder.start())
    assert recorder.failing.is_set()  # 13 of 113
    recorder.rotate()
    assert not recorder.failing.is_set()  # a new window counts anew
