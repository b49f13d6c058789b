"""The library API against the real server: positional url and model, the blocking twin, cancellation."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.measurement import WindowSummary
from loadgen.plan import Load
from loadgen.results import LevelResult
from loadgen.server import EmbeddedServer

MODEL = "identity_uint8"
FOREVER = {"concurrency": 2, "measurement_interval": 600_000}  # one window would last ten minutes
QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 5}


def _served(url: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        return sum(s.inference_count for s in client.get_inference_statistics(MODEL).model_stats)
    finally:
        client.close()


def _wait_for_load(url: str) -> None:
    """Return once the server is serving requests (it counts more than a moment ago)."""
    first = _served(url)
    while _served(url) < first + 100:
        time.sleep(0.05)


def _assert_load_stopped(url: str) -> None:
    time.sleep(0.5)  # requests cancelled in flight may still finish on the server
    settled = _served(url)
    time.sleep(0.5)
    assert _served(url) == settled


class _Recorder:
    """A progress receiver that notes the loads it saw."""

    def __init__(self) -> None:
        self.loads: list[Load] = []

    def started(self, run: loadgen.RunDescription) -> None:
        pass

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None:
        self.loads.append(load)

    def level(self, level: LevelResult) -> None:
        pass


def test_the_public_api_changes_only_on_purpose() -> None:
    assert sorted(loadgen.__all__) == [
        *("Bottleneck", "Comparison", "EmbeddedServer", "Experiment", "InputDescription", "LatencyStats"),
        *("LevelChange", "LevelResult", "LoadgenError", "MissingExtraError", "ModelRejectedError", "OptionError"),
        *("ProfileResult", "Progress", "RequestRecord", "RunDescription", "ServerError", "Settings", "Trial"),
        *("TuneResult", "TuneSettings"),
        *("compare", "load_result"),
        *("profile", "profile_sync", "run", "tune"),
    ]
    assert all(hasattr(loadgen, name) for name in loadgen.__all__)


def test_url_and_model_positionally_with_the_cli_aliases(examples_server: EmbeddedServer) -> None:
    progress = _Recorder()
    result = loadgen.profile_sync(examples_server.grpc_url, MODEL, concurrency=[1, 2], progress=progress, **QUICK)
    assert (result.model, [level.concurrency for level in result.levels]) == (MODEL, [1, 2])
    assert {load.concurrency for load in progress.loads} == {1, 2}
    assert result.settings["concurrency_range"] == [1, 2]


@pytest.mark.timeout(120)
def test_cancelling_the_awaited_call_stops_the_load(examples_server: EmbeddedServer) -> None:
    url = examples_server.grpc_url

    async def cell() -> None:
        task = asyncio.create_task(loadgen.profile(url, MODEL, **FOREVER))
        await asyncio.to_thread(_wait_for_load, url)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cell())
    _assert_load_stopped(url)


@pytest.mark.timeout(120)
def test_interrupting_the_blocking_call_inside_a_running_loop_stops_the_load(examples_server: EmbeddedServer) -> None:
    """As a notebook's "interrupt kernel" does: SIGINT, so KeyboardInterrupt in the thread that waits."""
    url = examples_server.grpc_url

    def interrupt_when_loaded() -> None:
        _wait_for_load(url)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # what the kernel gets

    async def cell() -> None:
        threading.Thread(target=interrupt_when_loaded, daemon=True).start()
        loadgen.profile_sync(url, MODEL, **FOREVER)

    loop = asyncio.new_event_loop()  # like a kernel's loop: no SIGINT handler of its own
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("loadgen")]
    _assert_load_stopped(url)


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_command_and_writes_what_it_measured(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    url = examples_server.grpc_url
    command = [sys.executable, "-m", "loadgen", "-u", url, "-m", MODEL, "--concurrency", "2", "-p", "600000"]
    command += ["--json", str(tmp_path / "result.json"), "-f", str(tmp_path / "result.csv")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_load(url)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    # the window cut short is kept, marked interrupted, in complete files (written atomically)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.csv", "result.json"]
    document = json.loads((tmp_path / "result.json").read_text())
    assert document["status"] == "interrupted"
    assert document["levels"][0]["complete"] is False
    _assert_load_stopped(url)
