"""One load split over shards, logged, and merged exactly; the Kubernetes launcher rendered and run locally."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shlex
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hdrh.histogram import HdrHistogram

from loadgen.cli import main
from loadgen.clock import WallClock
from loadgen.errors import OptionError
from loadgen.measurement import LatencyStats, Window, new_histogram
from loadgen.plan import plan
from loadgen.results import RunDescription
from loadgen.server import EmbeddedServer
from loadgen.server.statistics import Composition
from loadgen.settings import Settings
from loadgen.shards.grid import Grid
from loadgen.shards.log import VERSION, LoggedStart, LoggedWindow, WindowLog
from loadgen.shards.merge import merge_logs
from tests.helpers import ROOT

IDENTITY = ["-m", "identity_uint8", "--concurrency-range", "2:4:2", "-p", "400", "-r", "3", "-s", "1000"]


def _shard(
    url: str, index: int, count: int, start_at: float, logs: Path, load: list[str] = IDENTITY
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "loadgen", "-u", url, *load, "--shard", f"{index}/{count}"]
    command += ["--start-at", f"{start_at:.3f}", "--hdr-log", str(logs)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_shards_merged(url: str, load: list[str], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Two shards of a load, run to their end, and their logs merged: the logs' folder and the merged JSON."""
    logs = tmp_path / "logs"
    start_at = time.time() + 10  # room for a busy machine: a shard ready after it joins late (windows missing)
    shards = [_shard(url, i, 2, start_at, logs, load) for i in range(2)]
    for shard in shards:
        _, err = shard.communicate(timeout=120)
        assert shard.returncode in (0, 2), err
    out = tmp_path / "merged.json"
    status = main(["merge", *map(str, sorted(logs.iterdir())), "--json", str(out)])
    merged = json.loads(out.read_text())
    assert (status, merged["status"]) in ((0, "complete"), (2, "unstable"))  # a busy machine may not settle
    return logs, merged


def _windows(log: Path) -> list[dict[str, object]]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "window"]


def _grid_line(log: Path) -> dict[str, Any]:
    [line] = [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "grid"]
    return line  # type: ignore[no-any-return]


def test_two_shards_merge_exactly(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    logs, merged = _two_shards_merged(examples_server.grpc_url, IDENTITY, tmp_path)
    assert [level["concurrency"] for level in merged["levels"]][:1] == [2]
    # rebuild level 0 independently: the 3 windows of both shards, decoded straight from the logs
    reference = new_histogram()
    count = 0
    for log in sorted(logs.iterdir()):
        windows = [w for w in _windows(log) if w["level"] == 0]
        assert [w["index"] for w in windows] == [0, 1, 2]
        for window in windows:
            part = HdrHistogram.decode(str(window["histogram"]).encode("ascii"))
            count += part.get_total_count()
            reference.add(part)
    level = merged["levels"][0]
    assert level["request_count"] == count
    expected = LatencyStats.from_histogram(reference)
    for key in ("min", "p50", "p90", "p95", "p99", "max"):
        assert level["latency_us"][key] == getattr(expected, key)
    # shard 0 carried the server's statistics; the merged run has a single run's shape
    assert level["server"]["request_count"] > 0
    assert level["bottleneck"]["model"] == "identity_uint8"
    assert {"model", "url", "mode", "levels", "bottleneck", "inputs", "settings", "status"} <= set(merged)
    # a log of version 1 (before mixes) reads the same; one of a later version is refused in one line
    for version, folder in ((1, tmp_path / "v1"), (VERSION + 1, tmp_path / "later")):
        folder.mkdir()
        for log in sorted(logs.iterdir()):
            header, *rest = log.read_text().splitlines()
            (folder / log.name).write_text("\n".join([json.dumps(json.loads(header) | {"version": version}), *rest]))
        again = [str(log) for log in sorted(folder.iterdir())]
        if version == 1:
            assert merge_logs(again).to_dict() == merge_logs(sorted(logs.iterdir())).to_dict()
        else:
            with pytest.raises(OptionError, match=f"version {VERSION + 1}; this loadgen reads versions 1 to"):
                merge_logs(again)


def test_a_shard_that_dies_leaves_its_windows_missing(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    start_at = time.time() + 10  # room for a busy machine: a shard ready after it joins late (windows missing)
    survivor = _shard(examples_server.grpc_url, 0, 2, start_at, logs)
    victim = _shard(examples_server.grpc_url, 1, 2, start_at, logs)
    victim_log = logs / "shard-1-of-2.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (victim_log.exists() and _windows(victim_log)):
        time.sleep(0.05)
    victim.kill()
    victim.communicate(timeout=30)
    survivor.communicate(timeout=120)
    out = tmp_path / "merged.json"
    status = main(["merge", *map(str, sorted(logs.iterdir())), "--json", str(out)])
    merged = json.loads(out.read_text())
    assert status == 99
    assert merged["status"] == "incomplete"
    assert "shard 1 stopped before its end" in merged["message"]
    assert "windows missing from some shard" in merged["message"]
    kept = len(_windows(victim_log))
    assert sum(level["windows"] for level in merged["levels"]) <= kept  # nothing invented


# four levels of four windows of a second: a shard started late (and held up by its wait for the server to be idle,
# while the other shard loads it) still joins the grid
LATE = ["-m", "identity_uint8", "--concurrency-range", "1:4:1", "-p", "1000", "-r", "4", "-s", "1000"]


def test_a_shard_that_starts_late_joins_the_grid_where_the_others_are(
    examples_server: EmbeddedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shard 1 is started a second after --start-at: it keeps the grid of --start-at, joins it at the next window,
    and the merge pairs its windows with shard 0's of the same span, reporting the ones it missed (or, should a busy
    host leave them off the grid, refuses them in one line)."""
    logs = tmp_path / "logs"
    start_at = time.time() + 3
    on_time = _shard(examples_server.grpc_url, 0, 2, start_at, logs, LATE)
    time.sleep(max(start_at + 1 - time.time(), 0))
    late = _shard(examples_server.grpc_url, 1, 2, start_at, logs, LATE)
    outputs = [shard.communicate(timeout=120) for shard in (on_time, late)]
    for shard, (_, err) in zip((on_time, late), outputs, strict=True):
        assert shard.returncode in (0, 2), err
    grids = [_grid_line(log) for log in sorted(logs.iterdir())]
    assert grids[0]["start_ns"] == grids[1]["start_ns"] == round(float(f"{start_at:.3f}") * 1e9)
    assert grids[0]["late_ns"] < grids[1]["late_ns"] and grids[1]["late_ns"] >= 900 * MS
    grid = Grid(grids[1]["start_ns"], grids[1]["interval_ns"], grids[1]["windows"])
    joined = grid.position(grid.origin_ns + grids[1]["late_ns"])
    late_windows = _windows(logs / "shard-1-of-2.jsonl")
    if late_windows:  # (a host so busy that the shard came after the whole grid measures nothing)
        assert (late_windows[0]["level"], late_windows[0]["index"]) == joined
        assert f"this run joins the grid at level {joined[0]} window {joined[1]}" in " ".join(outputs[1][0].split())
    out = tmp_path / "merged.json"
    status = main(["merge", *map(str, sorted(logs.iterdir())), "--json", str(out)])
    if status == 3:
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "do not line up" in line
        return
    merged = json.loads(out.read_text())
    assert (status, merged["status"]) == (99, "incomplete")
    assert f"shard 1 was ready {grids[1]['late_ns'] / 1e9:.2f} s after --start-at" in merged["message"]
    assert "windows missing from some shard (left out): level 0 window 0" in merged["message"]


def _render(document: dict[str, object], index: int, start_at: str) -> list[str]:
    """The command a pod of the Indexed Job runs: $(VAR) from the container env, as Kubernetes expands them."""
    container = document["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    env = {item["name"]: item["value"] for item in container["env"]}
    env["START_AT"] = env["START_AT"].replace("${START_AT}", start_at)
    env["JOB_COMPLETION_INDEX"] = str(index)
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg) for arg in container["args"]]


def test_the_kubernetes_indexed_job_runs_as_rendered(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    job = yaml.safe_load((ROOT / "docker" / "k8s" / "loadgen-shards.yaml").read_text())
    merge_job = yaml.safe_load((ROOT / "docker" / "k8s" / "loadgen-merge.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed"
    count = job["spec"]["completions"]
    assert job["spec"]["parallelism"] == count
    start_at = f"{time.time() + 12:.0f}"  # room for a busy machine to start every shard before it
    commands = [_render(job, i, start_at) for i in range(count)]
    for index, command in enumerate(commands):
        assert command[command.index("--shard") + 1] == f"{index}/{count}"
        assert command[command.index("--start-at") + 1] == start_at
        assert command[command.index("--hdr-log") + 1] == "/logs"
    # run the pods' commands here, changing only where things are and how long windows last
    logs, data = tmp_path / "logs", ROOT / "examples"
    local = {"triton:8001": examples_server.grpc_url, "/logs": str(logs), "/data/sample.jpg": str(data / "sample.jpg")}
    # 2 s windows, not the job's 5 s: shorter ones fall inside how late this 2-core box, running four shards and the
    # ensemble's server, wakes a shard (0.13 s seen), and the merge rightly refuses windows a tenth of one apart
    local |= {"5000": "2000", "4:32:4": "4:8:4"}
    pods = [
        subprocess.Popen(
            [sys.executable, "-m", "loadgen", *(local.get(arg, arg) for arg in command), "-r", "3", "-s", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    for pod in pods:
        _, err = pod.communicate(timeout=180)
        assert pod.returncode in (0, 2), err
    merge_command = merge_job["spec"]["template"]["spec"]["containers"][0]["args"][0].replace("/logs", str(logs))
    assert shlex.split(merge_command)[:4] == ["python", "-m", "loadgen", "merge"]
    local_merge = merge_command.replace("python", shlex.quote(sys.executable), 1)
    done = subprocess.run(["sh", "-c", local_merge], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (0, 2), done.stderr
    result = json.loads((logs / "result.json").read_text())
    # every level merged; a window of the ensemble on a busy machine may hold no request, which no stability
    # bound accepts (the merge's own figures are checked in the tests above)
    assert result["status"] in ("complete", "unstable")
    assert len(result["levels"]) == 2
    assert result["settings"]["shard"] == f"merged from {count} of {count} shards"
    assert (logs / "result.csv").exists()


def test_a_streamed_run_logs_and_merges_its_first_response_latency(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """Every histogram a window holds is logged: a decoupled model over --streaming with --hdr-log, then merged."""
    data, logs = tmp_path / "counts.json", tmp_path / "logs"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}, {"COUNT": [5]}]}))
    stream = ["-m", "streamer", "--streaming", "--input-data", str(data), "-p", "300", "-r", "3", "-s", "1000"]
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "-u", test_server.grpc_url, *stream, "--hdr-log", str(logs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [log] = sorted(logs.iterdir())
    assert all(window["first_response"] for window in _windows(log))
    out = tmp_path / "merged.json"
    assert main(["merge", str(log), "--json", str(out)]) == 0
    [level] = json.loads(out.read_text())["levels"]
    assert level["first_response_latency_us"]["avg"] <= level["latency_us"]["avg"]
    assert 3 <= level["responses_per_request"] <= 5


# An open-loop mix at 5 requests/s (one every 200 ms) in windows of 1040 ms: every window boundary falls at least
# 40 ms from a request's send, so the server's statistics, read at the boundaries, count the windows' requests.
MIX = ["--model-mix", "fast_step:3,batched_double:1", "--request-rate-range", "5", "--shape", "fast_step=INPUT0:4"]
MIX += ["-p", "1040", "-r", "4", "-s", "1000"]


def test_a_sharded_mix_merges_model_by_model(test_server: EmbeddedServer, tmp_path: Path) -> None:
    logs, merged = _two_shards_merged(test_server.grpc_url, MIX, tmp_path)
    [level] = merged["levels"]
    models = merged["models"]
    assert [(m["model"], m["share"]) for m in models] == [("fast_step", 0.75), ("batched_double", 0.25)]
    fast, batched = (model["levels"][0] for model in models)
    assert (level["request_rate"], fast["request_rate"], batched["request_rate"]) == (5.0, 3.75, 1.25)
    assert fast["request_count"] + batched["request_count"] == level["request_count"]
    # each model's merged figures are its parts in both shards' windows up to where the level settled (as a single
    # run stops at the first three that agree), decoded straight from the logs
    for merged_model in models:
        name, figures = merged_model["model"], merged_model["levels"][0]
        count = 0
        for log in sorted(logs.iterdir()):
            windows = [w for w in _windows(log) if w["level"] == 0]
            assert [w["index"] for w in windows] == [0, 1, 2, 3]
            for window in windows[: level["windows"]][-3:]:
                [part] = [p for p in window["models"] if p["model"] == name]  # type: ignore[attr-defined]
                count += HdrHistogram.decode(str(part["histogram"]).encode("ascii")).get_total_count()
        assert figures["request_count"] == count > 0
        # and what the server's own statistics say the model completed in the same windows
        assert figures["server"]["model"] == name
        assert figures["server"]["request_count"] == figures["request_count"]
        assert figures["diagnosis"] is not None
    # the shape of one run's result: the same keys, model by model
    alone = tmp_path / "alone.json"
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "-u", test_server.grpc_url, *MIX, "--json", str(alone)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 2), done.stderr
    single = json.loads(alone.read_text())
    assert set(single) == set(merged)
    assert set(single["models"][0]["levels"][0]) == set(fast)
    assert set(single["levels"][0]) == set(level)


# Synthetic logs, written with the log writer: windows of 400 ms, on a grid from a made-up --start-at.
ORIGIN_NS = 1_700_000_000 * 10**9
SYNTHETIC = Settings(
    url="localhost:8001",
    model_name="identity_uint8",
    concurrency_range="2:4:2",
    measurement_interval=400,
    max_trials=4,
    stability_percentage=1000,
    hdr_log="logs",
)
TREE = Composition("identity_uint8", "1", 1, 0, False)
MS = 1_000_000


def _synthetic_log(
    folder: Path, shard: int, late_ns: int | None = 0, shift_ns: int = 0, origin_ns: int = ORIGIN_NS
) -> Path:
    """Shard `shard` of 2's log: 100 + 10 x index requests in each window it measured on the grid from `origin_ns`
    (its windows moved by `shift_ns`); one ready `late_ns` after the grid's start has joined it at the next window;
    `late_ns` None: no grid line (a log of version 2)."""
    settings = dataclasses.replace(SYNTHETIC, shard=f"{shard}/2")
    run = plan(settings)
    log = WindowLog(str(folder), run.shard)
    log.clock = WallClock(0)  # perf_counter_ns instants are UNIX ns here
    description = RunDescription("identity_uint8", settings.url, run.mode, (), run.windows, run.rule, run.loads)
    log.header(description, settings.to_dict(), {"identity_uint8": TREE})
    grid = Grid.of(run.windows, origin_ns)
    if late_ns is not None:
        log.start(LoggedStart(grid, late_ns))
    joined = grid.position(origin_ns + (late_ns or 0))
    for number, load in enumerate(run.loads):
        for index in range(grid.per_level):
            if (number, index) < joined:
                continue
            histogram = new_histogram()
            for value in range(100 + 10 * index):
                histogram.record_value(1000 + value)
            start, end = grid.boundary(number, index) + shift_ns, grid.boundary(number, index + 1) + shift_ns
            log.window(LoggedWindow(load, number, index, Window(start, end, histogram), {}, None))
    log.end("complete")
    return log.path


def test_the_grid_a_late_run_joins_at_the_next_window() -> None:
    grid = Grid(ORIGIN_NS, 400 * MS, 3)
    tolerance = grid.tolerance_ns
    assert tolerance == 50 * MS  # a tenth of 400 ms is under the 50 ms floor
    assert grid.position(ORIGIN_NS - 5000 * MS) == (0, 0)  # early: it waits for the first window
    assert grid.position(ORIGIN_NS + tolerance) == (0, 0)  # a boundary passed within the tolerance still counts
    assert grid.position(ORIGIN_NS + tolerance + 1) == (0, 1)  # later: the next window
    assert grid.position(grid.boundary(1, 0) + 10 * MS) == (1, 0)  # level 0 is over
    assert grid.boundary(0, 3) == grid.boundary(1, 0) == ORIGIN_NS + 1200 * MS
    assert grid.position(grid.boundary(1, 1) + 60 * MS) == (1, 2)


def test_a_late_shard_on_the_grid_merges_with_its_missed_windows_reported(tmp_path: Path) -> None:
    logs = [_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1, late_ns=500 * MS)]
    assert _grid_line(logs[1]) == {
        "kind": "grid",
        "start_ns": ORIGIN_NS,
        "interval_ns": 400 * MS,
        "windows": 4,
        "late_ns": 500 * MS,
    }
    assert [w["index"] for w in _windows(logs[1]) if w["level"] == 0] == [2, 3]
    merged = merge_logs(logs)
    assert merged.status == "incomplete"
    assert "shard 1 was ready 0.50 s after --start-at and joined the grid at level 0 window 2" in merged.message
    assert "windows missing from some shard (left out): level 0 window 0, level 0 window 1" in merged.message
    # windows 2 and 3 of level 0, both shards; never fewer requests per second than were sent (spans line up)
    level = merged.levels[0]
    assert (level.windows, level.request_count) == (2, 2 * (120 + 130))
    assert level.duration_s == pytest.approx(0.8)


def test_shards_whose_windows_do_not_line_up_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shard whose grid started when it woke (as before windows were anchored to --start-at), in a log without a
    grid line: its windows are 150 ms off, and merging them would understate the throughput."""
    logs = [_synthetic_log(tmp_path, 0, None), _synthetic_log(tmp_path, 1, None, shift_ns=150 * MS)]
    with pytest.raises(
        OptionError, match=r"shard 1's level 0 window 0 is 0\.150 s off shard 0's \(more than 0\.050 s\)"
    ):
        merge_logs(logs)
    assert main(["merge", *map(str, logs)]) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: merge: shard 1's level 0 window 0") and "do not line up" in line
    # within the tolerance they merge (a busy host wakes a few ms late)
    for log in logs:
        log.unlink()
    logs = [_synthetic_log(tmp_path, 0, None), _synthetic_log(tmp_path, 1, None, shift_ns=20 * MS)]
    assert merge_logs(logs).status == "complete"


def test_shards_on_different_grids_are_refused(tmp_path: Path) -> None:
    logs = [_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1, origin_ns=ORIGIN_NS + 1000 * MS)]
    with pytest.raises(OptionError, match=r"shard 1 measured on another grid than shard 0 .*same --start-at"):
        merge_logs(logs)


def test_a_merged_level_stops_at_its_first_three_windows_that_agree(tmp_path: Path) -> None:
    """As a single run: the shards measured 4 windows per level, the level settled at its third."""
    merged = merge_logs([_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1)])
    assert merged.status == "complete"
    for level in merged.levels:
        assert level.windows == 3
        assert level.request_count == 2 * (100 + 110 + 120)  # windows 0 to 2, not the last three


# Forged logs (issue 24, item 9): checked against a schema, never a file opened, histograms decompressed with a bound;
# each refused in one line naming the file, the line and the field, exit 3.


def _forged(path: Path, line: int, change: Any) -> None:
    """Rewrite line `line` (0: the header) of a log: `change` edits its JSON object in place."""
    lines = path.read_text().splitlines()
    record = json.loads(lines[line])
    change(record)
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def _bomb() -> str:
    """An HdrHistogram-shaped encoding whose payload inflates to 256 MB of zeros (about 250 KB on the wire)."""
    deflater = zlib.compressobj(9)
    block = bytes(1 << 20)
    compressed = b"".join(deflater.compress(block) for _ in range(256)) + deflater.flush()
    return base64.b64encode(struct.pack(">II", 0x1C849314, len(compressed)) + compressed).decode()


def _refused(logs: list[Path], expected: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["merge", *map(str, logs)]) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line and "Traceback" not in line, line
    return line


@pytest.mark.parametrize(
    ("line", "change", "expected"),
    [
        (0, lambda r: r.pop("shard"), "line 1: field 'shard': missing"),
        (0, lambda r: r.pop("model"), "line 1: field 'model': missing"),
        (0, lambda r: r.update(version=0), "a window log of version 0"),
        (0, lambda r: r.update(version=-1), "a window log of version -1"),
        (0, lambda r: r.update(shard=[2, 2]), "field 'shard': [2, 2] is not [index, count]"),
        (2, lambda r: r.update(errors="abc"), "line 3: field 'errors': \"abc\" is not a map"),
        (2, lambda r: r.update(sent=-5), "field 'sent': -5 is not a whole number from 0"),
        (2, lambda r: r.update(histogram="not base64!"), "field 'histogram': not base64"),
        (2, lambda r: r.update(level="0"), "field 'level': \"0\" is not a whole number"),
        (2, lambda r: r.update(end_ns=0), "field 'end_ns': before start_ns"),
        (1, lambda r: r.update(interval_ns=0), "line 2: field 'interval_ns': 0 is not a whole number from 1"),
        (2, lambda r: r.update(kind="nope"), "field 'kind': 'nope' is none of"),
    ],
)
def test_a_forged_log_is_refused_naming_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: int, change: Any, expected: str
) -> None:
    logs = [_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1)]
    _forged(logs[1], line, change)
    assert str(logs[1]) in _refused(logs, expected, capsys)


def test_a_histogram_bomb_is_refused_within_a_bounded_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = [_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1)]
    bomb = _bomb()
    _forged(logs[1], 2, lambda r: r.update(histogram=bomb))
    tracemalloc.start()
    try:
        _refused(logs, "field 'histogram': its payload is not 40 to", capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.1f} MiB"


def test_a_log_never_makes_merge_open_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret"
    secret.write_text("SECRET-VALUE\n")
    logs = [_synthetic_log(tmp_path, 0), _synthetic_log(tmp_path, 1)]
    for log in logs:
        _forged(
            log,
            0,
            lambda r: r["settings"].update(request_intervals=str(secret), ssl_https_ca_certificates_file=str(secret)),
        )
    code = main(["merge", *map(str, logs)])
    output = capsys.readouterr()
    assert "SECRET" not in output.out + output.err
    assert code == 0, output.err  # merged as the open loop it was
