"""Window logs: each run (or shard of a run) writes its windows as JSON lines, for `loadgen merge`.

The format, one JSON object per line, flushed as written so that a shard that dies keeps what it measured:
- `{"kind": "header", "version": 1, "shard": [i, K], "model", "url", "mode", "inputs", "settings", "composition"}`
- `{"kind": "window", "load": {"concurrency", "rate"}, "level": n, "index": m, "server", ...}` plus every field of
  a measurement window as `Window.encode` writes it (`start_ns`, `end_ns`, the histograms `histogram`, `service`,
  `lag`, `first_response` in HdrHistogram's base64 encoding or null, the counts, `errors`), where `server` holds
  the deltas of Triton's statistics over the window (`[{"model", "version", counters...}]`) and `metrics` the
  server's metrics over it (null without them);
- `{"kind": "end", "status": "complete" | "unstable" | "interrupted" | "failed"}`.
Window times are `time.time_ns()` instants, so that logs of different machines line up.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import IO, Any

import dacite

from loadgen.measurement import Window
from loadgen.plan import Load, Shard
from loadgen.results import RunDescription
from loadgen.server.metrics import ServerMetrics
from loadgen.server.statistics import Composition, Counters, Snapshot

VERSION = 1


def log_name(shard: Shard) -> str:
    return f"shard-{shard.index}-of-{shard.count}.jsonl"


class WindowLog:
    """Writes one run's windows as JSON lines."""

    def __init__(self, directory: str, shard: Shard) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / log_name(shard)
        self.shard = shard
        self._wall_offset_ns = time.time_ns() - time.perf_counter_ns()  # window times are written as wall time
        self._file: IO[str] = self.path.open("w", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def header(self, run: RunDescription, settings: dict[str, Any], tree: Composition) -> None:
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
                "composition": dataclasses.asdict(tree),
            }
        )

    def window(
        self, load: Load, level: int, index: int, window: Window, server: Snapshot, metrics: ServerMetrics | None
    ) -> None:
        record = window.encode()
        record["start_ns"] += self._wall_offset_ns
        record["end_ns"] += self._wall_offset_ns
        record.update(
            kind="window",
            load=dataclasses.asdict(load),
            level=level,
            index=index,
            server=[{"model": m, "version": v, **dataclasses.asdict(c)} for (m, v), c in sorted(server.items())],
            metrics=dataclasses.asdict(metrics) if metrics is not None else None,
        )
        self._write(record)

    def end(self, status: str) -> None:
        self._write({"kind": "end", "status": status})
        self._file.close()


def read_window(record: dict[str, Any]) -> tuple[Load, int, int, Window, Snapshot, ServerMetrics | None]:
    """One window line back as typed values."""
    server = {
        (entry["model"], entry["version"]): Counters(**{f.name: entry[f.name] for f in dataclasses.fields(Counters)})
        for entry in record["server"]
    }
    metrics = record.get("metrics")
    decoded = dacite.from_dict(ServerMetrics, metrics, dacite.Config(cast=[tuple])) if metrics else None
    return Load(**record["load"]), record["level"], record["index"], Window.decode(record), server, decoded


def read_composition(data: dict[str, Any]) -> Composition:
    return Composition(**{**data, "steps": tuple(read_composition(step) for step in data["steps"])})
