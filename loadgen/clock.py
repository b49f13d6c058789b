"""Time as loadgen keeps it: instants on `time.perf_counter_ns`, written as UNIX time through one offset.

`perf_counter_ns` is monotonic (CLOCK_MONOTONIC on Linux): a step of the system clock (NTP, a manual change) does
not move it, so durations and window boundaries measured on it stay right. It is also one clock for the whole
machine, so instants agree across processes (the workers take the parent's instants as they are). Where instants
leave the machine (window logs, metrics, the profile export) they are written as UNIX time, mapped once per run:
the mapping is read when a `WallClock` is made and never again, so a clock step during the run shifts nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WallClock:
    """UNIX time for perf_counter_ns instants (and back), by one offset read when it was made."""

    offset_ns: int  # UNIX ns minus perf_counter ns

    @classmethod
    def now(cls) -> WallClock:
        """The mapping as the clocks stand now."""
        return cls(time.time_ns() - time.perf_counter_ns())

    def unix_ns(self, perf_ns: int) -> int:
        """A perf_counter_ns instant as ns since the UNIX epoch."""
        return perf_ns + self.offset_ns

    def perf_ns(self, unix_ns: int) -> int:
        """The perf_counter_ns instant of a UNIX time in ns (in the past or the future)."""
        return unix_ns - self.offset_ns

    def unix_s(self) -> float:
        """The UNIX time now, in seconds, on the monotonic clock."""
        return self.unix_ns(time.perf_counter_ns()) / 1e9
