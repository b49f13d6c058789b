"""Window logs: each run (or shard of a run) writes its windows as JSON lines, for `loadgen merge`.

The format, one JSON object per line, flushed as written so that a shard that dies keeps what it measured:
- `{"kind": "header", "version": 1, "shard": [i, K], "model", "url", "mode", "inputs", "settings", "composition"}`
- `{"kind": "window", "load": {"concurrency", "rate"}, "level": n, "index": m, "start_ns", "end_ns", "histogram",
  "service", "lag", "sent", "delayed", "limit_hits", "errors", "clamped", "loop_cpu_ns", "process_cpu_ns",
  "server"}` where the histograms are HdrHistogram's base64 encoding and `server` the deltas of Triton's
  statistics over the window (`[{"model", "version", counters...}]`);
- `{"kind": "end", "status": "complete" | "interrupted" | "failed"}`.
Window times are `time.time_ns()` instants, so that logs of different machines line up.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import IO, Any

from loadgen.load import Load
from loadgen.measurement import EncodedWindow
from loadgen.server_stats import Composition, Counters, Snapshot

VERSION = 1


def log_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}.jsonl"


def _text(data: bytes | None) -> str | None:
    return data.decode("ascii") if data is not None else None


class WindowLog:
    """Writes one run's windows as JSON lines."""

    def __init__(self, directory: str, index: int, count: int) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / log_name(index, count)
        self.shard = (index, count)
        self._wall_offset_ns = time.time_ns() - time.perf_counter_ns()  # window times are written as wall time
        self._file: IO[str] = self.path.open("w", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def header(
        self, model: str, url: str, mode: str, inputs: list[dict[str, Any]], settings: dict[str, Any], tree: Composition
    ) -> None:
        self._write(
            {
                "kind": "header",
                "version": VERSION,
                "shard": list(self.shard),
                "model": model,
                "url": url,
                "mode": mode,
                "inputs": inputs,
                "settings": settings,
                "composition": dataclasses.asdict(tree),
            }
        )

    def window(self, load: Load, level: int, index: int, window: EncodedWindow, server: Snapshot) -> None:
        record = dataclasses.asdict(window)
        record["start_ns"] += self._wall_offset_ns
        record["end_ns"] += self._wall_offset_ns
        for name in ("histogram", "service", "lag"):
            record[name] = _text(record[name])
        record.update(
            kind="window",
            load=dataclasses.asdict(load),
            level=level,
            index=index,
            server=[{"model": m, "version": v, **dataclasses.asdict(c)} for (m, v), c in sorted(server.items())],
        )
        self._write(record)

    def end(self, status: str) -> None:
        self._write({"kind": "end", "status": status})
        self._file.close()


def read_window(record: dict[str, Any]) -> tuple[Load, int, int, EncodedWindow, Snapshot]:
    """One window line back as typed values."""
    fields = {f.name: record[f.name] for f in dataclasses.fields(EncodedWindow)}
    for name in ("histogram", "service", "lag"):
        fields[name] = fields[name].encode("ascii") if fields[name] is not None else None
    server = {
        (entry["model"], entry["version"]): Counters(**{f.name: entry[f.name] for f in dataclasses.fields(Counters)})
        for entry in record["server"]
    }
    return Load(**record["load"]), record["level"], record["index"], EncodedWindow(**fields), server


def read_composition(data: dict[str, Any]) -> Composition:
    return Composition(**{**data, "steps": tuple(read_composition(step) for step in data["steps"])})
