"""Merging window logs: K shards' logs into one result, exactly as if one run had measured it all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import LoadgenError, OptionError
from loadgen.levels import Level, ends_sweep, outcome, start_level
from loadgen.measurement import combine
from loadgen.plan import plan
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server.statistics import Composition
from loadgen.settings import Settings
from loadgen.shards.log import VERSION, LoggedWindow, read_compositions, read_window


@dataclass
class _Shard:
    path: Path
    header: dict[str, Any]
    windows: dict[tuple[int, int], LoggedWindow]
    status: str | None  # None: the log has no end line (the shard died)


def _read(path: Path) -> _Shard:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"merge: cannot read {path}: {error}") from None
    if not records or records[0].get("kind") != "header":
        raise OptionError(f"merge: {path} is not a loadgen window log (no header line)")
    version = records[0].get("version")
    if not isinstance(version, int) or version > VERSION:
        raise OptionError(
            f"merge: {path} is a window log of version {version}; this loadgen reads versions 1 to {VERSION}"
        )
    shard = _Shard(path, records[0], {}, None)
    try:
        for record in records[1:]:
            if record["kind"] == "window":
                logged = read_window(record)
                shard.windows[(logged.level, logged.index)] = logged
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
        if settings.model_mix is not None and any(set(part.parts) != set(trees) for part in present):
            raise OptionError(f"merge: level {key[0]} window {key[1]} lacks a model's part in some shard's log")
        if key[0] not in by_level:  # the least-loaded level is the reference for the later ones' compute
            least = next(iter(by_level.values()), None)
            figures = least.result() if least is not None else None
            load = present[0].load
            by_level[key[0]] = start_level(load, rule, trees, settings.model_mix, figures, run.server_cores)
        server, metrics = (present[0].server, present[0].metrics) if indexes[0] == 0 else ({}, None)
        # each model's part of the window: its parts in every shard's window, added as the totals are
        parts = {name: combine([part.parts[name] for part in present]) for name in present[0].parts}
        by_level[key[0]].add(combine([part.window for part in present]), server, metrics, parts)
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


def _compositions(shard: _Shard, settings: Settings) -> dict[str, Composition]:
    """The composition of the run's model, or of each model of its mix."""
    try:
        trees = read_compositions(shard.header)
    except (KeyError, TypeError) as error:
        raise OptionError(f"merge: {shard.path} has a malformed header: {error!r}") from None
    if settings.model_mix is not None and set(trees) != set(settings.model_mix):
        raise OptionError(
            f"merge: {shard.path} logs a mix without each model's windows (a log from before loadgen logged them); "
            "run the shards again"
        )
    return trees
