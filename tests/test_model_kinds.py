"""Every kind of model a Triton user serves, profiled end to end against the real embedded server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import loadgen
from loadgen.cli import main
from loadgen.server import EmbeddedServer
from tests.helpers import BOTH, FAST, MISMATCH, QUICK

# Every kind that HTTP allows runs over both protocols and both transports (BOTH); the server's statistics (read over
# gRPC) say what it saw.


def _cli(server: EmbeddedServer, protocol: str, model: str, *args: str | Path, transport: str = "raw") -> int:
    """The command line against the test server over `protocol`, with quick windows; its exit status."""
    return main(
        ["-i", protocol, "--transport", transport, "-u", server.url(protocol), "-m", model, *FAST, *map(str, args)]
    )


def _stats(server: EmbeddedServer, model: str) -> tuple[int, int, int]:
    """The server's (successful requests, inferences, executions) of a model so far."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model).model_stats
        return (
            sum(s.inference_stats.success.count for s in stats),
            sum(s.inference_count for s in stats),
            sum(s.execution_count for s in stats),
        )
    finally:
        client.close()


@BOTH
def test_a_batched_model_with_dynamic_batching(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    before = _stats(test_server, "batched_double")
    out = tmp_path / "batched.json"
    status = _cli(
        test_server,
        protocol,
        "batched_double",
        "-b",
        "4",
        "--concurrency-range",
        "4",
        "--json",
        out,
        transport=transport,
    )
    assert status == 0
    result = json.loads(out.read_text())
    level = result["levels"][0]
    assert result["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [4, 4]}]
    assert level["error_count"] == 0, level["errors"]
    # throughput counts inferences: requests x batch
    window_s = level["duration_s"]
    assert abs(level["throughput"] - level["request_count"] * 4 / window_s) < 1e-6 * level["throughput"] + 1e-9
    requests, inferences, executions = (
        after - first for after, first in zip(_stats(test_server, "batched_double"), before, strict=True)
    )
    assert inferences == 4 * requests >= 4 * level["request_count"]
    assert executions <= requests  # the dynamic batcher may merge concurrent requests
    assert level["server"]["inference_count"] == 4 * level["server"]["request_count"]


def test_a_batch_over_max_batch_size_is_a_clear_error(test_server: EmbeddedServer) -> None:
    assert _cli(test_server, "grpc", "batched_double", "-b", "9") == 3


@BOTH
def test_mixed_dtypes_with_an_input_range_for_the_embedding_indices(
    test_server: EmbeddedServer, protocol: str, transport: str
) -> None:
    url = test_server.url(protocol)
    options = {
        "url": url,
        "protocol": protocol,
        "transport": transport,
        "model_name": "mixed_inputs",
        "shape": {"TOKENS": [6]},
        "batch_size": 2,
        **QUICK,
    }
    # random INT64 indices fall outside the 100-row table: the model rejects them before the run starts
    try:
        loadgen.profile_sync(**options)  # type: ignore[arg-type]
    except loadgen.ModelRejectedError as error:
        assert "TOKENS out of range [0, 99]" in str(error)
    else:
        raise AssertionError("random indices should have been rejected")
    before = _stats(test_server, "mixed_inputs")
    result = loadgen.profile_sync(input_range={"TOKENS": (0, 99)}, **options)  # type: ignore[arg-type]
    assert [(i.name, i.datatype, i.shape) for i in result.inputs] == [
        ("DENSE", "FP32", (2, 3)),
        ("HALF", "FP16", (2, 2)),
        ("TOKENS", "INT64", (2, 6)),
        ("MASK", "BOOL", (2, 1)),
        ("PIXELS", "UINT8", (2, 4)),
    ]
    level = result.levels[0]
    assert level.error_count == 0 and level.request_count > 0, level.errors
    assert _stats(test_server, "mixed_inputs")[1] - before[1] >= 2 * level.request_count


@BOTH
def test_a_string_model_with_string_data_and_one_selected_output(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    url = test_server.url(protocol)
    before = _stats(test_server, "strings")
    result = loadgen.profile_sync(
        url=url,
        protocol=protocol,
        transport=transport,
        model_name="strings",
        shape={"TEXT": [3]},
        string_data="hello",
        output=["LENGTHS"],
        **QUICK,
    )
    assert result.inputs[0].datatype == "BYTES" and result.inputs[0].shape == (3,)
    assert result.levels[0].error_count == 0, result.levels[0].errors
    assert _stats(test_server, "strings")[0] - before[0] >= result.levels[0].request_count
    # the same strings from a text file and from JSON (plain and b64)
    (tmp_path / "words.txt").write_text("one\ntwo\nthree\n")
    result = loadgen.profile_sync(
        url=url, protocol=protocol, transport=transport, model_name="strings", input_data=str(tmp_path), **QUICK
    )
    assert result.inputs[0].shape == (3,) and result.levels[0].error_count == 0, result.levels[0].errors


@BOTH
def test_validation_data_counts_mismatches(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    url = test_server.url(protocol)
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "data": [{"TEXT": ["ab", "cde"]}, {"TEXT": {"content": ["x"], "shape": [1]}}],
                "validation_data": [{"LENGTHS": [2, 3], "ECHO": ["ab", "cde"]}, {"LENGTHS": [1]}],
            }
        )
    )
    result = loadgen.profile_sync(
        url=url, protocol=protocol, transport=transport, model_name="strings", input_data=str(good), **QUICK
    )
    assert result.levels[0].error_count == 0 and result.levels[0].request_count > 0, result.levels[0].errors

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"data": [{"TEXT": ["ab"]}, {"TEXT": ["abc"]}], "validation_data": [{"LENGTHS": [2]}, {"LENGTHS": [4]}]}
        )
    )
    out = tmp_path / "result.json"
    status = _cli(
        test_server,
        protocol,
        "strings",
        "--input-data",
        bad,
        "--max-error-rate",
        "1",
        "--json",
        out,
        transport=transport,
    )
    assert status == 0
    level = json.loads(out.read_text())["levels"][0]
    # every second request answers with a length the validation data does not expect
    assert level["errors"] == {MISMATCH: level["error_count"]}
    assert abs(level["error_count"] - level["request_count"]) <= 2


@BOTH
def test_a_sequence_model_keeps_state_per_correlation_id(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    data = tmp_path / "sequences.json"
    # two streams: each sequence walks one, and the model's running sums must match at every step
    data.write_text(
        json.dumps(
            {
                "data": [[{"VALUE": [1]}, {"VALUE": [2]}, {"VALUE": [3]}], [{"VALUE": [10]}, {"VALUE": [20]}]],
                "validation_data": [[{"SUM": [1]}, {"SUM": [3]}, {"SUM": [6]}], [{"SUM": [10]}, {"SUM": [30]}]],
            }
        )
    )
    before = _stats(test_server, "accumulator")
    out = tmp_path / "result.json"
    status = _cli(
        test_server,
        protocol,
        "accumulator",
        "--input-data",
        data,
        "--concurrency-range",
        "1:3",
        "--sequence-id-range",
        "100:102",
        "--json",
        out,
        transport=transport,
    )
    assert status == 0
    levels = json.loads(out.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1, 2, 3]
    for level in levels:
        assert level["error_count"] == 0, level["errors"]
        assert level["server"]["request_count"] >= 0.9 * level["request_count"] > 0
    assert _stats(test_server, "accumulator")[0] - before[0] >= sum(level["request_count"] for level in levels)


@BOTH
def test_sequences_with_generated_data_in_both_load_modes(
    test_server: EmbeddedServer, protocol: str, transport: str
) -> None:
    options = {
        "url": test_server.url(protocol),
        "protocol": protocol,
        "transport": transport,
        "model_name": "accumulator",
        "input_range": {"VALUE": (0, 9)},
        **QUICK,
    }
    closed = loadgen.profile_sync(concurrency_range=4, sequence_length=3, **options)  # type: ignore[arg-type]
    assert closed.levels[0].error_count == 0 and closed.levels[0].request_count > 0, closed.levels[0].errors
    # at a rate, a sequence's next request waits for its previous one: over HTTP (one connection per request in
    # flight) it could otherwise overtake it and reach the model before its sequence started
    opened = loadgen.profile_sync(request_rate_range=50, num_of_sequences=3, **options)  # type: ignore[arg-type]
    assert opened.levels[0].error_count == 0 and opened.levels[0].request_count > 0, opened.levels[0].errors
    try:
        loadgen.profile_sync(concurrency_range=4, sequence_id_range="1:2", **options)  # type: ignore[arg-type]
    except loadgen.OptionError as error:
        assert "2 IDs for 4 sequences in flight" in str(error)
    else:
        raise AssertionError("an ID range smaller than the concurrency should be refused")


@BOTH
def test_a_bls_model_with_its_composing_models(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    out = tmp_path / "bls.json"
    status = _cli(
        test_server,
        protocol,
        "bls_pair",
        "--shape",
        "INPUT0:8",
        "--concurrency-range",
        "2",
        "--json",
        out,
        "--bls-composing-models",
        "fast_step,slow_step",
        transport=transport,
    )
    assert status == 0
    result = json.loads(out.read_text())
    server = result["levels"][0]["server"]
    assert [step["model"] for step in server["composing"]] == ["fast_step", "slow_step"]
    for step in server["composing"]:
        # every request of the BLS model called each composing model once
        assert step["request_count"] >= server["request_count"] > 0
    # the BLS model's own compute includes its calls, so it takes at least slow_step's 20 ms
    assert server["compute_infer_us"] >= server["composing"][1]["compute_infer_us"]
    assert result["bottleneck"]["model"] == "slow_step"


def test_a_decoupled_model_over_a_stream(test_server: EmbeddedServer, tmp_path: Path) -> None:
    done = _cli(test_server, "grpc", "streamer")
    assert done == 3  # a decoupled model needs --streaming
    # Triton streams over gRPC only
    assert _cli(test_server, "http", "streamer", "--streaming") == 3
    with pytest.raises(loadgen.OptionError, match=r"profile it with --streaming over gRPC \(-i grpc\)"):
        loadgen.profile_sync(test_server.http_url, "streamer", protocol="http", **QUICK)
    data = tmp_path / "counts.json"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}, {"COUNT": [5]}]}))
    before = _stats(test_server, "streamer")
    out = tmp_path / "stream.json"
    status = _cli(
        test_server,
        "grpc",
        "streamer",
        "--streaming",
        "--input-data",
        data,
        "--concurrency-range",
        "1:2",
        "--json",
        out,
    )
    assert status == 0
    levels = json.loads(out.read_text())["levels"]
    for level in levels:
        assert level["error_count"] == 0 and level["request_count"] > 0, level["errors"]
        # requests alternate between 3 and 5 responses
        assert 3 <= level["responses_per_request"] <= 5
        assert level["response_throughput"] > level["throughput"]
        first, last = level["first_response_latency_us"], level["latency_us"]
        assert 0 < first["min"] <= first["avg"] <= last["avg"]
    assert _stats(test_server, "streamer")[0] - before[0] >= sum(level["request_count"] for level in levels)


def test_a_decoupled_model_at_a_request_rate_over_one_shared_stream(
    test_server: EmbeddedServer, tmp_path: Path
) -> None:
    data = tmp_path / "counts.json"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}]}))
    before = _stats(test_server, "streamer")
    result = loadgen.profile_sync(
        test_server.grpc_url, "streamer", streaming=True, request_rate=[50, 300], input_data=str(data), **QUICK
    )
    for level in result.levels:
        assert level.error_count == 0 and level.request_count > 0, level.errors
        # requests sent on schedule share the stream, and each got exactly its own 3 responses before its final flag
        assert level.responses_per_request == 3
        assert level.response_throughput is not None and level.response_throughput > level.throughput
        assert level.first_response_latency_us is not None and level.service_latency_us is not None
        assert 0 < level.first_response_latency_us.avg <= level.latency_us.avg
    assert _stats(test_server, "streamer")[0] - before[0] >= sum(level.request_count for level in result.levels)


def test_validation_data_over_streams_in_both_load_modes(test_server: EmbeddedServer, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {"data": [{"TEXT": ["ab"]}, {"TEXT": ["xyz"]}], "validation_data": [{"LENGTHS": [2]}, {"LENGTHS": [3]}]}
        )
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"data": [{"TEXT": ["ab"]}, {"TEXT": ["xyz"]}], "validation_data": [{"LENGTHS": [2]}, {"LENGTHS": [4]}]}
        )
    )
    for load in ({"concurrency_range": 2}, {"request_rate_range": 100}):
        options = {"model_name": "strings", "streaming": True, "max_error_rate": 1.0, **load, **QUICK}
        result = loadgen.profile_sync(test_server.grpc_url, input_data=str(good), **options)  # type: ignore[arg-type]
        level = result.levels[0]
        assert level.error_count == 0 and level.request_count > 0, level.errors
        result = loadgen.profile_sync(test_server.grpc_url, input_data=str(bad), **options)  # type: ignore[arg-type]
        level = result.levels[0]
        # every second request answers with a length the validation data does not expect
        assert level.errors == {MISMATCH: level.error_count}, load
        assert abs(level.error_count - level.request_count) <= 2, load


@BOTH
def test_a_sequence_model_that_refuses_one_request_sequences(
    test_server: EmbeddedServer, protocol: str, transport: str
) -> None:
    """The run sends what a run sends (START, the sequence, END): nothing probes the model with START and END on
    one request, which a model like Triton's QA sequence_py refuses; the server sees exactly --request-count."""
    before = _stats(test_server, "sequence_strict")[0]
    result = loadgen.profile_sync(
        test_server.url(protocol),
        "sequence_strict",
        protocol=protocol,
        transport=transport,
        input_data="zero",
        concurrency_range=1,  # ten whole sequences: none is left open for loadgen to end after the run
        sequence_length=4,
        sequence_length_variation=0,
        request_count=40,
    )
    [level] = result.levels
    assert level.error_count == 0, level.errors
    assert level.request_count == 40
    assert _stats(test_server, "sequence_strict")[0] - before == 40


def test_bls_composing_models_with_perf_analyzers_version_syntax(test_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "bls.json"
    status = _cli(
        test_server,
        "grpc",
        "bls_pair",
        "--shape",
        "INPUT0:8",
        "--json",
        out,
        "--bls-composing-models",
        "fast_step:1,slow_step",
    )
    assert status == 0
    steps = json.loads(out.read_text())["levels"][0]["server"]["composing"]
    assert [(step["model"], step["version"]) for step in steps] == [("fast_step", "1"), ("slow_step", "1")]
