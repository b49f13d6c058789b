"""Several models under one load (`--model-mix`): one generator per model, driven as one. A closed loop gives each
model its own concurrency; an open loop deals one schedule out to the models in their shares, so that the models'
requests together are exactly the mix's schedule.

Sharded (`--shard i/K`), a closed loop's shard takes its part of every model's concurrency (`Shard.concurrency`);
an open loop's schedule is dealt first, by each request's place in the whole schedule, and each model's requests
are then split among the shards, every K-th to shard i. The shards' requests together are therefore exactly the
unsharded run's: the same requests, at the same times, each to the same model."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from loadgen.levels import model_load
from loadgen.load import LocalGenerator
from loadgen.measurement import Unfinished, Window, combine
from loadgen.plan import Load, Shard, Windows
from loadgen.transport import RequestFailed

PATTERN_LENGTH = 1000  # requests after which the dealing repeats: shares hold to a tenth of a percent
FILL_POLL_S = 0.01  # how often a count window of the mix looks at its models' counts


def dealing(shares: Sequence[float], length: int = PATTERN_LENGTH) -> tuple[int, ...]:
    """Which model each request of a schedule goes to (smooth weighted round robin): every model's requests are
    spread evenly through the schedule, and over `length` requests each gets its share to within one request."""
    credit = [0.0] * len(shares)
    total = sum(shares)
    pattern = []
    for _ in range(length):
        for index, share in enumerate(shares):
            credit[index] += share / total
        chosen = max(range(len(shares)), key=credit.__getitem__)
        credit[chosen] -= 1.0
        pattern.append(chosen)
    return tuple(pattern)


def selector(pattern: Sequence[int], index: int, shard: Shard) -> Callable[[Iterator[int]], Iterator[int]]:
    """The part of a schedule (offsets) that the pattern deals to model `index`, and of that the shard's part
    (every K-th request): the shards' parts together are the model's part of the unsharded schedule."""
    mask = [dealt == index for dealt in pattern]
    return lambda offsets: shard.schedule(itertools.compress(offsets, itertools.cycle(mask)))


def split_count(count: int, shares: Mapping[str, float]) -> dict[str, int]:
    """A request count divided in the shares: whole numbers that add up to it (largest remainders first), each model
    at least one while the count allows."""
    total = sum(shares.values())
    exact = {name: count * share / total for name, share in shares.items()}
    parts = {name: math.floor(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda name: exact[name] - parts[name], reverse=True)[: count - sum(parts.values())]:
        parts[name] += 1
    for name in [name for name, part in parts.items() if part == 0]:
        richest = max(parts, key=parts.__getitem__)
        if parts[richest] > 1:
            parts[richest] -= 1
            parts[name] = 1
    return parts


class MixGenerator:
    """The models' generators as one: they switch levels together, and their windows close together (the mix's
    window is their combination; `parts` holds each model's)."""

    def __init__(
        self,
        members: Mapping[str, LocalGenerator],
        mix: Mapping[str, float],
        closed_loop: bool,
        windows: Windows,
        rejection: asyncio.Event,
        failing: asyncio.Event,
    ) -> None:
        self.members = dict(members)
        self.mix = dict(mix)
        self.closed_loop = closed_loop
        self.windows = windows
        self.rejection = rejection  # shared by the members' failure counters
        self.failing = failing  # and this by their recorders
        self.parts: dict[str, Window] = {}

    @property
    def rejected(self) -> RequestFailed | None:
        return next((member.rejected for member in self.members.values() if member.rejected is not None), None)

    async def apply(self, load: Load, start_ns: int, count: int | None = None) -> Window:
        counts = split_count(count, self.mix) if count else {}
        parts = {}
        for name, member in self.members.items():
            # a closed loop's models keep their own concurrency; an open loop's take their part of one schedule
            own = model_load(load, self.mix[name]) if self.closed_loop else load
            parts[name] = await member.apply(own, start_ns, counts.get(name))
        return self._combined(parts)

    async def fill(self, count: int, timeout_s: float) -> Window:
        """With --request-count, each model's part of the count, exactly (its window closes at its last request);
        otherwise (count windows, the warm-up) once the models together completed `count`, all at once."""
        if self.windows.single:
            counts = split_count(count, self.mix)
            parts = await asyncio.gather(
                *(member.fill(counts[name], timeout_s) for name, member in self.members.items())
            )
            return self._combined(dict(zip(self.members, parts, strict=True)))
        deadline = time.monotonic() + timeout_s
        while sum(member.recorder.completed for member in self.members.values()) < count:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(FILL_POLL_S)
        return await self.rotate()

    async def rotate(self) -> Window:
        return self._combined({name: await member.rotate() for name, member in self.members.items()})

    def _combined(self, parts: dict[str, Window]) -> Window:
        """The mix's window; the process's CPU time, which every model's window measured whole, is shared out
        among the models by the requests they completed."""
        total = combine(list(parts.values()))
        process_cpu = max(part.process_cpu_ns for part in parts.values())
        completed = sum(part.request_count + part.error_count for part in parts.values())
        for part in parts.values():
            done = part.request_count + part.error_count
            part.process_cpu_ns = process_cpu * done // completed if completed else process_cpu // len(parts)
        total.process_cpu_ns = process_cpu
        self.parts = parts
        return total

    async def drain(self, timeout_s: float) -> int:
        return sum(await asyncio.gather(*(member.drain(timeout_s) for member in self.members.values())))

    async def stop(self, grace_s: float = 0.0) -> Unfinished:
        parts = await asyncio.gather(*(member.stop(grace_s) for member in self.members.values()))
        return sum(parts, Unfinished())
