"""The open loop's precise timers: each wakes the sender no earlier than the deadline it set (never how late), can be
cancelled and used again, and gives back what it took (the timerfd's descriptor, the thread)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from loadgen import timers
from loadgen.timers import LoopTimer, ThreadTimer, Timer, precise_timer

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
KINDS: list[Callable[[asyncio.AbstractEventLoop], Timer]] = [ThreadTimer]
if sys.platform.startswith("linux"):
    KINDS.append(LoopTimer)


def _on_both_loops(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on asyncio's own loop and on uvloop's (the sender runs on either)."""
    asyncio.run(main())
    uvloop.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_a_timer_never_wakes_before_its_deadline(kind: Callable[[asyncio.AbstractEventLoop], Timer]) -> None:
    async def main() -> None:
        timer = kind(asyncio.get_running_loop())
        try:
            for gap_ns in (50_000, 400_000, 3_000_000, 20_000_000):
                lead = timer.lead_ns
                instant = time.perf_counter_ns() + gap_ns
                await timer.sleep_until(instant)
                assert time.perf_counter_ns() >= instant - lead
                assert 0 <= timer.lead_ns <= timers.MAX_LEAD_NS
        finally:
            timer.close()

    _on_both_loops(main)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancelled_sleep_leaves_the_timer_usable(kind: Callable[[asyncio.AbstractEventLoop], Timer]) -> None:
    async def main() -> None:
        timer = kind(asyncio.get_running_loop())
        try:
            sleeping = asyncio.ensure_future(timer.sleep_until(time.perf_counter_ns() + 10_000_000_000))
            await asyncio.sleep(0.01)
            sleeping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sleeping
            instant = time.perf_counter_ns() + 2_000_000
            await asyncio.wait_for(timer.sleep_until(instant), timeout=30)
            assert time.perf_counter_ns() >= instant - timers.MAX_LEAD_NS
        finally:
            timer.close()

    _on_both_loops(main)


@linux
def test_on_linux_the_loop_timer_is_chosen_and_its_descriptor_given_back() -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        timer = precise_timer(asyncio.get_running_loop())
        assert isinstance(timer, LoopTimer)
        await timer.sleep_until(time.perf_counter_ns() + 1_000_000)
        timer.close()
        assert len(os.listdir("/proc/self/fd")) == before

    _on_both_loops(main)


def test_without_a_timerfd_the_thread_timer_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(loop: asyncio.AbstractEventLoop) -> LoopTimer:
        raise OSError("no timerfd here")

    monkeypatch.setattr(timers, "LoopTimer", missing)

    async def main() -> None:
        timer = precise_timer(asyncio.get_running_loop())
        assert isinstance(timer, ThreadTimer)
        await timer.sleep_until(time.perf_counter_ns() + 1_000_000)
        timer.close()

    asyncio.run(main())
