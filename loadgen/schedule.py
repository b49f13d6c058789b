"""Schedules for open-loop load: when each request is due, computed without regard to responses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

CHUNK = 4096  # gaps drawn at once
SEED = 0


def constant(rate: float) -> Iterator[int]:
    """Offsets in ns from the start for `rate` requests per second, evenly spaced (no drift: k / rate)."""
    period_ns = 1e9 / rate
    k = 0
    while True:
        yield round(k * period_ns)
        k += 1


def poisson(rate: float, seed: int = SEED) -> Iterator[int]:
    """Offsets in ns of a Poisson process of `rate` requests per second (exponential gaps, fixed seed)."""
    rng = np.random.default_rng(seed)
    offset = 0.0
    yield 0
    while True:
        for gap in rng.exponential(1e9 / rate, CHUNK).tolist():
            offset += gap
            yield round(offset)


def intervals(gaps_us: Sequence[int]) -> Iterator[int]:
    """Offsets in ns following a list of gaps in microseconds, looped."""
    offset = 0
    yield 0
    while True:
        for gap in gaps_us:
            offset += gap * 1000
            yield offset
