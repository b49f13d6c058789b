"""The immutable result of a profiling run; every report reads it, none recomputes it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dacite

from loadgen.analysis import Bottleneck, Diagnosis
from loadgen.confidence import LevelConfidence
from loadgen.errors import LoadgenError
from loadgen.measurement import LatencyStats, WindowSummary
from loadgen.mix_analysis import MixDiagnosis
from loadgen.plan import LevelRule, Load, Windows, level_rule
from loadgen.server.idle import Idle
from loadgen.server.metrics import ServerMetrics
from loadgen.server.sharing import Sharing
from loadgen.server.statistics import ServerFigures
from loadgen.settings import Mode, Settings, is_closed_loop
from loadgen.token_analysis import TokenBreakdown
from loadgen.tokens import TokenStats
from loadgen.transport import Tensor

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
class RunDescription:
    """What a run measures, as the console announces it before its first window."""

    model: str
    url: str
    mode: Mode
    inputs: tuple[InputDescription, ...]
    windows: Windows
    rule: LevelRule
    loads: tuple[Load, ...] = ()
    decoupled: bool = False  # the model may answer a request with several responses (over a stream)
    sequence: bool = False  # a stateful model: requests carry correlation IDs
    streams: tuple[int, ...] = ()  # JSON data: each stream's steps (perf_analyzer says it read them)

    @property
    def closed_loop(self) -> bool:
        return is_closed_loop(self.mode)


@dataclass(frozen=True)
class SendLag:
    """How late requests left compared to their schedule, in microseconds."""

    p50: int
    p99: int
    max: int


@dataclass(frozen=True)
class LateCause:
    """The requests that left over 1 ms late for one cause: how many, and the latest of them (microseconds)."""

    count: int
    max_us: int


@dataclass(frozen=True)
class LateSends:
    """Why requests left over 1 ms late: the sender's loop was running something else when they were due, its
    thread did not run (descheduled: the machine's cores were taken), or they waited for the in-flight limit (or for
    the previous request of their sequence)."""

    loop_busy: LateCause
    descheduled: LateCause
    in_flight_limit: LateCause

    def describe(self) -> str:
        """ "loop busy 12 (worst 5.1 ms), descheduled 40 (worst 3.2 ms)": the causes that had any."""
        named = (
            ("loop busy", self.loop_busy),
            ("descheduled", self.descheduled),
            ("in-flight limit", self.in_flight_limit),
        )
        return ", ".join(
            f"{name} {cause.count} (worst {cause.max_us / 1000:.1f} ms)" for name, cause in named if cause.count
        )


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
    in_flight_limit_hits: int | None = None  # requests that waited for the server: the limit, or their sequence
    late_sends: LateSends | None = None  # open loop: the requests over 1 ms late, by cause
    # open loop, when requests were not served or not sent on time: "server" (it fell behind), "client" (loadgen's
    # busy loop sent late) or "machine" (requests left late while loadgen's loop was mostly idle: other processes)
    saturated: str | None = None
    loop_busy_share: float = 0.0
    client_cpu_us_per_request: float = 0.0
    trend: tuple[WindowSummary, ...] = ()
    complete: bool = True  # False: the run stopped during this level
    server: ServerFigures | None = None
    bottleneck: Bottleneck | None = None  # the limiting step and why (the diagnosis, in the verdict's first shape)
    metrics: ServerMetrics | None = None  # the server's host during the level's last windows (--collect-metrics)
    diagnosis: Diagnosis | None = None
    first_response_latency_us: LatencyStats | None = None  # streaming: to each request's first response
    response_throughput: float | None = None  # streaming: responses per second
    responses_per_request: float | None = None  # streaming
    sequence_count: int | None = None  # sequence models: requests that ended their sequence in the windows
    sequence_rate: float | None = None  # those per second
    client_send_us: float = 0.0  # per request: loadgen's time to hand the request to the connection
    client_recv_us: float = 0.0  # per request: from the response's arrival to its completion in loadgen
    model: str | None = None  # in a mix: the model these figures are of (None: the run's model, or the mix's total)
    models: tuple[LevelResult, ...] = ()  # a mix's level: each model's figures at it (the level itself: the total)
    solo: LevelResult | None = None  # a model of a mix, alone at the same load (--solo-baseline)
    mix_diagnosis: MixDiagnosis | None = None  # a mix's level: the bound across its models
    # the server's count of the model's requests in the windows beside loadgen's (None: not compared, as in a shard)
    sharing: Sharing | None = None
    confidence: LevelConfidence | None = None  # how sure its figures are (None: a file of an older loadgen)
    tokens: TokenStats | None = None  # token streams: TTFT, inter-token latency, tokens, goodput (`loadgen.tokens`)
    token_breakdown: TokenBreakdown | None = None  # token streams: which step lands in the first token, which in gaps

    @property
    def shared(self) -> bool:
        """The server served the model to someone else too during the level's windows: its figures are not this
        load's alone."""
        return self.sharing is not None and self.sharing.shared

    @property
    def load(self) -> float:
        """The level's load: its concurrency, or its requested rate."""
        return self.concurrency if self.concurrency is not None else self.request_rate or 0.0

    @property
    def load_label(self) -> str:
        """The level's load in words: "concurrency 4" or "50 requests/s"."""
        return (
            f"concurrency {self.concurrency}" if self.concurrency is not None else f"{self.request_rate:g} requests/s"
        )

    def to_dict(self) -> dict[str, Any]:
        """The level as JSON: keys that do not apply to the run's load mode are left out (a mix's models are listed
        at the top of the result, model by model, not in each level)."""
        document = asdict(self)
        del document["models"]
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
    "late_sends",
    "first_response_latency_us",
    "response_throughput",
    "responses_per_request",
    "sequence_count",
    "sequence_rate",
    "model",
    "solo",
    "mix_diagnosis",
    "tokens",
    "token_breakdown",
)


@dataclass(frozen=True)
class ModelResult:
    """One model of a mix: its share of the load (of the requests, or of the concurrency) and its levels."""

    model: str
    share: float
    levels: tuple[LevelResult, ...]


@dataclass(frozen=True)
class RequestRecord:
    """One request as perf_analyzer's profile export lists it: when it was sent and when each of its responses
    came (ns since the UNIX epoch), its inputs as sent, and each response's requested outputs (one a response does
    not carry, as in a decoupled model's final empty response, has no content)."""

    timestamp: int
    sequence_id: int  # a sequence model's correlation ID; 0 for other models
    request_inputs: tuple[Tensor, ...]
    response_timestamps: tuple[int, ...]
    response_outputs: tuple[tuple[Tensor, ...], ...]


@dataclass(frozen=True)
class TokenRecord:
    """One generative request as the profile export lists it: when it was sent, when each event that carried output
    came and when its answer was whole (ns since the UNIX epoch), its inputs as sent (JSON values by input name),
    each event's text (in the output `text_output`), and its token counts as the run counted them."""

    timestamp: int
    request_inputs: dict[str, Any]
    response_timestamps: tuple[int, ...]
    response_texts: tuple[str, ...]
    text_output: str
    input_tokens: int
    output_tokens: int
    end_timestamp: int

    @property
    def time_to_first_token_ns(self) -> int:
        return self.response_timestamps[0] - self.timestamp


@dataclass(frozen=True)
class Experiment:
    """The requests recorded at one load level (those that completed in its windows), and the windows'
    boundaries in ns since the UNIX epoch (N windows, N + 1 boundaries); a token run's requests are in `tokens`."""

    mode: str  # perf_analyzer's: "concurrency" or "request_rate"
    value: int | float  # the concurrency, or the request rate
    requests: tuple[RequestRecord, ...]
    window_boundaries: tuple[int, ...]
    tokens: tuple[TokenRecord, ...] = ()


@dataclass(frozen=True)
class Unmeasured:
    """Where the requests that no measured window counts went: a server's count of the run's requests is the
    windows' requests plus these."""

    warmup: int = 0  # the warm-up's requests (--warmup-request-count)
    between_levels: int = 0  # completed after a level's last window and before the next level's first
    earlier_level: int = 0  # sent at one level and completed during the next: discarded, counted only here
    after_last_window: int = 0  # completed after the last window closed, before the run stopped or in its grace
    in_flight_at_stop: int = 0  # in flight when the load stopped
    cancelled_at_stop: int = 0  # of those, not answered within the grace period: cancelled

    @property
    def total(self) -> int:
        """Requests answered outside every window (the cancelled ones are not among them)."""
        return self.warmup + self.between_levels + self.earlier_level + self.after_last_window


@dataclass(frozen=True, repr=False)
class ProfileResult:
    """A whole sweep: the model, how it was loaded, and one result per level.

    The reports read it; they live in `loadgen.reports` (plots need the `report` extra, dataframes `dataframe`).
    """

    model: str
    url: str
    mode: Mode
    levels: tuple[LevelResult, ...]
    inputs: tuple[InputDescription, ...]
    settings: dict[str, Any]
    # "complete", "unstable" (a level never settled), "interrupted" (stopped by the user), "failed" (stopped by an
    # error) or "incomplete" (a merge of shards that lacks windows); `message` says why when it is not complete
    status: str = "complete"
    message: str = ""
    # with Settings.record_requests: each level's requests, for --profile-export-file (not part of `to_dict`)
    experiments: tuple[Experiment, ...] = ()
    records_capped: bool = False  # the record_requests bound was reached: later requests were not recorded
    server_idle: Idle | None = None  # the wait, before the first window, for the server's other work on the model
    unmeasured: Unmeasured | None = None  # requests outside every window, and where they went

    @property
    def closed_loop(self) -> bool:
        """A concurrency sweep (not a request rate)."""
        return is_closed_loop(self.mode)

    @property
    def stable(self) -> bool:
        """True when every level reached a stable measurement."""
        return all(level.stable for level in self.levels)

    @property
    def reported(self) -> list[LevelResult]:
        """The levels perf_analyzer reports (prints, and writes to its CSV): complete, stable and under -l."""
        rule = level_rule(Settings.from_dict(self.settings))
        return [level for level in self.levels if level.complete and level.stable and not rule.over_threshold(level)]

    @property
    def bottleneck(self) -> Bottleneck | None:
        """The sweep's verdict: the one at the level of highest throughput, where the model is pushed hardest."""
        level = self.peak
        return level.bottleneck if level is not None else None

    @property
    def diagnosis(self) -> Diagnosis | None:
        """The sweep's diagnosis: the one at the level of highest throughput, where the model is pushed hardest."""
        level = self.peak
        return level.diagnosis if level is not None else None

    def of_model(self, name: str) -> ProfileResult:
        """One model of a mix as a result of its own: its levels and its settings (every report reads it as it
        reads a single model's run)."""
        found = next((model for model in self.models if model.model == name), None)
        if found is None:
            raise LoadgenError(f"{name!r} is not a model of this run's mix ({', '.join(m.model for m in self.models)})")
        settings = Settings.from_dict(self.settings).for_model(name)
        return replace(
            self, model=name, mode=settings.mode, levels=found.levels, settings=settings.to_dict(), experiments=()
        )

    @property
    def mix_diagnosis(self) -> MixDiagnosis | None:
        """A mix's diagnosis across its models, at its level of highest throughput."""
        judged = [level for level in self.levels if level.mix_diagnosis is not None]
        return max(reversed(judged), key=lambda level: level.throughput).mix_diagnosis if judged else None

    @property
    def peak(self) -> LevelResult | None:
        """The level of highest throughput among those the server reported on (the first of equals)."""
        judged = [level for level in self.levels if level.diagnosis is not None or level.bottleneck is not None]
        return max(reversed(judged), key=lambda level: level.throughput) if judged else None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ProfileResult:
        """The result a JSON document (`to_dict`) describes, its nested figures rebuilt as the typed dataclasses."""
        derived = ("stable", "bottleneck", "diagnosis", "models", "mix_diagnosis")  # properties, from the levels
        fields = {key: value for key, value in document.items() if key not in derived}
        models = document.get("models") or []
        fields["levels"] = [  # a mix's levels hold each model's figures again, as the sweep made them
            level | {"models": [model["levels"][index] for model in models]}
            for index, level in enumerate(document.get("levels", []))
        ]
        return dacite.from_dict(cls, fields, dacite.Config(cast=[tuple]))

    @property
    def models(self) -> tuple[ModelResult, ...]:
        """A mix's models, each with its levels (none for a run of one model)."""
        mix = self.settings.get("model_mix")
        if not mix or not self.levels or not self.levels[0].models:
            return ()
        total = sum(mix.values())
        return tuple(
            ModelResult(model.model or "", mix.get(model.model, 0.0) / total, tuple(lv.models[i] for lv in self.levels))
            for i, model in enumerate(self.levels[0].models)
        )

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

    def save_export(self, path: str | os.PathLike[str]) -> None:
        """Write the recorded requests (`experiments`) as perf_analyzer's profile export, as --profile-export-file
        does."""
        from loadgen.reports.profile_export import write_export

        write_export(self, path)

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
            **(
                {
                    "models": [
                        {"model": m.model, "share": m.share, "levels": [level.to_dict() for level in m.levels]}
                        for m in self.models
                    ]
                }
                if self.models
                else {}
            ),
            "bottleneck": asdict(self.bottleneck) if self.bottleneck else None,
            "diagnosis": asdict(self.diagnosis) if self.diagnosis else None,
            **({"mix_diagnosis": asdict(self.mix_diagnosis)} if self.mix_diagnosis else {}),
            "inputs": [asdict(i) | {"shape": list(i.shape)} for i in self.inputs],
            "unmeasured": asdict(self.unmeasured) if self.unmeasured else None,
            "server_idle": asdict(self.server_idle) if self.server_idle else None,
            "settings": self.settings,
        }


# how a file that is not a result (edited, truncated, of another tool) fails to read: `from_dict` meets a wrong shape
# as one of these
_UNREADABLE = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, dacite.DaciteError)


def load_result(path: str | os.PathLike[str]) -> ProfileResult:
    """Reopen a run saved with `--json` (or `save_json`) as the result it was."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("levels", []), list):
            raise ValueError("not the JSON object `--json` writes")
        return ProfileResult.from_dict(document)
    except _UNREADABLE as error:
        raise LoadgenError(f"cannot read a loadgen result from {path}: {error}") from None


@dataclass(frozen=True)
class Measurement:
    """One load level as tuning reads it; a mix's level, with each model's figures in `models`."""

    throughput: float
    p99_us: int
    bottleneck: str | None  # what bounds it (the diagnosis's name: a step, the load, the host, the client)
    noise: float  # relative standard error of the level's throughput, from its last windows
    load: float = 0.0  # the concurrency, or the request rate, it was measured at
    bound: str | None = None  # the diagnosis's kind of bound
    predicted_max: float | None = None  # the diagnosis's throughput limit
    model: str | None = None  # the model these figures are of (None: a mix's total, which has no diagnosis)
    models: tuple[Measurement, ...] = ()  # a mix: each model's figures, at its own load
    budget_ms: float | None = None  # the model's p99 budget (--latency-budget-ms), if it has one

    @property
    def parts(self) -> tuple[Measurement, ...]:
        """What the latency budgets apply to: a mix's models, else the level itself."""
        return self.models or (self,)

    @property
    def over_budget(self) -> bool:
        """The model's p99 is over its budget."""
        return self.budget_ms is not None and self.p99_us / 1000 > self.budget_ms


@dataclass(frozen=True)
class Trial:
    """One configuration change, what it did, and why it was kept or reverted."""

    change: str
    model: str | None  # None: a change of the offered load
    throughput: float
    p99_us: int
    kept: bool
    bottleneck: str | None
    predicted_throughput: float | None = None  # what the diagnosis predicted the change would give
    load: float = 0.0  # the concurrency, or the request rate, it was measured at
    reason: str = ""  # why it was kept or reverted: the throughput against the noise, or the budgets
    models: tuple[Measurement, ...] = ()  # a mix: each model's figures after the change


@dataclass(frozen=True)
class TuneResult:
    """The trial history: where tuning started, each change tried, where it ended, and the configs to keep."""

    model: str  # the tuned model, or a mix's models joined by "+"
    initial: Measurement
    trials: tuple[Trial, ...]
    final: Measurement
    config_changes: dict[str, str]  # model -> its improved config.pbtxt
    stop_reason: str

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per trial, the baseline first (needs the `dataframe` extra)."""
        from loadgen.reports.dataframe import tune_frame

        return tune_frame(self)

    def plot(self) -> Figure:
        """Throughput per trial (needs the `report` extra)."""
        from loadgen.reports.plot import trials

        return trials(self)

    def save_html(self, path: str | os.PathLike[str]) -> None:
        """A self-contained HTML page: trials, throughput per trial, improved configs (needs the `report` extra)."""
        from loadgen.reports.html import write_tune_html

        write_tune_html(self, path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "initial": asdict(self.initial),
            "trials": [asdict(trial) for trial in self.trials],
            "final": asdict(self.final),
            "config_changes": self.config_changes,
            "stop_reason": self.stop_reason,
        }
