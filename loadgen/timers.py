"""Precise wakes for the open loop's sender, on its event loop.

An event loop's own timers have millisecond resolution (epoll's timeout, libuv's clock). On Linux a `timerfd` in
the loop's poll set wakes the loop's thread itself at a nanosecond deadline: one wake per send. Elsewhere (or where
the timerfd cannot be made) a thread sleeps the last stretch while the loop serves responses, and its wake then
wakes the loop: two wakes per send, each a turn the machine may make late.

Either timer learns how long after its deadline the sender usually resumes (the median: a stall of the machine
moves it by one step, not by its size) and sets its next deadline that much early; the sender yields the last
microseconds itself (see `load.OpenLoop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

LOOP_TIMER_SLACK_NS = 1_200_000  # an event loop's timers fire up to ~1 ms late: a thread sleeps the rest
MAX_LEAD_NS = 500_000  # the sender spins (yields) through the lead: never more than this per send
LEAD_STEP_NS = 2_000  # each wake moves the lead this much towards what it took: the lead tracks the median wake

# <sys/timerfd.h>, <time.h> on Linux
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TFD_TIMER_ABSTIME = 1


class Timer(Protocol):
    """Resumes the sender close to (at most a learnt lead before) a `time.perf_counter_ns` instant."""

    lead_ns: int  # how early it sets its deadline: how long after one its wake resumes the sender

    async def sleep_until(self, instant_ns: int) -> None: ...

    def close(self) -> None: ...


class _Lead:
    """How early to set a deadline so that the sender resumes just before the instant it wants."""

    def __init__(self, first_ns: int) -> None:
        self.lead_ns = first_ns

    def learn(self, deadline_ns: int) -> None:
        """The sender resumed now, for a deadline of `deadline_ns`."""
        step = LEAD_STEP_NS if time.perf_counter_ns() - deadline_ns > self.lead_ns else -LEAD_STEP_NS
        self.lead_ns = min(max(self.lead_ns + step, 0), MAX_LEAD_NS)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class LoopTimer(_Lead):
    """A Linux timerfd on CLOCK_MONOTONIC (`time.perf_counter_ns`'s clock) in the event loop's poll set."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(first_ns=50_000)  # the loop's thread returns from epoll and runs the sender
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p)
        create = libc.timerfd_create
        create.argtypes = (ctypes.c_int, ctypes.c_int)
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._spec = _Itimerspec()
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        try:
            loop.add_reader(fd, self._fired)
        except BaseException:
            os.close(fd)
            raise

    def _arm(self, instant_ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(instant_ns, 1), 1_000_000_000)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        with contextlib.suppress(BlockingIOError):  # read by an earlier call already
            os.read(self._fd, 8)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep_until(self, instant_ns: int) -> None:
        deadline = instant_ns - self.lead_ns
        if deadline <= time.perf_counter_ns():
            return
        self._waiter = waiter = self._loop.create_future()
        self._arm(deadline)
        await waiter
        self.learn(deadline)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


class ThreadTimer(_Lead):
    """The loop's own timer to ~1 ms before the instant, then a thread's precise sleep for the rest."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(first_ns=200_000)  # the thread wakes, then wakes the loop
        self._loop = loop
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loadgen-timer")

    async def sleep_until(self, instant_ns: int) -> None:
        clock = time.perf_counter_ns
        deadline = instant_ns - self.lead_ns
        wait = deadline - clock()
        if wait > LOOP_TIMER_SLACK_NS:
            await asyncio.sleep((wait - LOOP_TIMER_SLACK_NS) / 1e9)
        rest = deadline - clock()
        if rest > 0:
            await self._loop.run_in_executor(self._thread, time.sleep, rest / 1e9)
            self.learn(deadline)

    def close(self) -> None:
        self._thread.shutdown(wait=False)


def precise_timer(loop: asyncio.AbstractEventLoop) -> Timer:
    """The loop's timerfd on Linux (where perf_counter reads CLOCK_MONOTONIC), else a thread's sleep."""
    monotonic = time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    if sys.platform.startswith("linux") and monotonic:
        with contextlib.suppress(OSError, AttributeError, NotImplementedError):  # no timerfd, or a loop without readers
            return LoopTimer(loop)
    return ThreadTimer(loop)
