"""Late sends are named by their cause: each test forces one cause and checks that the worst late send is named
after it (never how late it was)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from collections.abc import Awaitable, Callable

from loadgen.load import OpenLoop, _Failures
from loadgen.measurement import DESCHEDULED, IN_FLIGHT_LIMIT, LATE_CAUSES, LOOP_BUSY, Recorder, Window, combine
from loadgen.results import LateCause, LateSends
from loadgen.transport import RequestFailed

INTERVAL_NS = 5_000_000  # one request every 5 ms
REQUESTS = 60
STOPPED_S = 0.3  # how long the descheduling test keeps this process stopped


def _run(
    call: Callable[[bytes], Awaitable[bytes]], max_in_flight: int, during: Callable[[], None], requests: int = REQUESTS
) -> Window:
    """Send `requests` on a 5 ms schedule through an open loop over `call`; `during` runs on the loop 50 ms in."""

    async def main() -> Window:
        recorder = Recorder(open_loop=True)
        failures = _Failures(recorder, (RequestFailed,), lambda error: RequestFailed(str(error)))
        loop = OpenLoop(call, itertools.repeat(b"x"), recorder, failures, max_in_flight)
        loop.start(iter(range(0, requests * INTERVAL_NS, INTERVAL_NS)), time.perf_counter_ns())
        asyncio.get_running_loop().call_later(0.05, during)
        await asyncio.sleep(requests * INTERVAL_NS / 1e9 + STOPPED_S)
        await loop.stop(grace_s=5)
        return recorder.rotate()

    return asyncio.run(main())


async def _answer(payload: bytes) -> bytes:
    await asyncio.sleep(0)
    return payload


def _worst(window: Window) -> str:
    """The cause of the latest request, after checking that every late request was given one."""
    counts = {cause: getattr(window, f"late_{cause}") for cause in LATE_CAUSES}
    assert sum(counts.values()) == window.delayed > 0, counts
    return max(LATE_CAUSES, key=lambda cause: getattr(window, f"late_{cause}_max_us"))


def test_a_loop_busy_with_other_work_is_named() -> None:
    """A callback that holds the loop for 50 ms of its thread's CPU: the requests due meanwhile leave late."""

    def hold() -> None:
        until = time.thread_time_ns() + 50_000_000
        while time.thread_time_ns() < until:
            pass

    assert _worst(_run(_answer, 1000, hold)) == LOOP_BUSY


def test_a_process_that_did_not_run_is_named_descheduled() -> None:
    """The process stopped (SIGSTOP) for 0.3 s by a child that continues it: its loop was idle, it did not run."""
    pid = os.getpid()
    children: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        children.append(subprocess.Popen(["sh", "-c", f"kill -STOP {pid}; sleep {STOPPED_S}; kill -CONT {pid}"]))

    window = _run(_answer, 1000, stop, requests=600)  # 3 s of schedule: the child's shell may be slow to start
    for child in children:
        child.wait(timeout=30)
    assert _worst(window) == DESCHEDULED


def test_waiting_for_the_in_flight_limit_is_named() -> None:
    """One request in flight at most, each answered after 30 ms: the requests due meanwhile wait for the slot."""

    async def slow(payload: bytes) -> bytes:
        await asyncio.sleep(0.03)
        return payload

    window = _run(slow, 1, lambda: None)
    assert window.limit_hits > 0
    assert _worst(window) == IN_FLIGHT_LIMIT


def test_the_causes_merge_by_their_metadata_and_are_described_by_name() -> None:
    busy, limited = Recorder(open_loop=True), Recorder(open_loop=True)
    busy.record_sent(5100, 0, LOOP_BUSY)
    busy.record_sent(900, 0, DESCHEDULED)
    limited.record_sent(2500, 0, LOOP_BUSY)
    limited.record_sent(1500, 0, IN_FLIGHT_LIMIT)
    whole = combine([busy.rotate(), limited.rotate()])
    assert (whole.delayed, whole.late_loop_busy, whole.late_descheduled, whole.late_in_flight_limit) == (3, 2, 0, 1)
    assert (whole.late_loop_busy_max_us, whole.late_in_flight_limit_max_us) == (5100, 1500)
    late = LateSends(LateCause(2, 5100), LateCause(0, 0), LateCause(1, 1500))
    assert late.describe() == "loop busy 2 (worst 5.1 ms), in-flight limit 1 (worst 1.5 ms)"
