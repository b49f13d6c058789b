"""Merging window logs: K shards' logs into one result, exactly as if one run had measured it all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.analysis import Reference
from loadgen.errors import LoadgenError, OptionError
from loadgen.levels import Level, ends_sweep, outcome
from loadgen.measurement import Window, combine
from loadgen.plan import Load, plan
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server.metrics import ServerMetrics
from loadgen.server.statistics import Snapshot
from loadgen.settings import Settings
from loadgen.shards.log import read_composition, read_window


@dataclass
class _Shard:
    path: Path
    header: dict[str, Any]
    windows: dict[tuple[int, int], tuple[Load, Window, Snapshot, ServerMetrics | None]]
    status: str | None  # None: the log has no end line (the shard died)


def _read(path: Path) -> _Shard:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"merge: cannot read {path}: {error}") from None
    if not records or records[0].get("kind") != "header":
        raise OptionError(f"merge: {path} is not a loadgen window log (no header line)")
    shard = _Shard(path, records[0], {}, None)
    try:
        for record in records[1:]:
            if record["kind"] == "window":
                load, level, index, window, server, metrics = read_window(record)
                shard.windows[(level, index)] = (load, window, server, metrics)
            elif record["kind"] == "end":
                shard.status = record["status"]
    except (KeyError, TypeError, ValueError) as error:
        raise OptionError(f"merge: {path} has a malformed window line: {error!r}") from None
    return shard


def merge_logs(paths: Sequence[str | Path]) -> ProfileResult:
    """One result from the logs of every shard of a run; windows some shard is missing are reported, not invented.

    Server statistics come from shard 0's log (each shard reads the same server; one reading is the truth).
    """
    shards = sorted((_read(Path(p)) for p in paths), key=lambda shard: shard.header["shard"][0])
    if not shards:
        raise OptionError("merge: no window logs given")
    first = shards[0].header
    count = first["shard"][1]
    indexes = [shard.header["shard"][0] for shard in shards]
    for shard in shards:
        if shard.header["model"] != first["model"] or shard.header["shard"][1] != count:
            raise OptionError(f"merge: {shard.path} belongs to another run ({shard.header['model']}, K={count})")
    problems = [f"shard {i}/{count} has no log" for i in range(count) if i not in indexes]
    problems += [f"shard {s.header['shard'][0]} stopped before its end" for s in shards if s.status is None]
    try:
        settings = Settings.from_dict(first["settings"])
    except LoadgenError as error:
        raise OptionError(f"merge: {shards[0].path} records settings loadgen cannot read: {error}") from None
    run = plan(settings)
    rule = run.rule
    tree = read_composition(first["composition"])
    keys = sorted({key for shard in shards for key in shard.windows})
    by_level: dict[int, Level] = {}
    missing: list[str] = []
    for key in keys:
        parts = [shard.windows.get(key) for shard in shards]
        if any(part is None for part in parts) or len(shards) < count:
            missing.append(f"level {key[0]} window {key[1]}")
            continue
        present = [part for part in parts if part is not None]
        load = present[0][0]
        if key[0] not in by_level:  # the least-loaded level is the reference for the later ones' compute
            least = next(iter(by_level.values()), None)
            figures = least.result() if least is not None else None
            baseline = Reference.of(figures.server, figures.latency_us.avg) if figures is not None else None
            by_level[key[0]] = Level(load, rule, tree, baseline, run.server_cores)
        server, metrics = (present[0][2], present[0][3]) if indexes[0] == 0 else ({}, None)
        by_level[key[0]].add(combine([part[1] for part in present]), server, metrics)
    if missing:
        problems.append("windows missing from some shard (left out): " + ", ".join(missing))
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
