"""Before the first window: wait until the server has no work left for the model and its steps (a queue an earlier
run left behind, another client's requests), so that the first level measures only loadgen's load.

The server is idle for the model when its statistics (and those of every step under it) stand still between two
reads, and, where its metrics are scraped, no request of theirs is pending. The reads are twice the slowest step's
average execution apart, so that a request at work completes between them. The wait is bounded: past the bound the
run goes on, says so, and the windows' comparison of the server's counts with loadgen's flags a level served to
someone else too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

from loadgen.plan import Windows
from loadgen.server.statistics import Snapshot

IDLE_MIN_TIMEOUT_S = 10.0  # the shortest bound on the wait
POLL_MIN_S = 0.25
POLL_MAX_S = 5.0
Pending = Callable[[], Mapping[str, int]]
"""The requests pending per model in the latest metrics scrape (empty without metrics)."""


@dataclass(frozen=True)
class Idle:
    """How the wait for the server's other work on the model went, before the first window."""

    waited_s: float
    idle: bool  # the model's and its steps' counters stood still between two reads, and nothing of theirs pending
    busy: tuple[str, ...] = ()  # the models still at work when the wait reached its bound


def idle_timeout_s(windows: Windows) -> float:
    """The bound on the wait: as long as a level's windows may take (--max-trials x --measurement-interval), and at
    least IDLE_MIN_TIMEOUT_S."""
    return max(IDLE_MIN_TIMEOUT_S, windows.max_windows * windows.interval_ms / 1000)


def poll_interval_s(stats: Snapshot, models: Collection[str]) -> float:
    """Twice the slowest model's average compute per execution (a request at work completes within it), bounded."""
    slowest_ns = 0.0
    for (name, _), counters in stats.items():
        if name in models and counters.execution_count:
            compute = counters.compute_input_ns + counters.compute_infer_ns + counters.compute_output_ns
            slowest_ns = max(slowest_ns, compute / counters.execution_count)
    return min(max(2 * slowest_ns / 1e9, POLL_MIN_S), POLL_MAX_S)


def busy_models(before: Snapshot, after: Snapshot, models: Collection[str], pending: Mapping[str, int]) -> list[str]:
    """The models whose counters moved between two reads, or that have requests pending."""
    moved = {name for (name, version), counters in after.items() if counters != before.get((name, version))}
    moved |= {name for (name, _) in before.keys() - after.keys()}  # unloaded meanwhile
    return sorted(name for name in models if name in moved or pending.get(name, 0) > 0)


def _describe(busy: list[str], pending: Mapping[str, int]) -> str:
    waiting = sum(pending.get(name, 0) for name in busy)
    return ", ".join(busy) + (f" ({waiting} requests pending)" if waiting else "")


def _waiting(model: str, busy: str, timeout_s: float) -> str:
    return (
        f"waiting until the server has no work left on {model} before the first window (still at work: {busy}; a "
        f"queue an earlier run left, or another client's); at most {timeout_s:.0f} s"
    )


def _gave_up(model: str, busy: str, elapsed_s: float) -> str:
    return (
        f"WARNING: after {elapsed_s:.0f} s the server is still at work on {model} ({busy}): measuring anyway; a level "
        "it serves to someone else too is flagged as shared"
    )


def _silent(text: str) -> None:
    """Says nothing."""


async def wait_until_idle(
    read: Callable[[], Awaitable[Snapshot]],
    model: str,
    models: Collection[str],
    timeout_s: float,
    pending: Pending | None = None,
    notify: Callable[[str], None] = _silent,
) -> Idle:
    """Read the statistics until `models` (the profiled `model` and its steps) stand still, at most `timeout_s`;
    what the wait is for is said through `notify` once it has to wait."""
    started = time.monotonic()
    before = await read()
    interval = poll_interval_s(before, models)
    said = False
    while True:
        await asyncio.sleep(interval)
        after = await read()
        waiting = pending() if pending is not None else {}
        busy = busy_models(before, after, models, waiting)
        elapsed = time.monotonic() - started
        if not busy:
            if said:
                notify(f"the server had finished its other work on {model} after {elapsed:.1f} s")
            return Idle(elapsed, True)
        if elapsed >= timeout_s:
            notify(_gave_up(model, _describe(busy, waiting), elapsed))
            return Idle(elapsed, False, tuple(busy))
        if not said:
            notify(_waiting(model, _describe(busy, waiting), timeout_s))
            said = True
        before = after
