"""Window logs: each run (or shard of a run) writes its windows as JSON lines, for `loadgen merge`.

The format, one JSON object per line, flushed as written so that a shard that dies keeps what it measured:
- `{"kind": "header", "version": 2, "shard": [i, K], "model", "url", "mode", "inputs", "settings", "composition"}`;
  a mix (`--model-mix`) has `"models": [{"model", "composition"}, ...]` (in the mix's order) instead of
  `composition`;
- `{"kind": "window", "load": {"concurrency", "rate"}, "level": n, "index": m, "server", ...}` plus every field of
  a measurement window as `Window.encode` writes it (`start_ns`, `end_ns`, the histograms `histogram`, `service`,
  `lag`, `first_response` in HdrHistogram's base64 encoding or null, the counts, `errors`), where `server` holds
  the deltas of Triton's statistics over the window (`[{"model", "version", counters...}]`) and `metrics` the
  server's metrics over it (null without them); the window's fields are the whole load's, and a mix's line has
  `"models": [{"model", ...}, ...]` too: each model's part of the window, encoded the same way;
- `{"kind": "grid", "start_ns", "interval_ns", "windows", "late_ns"}`, before the first window: the grid the
  windows fall on (level n's window m starts at `start_ns + (n * windows + m) * interval_ns`; `start_ns` is
  `--start-at`, or when the run started without it), and how long after `start_ns` the run was ready to measure (a
  shard that comes late joins the grid at the next window boundary: see `loadgen/shards/grid.py`);
- `{"kind": "end", "status": "complete" | "unstable" | "interrupted" | "failed"}`.
Times are ns since the UNIX epoch, so that logs of different machines line up: the run measures on the monotonic
clock and maps it to UNIX time once (`loadgen.clock.WallClock`), so a clock step during the run moves nothing.
Version 2 is version 3 without the grid line (its windows are checked against each other only); version 1 (before
mixes) is version 2 without the `models` keys. All three read alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dacite

from loadgen.clock import WallClock
from loadgen.measurement import Window
from loadgen.plan import Load, Shard
from loadgen.results import RunDescription
from loadgen.server.metrics import ServerMetrics
from loadgen.server.statistics import Composition, Counters, Snapshot
from loadgen.shards.grid import Grid

VERSION = 3  # 2: a mix's models; 3: the grid line (versions 1 to 3 read alike)


def log_name(shard: Shard) -> str:
    return f"shard-{shard.index}-of-{shard.count}.jsonl"


@dataclass(frozen=True)
class LoggedWindow:
    """One window line: the level's load and number, the window's number in it, the window (the whole load's),
    the server's statistics and metrics over it, and in a mix each model's part of the window."""

    load: Load
    level: int
    index: int
    window: Window
    server: Snapshot
    metrics: ServerMetrics | None
    parts: Mapping[str, Window] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedStart:
    """Where a run's windows fall, and how long after the grid's start the run was ready to measure (0: in time)."""

    grid: Grid
    late_ns: int

    @property
    def late(self) -> bool:
        """Ready too late for the grid's first window: the run joined it later (see `Grid.join`)."""
        return self.late_ns > self.grid.tolerance_ns

    @property
    def joined(self) -> tuple[int, int]:
        """The level and window the run joined the grid at."""
        return self.grid.position(self.grid.origin_ns + self.late_ns)


class WindowLog:
    """Writes one run's windows as JSON lines."""

    def __init__(self, directory: str, shard: Shard) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / log_name(shard)
        self.shard = shard
        self.clock = WallClock.now()  # the run's one mapping of its perf_counter_ns instants to UNIX time
        self._file: IO[str] = self.path.open("w", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def header(self, run: RunDescription, settings: dict[str, Any], trees: Mapping[str, Composition]) -> None:
        """The run's description; `trees` holds the composition of its model, or of each model of a mix."""
        models: dict[str, Any] = {"composition": dataclasses.asdict(next(iter(trees.values())))}
        if settings.get("model_mix"):
            models = {
                "models": [{"model": name, "composition": dataclasses.asdict(tree)} for name, tree in trees.items()]
            }
        self._write(
            {
                "kind": "header",
                "version": VERSION,
                "shard": [self.shard.index, self.shard.count],
                "model": run.model,
                "url": run.url,
                "mode": run.mode,
                "inputs": [dataclasses.asdict(i) | {"shape": list(i.shape)} for i in run.inputs],
                "settings": settings,
                **models,
            }
        )

    def window(self, logged: LoggedWindow) -> None:
        record = self._encoded(logged.window)
        record.update(
            kind="window",
            load=dataclasses.asdict(logged.load),
            level=logged.level,
            index=logged.index,
            server=[{"model": m, "version": v, **dataclasses.asdict(c)} for (m, v), c in sorted(logged.server.items())],
            metrics=dataclasses.asdict(logged.metrics) if logged.metrics is not None else None,
        )
        if logged.parts:
            record["models"] = [{"model": name, **self._encoded(part)} for name, part in logged.parts.items()]
        self._write(record)

    def _encoded(self, window: Window) -> dict[str, Any]:
        """A window as JSON values, its times as wall time."""
        record = window.encode()
        record["start_ns"] = self.clock.unix_ns(record["start_ns"])
        record["end_ns"] = self.clock.unix_ns(record["end_ns"])
        return record

    def start(self, start: LoggedStart) -> None:
        """The grid the windows fall on (its instants perf_counter_ns, written as UNIX time) and the run's lateness."""
        grid = start.grid
        self._write(
            {
                "kind": "grid",
                "start_ns": self.clock.unix_ns(grid.origin_ns),
                "interval_ns": grid.interval_ns,
                "windows": grid.per_level,
                "late_ns": start.late_ns,
            }
        )

    def end(self, status: str) -> None:
        self._write({"kind": "end", "status": status})
        self._file.close()


def read_window(record: dict[str, Any]) -> LoggedWindow:
    """One window line back as typed values."""
    server = {
        (entry["model"], entry["version"]): Counters(**{f.name: entry[f.name] for f in dataclasses.fields(Counters)})
        for entry in record["server"]
    }
    metrics = record.get("metrics")
    decoded = dacite.from_dict(ServerMetrics, metrics, dacite.Config(cast=[tuple])) if metrics else None
    parts = {part["model"]: Window.decode(part) for part in record.get("models", ())}
    return LoggedWindow(
        Load(**record["load"]), record["level"], record["index"], Window.decode(record), server, decoded, parts
    )


def read_start(record: dict[str, Any]) -> LoggedStart:
    """The grid line back as typed values (its instants UNIX ns)."""
    grid = Grid(int(record["start_ns"]), int(record["interval_ns"]), int(record["windows"]))
    return LoggedStart(grid, int(record["late_ns"]))


def read_compositions(header: dict[str, Any]) -> dict[str, Composition]:
    """The composition of a log's model, or of each model of its mix, by name."""
    if "models" in header:
        return {model["model"]: read_composition(model["composition"]) for model in header["models"]}
    return {header["model"]: read_composition(header["composition"])}


def read_composition(data: dict[str, Any]) -> Composition:
    return Composition(**{**data, "steps": tuple(read_composition(step) for step in data["steps"])})
