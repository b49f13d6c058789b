"""Shards on a Ray cluster confined to loopback: two workers against the embedded server, merged as one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen.server import EmbeddedServer, free_port
from tests.helpers import successes

RAY = str(Path(sys.executable).parent / "ray")


def _loadgen(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadgen", "-u", url, "-m", "identity_uint8", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and text in command:
            found.append(command)
    return found


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, dict[str, str], str]]:
    """A one-node Ray cluster on 127.0.0.1, its home and temporary directory in a folder of its own; started once for
    this module's tests (each run's workers end with it)."""
    folder = tempfile.mkdtemp(prefix="lgray")  # short: Ray's socket paths must fit in 107 characters
    env = {**os.environ, "HOME": folder, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    command = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    command += ["--include-dashboard", "false", "--temp-dir", f"{folder}/t", "--disable-usage-stats"]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"127.0.0.1:{port}", env, folder
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)
        left = _processes_mentioning(folder)
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"Ray processes left running: {left}"


def test_two_ray_workers_profile_as_one_run(
    ray_cluster: tuple[str, dict[str, str], str], examples_server: EmbeddedServer, tmp_path: Path
) -> None:
    address, env, folder = ray_cluster
    # the cluster stays on loopback: Ray would otherwise advertise the machine's routable address
    servers = [c for c in _processes_mentioning(folder) if "gcs_server" in c]
    assert servers and all("--node-ip-address=127.0.0.1" in c for c in servers)
    out = tmp_path / "ray.json"
    done = _loadgen(
        env,
        examples_server.grpc_url,
        "--concurrency-range",
        "2:4:2",
        "-p",
        "400",
        "-r",
        "3",
        "-s",
        "1000",
        "--ray-address",
        address,
        "--workers-per-node",
        "2",
        "--json",
        str(out),
    )
    assert done.returncode in (0, 2), done.stdout + done.stderr
    assert "window 1:" in done.stdout  # the live, merged view of the workers' windows
    result = json.loads(out.read_text())
    assert result["status"] == "complete"
    assert result["settings"]["shard"] == "merged from 2 of 2 shards"
    assert [level["concurrency"] for level in result["levels"]][:1] == [2]
    assert all(level["request_count"] > 0 for level in result["levels"])
    assert result["levels"][0]["server"]["request_count"] > 0


def test_workers_the_cluster_cannot_place_are_a_clear_error(
    ray_cluster: tuple[str, dict[str, str], str], examples_server: EmbeddedServer
) -> None:
    address, env, _ = ray_cluster
    done = _loadgen(
        env,
        examples_server.grpc_url,
        "--ray-address",
        address,
        "--workers-per-node",
        "3",
        "-p",
        "300",
    )
    assert done.returncode == 99, done.stdout + done.stderr
    assert "placing 3 workers" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_ray_workers_split_a_mix_model_by_model(
    ray_cluster: tuple[str, dict[str, str], str], test_server: EmbeddedServer, tmp_path: Path
) -> None:
    """A closed-loop mix over the workers: each takes its part of every model's concurrency; the merge rebuilds
    each model's level."""
    address, env, _ = ray_cluster
    before = {model: successes(test_server, model) for model in ("fast_step", "sleeper")}
    out = tmp_path / "ray-mix.json"
    command = [sys.executable, "-m", "loadgen", "-u", test_server.grpc_url, "--model-mix", "fast_step:3,sleeper:2"]
    command += ["--shape", "INPUT0:4", "-p", "400", "-r", "3", "-s", "1000", "--ray-address", address]
    command += ["--workers-per-node", "2", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 2), done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "complete"
    assert result["settings"]["shard"] == "merged from 2 of 2 shards"
    [level] = result["levels"]
    assert level["concurrency"] == 5
    fast, sleeper = (model["levels"][0] for model in result["models"])
    assert (fast["model"], fast["concurrency"], sleeper["model"], sleeper["concurrency"]) == (
        "fast_step",
        3,
        "sleeper",
        2,
    )
    assert fast["request_count"] + sleeper["request_count"] == level["request_count"]
    for figures in (fast, sleeper):
        assert figures["request_count"] > 0 and figures["server"]["model"] == figures["model"]
        # the server completed at least what the windows counted (and the requests between them)
        assert successes(test_server, figures["model"]) - before[figures["model"]] >= figures["request_count"]
