"""The immutable result of a profiling run; every report reads it, none recomputes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.measurement import LatencyStats, Merged


@dataclass(frozen=True)
class InputDescription:
    """One input as the first request sends it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LevelResult:
    """One load level's figures, merged from its last windows."""

    concurrency: int
    throughput: float
    request_count: int
    error_count: int
    stable: bool
    latency_us: LatencyStats
    windows: int
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_merged(cls, concurrency: int, merged: Merged, stable: bool, windows: int, batch_size: int) -> LevelResult:
        duration = merged.duration_s
        return cls(
            concurrency=concurrency,
            throughput=merged.request_count * batch_size / duration if duration > 0 else 0.0,
            request_count=merged.request_count,
            error_count=merged.error_count,
            stable=stable,
            latency_us=LatencyStats.from_histogram(merged.histogram),
            windows=windows,
            errors=dict(merged.errors.most_common()),
        )


@dataclass(frozen=True)
class ProfileResult:
    """A whole sweep: the model, how it was loaded, and one result per level."""

    model: str
    url: str
    mode: str
    levels: tuple[LevelResult, ...]
    inputs: tuple[InputDescription, ...]
    settings: dict[str, Any]

    @property
    def stable(self) -> bool:
        """True when every level reached a stable measurement."""
        return all(level.stable for level in self.levels)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the run."""
        return {
            "model": self.model,
            "url": self.url,
            "mode": self.mode,
            "stable": self.stable,
            "levels": [asdict(level) for level in self.levels],
            "inputs": [asdict(i) | {"shape": list(i.shape)} for i in self.inputs],
            "settings": self.settings,
        }
