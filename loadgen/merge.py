"""Merging window logs: K shards' logs into one result, exactly as if one run had measured it all."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import OptionError
from loadgen.interval_log import read_composition, read_window
from loadgen.load import Load
from loadgen.measurement import (
    STABILITY_WINDOWS,
    EncodedWindow,
    Window,
    WindowSummary,
    combine,
    is_stable,
    merge,
    summarize,
)
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server_stats import Snapshot, add


@dataclass
class _Shard:
    path: Path
    header: dict[str, Any]
    windows: dict[tuple[int, int], tuple[Load, EncodedWindow, Snapshot]]
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
    for record in records[1:]:
        if record["kind"] == "window":
            load, level, index, window, server = read_window(record)
            shard.windows[(level, index)] = (load, window, server)
        elif record["kind"] == "end":
            shard.status = record["status"]
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
    settings = first["settings"]
    tree = read_composition(first["composition"])
    keys = sorted({key for shard in shards for key in shard.windows})
    by_level: dict[int, list[tuple[Load, Window, Snapshot]]] = defaultdict(list)
    missing: list[str] = []
    for key in keys:
        parts = [shard.windows.get(key) for shard in shards]
        if any(part is None for part in parts) or len(shards) < count:
            missing.append(f"level {key[0]} window {key[1]}")
            continue
        present = [part for part in parts if part is not None]
        server = present[0][2] if indexes[0] == 0 else {}
        by_level[key[0]].append((present[0][0], combine([part[1] for part in present]), server))
    if missing:
        problems.append("windows missing from some shard (left out): " + ", ".join(missing))
    levels: list[LevelResult] = []
    threshold_us = settings["latency_threshold"] * 1000 if settings["latency_threshold"] else None
    for _, windows in sorted(by_level.items()):
        levels.append(_level(windows, settings, tree))
        # as a single run would have: stop after an unstable level or the first over the latency threshold
        latency = levels[-1].percentile_us if levels[-1].percentile_us is not None else levels[-1].latency_us.avg
        if not levels[-1].stable or (threshold_us is not None and latency > threshold_us):
            break
    return ProfileResult(
        model=first["model"],
        url=first["url"],
        mode=first["mode"],
        levels=tuple(levels),
        inputs=tuple(InputDescription(i["name"], i["datatype"], tuple(i["shape"])) for i in first["inputs"]),
        settings={**settings, "shard": f"merged from {len(shards)} of {count} shards"},
        status="complete" if not problems else "incomplete",
        message="; ".join(problems),
    )


def _level(windows: list[tuple[Load, Window, Snapshot]], settings: dict[str, Any], tree: Any) -> LevelResult:
    batch, percentile = settings["batch_size"], settings["percentile"]
    summaries: list[WindowSummary] = [summarize(window, batch, percentile) for _, window, _ in windows]
    last = windows[-STABILITY_WINDOWS:]
    server: Snapshot = {}
    for _, _, delta in last:
        server = add(server, delta)
    return LevelResult.from_merged(
        windows[0][0],
        merge([window for _, window, _ in last]),
        is_stable(summaries, settings["stability_percentage"]),
        summaries,
        batch,
        percentile,
        tree,
        server,
    )
