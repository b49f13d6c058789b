"""The immutable result of a profiling run; every report reads it, none recomputes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.analysis import Bottleneck, find_bottleneck
from loadgen.measurement import LatencyStats, Merged
from loadgen.server_stats import Composition, ServerFigures, Snapshot, figures


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
    duration_s: float
    errors: dict[str, int] = field(default_factory=dict)
    server: ServerFigures | None = None
    bottleneck: Bottleneck | None = None

    @classmethod
    def from_merged(
        cls,
        concurrency: int,
        merged: Merged,
        stable: bool,
        windows: int,
        batch_size: int,
        model: Composition,
        server: Snapshot,
    ) -> LevelResult:
        """The level's figures: client side from the merged windows, server side from their statistics."""
        latency = LatencyStats.from_histogram(merged.histogram)
        throughput = merged.throughput(batch_size)
        server_figures = figures(model, server)
        return cls(
            concurrency=concurrency,
            throughput=throughput,
            request_count=merged.request_count,
            error_count=merged.error_count,
            stable=stable,
            latency_us=latency,
            windows=windows,
            duration_s=merged.duration_s,
            errors=dict(merged.errors.most_common()),
            server=server_figures,
            bottleneck=find_bottleneck(server_figures, throughput, latency.avg),
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

    @property
    def bottleneck(self) -> Bottleneck | None:
        """The sweep's verdict: the one at the level of highest throughput, where the model is pushed hardest."""
        judged = [level for level in self.levels if level.bottleneck is not None]
        return max(reversed(judged), key=lambda level: level.throughput).bottleneck if judged else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the run."""
        return {
            "model": self.model,
            "url": self.url,
            "mode": self.mode,
            "stable": self.stable,
            "levels": [asdict(level) for level in self.levels],
            "bottleneck": asdict(self.bottleneck) if self.bottleneck else None,
            "inputs": [asdict(i) | {"shape": list(i.shape)} for i in self.inputs],
            "settings": self.settings,
        }
