"""Ray: one shard of the load per worker, placed across a cluster's nodes; only window reports travel back.

Optional (`pip install 'loadgen[ray]'`), imported only when `--ray-address` is given. Each worker is a threaded
Ray actor that runs an ordinary sharded profile (`--shard i/K --start-at T --hdr-log`) on its own uvloop loop and
lets the driver read its window log as it grows; the driver shows the windows every shard has finished, merged, and
builds the result with `loadgen merge`'s code. Every Ray call has a timeout.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadgen.errors import LoadgenError, MissingExtraError
from loadgen.measurement import Window, combine, summarize
from loadgen.plan import LevelRule, RunPlan, Shard, plan
from loadgen.results import ProfileResult
from loadgen.settings import Settings
from loadgen.shards.log import log_name, read_window
from loadgen.shards.merge import merge_logs
from loadgen.sweep import Progress

if importlib.util.find_spec("ray") is None:
    raise MissingExtraError("--ray-address", "ray", "ray")

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps 127.0.0.1 instead of the routable address


def _join(address: str) -> None:
    """Join the cluster. A cluster on 127.0.0.1 stays on loopback: Ray otherwise swaps in the machine's address
    (this must be set before ray is first imported; start the cluster with the same variable)."""
    host = address.rpartition(":")[0] if address != "auto" else ""
    if host in ("127.0.0.1", "localhost"):
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    try:
        ray.init(address=address, _node_ip_address=host or None, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise LoadgenError(f"Ray: cannot join the cluster at {address}: {str(error).splitlines()[0]}") from None


CALL_TIMEOUT_S = 60.0
PLACEMENT_TIMEOUT_S = 20.0  # a cluster that cannot place the workers says so instead of waiting
START_DELAY_S = 3.0  # the shared start time is this far ahead of the moment every worker is ready
POLL_S = 1.0


class ShardWorker:
    """A Ray actor running one shard of the profile; `lines` may be called while `run` is busy (threaded actor)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="loadgen-ray-"))
        self.path: Path | None = None

    def ready(self) -> str:
        import ray

        import loadgen  # noqa: F401  (imported before the barrier: start-up cost stays out of the run)

        return str(ray.util.get_node_ip_address())

    def run(self, settings: Settings) -> str:
        """Run the shard to the end on a loop of its own; returns its status."""
        import uvloop

        from loadgen.sweep import profile

        settings = dataclasses.replace(settings, hdr_log=str(self.folder))
        self.path = self.folder / log_name(plan(settings).shard)
        try:
            return uvloop.run(profile(settings=settings)).status
        except LoadgenError as error:
            return f"failed: {error}"

    def lines(self, start: int) -> list[str]:
        """The lines of its window log from line `start` on (the log is flushed line by line)."""
        if self.path is None or not self.path.exists():
            return []
        return self.path.read_text(encoding="utf-8").splitlines()[start:]


def _get(refs: Any, what: str, timeout_s: float = CALL_TIMEOUT_S) -> Any:
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise LoadgenError(f"Ray: {what} did not finish within {timeout_s:.0f} s") from None
    except ray.exceptions.RayError as error:
        raise LoadgenError(f"Ray: {what} failed: {str(error).splitlines()[0]}") from None


def profile_on_ray(
    settings: Settings, address: str, workers_per_node: int = 1, progress: Progress | None = None
) -> ProfileResult:
    """Profile with one shard per worker on the Ray cluster at `address` (`auto` or HOST:PORT)."""
    _join(address)
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        count = len(nodes) * workers_per_node
        group = placement_group([{"CPU": 1}] * count, strategy="STRICT_SPREAD" if workers_per_node == 1 else "SPREAD")
        try:
            _get(group.ready(), f"placing {count} workers (one CPU each) on {len(nodes)} nodes", PLACEMENT_TIMEOUT_S)
            return _run(settings, group, count, progress)
        finally:
            remove_placement_group(group)
    finally:
        ray.shutdown()


def _run(settings: Settings, group: Any, count: int, progress: Progress | None) -> ProfileResult:
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    actor = ray.remote(ShardWorker)
    workers: list[Any] = [
        actor.options(
            num_cpus=1,
            max_concurrency=2,  # `lines` answers while `run` works
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
        ).remote()
        for i in range(count)
    ]
    _get([worker.ready.remote() for worker in workers], "starting the workers")  # the ready barrier
    start_at = time.time() + START_DELAY_S
    runs = [
        worker.run.remote(
            dataclasses.replace(settings, shard=f"{i}/{count}", start_at=start_at, hdr_log="the worker's own")
        )
        for i, worker in enumerate(workers)
    ]
    seen = [0] * count
    logs: list[list[str]] = [[] for _ in range(count)]
    run = plan(settings)
    live = _LiveView(count, run.rule, progress)
    budget = _duration_s(run) + CALL_TIMEOUT_S
    deadline = time.monotonic() + budget
    pending = list(runs)
    while pending:
        if time.monotonic() > deadline:
            raise LoadgenError(f"Ray: the workers did not finish within {budget:.0f} s")
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for index, worker in enumerate(workers):
            new = _get(worker.lines.remote(seen[index]), f"reading worker {index}'s windows")
            seen[index] += len(new)
            logs[index] += new
            live.add(new)
    statuses: list[str] = _get(runs, "the workers' runs")
    failures = [f"worker {index}: {status}" for index, status in enumerate(statuses) if status.startswith("failed")]
    if len(failures) == count:
        raise LoadgenError(f"Ray: every worker failed; {failures[0]}")
    with tempfile.TemporaryDirectory(prefix="loadgen-ray-merge-") as folder:
        paths = []
        for index, lines in enumerate(logs):
            path = Path(folder) / log_name(Shard(index, count))
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            paths.append(path)
        result = merge_logs(paths)
    if failures:  # the merge reports the windows they lack; this says why
        message = "; ".join(filter(None, [result.message, *failures]))
        result = dataclasses.replace(result, status="incomplete", message=message)
    return result


class _LiveView:
    """Shows each window once every worker has reported it, merged, through the usual progress display."""

    def __init__(self, count: int, rule: LevelRule, progress: Progress | None) -> None:
        self.count = count
        self.rule = rule
        self.progress = progress
        self.parts: dict[tuple[int, int], list[Window]] = defaultdict(list)

    def add(self, lines: list[str]) -> None:
        for line in lines:
            record = json.loads(line)
            if record["kind"] != "window" or self.progress is None:
                continue
            logged = read_window(record)
            parts = self.parts[(logged.level, logged.index)]
            parts.append(logged.window)
            if len(parts) == self.count:
                merged = summarize(combine(parts), self.rule.batch_size, self.rule.percentile)
                self.progress.window(logged.load, logged.index + 1, merged, False)


def _duration_s(run: RunPlan) -> float:
    """The longest a sharded sweep can take: every level's windows, plus warm-up slack."""
    return START_DELAY_S + len(run.loads) * run.windows.max_windows * (run.windows.interval_ms / 1000 + 2)
