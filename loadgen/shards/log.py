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

A log is read as untrusted input: each line is checked against its kind's schema (`check_record`: types, ranges,
the version) before anything is built from it, and each histogram's compressed payload is decompressed with a
bound and its parameters checked before HdrHistogram decodes it (`check_histogram`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import dacite

from loadgen.clock import WallClock
from loadgen.measurement import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, Window, new_histogram
from loadgen.plan import Load, Shard
from loadgen.results import RunDescription
from loadgen.server.metrics import ServerMetrics
from loadgen.server.statistics import Composition, Counters, Snapshot
from loadgen.shards.grid import Grid

VERSION = 3  # 2: a mix's models; 3: the grid line (versions 1 to 3 read alike)
STATUSES = ("complete", "unstable", "interrupted", "failed")
LARGEST = 2**63 - 1  # no count or time in a log is larger
MAX_SHARDS = 100_000
MAX_ITEMS = 100_000  # entries of any list or map in a log
_PAYLOAD_HEADER = struct.Struct(">IIIIqqd")  # HdrHistogram's V2 payload: cookie, length, offset, digits, range, ratio
_COMPRESSED_HEADER = struct.Struct(">II")  # its compressed form: cookie, length
# the largest payload of loadgen's histograms: the header, then each count as a varint of at most 9 bytes
MAX_HISTOGRAM_PAYLOAD = _PAYLOAD_HEADER.size + 9 * new_histogram().counts_len
MAX_HISTOGRAM_CHARS = 2 * MAX_HISTOGRAM_PAYLOAD + 1024  # base64 of what compresses it (zlib adds little)


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


class LogError(ValueError):
    """A log line that is not what loadgen writes: the field and what is wrong with it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"field {name!r}: {reason}")


class Field(NamedTuple):
    """One field of a record's schema: whether a value fits, what it should be, and whether it must be there."""

    fits: Callable[[Any], bool]
    should_be: str
    required: bool = True


def _whole(low: int = 0, high: int = LARGEST) -> Field:
    return Field(lambda v: type(v) is int and low <= v <= high, f"a whole number from {low} to {high}")


def _text(required: bool = True) -> Field:
    return Field(lambda v: isinstance(v, str) and len(v) <= 10_000, "text", required)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _each(fits: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A list of at most MAX_ITEMS values that each fit."""
    return lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS and all(fits(item) for item in v)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _shard(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(type(n) is int for n in value)
        and 0 <= value[0] < value[1] <= MAX_SHARDS
    )


def _input(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("datatype"), str)
        and _each(lambda d: type(d) is int and -1 <= d <= LARGEST)(value.get("shape"))
    )


def _errors(value: Any) -> bool:
    """Failures by description, and their counts."""
    return (
        isinstance(value, dict)
        and len(value) <= MAX_ITEMS
        and all(isinstance(k, str) and type(n) is int and 0 <= n <= LARGEST for k, n in value.items())
    )


def _load(value: Any) -> bool:
    if not isinstance(value, dict) or set(value) - {"concurrency", "rate"}:
        return False
    concurrency, rate = value.get("concurrency"), value.get("rate")
    return (concurrency is None or (type(concurrency) is int and 0 <= concurrency <= LARGEST)) and (
        rate is None or _number(rate)
    )


def _counters(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("model"), str)
        and isinstance(value.get("version"), str)
        and all(type(value.get(f.name)) is int and 0 <= value[f.name] <= LARGEST for f in dataclasses.fields(Counters))
    )


def _histogram(required: bool) -> Field:
    return Field(
        lambda v: (v is None and not required) or (isinstance(v, str) and len(v) <= MAX_HISTOGRAM_CHARS),
        f"HdrHistogram's base64 encoding, at most {MAX_HISTOGRAM_CHARS} characters" + ("" if required else ", or null"),
    )


def _window_fields() -> dict[str, Field]:
    """The schema of a window as `Window.encode` writes it: histograms, counts, and its errors."""
    schema: dict[str, Field] = {}
    for item in dataclasses.fields(Window):
        if item.metadata.get("histogram"):
            schema[item.name] = _histogram(item.name == "histogram")
        elif item.name == "errors":
            schema[item.name] = Field(_errors, "a map of failures to their counts (whole, from 0)")
        else:
            schema[item.name] = _whole()._replace(required=item.name in ("start_ns", "end_ns"))
    return schema


WINDOW = _window_fields()
PART = {"model": _text(), **WINDOW}
SCHEMAS: dict[str, dict[str, Field]] = {
    "header": {
        "version": _whole(1, VERSION),
        "shard": Field(_shard, "[index, count] with 0 <= index < count"),
        "model": Field(lambda v: isinstance(v, str) and 0 < len(v) <= 10_000, "a model's name"),
        "url": _text(),
        "mode": _text(),
        "inputs": Field(_each(_input), "a list of inputs, each with a name, datatype and shape"),
        "settings": Field(_object, "an object"),
        "composition": Field(_object, "an object", required=False),
        "models": Field(_each(lambda v: isinstance(v, dict)), "a list of objects", required=False),
    },
    "window": {
        **WINDOW,
        "load": Field(_load, "an object with a concurrency (whole) or a rate (a number from 0)"),
        "level": _whole(0, MAX_ITEMS),
        "index": _whole(0, MAX_ITEMS),
        "server": Field(_each(_counters), "a list of a model, its version and its counters (whole, from 0)"),
        "metrics": Field(lambda v: v is None or isinstance(v, dict), "an object or null", required=False),
        "models": Field(_each(lambda v: isinstance(v, dict)), "a list of objects", required=False),
    },
    "grid": {
        "start_ns": _whole(),
        "interval_ns": _whole(1),
        "windows": _whole(1, MAX_ITEMS),
        "late_ns": _whole(),
    },
    "end": {"status": Field(lambda v: v in STATUSES, "one of " + ", ".join(STATUSES))},
}


def check_record(record: Any) -> str:
    """A log line's kind, once the line fits that kind's schema (and each part of a mix's window its own);
    raises LogError naming the field."""
    if not isinstance(record, dict):
        raise LogError("kind", "the line is not a JSON object")
    kind = record.get("kind")
    if kind not in SCHEMAS:
        raise LogError("kind", f"{str(kind)[:40]!r} is none of {', '.join(SCHEMAS)}")
    _check_fields(record, SCHEMAS[kind], "")
    for number, part in enumerate(record.get("models", ()) if kind == "window" else ()):
        _check_fields(part, PART, f"models[{number}].")
    if kind == "window" and record["end_ns"] < record["start_ns"]:
        raise LogError("end_ns", "before start_ns")
    if kind == "header" and ("composition" in record) == ("models" in record):
        raise LogError("composition", "a header has either a composition or a mix's models")
    return str(kind)


def _check_fields(record: dict[str, Any], schema: Mapping[str, Field], prefix: str) -> None:
    for name, rule in schema.items():
        if name not in record:
            if rule.required:
                raise LogError(prefix + name, "missing")
            continue
        if not rule.fits(record[name]):
            raise LogError(prefix + name, f"{json.dumps(record[name])[:60]} is not {rule.should_be}")
        if rule.should_be.startswith("HdrHistogram") and record[name] is not None:
            check_histogram(record[name], prefix + name)


def check_histogram(text: str, name: str) -> None:
    """Refuse a histogram that is not one of loadgen's (another range or precision) or whose payload would
    decompress past MAX_HISTOGRAM_PAYLOAD bytes, before HdrHistogram decodes it (it decompresses without a bound)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LogError(name, "not base64") from None
    if len(raw) < _COMPRESSED_HEADER.size or _COMPRESSED_HEADER.unpack_from(raw)[1] != len(raw) - 8:
        raise LogError(name, "not an HdrHistogram (its length does not match)")
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(raw[_COMPRESSED_HEADER.size :], MAX_HISTOGRAM_PAYLOAD)
    except zlib.error as error:
        raise LogError(name, f"its payload does not decompress ({error})") from None
    if inflater.unconsumed_tail or len(payload) < _PAYLOAD_HEADER.size:
        raise LogError(name, f"its payload is not 40 to {MAX_HISTOGRAM_PAYLOAD} bytes (loadgen's limit)")
    _, length, offset, digits, lowest, highest, _ = _PAYLOAD_HEADER.unpack_from(payload)
    if (offset, digits, lowest, highest) != (0, SIGNIFICANT_DIGITS, LOWEST_US, HIGHEST_US):
        raise LogError(name, f"not loadgen's histogram ({lowest} to {highest}, {digits} digits)")
    if length != len(payload) - _PAYLOAD_HEADER.size:
        raise LogError(name, "its counts' length does not match")


def read_window(record: dict[str, Any]) -> LoggedWindow:
    """One window line back as typed values (a line `check_record` passed)."""
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
