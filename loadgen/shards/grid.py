"""A logged run's grid: every shard's windows fall on the same instants, counted from `--start-at`.

Level n's window m spans [origin + (n * W + m) * interval, + interval), W the windows per level (`-r`), whenever a
shard comes: one that is ready late joins at the next window boundary and leaves out the windows it missed, so its
window m of level n covers the same span as every other shard's, and the merge pairs them by (n, m).
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.plan import Windows

ALIGNMENT_SHARE = 0.1  # windows on the same slot may start or end a tenth of a window apart ...
ALIGNMENT_FLOOR_NS = 50_000_000  # ... or 50 ms, whichever is more: a busy host wakes that late


def alignment_tolerance_ns(interval_ns: int) -> int:
    """How far apart the windows of different shards on one slot may start or end and still be one window."""
    return max(int(interval_ns * ALIGNMENT_SHARE), ALIGNMENT_FLOOR_NS)


@dataclass(frozen=True)
class Grid:
    """The instants a logged run's windows fall on; `origin_ns` is on whichever clock the windows use
    (perf_counter_ns in the run, UNIX ns in its log)."""

    origin_ns: int
    interval_ns: int
    per_level: int  # windows per level

    @classmethod
    def of(cls, windows: Windows, origin_ns: int) -> Grid:
        """The grid of a run's time windows, from `origin_ns`."""
        return cls(origin_ns, windows.interval_ms * 1_000_000, windows.max_windows)

    @property
    def tolerance_ns(self) -> int:
        return alignment_tolerance_ns(self.interval_ns)

    def boundary(self, level: int, index: int) -> int:
        """The instant window `index` of `level` starts (`per_level`: the level's end)."""
        return self.origin_ns + (level * self.per_level + index) * self.interval_ns

    def position(self, now_ns: int) -> tuple[int, int]:
        """The level and window a run ready at `now_ns` joins the grid at: the window that started within the
        tolerance, else the next."""
        level, index = divmod(self._passed(now_ns), self.per_level)
        return level, index

    def _passed(self, now_ns: int) -> int:
        """The windows of the whole grid that started more than the tolerance before `now_ns`."""
        behind = now_ns - self.tolerance_ns - self.origin_ns
        return max(-(-behind // self.interval_ns), 0)
