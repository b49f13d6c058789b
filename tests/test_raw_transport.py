"""Both transports (`--transport raw`, loadgen's own HTTP/1.1 and HTTP/2, and `library`, aiohttp and grpcio) over
both protocols against the real server: the same results, statistics and errors; asserted on the server's own
statistics, never on timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.helpers import MISMATCH, SAMPLE_JPEG, registered_regions, successes

QUICK: dict[str, Any] = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 4}
TRANSPORTS = pytest.mark.parametrize("transport", ["raw", "library"])
EVERY_PATH = pytest.mark.parametrize(
    ("protocol", "transport"), [(p, t) for p in ("grpc", "http") for t in ("raw", "library")]
)


def _profile(server: EmbeddedServer, protocol: str, transport: str, model: str, **options: Any) -> Any:
    return loadgen.profile_sync(
        server.url(protocol), model, protocol=protocol, transport=transport, **{**QUICK, **options}
    )


@EVERY_PATH
def test_the_identity_model_in_both_load_modes(examples_server: EmbeddedServer, protocol: str, transport: str) -> None:
    before = successes(examples_server, "identity_uint8")
    closed = _profile(examples_server, protocol, transport, "identity_uint8", concurrency="1:16:15")
    opened = _profile(examples_server, protocol, transport, "identity_uint8", request_rate=200)
    levels = [*closed.levels, *opened.levels]
    for level in levels:
        assert level.error_count == 0 and level.request_count > 0, level.errors
    assert successes(examples_server, "identity_uint8") - before >= sum(level.request_count for level in levels)
    assert closed.settings["transport"] == transport


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_seeds_ensemble_with_its_jpeg_over_the_raw_path(examples_server: EmbeddedServer, protocol: str) -> None:
    """The 90 KB image is larger than an HTTP/2 stream's first window: the request waits for WINDOW_UPDATE."""
    assert SAMPLE_JPEG.stat().st_size > 65_535
    before = successes(examples_server, "preprocessing")
    result = _profile(
        examples_server, protocol, "raw", "ensemble_python_resnet50", input_data=str(SAMPLE_JPEG), concurrency=4
    )
    level = result.levels[0]
    assert level.error_count == 0 and level.request_count > 0, level.errors
    assert successes(examples_server, "preprocessing") - before >= level.request_count
    assert result.bottleneck is not None and result.bottleneck.model == "preprocessing"


@EVERY_PATH
def test_sequences_with_validation_data(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    data = tmp_path / "sequences.json"
    data.write_text(
        json.dumps(
            {
                "data": [[{"VALUE": [1]}, {"VALUE": [2]}, {"VALUE": [3]}], [{"VALUE": [10]}, {"VALUE": [20]}]],
                "validation_data": [[{"SUM": [1]}, {"SUM": [3]}, {"SUM": [6]}], [{"SUM": [10]}, {"SUM": [30]}]],
            }
        )
    )
    before = successes(test_server, "accumulator")
    result = _profile(test_server, protocol, transport, "accumulator", input_data=str(data), concurrency=3)
    level = result.levels[0]
    assert level.error_count == 0 and level.request_count > 0, level.errors
    assert successes(test_server, "accumulator") - before >= level.request_count


@EVERY_PATH
def test_the_same_errors_over_every_path(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"data": [{"TEXT": ["ab"]}, {"TEXT": ["abc"]}], "validation_data": [{"LENGTHS": [2]}, {"LENGTHS": [4]}]}
        )
    )
    result = _profile(test_server, protocol, transport, "strings", input_data=str(bad), max_error_rate=1.0)
    level = result.levels[0]
    assert level.errors == {MISMATCH: level.error_count}
    assert abs(level.error_count - level.request_count) <= 2

    timeouts = _profile(
        test_server,
        protocol,
        transport,
        "sleeper",
        input_data="zero",
        shape={"INPUT0": [8]},
        request_timeout=5,
        request_count=4,
        max_error_rate=1,
    )
    assert timeouts.levels[0].errors == {"timeout: no answer within 5 ms": 4}

    with pytest.raises(loadgen.ModelRejectedError) as rejected:
        _profile(test_server, protocol, transport, "mixed_inputs", shape={"TOKENS": [6]})
    expected = "INTERNAL" if protocol == "grpc" else "HTTP 500"
    assert f"rejected the request: {expected}" in str(rejected.value) and "TOKENS out of range" in str(rejected.value)


@TRANSPORTS
def test_a_decoupled_model_streams_in_both_load_modes(
    test_server: EmbeddedServer, tmp_path: Path, transport: str
) -> None:
    data = tmp_path / "counts.json"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}, {"COUNT": [5]}]}))
    before = successes(test_server, "streamer")
    closed = _profile(test_server, "grpc", transport, "streamer", streaming=True, input_data=str(data), concurrency=2)
    opened = _profile(
        test_server, "grpc", transport, "streamer", streaming=True, input_data=str(data), request_rate=100
    )
    for level in [*closed.levels, *opened.levels]:
        assert level.error_count == 0 and level.request_count > 0, level.errors
        assert 3 <= level.responses_per_request <= 5  # requests alternate between 3 and 5 responses
    total = sum(level.request_count for level in [*closed.levels, *opened.levels])
    assert successes(test_server, "streamer") - before >= total


@TRANSPORTS
def test_validation_over_streams(test_server: EmbeddedServer, tmp_path: Path, transport: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"data": [{"TEXT": ["ab"]}, {"TEXT": ["xyz"]}], "validation_data": [{"LENGTHS": [2]}, {"LENGTHS": [4]}]}
        )
    )
    for load in ({"concurrency": 2}, {"request_rate": 100}):
        result = _profile(
            test_server, "grpc", transport, "strings", streaming=True, input_data=str(bad), max_error_rate=1.0, **load
        )
        level = result.levels[0]
        assert level.errors == {MISMATCH: level.error_count}, load
        assert abs(level.error_count - level.request_count) <= 2, load


@EVERY_PATH
def test_shared_memory(test_server: EmbeddedServer, protocol: str, transport: str) -> None:
    before = successes(test_server, "batched_double")
    result = _profile(
        test_server, protocol, transport, "batched_double", batch_size=2, shared_memory="system", concurrency=2
    )
    level = result.levels[0]
    assert level.error_count == 0 and level.request_count > 0, level.errors
    assert successes(test_server, "batched_double") - before >= level.request_count
    assert not [name for name in registered_regions(test_server) if name.startswith("loadgen_")]


def test_an_unknown_transport_is_a_bad_option() -> None:
    with pytest.raises(loadgen.OptionError, match="--transport 'fast': choose raw or library"):
        loadgen.Settings(transport="fast")
