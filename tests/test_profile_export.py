"""--profile-export-file: perf_analyzer's JSON of every request, the writer field by field, the bounded recording,
end to end against the real server (both protocols, both loops, a sequence model, a decoupled model over streams),
and against the real perf_analyzer 2.51's own export of the same run."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loadgen
from loadgen.cli import main, perf_analyzer
from loadgen.inputs import Requests
from loadgen.load import LocalGenerator
from loadgen.plan import plan
from loadgen.records import RequestLog
from loadgen.reports.profile_export import write_export
from loadgen.results import Experiment, ProfileResult, RequestRecord
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings
from loadgen.transport import ConnectionOptions, GrpcConnection, Tensor
from tests.helpers import FAST, QUICK, real_perf_analyzer

REQUEST_KEYS = ["timestamp", "request_inputs", "response_timestamps", "response_outputs"]
SEQUENCE_KEYS = ["timestamp", "sequence_id", "request_inputs", "response_timestamps", "response_outputs"]
TOP_KEYS = ["experiments", "version", "service_kind", "endpoint"]
IDENTITY_DATA = list(range(100, 116))  # the identity model's one input, 16 UINT8 values


def _bytes(*elements: bytes) -> bytes:
    """A BYTES tensor's content on the wire: each element after its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _result(*experiments: Experiment, mode: str = "concurrency") -> ProfileResult:
    return ProfileResult("m", "localhost:8001", mode, (), (), {}, experiments=experiments)  # type: ignore[arg-type]


# the writer, field by field


def test_the_writer_renders_every_field_as_perf_analyzer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = (
        Tensor("U8", "UINT8", (3,), bytes([1, 2, 3])),
        Tensor("ONE", "INT32", (1,), np.array([-7], np.int32).tobytes()),
        Tensor("TEXT", "BYTES", (1,), _bytes(b"hello")),
        Tensor("TEXTS", "BYTES", (2,), _bytes(b"ab", "wörld".encode())),
        Tensor("HALF", "FP16", (2,), np.array([1, 2], np.float16).tobytes()),
        Tensor("FLAG", "BOOL", (1,), np.array([True]).tobytes()),
        Tensor("F32", "FP32", (2,), np.array([0.5, 0.1], np.float32).tobytes()),
        Tensor("EMPTY", "INT64", (0,), b""),
    )
    outputs = ((Tensor("OUT", "INT32", (1,), np.array([0], np.int32).tobytes()),), (Tensor("OUT", "INT32", (0,), b""),))
    plain = RequestRecord(10, 0, inputs, (20, 30), outputs)
    sequenced = RequestRecord(40, 7, inputs[:1], (50,), outputs[:1])
    path = tmp_path / "export.json"
    write_export(
        _result(
            Experiment("concurrency", 2, (plain, sequenced), (5, 35, 60)),
            Experiment("request_rate", 20.0, (), (70, 80)),
        ),
        path,
    )
    text = path.read_text(encoding="utf-8")
    assert not text.endswith("\n") and ", " not in text and ": " not in text  # compact, as rapidjson writes it
    document = json.loads(text)
    assert list(document) == TOP_KEYS
    assert (document["version"], document["service_kind"], document["endpoint"]) == ("2.51.0", "triton", "")
    first, second = document["experiments"]
    assert list(first) == ["experiment", "requests", "window_boundaries"]
    assert first["experiment"] == {"mode": "concurrency", "value": 2}
    assert '"experiment":{"mode":"request_rate","value":20.0}' in text  # a rate is a JSON double
    assert first["window_boundaries"] == [5, 35, 60] and second["window_boundaries"] == [70, 80]
    request, with_id = first["requests"]
    assert list(request) == REQUEST_KEYS and list(with_id) == SEQUENCE_KEYS
    assert with_id["sequence_id"] == 7
    assert request["timestamp"] == 10 and request["response_timestamps"] == [20, 30]
    assert request["request_inputs"] == {
        "U8": [1, 2, 3],  # more than one element: a list
        "ONE": -7,  # one element: a scalar
        "TEXT": "hello",  # BYTES: a string, without the 4-byte length
        "TEXTS": "ab\u0006\u0000\u0000\u0000wörld",  # several: only the first length is dropped, as perf_analyzer
        "HALF": None,  # FP16 is not written
        "FLAG": True,
        "F32": [0.5, float(np.float32(0.1))],  # FP32 as the double it is
        "EMPTY": "",  # no content
    }
    assert list(request["request_inputs"]) == [tensor.name for tensor in inputs]
    assert request["response_outputs"] == [{"OUT": 0}, {"OUT": ""}]  # one object per response
    assert capsys.readouterr().err.count("WARNING: unsupported data type: 'FP16'") == 1  # once, not per request


def test_an_empty_run_writes_no_experiments(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    _result().save_export(path)
    assert path.read_text() == '{"experiments":[],"version":"2.51.0","service_kind":"triton","endpoint":""}'


def test_recording_is_bounded_and_frees_the_room_of_dropped_requests() -> None:
    async def call(payload: bytes) -> bytes:
        return payload[::-1]

    async def scenario() -> None:
        log = RequestLog(3)
        recorded = log.wrap(call)
        assert await recorded(b"ab") == b"ba"  # the call's own answer
        await recorded(b"cd")
        [first, second] = log.take(0, 2**62)  # kept in the result: they still count
        assert (first.payload, first.responses, second.payload) == (b"ab", [b"ba"], b"cd")
        assert first.start_ns <= first.end_ns <= second.end_ns
        await recorded(b"warm")  # completed before the next level started: dropped, its room freed
        log.drop_before(2**62)
        await recorded(b"ef")
        assert not log.full
        await recorded(b"gh")  # over the bound: not recorded, and nothing more after it
        assert log.full
        assert [exchange.payload for exchange in log.take(0, 2**62)] == [b"ef"]
        await recorded(b"ij")
        assert log.take(0, 2**62) == []

    asyncio.run(scenario())


def test_the_export_is_refused_where_requests_are_not_in_this_process(tmp_path: Path) -> None:
    with pytest.raises(loadgen.OptionError, match="not with --workers"):
        loadgen.Settings(record_requests=10, workers=2)
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "--ray-address", "auto", "--profile-export-file", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3 and "not with --ray-address" in done.stderr and "Traceback" not in done.stderr


def test_without_recording_the_load_calls_the_connection_itself() -> None:
    async def scenario() -> None:
        connection = GrpcConnection(ConnectionOptions.from_settings(Settings()))
        requests = Requests((b"",), ((0,),))
        try:
            plain = LocalGenerator(connection, requests, plan(Settings()))
            assert plain.records is None and plain.call is connection.infer  # nothing between the loop and gRPC
            assert plain.open_stream == connection.open_stream
            recording = LocalGenerator(connection, requests, plan(Settings(record_requests=5)))
            assert recording.records is not None and recording.call is not connection.infer
        finally:
            await connection.close()

    asyncio.run(scenario())


# end to end


def _export(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert list(document) == TOP_KEYS
    for experiment in document["experiments"]:
        boundaries = experiment["window_boundaries"]
        assert boundaries == sorted(boundaries)
        for request in experiment["requests"]:
            assert list(request) in (REQUEST_KEYS, SEQUENCE_KEYS)
            times = request["response_timestamps"]
            assert all(isinstance(t, int) for t in [request["timestamp"], *times])
            assert request["timestamp"] <= times[0] and times == sorted(times)
            assert len(request["response_outputs"]) == len(times)
            # a request belongs to the window in which its last response came
            assert boundaries[0] <= times[-1] <= boundaries[-1]
    return document


def _identity_data(tmp_path: Path) -> Path:
    data = tmp_path / "identity.json"
    data.write_text(json.dumps({"data": [{"INPUT0": IDENTITY_DATA}]}))
    return data


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_request_of_every_window_in_both_loops(
    examples_server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    url = examples_server.grpc_url if protocol == "grpc" else examples_server.http_url
    data = _identity_data(tmp_path)
    for load in (["--concurrency-range", "1:2"], ["--request-rate-range", "100"]):
        out, export = tmp_path / "result.json", tmp_path / "export.json"
        base = ["-i", protocol, "-u", url, "-m", "identity_uint8", "--input-data", data, *FAST]
        assert main([*map(str, base), *load, "--json", str(out), "--profile-export-file", str(export)]) == 0
        levels = json.loads(out.read_text())["levels"]
        experiments = _export(export)["experiments"]
        assert len(experiments) == len(levels)
        for level, experiment in zip(levels, experiments, strict=True):
            closed = "concurrency" in level
            expected = {"mode": "concurrency", "value": level["concurrency"]} if closed else {"mode": "request_rate"}
            assert expected.items() <= experiment["experiment"].items()
            if not closed:
                assert experiment["experiment"]["value"] == 100.0
            # every request that completed in any window of the level (not only the last three), each once
            assert len(experiment["requests"]) == sum(window["request_count"] for window in level["trend"])
            assert len(experiment["window_boundaries"]) == level["windows"] + 1
            for request in experiment["requests"]:
                assert request["request_inputs"] == {"INPUT0": IDENTITY_DATA}
                assert request["response_outputs"] == [{"OUTPUT0": IDENTITY_DATA}]


def test_a_sequence_models_requests_carry_their_sequence_id(test_server: EmbeddedServer, tmp_path: Path) -> None:
    data = tmp_path / "ones.json"
    data.write_text(json.dumps({"data": [{"VALUE": [1]}]}))
    result = loadgen.profile_sync(
        test_server.grpc_url,
        "accumulator",
        concurrency=2,
        input_data=str(data),
        sequence_length=5,
        sequence_length_variation=0,
        record_requests=100_000,
        **QUICK,
    )
    export = tmp_path / "export.json"
    result.save_export(export)
    [experiment] = _export(export)["experiments"]
    by_sequence = defaultdict(list)
    for request in experiment["requests"]:
        assert request["sequence_id"] >= 1 and request["request_inputs"] == {"VALUE": 1}
        by_sequence[request["sequence_id"]].append(request)
    assert len(by_sequence) >= 2
    for requests in by_sequence.values():
        # the model sums VALUE per correlation ID: the k-th request of a sequence answers k
        sums = [r["response_outputs"][0]["SUM"] for r in sorted(requests, key=lambda r: r["timestamp"])]
        assert sums == list(range(sums[0], sums[0] + len(sums))) and sums[0] >= 1 and sums[-1] <= 5


def test_a_decoupled_models_every_response_in_both_loops(test_server: EmbeddedServer, tmp_path: Path) -> None:
    data = tmp_path / "counts.json"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}, {"COUNT": [5]}]}))
    # a stream per slot; one stream shared by all, requests overlapping on it (the model serves one at a time)
    for load in ({"concurrency": 2}, {"request_rate": 1000}):
        result = loadgen.profile_sync(
            test_server.grpc_url,
            "streamer",
            streaming=True,
            input_data=str(data),
            request_count=30,
            record_requests=1000,
            **load,  # type: ignore[arg-type]
        )
        export = tmp_path / "export.json"
        result.save_export(export)
        [experiment] = _export(export)["experiments"]
        assert len(experiment["requests"]) == 30
        for request in experiment["requests"]:
            count = request["request_inputs"]["COUNT"]
            # its own responses, then the empty final one (listed too, as perf_analyzer does)
            assert request["response_outputs"] == [*({"INDEX": index} for index in range(count)), {"INDEX": ""}]
        assert {request["request_inputs"]["COUNT"] for request in experiment["requests"]} == {3, 5}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tensors_in_shared_memory_have_no_content_in_the_export(
    examples_server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    url = examples_server.grpc_url if protocol == "grpc" else examples_server.http_url
    result = loadgen.profile_sync(
        url, "identity_uint8", protocol=protocol, shared_memory="system", request_count=3, record_requests=10
    )
    export = tmp_path / "export.json"
    result.save_export(export)
    [experiment] = _export(export)["experiments"]
    assert len(experiment["requests"]) == 3
    for request in experiment["requests"]:  # the requests carry only regions, as perf_analyzer's do
        assert request["request_inputs"] == {"INPUT0": ""} and request["response_outputs"] == [{"OUTPUT0": ""}]


def test_the_bound_stops_recording_and_says_so(examples_server: EmbeddedServer, tmp_path: Path) -> None:
    notes: list[str] = []

    class Notes:
        def note(self, text: str) -> None:
            notes.append(text)

        def started(self, run: object) -> None: ...

        def window(self, *args: object) -> None: ...

        def level(self, level: object) -> None: ...

    result = loadgen.run(
        loadgen.profile(
            examples_server.grpc_url,
            "identity_uint8",
            concurrency=2,
            request_count=20,
            record_requests=5,
            progress=Notes(),
        )
    )
    assert result.records_capped and len(result.experiments[0].requests) <= 5
    assert any("--record-requests 5: the bound was reached" in note for note in notes)


# against the real perf_analyzer 2.51


def _same_shape(ours: Any, theirs: Any, where: str) -> None:
    """The same JSON types (ints as ints, lists as lists) and, for objects, the same keys in the same order."""
    assert type(ours) is type(theirs), f"{where}: {ours!r} against perf_analyzer's {theirs!r}"
    if isinstance(ours, dict):
        assert list(ours) == list(theirs), where
        for key in ours:
            _same_shape(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list) and ours and theirs:
        _same_shape(ours[0], theirs[0], f"{where}[0]")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["identity", "decoupled"])
def test_field_by_field_against_perf_analyzers_own_export(
    examples_server: EmbeddedServer, test_server: EmbeddedServer, tmp_path: Path, kind: str
) -> None:
    binary = real_perf_analyzer()
    if kind == "identity":  # perf_analyzer's defaults: HTTP
        data = _identity_data(tmp_path)
        args = ["-m", "identity_uint8", "-u", examples_server.http_url, "--concurrency-range", "2"]
    else:
        data = tmp_path / "counts.json"
        data.write_text(json.dumps({"data": [{"COUNT": [3]}]}))
        args = ["-m", "streamer", "-i", "grpc", "-u", test_server.grpc_url, "--streaming", "--concurrency-range", "1"]
    args += ["--input-data", str(data), "--request-count", "6"]
    theirs_path, ours_path = tmp_path / "theirs.json", tmp_path / "ours.json"
    done = subprocess.run(
        [binary, *args, "--profile-export-file", str(theirs_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert perf_analyzer([*args, "--profile-export-file", str(ours_path)]) == 0
    theirs, ours = json.loads(theirs_path.read_text()), _export(ours_path)
    assert list(ours) == list(theirs) == TOP_KEYS
    assert [ours[key] for key in TOP_KEYS[1:]] == [theirs[key] for key in TOP_KEYS[1:]]
    [mine], [pa] = ours["experiments"], theirs["experiments"]
    assert list(mine) == list(pa)
    assert mine["experiment"] == pa["experiment"]
    assert len(mine["requests"]) == len(pa["requests"]) == 6
    assert len(mine["window_boundaries"]) == len(pa["window_boundaries"]) == 2
    for request, reference in zip(mine["requests"], pa["requests"], strict=True):
        assert list(request) == list(reference)
        assert request["request_inputs"] == reference["request_inputs"]
        assert len(request["response_timestamps"]) == len(reference["response_timestamps"])
        real = slice(None) if kind == "identity" else slice(-1)  # the empty final response holds no data
        assert request["response_outputs"][real] == reference["response_outputs"][real]
        _same_shape(request, reference, "request")  # lists by their first element (a final empty response: see above)
