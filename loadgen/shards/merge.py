"""Merging window logs: K shards' logs into one result, by the rule a single run applies to its windows.

Windows are paired by (level, index), and must end within `alignment_tolerance_ns` of each other and start so too,
but a level's first window, which each shard starts once it has switched its load to the level: logs whose windows
do not line up are refused. Each level takes its windows in order until its last three agree, as a single run stops
there (the shards measured all `-r` of them, not knowing when the whole would settle), else all of them; the sweep
ends where a single run's would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dacite import DaciteError

from loadgen.errors import LoadgenError, OptionError
from loadgen.levels import Level, ends_sweep, outcome, start_level
from loadgen.measurement import combine
from loadgen.plan import plan
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server.statistics import Composition
from loadgen.settings import Settings
from loadgen.shards.grid import alignment_tolerance_ns
from loadgen.shards.log import (
    VERSION,
    LogError,
    LoggedStart,
    LoggedWindow,
    check_record,
    read_compositions,
    read_start,
    read_window,
)
from loadgen.transport.common import one_line

MAX_LINE_CHARS = 64 << 20  # a window line holds a few histograms of at most MAX_HISTOGRAM_CHARS each
# settings that name files a run reads: a log's are dropped, never opened (--hdr-log, a folder the run wrote, stays)
PATH_SETTINGS = frozenset(
    {
        "request_intervals",
        "input_data",
        "ssl_grpc_root_certifications_file",
        "ssl_grpc_private_key_file",
        "ssl_grpc_certificate_chain_file",
        "ssl_https_ca_certificates_file",
        "ssl_https_client_certificate_file",
        "ssl_https_private_key_file",
    }
)


@dataclass
class _Shard:
    path: Path
    header: dict[str, Any]
    windows: dict[tuple[int, int], LoggedWindow]
    status: str | None  # None: the log has no end line (the shard died)
    start: LoggedStart | None = None  # its grid and lateness (None: a log of version 2 or before)

    @property
    def index(self) -> int:
        return int(self.header["shard"][0])


def _read(path: Path) -> _Shard:
    """A shard's log, each line checked against its kind's schema; a line that fails is refused naming the file, the
    line and the field."""
    records = _records(path)
    if not records or records[0][1].get("kind") != "header":
        raise OptionError(f"merge: {path} is not a loadgen window log (no header line)")
    version = records[0][1].get("version")
    if not (type(version) is int and 1 <= version <= VERSION):
        raise OptionError(
            f"merge: {path} is a window log of version {str(version)[:20]}; this loadgen reads versions 1 to {VERSION}"
        )
    shard: _Shard | None = None
    for number, record in records:
        try:
            kind = check_record(record)
            if shard is None:
                shard = _Shard(path, record, {}, None)
            else:
                _add(shard, kind, record)
        except LogError as error:
            raise OptionError(f"merge: {path} line {number}: {error}") from None
        except (KeyError, TypeError, ValueError, DaciteError) as error:  # what the schema leaves to the decoders
            raise OptionError(f"merge: {path} line {number} is malformed: {one_line(str(error))[:200]}") from None
    assert shard is not None
    return shard


def _records(path: Path) -> list[tuple[int, Any]]:
    """A log's lines as JSON values, numbered from 1; a line longer than MAX_LINE_CHARS is refused unread."""
    records = []
    try:
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(iter(lambda: file.readline(MAX_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_LINE_CHARS:
                    raise OptionError(f"merge: {path} line {number} is over {MAX_LINE_CHARS} characters")
                if line.strip():
                    records.append((number, json.loads(line)))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise OptionError(f"merge: cannot read {path}: {one_line(str(error))[:200]}") from None
    return records


def _add(shard: _Shard, kind: str, record: dict[str, Any]) -> None:
    """One line after the header, as its kind says."""
    if kind == "window":
        logged = read_window(record)
        shard.windows[(logged.level, logged.index)] = logged
    elif kind == "grid":
        shard.start = read_start(record)
    elif kind == "end":
        shard.status = record["status"]
    else:
        raise LogError("kind", "a second header")


def _settings(shard: _Shard) -> Settings:
    """The run's settings as the first log records them, less those that name files: a log never makes merge open
    a file (a --request-intervals run merges as the open loop it was, its rates from the logged windows)."""
    recorded = {name: value for name, value in shard.header["settings"].items() if name not in PATH_SETTINGS}
    if shard.header["settings"].get("request_intervals") is not None:
        recorded |= {"request_rate_range": "1", "concurrency_range": None}  # an open loop; its rates are logged
    try:
        return Settings.from_dict(recorded)
    except (LoadgenError, TypeError, ValueError) as error:
        raise OptionError(
            f"merge: {shard.path} records settings loadgen cannot read: {one_line(str(error))[:200]}"
        ) from None


def merge_logs(paths: Sequence[str | Path]) -> ProfileResult:
    """One result from the logs of every shard of a run; windows some shard is missing are reported, not invented.

    Server statistics come from shard 0's log (each shard reads the same server; one reading is the truth).
    """
    shards = sorted((_read(Path(p)) for p in paths), key=lambda shard: shard.index)
    if not shards:
        raise OptionError("merge: no window logs given")
    first = shards[0].header
    count = first["shard"][1]
    for shard in shards:
        if shard.header["model"] != first["model"] or shard.header["shard"][1] != count:
            raise OptionError(f"merge: {shard.path} belongs to another run ({shard.header['model']}, K={count})")
    _check_grids(shards)
    indexes = [shard.index for shard in shards]
    problems = [f"shard {i}/{count} has no log" for i in range(count) if i not in indexes]
    problems += [f"shard {s.index} stopped before its end" for s in shards if s.status is None]
    problems += _late(shards)
    settings = _settings(shards[0])
    by_level, missing = _merge_windows(shards, count, settings)
    if missing:
        problems.append("windows missing from some shard (left out): " + ", ".join(missing))
    rule = plan(settings).rule
    levels: list[LevelResult] = []
    for _, level in sorted(by_level.items()):
        levels.append(level.result())
        if ends_sweep(levels[-1], rule):  # as a single run would have
            break
    status, message = ("incomplete", "; ".join(problems)) if problems else outcome(levels)
    return ProfileResult(
        model=first["model"],
        url=first["url"],
        mode=first["mode"],
        levels=tuple(levels),
        inputs=tuple(InputDescription(i["name"], i["datatype"], tuple(i["shape"])) for i in first["inputs"]),
        settings={**first["settings"], "shard": f"merged from {len(shards)} of {count} shards"},
        status=status,
        message=message,
    )


def _merge_windows(shards: Sequence[_Shard], count: int, settings: Settings) -> tuple[dict[int, Level], list[str]]:
    """Each level's windows, every shard's added together, in order until the level's last three agree (where a
    single run stops); the windows some shard lacks."""
    run = plan(settings)
    tolerance_ns = alignment_tolerance_ns(run.windows.interval_ms * 1_000_000)
    trees = _compositions(shards[0], settings)
    keys = sorted({key for shard in shards for key in shard.windows})
    by_level: dict[int, Level] = {}
    missing: list[str] = []
    for key in keys:
        found = [shard.windows.get(key) for shard in shards]
        if any(part is None for part in found) or len(shards) < count:
            missing.append(f"level {key[0]} window {key[1]}")
            continue
        present = [part for part in found if part is not None]
        _check_aligned(key, shards, present, tolerance_ns)
        if settings.model_mix is not None and any(set(part.parts) != set(trees) for part in present):
            raise OptionError(f"merge: level {key[0]} window {key[1]} lacks a model's part in some shard's log")
        if key[0] not in by_level:  # the least-loaded level is the reference for the later ones' compute
            least = next(iter(by_level.values()), None)
            figures = least.result() if least is not None else None
            load = present[0].load
            by_level[key[0]] = start_level(load, run.rule, trees, settings.model_mix, figures, run.server_cores)
        level = by_level[key[0]]
        if level.stable:
            continue  # a single run measures no more windows of a level that settled
        server, metrics = (present[0].server, present[0].metrics) if shards[0].index == 0 else ({}, None)
        # each model's part of the window: its parts in every shard's window, added as the totals are
        parts = {name: combine([part.parts[name] for part in present]) for name in present[0].parts}
        level.add(combine([part.window for part in present]), server, metrics, parts)
    return by_level, missing


def _check_aligned(
    key: tuple[int, int], shards: Sequence[_Shard], windows: Sequence[LoggedWindow], tolerance_ns: int
) -> None:
    """Refuse the shards' windows of one (level, index) when they do not cover the same span: added together, they
    would make a window longer than any of them, and understate the throughput.

    Every window ends on the grid, and starts where its shard's previous one ended, but a level's first: that one
    starts once each shard has switched its load to the level (its requests of the previous level back), which
    takes each its own time; its start is not compared."""
    base = windows[0].window
    for shard, logged in zip(shards[1:], windows[1:], strict=True):
        window = logged.window
        apart = abs(window.end_ns - base.end_ns)
        if key[1] > 0:
            apart = max(apart, abs(window.start_ns - base.start_ns))
        if apart > tolerance_ns:
            raise OptionError(
                f"merge: shard {shard.index}'s level {key[0]} window {key[1]} is {apart / 1e9:.3f} s off shard "
                f"{shards[0].index}'s (more than {tolerance_ns / 1e9:.3f} s): the shards' windows do not line up; "
                "run every shard with the same --start-at, on clocks in sync"
            )


def _check_grids(shards: Sequence[_Shard]) -> None:
    """Refuse logs measured on different grids (another --start-at, measurement interval or window count)."""
    grids = [(shard, shard.start.grid) for shard in shards if shard.start is not None]
    if not grids:
        return
    base_shard, base = grids[0]
    for shard, grid in grids[1:]:
        if grid != base:
            raise OptionError(
                f"merge: shard {shard.index} measured on another grid than shard {base_shard.index} (from UNIX time "
                f"{grid.origin_ns / 1e9:.3f} s, windows of {grid.interval_ns / 1e6:g} ms, {grid.per_level} per level; "
                f"not {base.origin_ns / 1e9:.3f} s, {base.interval_ns / 1e6:g} ms, {base.per_level}): run every "
                "shard with the same --start-at and measurement options"
            )


def _late(shards: Sequence[_Shard]) -> list[str]:
    """Each shard that was ready after the grid's start, and where it joined (the windows before are missing)."""
    notes = []
    for shard in shards:
        if shard.start is not None and shard.start.late:
            level, index = shard.start.joined
            notes.append(
                f"shard {shard.index} was ready {shard.start.late_ns / 1e9:.2f} s after --start-at and joined the grid "
                f"at level {level} window {index}"
            )
    return notes


def _compositions(shard: _Shard, settings: Settings) -> dict[str, Composition]:
    """The composition of the run's model, or of each model of its mix."""
    try:
        trees = read_compositions(shard.header)
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise OptionError(f"merge: {shard.path} has a malformed header: {one_line(repr(error))[:200]}") from None
    if settings.model_mix is not None and set(trees) != set(settings.model_mix):
        raise OptionError(
            f"merge: {shard.path} logs a mix without each model's windows (a log from before loadgen logged them); "
            "run the shards again"
        )
    return trees
