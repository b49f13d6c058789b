"""System shared memory against the real server, over both protocols: tensors go through registered regions, and
every region is unregistered and freed however the run ends."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import shared_memory as shm

import loadgen
from loadgen.inputs import encode_requests, load_data
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings
from loadgen.shared_memory import place
from loadgen.transport import ConnectionOptions, connect
from tests.helpers import registered_regions, successes

QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 4}
BOTH = pytest.mark.parametrize("protocol", ["grpc", "http"])


def _ours() -> list[str]:
    """This process's loadgen regions still present in /dev/shm."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"loadgen_{os.getpid()}_*"))


@BOTH
def test_tensors_travel_through_the_registered_regions(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [{"INPUT0": [1, 2, 3, 4]}, {"INPUT0": [5, 6, 7, 8]}]}))
    settings = Settings(
        url=test_server.url(protocol),
        protocol=protocol,
        model_name="batched_double",
        input_data=str(data),
        batch_size=2,
        shared_memory="system",
    )

    async def run() -> tuple[list[np.ndarray], list[str]]:
        connection = connect(ConnectionOptions.from_settings(settings))
        try:
            model = await connection.model_info("batched_double")
            samples = load_data(model, settings)
            regions, placements = await place(connection, model, samples.samples, settings)
            try:
                registered = registered_regions(test_server)
                requests = encode_requests(connection.wire, model, samples, settings, placements)
                [(name, output)] = placements.outputs
                assert name == "OUTPUT0" and output.size == 2 * 4 * 4  # the metadata fixes its size
                handle = dict(regions.handles)[output.region]
                seen = []
                for payload in requests.payloads:
                    await connection.infer(payload)
                    seen.append(shm.get_contents_as_numpy(handle, np.float32, [2, 4]).copy())
                return seen, registered
            finally:
                await regions.release()
        finally:
            await connection.close()

    seen, registered = asyncio.run(run())
    # the model read each sample from the input region and wrote its double into the output region
    assert [array.tolist() for array in seen] == [[[2, 4, 6, 8]] * 2, [[10, 12, 14, 16]] * 2]
    assert len(registered) == 2 and all(name.startswith(f"loadgen_{os.getpid()}_") for name in registered)
    assert registered_regions(test_server) == [] and _ours() == []


@BOTH
@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("batched_double", {"batch_size": 2, "concurrency_range": 2}),
        ("strings", {"shape": {"TEXT": [3]}, "string_data": "hello"}),  # BYTES, outputs of unknown size
        ("accumulator", {"input_range": {"VALUE": (0, 9)}, "concurrency_range": 2}),  # sequences
        ("fast_step", {"shape": {"INPUT0": [16]}, "concurrency_range": 2, "workers": 2}),  # regions of the parent
    ],
)
def test_a_profile_through_shared_memory(
    test_server: EmbeddedServer, protocol: str, model: str, options: dict[str, Any]
) -> None:
    before = successes(test_server, model)
    result = loadgen.profile_sync(
        test_server.url(protocol), model, protocol=protocol, shared_memory="system", **options, **QUICK
    )
    level = result.levels[0]
    assert result.status == "complete"
    assert level.error_count == 0 and level.request_count > 0, level.errors
    assert successes(test_server, model) - before >= level.request_count
    assert level.server is not None and level.server.request_count > 0
    assert registered_regions(test_server) == [] and _ours() == []


def test_an_output_region_too_small_is_a_clear_error_and_nothing_staysregistered_regions(
    test_server: EmbeddedServer,
) -> None:
    with pytest.raises(loadgen.ModelRejectedError, match="shared memory"):
        loadgen.profile_sync(
            test_server.grpc_url,
            "strings",
            shape={"TEXT": [3]},
            shared_memory="system",
            output_shared_memory_size=4,
            **QUICK,
        )
    assert registered_regions(test_server) == [] and _ours() == []


@BOTH
def test_interrupted_and_cancelled_runs_release_their_regions(test_server: EmbeddedServer, protocol: str) -> None:
    options: dict[str, Any] = {"protocol": protocol, "shared_memory": "system", "concurrency_range": "1:20", **QUICK}
    url = test_server.url(protocol)

    class StopAfterOneWindow:
        def __init__(self, stop: asyncio.Event) -> None:
            self.stop = stop

        def started(self, *args: object) -> None:
            pass

        def window(self, *args: object) -> None:
            self.stop.set()

        def level(self, *args: object) -> None:
            pass

    async def interrupted() -> loadgen.ProfileResult:
        stop = asyncio.Event()
        return await loadgen.profile(
            url, "fast_step", shape={"INPUT0": [4]}, stop=stop, progress=StopAfterOneWindow(stop), **options
        )

    async def cancelled() -> list[str]:
        task = asyncio.ensure_future(loadgen.profile(url, "fast_step", shape={"INPUT0": [4]}, **options))
        deadline = time.monotonic() + 60
        while len(registered := registered_regions(test_server)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the input region is registered first, then the output's
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return registered

    assert asyncio.run(interrupted()).status == "interrupted"
    assert registered_regions(test_server) == [] and _ours() == []
    assert len(asyncio.run(cancelled())) == 2  # the input region and the output's
    assert registered_regions(test_server) == [] and _ours() == []


def test_validation_data_is_refused_with_shared_memory(test_server: EmbeddedServer, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [{"TEXT": ["ab"]}], "validation_data": [{"LENGTHS": [2]}]}))
    with pytest.raises(loadgen.OptionError, match="validation_data is not supported with --shared-memory"):
        loadgen.profile_sync(test_server.grpc_url, "strings", input_data=str(data), shared_memory="system", **QUICK)
    assert registered_regions(test_server) == [] and _ours() == []
