"""Work left on the server, against the real tritonserver 2.51: a run after an overload waits for the queue the
overload left before its first window; a second client loading the model during a level gets the level flagged as
shared; stopping cancels what is in flight, and a dynamic batcher drops it from its queue."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from rich.console import Console

import loadgen
from loadgen.measurement import WindowSummary
from loadgen.plan import Load
from loadgen.reports.console import ConsoleProgress
from loadgen.results import LevelResult, RunDescription
from loadgen.server import EmbeddedServer
from tests.helpers import TEST_MODELS, serve

PIPELINE = "pipeline_three_slow_tail"  # fast_step -> relay_step -> slow_step (20 ms, one instance: 50/s)
MODELS = ("fast_step", "relay_step", "slow_step", PIPELINE, "sleeper")
OPTIONS: dict[str, Any] = {
    "input_data": "zero",
    "shape": {"INPUT0": [8]},
    "measurement_interval": 1000,
    "stability_percentage": 1000,
    "max_trials": 3,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The test repository's three-step pipeline and the sleeper, on a server of this module's own (its queues are
    left to these tests alone)."""
    yield from serve(
        TEST_MODELS, tmp_path_factory.mktemp("leftovers-server"), explicit_model_control=True, load_models=MODELS
    )


class _Progress:
    """Keeps the notes (and calls `on_note` with each); starts `on_first_window` once the first window closed."""

    def __init__(
        self, on_first_window: threading.Thread | None = None, on_note: Callable[[str], None] | None = None
    ) -> None:
        self.notes: list[str] = []
        self.on_first_window = on_first_window
        self.on_note = on_note
        self.windows = 0

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.on_note is not None:
            self.on_note(text)

    def started(self, run: RunDescription) -> None:
        pass

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None:
        self.windows += 1
        if self.on_first_window is not None and self.windows == 1:
            self.on_first_window.start()

    def level(self, level: LevelResult) -> None:
        pass


def _counts(server: EmbeddedServer, model: str) -> tuple[int, int]:
    """The server's successful and failed requests of a model so far."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model).model_stats
        return sum(s.inference_stats.success.count for s in stats), sum(s.inference_stats.fail.count for s in stats)
    finally:
        client.close()


@pytest.mark.server
def test_a_run_after_an_overload_waits_for_the_queue_it_left_before_its_first_window(server: EmbeddedServer) -> None:
    """Issue 23's sequence: an open loop at 3x the slow last step's capacity leaves a queue in that step when it
    stops (loadgen cancels what is still in flight, but tritonserver 2.51 runs the step requests an ensemble already
    queued anyway); the capped run right after waits until the server's counters stand still, and then no window
    holds anyone else's requests. Stopping a run while it waits ends it at once."""
    overload = loadgen.profile_sync(server.grpc_url, PIPELINE, request_rate=[150], **OPTIONS)
    assert overload.levels and not any(level.shared for level in overload.levels)  # a fresh server: nothing shared
    stop = asyncio.Event()

    def stop_waiting(note: str) -> None:
        if note.startswith("waiting until the server has no work left"):
            stop.set()

    progress = _Progress(on_note=stop_waiting)
    stopped = loadgen.run(
        loadgen.profile(server.grpc_url, PIPELINE, request_rate=[150], progress=progress, stop=stop, **OPTIONS)
    )
    assert stop.is_set(), progress.notes
    assert (stopped.status, stopped.levels, stopped.server_idle) == ("interrupted", (), None)
    progress = _Progress()
    capped = loadgen.profile_sync(
        server.grpc_url, PIPELINE, request_rate=[150], max_in_flight=4, progress=progress, **OPTIONS
    )
    waiting = [note for note in progress.notes if note.startswith("waiting until the server has no work left")]
    assert waiting and PIPELINE in waiting[0] and "slow_step" in waiting[0], progress.notes
    assert capped.server_idle is not None and capped.server_idle.idle, progress.notes
    assert capped.levels and all(level.sharing is not None for level in capped.levels)
    assert not any(level.shared for level in capped.levels), [level.sharing for level in capped.levels]
    assert capped.to_dict()["server_idle"]["idle"] is True


def _second_client(url: str, stop: threading.Event, clients: int = 4) -> threading.Thread:
    """Another client: `clients` threads sending the pipeline requests back to back until `stop` is set."""

    def send() -> None:
        client = grpcclient.InferenceServerClient(url)
        request = grpcclient.InferInput("INPUT0", [8], "UINT8")
        request.set_data_from_numpy(np.zeros(8, dtype=np.uint8))
        try:
            while not stop.is_set():
                client.infer(PIPELINE, [request])
        finally:
            client.close()

    def run() -> None:
        senders = [threading.Thread(target=send, daemon=True) for _ in range(clients)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    return threading.Thread(target=run, daemon=True)


@pytest.mark.server
def test_a_second_client_on_the_same_model_gets_the_level_flagged_as_shared(server: EmbeddedServer) -> None:
    """Another client starts loading the pipeline once the level's first window closed: the server's count of the
    pipeline's requests in the later windows is far above loadgen's, the level is flagged (in its JSON and on the
    console), and the diagnosis computes no capacity from it."""
    stop = threading.Event()
    other = _second_client(server.grpc_url, stop)
    progress = _Progress(on_first_window=other)
    try:
        result = loadgen.profile_sync(server.grpc_url, PIPELINE, concurrency=2, progress=progress, **OPTIONS)
    finally:
        stop.set()
        if other.is_alive():
            other.join(timeout=30)
    [level] = result.levels
    assert level.shared and level.sharing is not None, level.sharing
    assert level.sharing.server_requests > level.sharing.loadgen_requests + level.sharing.edge_requests
    assert result.to_dict()["levels"][0]["sharing"]["shared"] is True
    diagnosis = level.diagnosis
    assert diagnosis is not None and diagnosis.shared and diagnosis.predicted_max_throughput is None
    assert diagnosis.utilization == {} and level.bottleneck is None
    out = StringIO()
    report = ConsoleProgress(Console(file=out, width=200))
    report.level(level)
    report.finished(result)
    text = out.getvalue()
    assert f"SHARED: the server completed {level.sharing.server_requests} requests of {PIPELINE}" in text
    assert "Diagnosis: none, the server was shared" in text


@pytest.mark.server
@pytest.mark.parametrize("transport", ["raw", "library"])
def test_stopping_cancels_what_is_in_flight_and_a_dynamic_batcher_drops_it(
    server: EmbeddedServer, transport: str
) -> None:
    """An open loop at 3x the sleeper's capacity, with dynamic batching: when the run stops, what is still in flight
    after the grace period is cancelled (RST_STREAM CANCEL, by loadgen's HTTP/2 or by grpcio), and the server drops it
    from its queue (counted as failed) instead of running it: nothing more completes once the run has returned.
    (Over HTTP loadgen closes the connections, but tritonserver 2.51 runs their requests all the same.)"""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        config = client.get_model_config("sleeper", as_json=True)["config"]
        if "dynamic_batching" not in config:
            client.load_model("sleeper", config=json.dumps({**config, "dynamic_batching": {}}))
    finally:
        client.close()
    before = _counts(server, "sleeper")
    loadgen.profile_sync(server.grpc_url, "sleeper", request_rate=[150], transport=transport, **OPTIONS)
    time.sleep(0.5)  # what was at work when the run returned completes
    stopped = _counts(server, "sleeper")
    time.sleep(1.0)
    assert _counts(server, "sleeper") == stopped  # no queue left to run
    assert stopped[1] > before[1]  # the cancelled requests were dropped from the queue
