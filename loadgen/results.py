"""The immutable result of a profiling run; every report reads it, none recomputes it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dacite

from loadgen.analysis import Bottleneck, find_bottleneck
from loadgen.load import Load
from loadgen.measurement import LatencyStats, Merged, WindowSummary
from loadgen.server_stats import Composition, ServerFigures, Snapshot, figures

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class InputDescription:
    """One input as the first request sends it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SendLag:
    """How late requests left compared to their schedule, in microseconds."""

    p50: int
    p99: int
    max: int


DELAYED_SHARE_LIMIT = 0.01  # more than 1 % of requests over 1 ms late: the generator fell behind
SEND_RATE_SHORTFALL = 0.95  # achieved send rate more than 5 % below the requested rate


@dataclass(frozen=True)
class LevelResult:
    """One load level's figures, merged from its last windows."""

    concurrency: int | None
    request_rate: float | None
    throughput: float
    request_count: int
    error_count: int
    stable: bool
    latency_us: LatencyStats
    windows: int
    duration_s: float
    errors: dict[str, int] = field(default_factory=dict)
    percentile: int | None = None
    percentile_us: int | None = None
    send_rate: float | None = None
    service_latency_us: LatencyStats | None = None
    send_lag_us: SendLag | None = None
    delayed_share: float | None = None
    in_flight_limit_hits: int | None = None
    saturated: str | None = None  # open loop: "server" or "client" when either could not keep up
    loop_busy_share: float = 0.0
    client_cpu_us_per_request: float = 0.0
    trend: tuple[WindowSummary, ...] = ()
    complete: bool = True  # False: the run stopped during this level
    server: ServerFigures | None = None
    bottleneck: Bottleneck | None = None
    first_response_latency_us: LatencyStats | None = None  # streaming: to each request's first response
    response_throughput: float | None = None  # streaming: responses per second
    responses_per_request: float | None = None  # streaming

    @property
    def load(self) -> float:
        """The level's load: its concurrency, or its requested rate."""
        return self.concurrency if self.concurrency is not None else self.request_rate or 0.0

    @classmethod
    def from_merged(
        cls,
        load: Load,
        merged: Merged,
        stable: bool,
        trend: Sequence[WindowSummary],
        batch_size: int,
        percentile: int | None,
        model: Composition,
        server: Snapshot,
        complete: bool = True,
    ) -> LevelResult:
        """The level's figures: client side from the merged windows, server side from their statistics."""
        latency = LatencyStats.from_histogram(merged.histogram)
        throughput = merged.throughput(batch_size)
        server_figures = figures(model, server)
        completed = merged.request_count + merged.error_count
        extra: dict[str, object] = {}
        if merged.lag is not None and merged.service is not None:
            send_rate = merged.sent / merged.duration_s if merged.duration_s else 0.0
            delayed_share = merged.delayed / merged.sent if merged.sent else 0.0
            requested = load.rate or send_rate
            server_behind = merged.limit_hits > 0 or completed < SEND_RATE_SHORTFALL * merged.sent
            client_behind = delayed_share > DELAYED_SHARE_LIMIT or send_rate < SEND_RATE_SHORTFALL * requested
            lag = merged.lag.get_percentile_to_value_dict([50, 99])
            extra = {
                "send_rate": send_rate,
                "service_latency_us": LatencyStats.from_histogram(merged.service),
                "send_lag_us": SendLag(lag[50], lag[99], merged.lag.get_max_value()),
                "delayed_share": delayed_share,
                "in_flight_limit_hits": merged.limit_hits,
                "saturated": "server" if server_behind else "client" if client_behind else None,
            }
        if merged.first_response is not None:
            extra |= {
                "first_response_latency_us": LatencyStats.from_histogram(merged.first_response),
                "response_throughput": merged.responses / merged.duration_s if merged.duration_s else 0.0,
                "responses_per_request": merged.responses / merged.request_count if merged.request_count else 0.0,
            }
        return cls(
            concurrency=load.concurrency,
            request_rate=load.rate,
            throughput=throughput,
            request_count=merged.request_count,
            error_count=merged.error_count,
            stable=stable,
            latency_us=latency,
            windows=len(trend),
            duration_s=merged.duration_s,
            errors=dict(merged.errors.most_common()),
            percentile=percentile,
            percentile_us=merged.histogram.get_value_at_percentile(percentile) if percentile else None,
            loop_busy_share=merged.loop_cpu_s / merged.duration_s if merged.duration_s else 0.0,
            client_cpu_us_per_request=merged.process_cpu_s * 1e6 / completed if completed else 0.0,
            trend=tuple(trend),
            complete=complete,
            server=server_figures,
            bottleneck=find_bottleneck(server_figures, throughput, latency.avg),
            **extra,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """The level as JSON: keys that do not apply to the run's load mode are left out."""
        document = asdict(self)
        for key in _MODE_KEYS:
            if document[key] is None:
                del document[key]
        return document


_MODE_KEYS = (
    "concurrency",
    "request_rate",
    "percentile",
    "percentile_us",
    "send_rate",
    "service_latency_us",
    "send_lag_us",
    "delayed_share",
    "in_flight_limit_hits",
    "first_response_latency_us",
    "response_throughput",
    "responses_per_request",
)


@dataclass(frozen=True, repr=False)
class ProfileResult:
    """A whole sweep: the model, how it was loaded, and one result per level.

    The reports read it; they live in `loadgen.reports` (plots need the `report` extra, dataframes `dataframe`).
    """

    model: str
    url: str
    mode: str
    levels: tuple[LevelResult, ...]
    inputs: tuple[InputDescription, ...]
    settings: dict[str, Any]
    status: str = "complete"  # or "interrupted" (stopped by the user), "failed" (stopped by an error)
    message: str = ""

    @property
    def stable(self) -> bool:
        """True when every level reached a stable measurement."""
        return all(level.stable for level in self.levels)

    @property
    def bottleneck(self) -> Bottleneck | None:
        """The sweep's verdict: the one at the level of highest throughput, where the model is pushed hardest."""
        judged = [level for level in self.levels if level.bottleneck is not None]
        return max(reversed(judged), key=lambda level: level.throughput).bottleneck if judged else None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ProfileResult:
        """The result a JSON document (`to_dict`) describes, its nested figures rebuilt as the typed dataclasses."""
        derived = ("stable", "bottleneck")  # properties, recomputed from the levels
        fields = {key: value for key, value in document.items() if key not in derived}
        return dacite.from_dict(cls, fields, dacite.Config(cast=[tuple]))

    def __repr__(self) -> str:
        verdict = self.bottleneck.name if self.bottleneck else None
        return (
            f"ProfileResult(model={self.model!r}, mode={self.mode!r}, loads={[lv.load for lv in self.levels]}, "
            f"stable={self.stable}, bottleneck={verdict!r})"
        )

    def _repr_html_(self) -> str:
        from loadgen.reports.table import summary_html

        return summary_html(self)

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per level: throughput, latency percentiles, each step's queue and compute time (needs pandas)."""
        from loadgen.reports.dataframe import to_dataframe

        return to_dataframe(self)

    def plot(self, kind: str = "curve") -> Figure:
        """A matplotlib figure: "curve" (p99 latency vs throughput), "percentiles" or "steps" (needs matplotlib)."""
        from loadgen.reports.plot import plot

        return plot(self, kind)

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write the run as JSON, as `--json` does; `loadgen.load_result` reopens it."""
        from loadgen.reports.files import write_json

        write_json(self, path)

    def save_html(self, path: str | os.PathLike[str]) -> None:
        """Write the self-contained HTML report of the run (needs matplotlib)."""
        from loadgen.reports.html import write_html

        write_html(self, path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the run."""
        return {
            "model": self.model,
            "url": self.url,
            "mode": self.mode,
            "stable": self.stable,
            "status": self.status,
            "message": self.message,
            "levels": [level.to_dict() for level in self.levels],
            "bottleneck": asdict(self.bottleneck) if self.bottleneck else None,
            "inputs": [asdict(i) | {"shape": list(i.shape)} for i in self.inputs],
            "settings": self.settings,
        }
