"""perf_analyzer's options for what goes on the wire, checked on the wire and at the real server: request
parameters, gRPC compression, HTTP's JSON tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.helpers import BOTH, QUICK
from tests.wire_proxy import wire_proxy

REQUESTS = 20
ZEROS = 65536  # bytes of zeros per request: gzip makes them a few hundred bytes


@BOTH
def test_request_parameters_reach_the_model(
    test_server: EmbeddedServer, tmp_path: Path, protocol: str, transport: str
) -> None:
    sent = {"max_tokens": 8, "stream": True, "note": "from loadgen"}
    # the model answers with the parameters it received; validation_data says what it must answer
    received = json.dumps(sent, sort_keys=True)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [{"INPUT0": [1, 2, 3]}], "validation_data": [{"PARAMETERS": [received]}]}))
    result = loadgen.profile_sync(
        test_server.url(protocol),
        "parameters",
        protocol=protocol,
        transport=transport,
        input_data=str(data),
        request_parameter=sent,
        **QUICK,
    )
    [level] = result.levels
    assert level.request_count > 0 and level.error_count == 0, level.errors


@pytest.mark.parametrize("transport", ["raw", "library"])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compression_shrinks_what_is_sent(test_server: EmbeddedServer, transport: str, algorithm: str) -> None:
    sizes = {}
    for compression in ("none", algorithm):
        with wire_proxy(test_server.grpc_url) as (address, wire):
            result = loadgen.profile_sync(
                address,
                "fast_step",
                transport=transport,
                input_data="zero",
                shape={"INPUT0": [ZEROS]},
                request_count=REQUESTS,
                grpc_compression_algorithm=compression,
            )
        assert result.levels[0].error_count == 0, result.levels[0].errors
        sizes[compression] = len(wire.upstream)
    assert sizes["none"] > REQUESTS * ZEROS
    assert sizes[algorithm] < REQUESTS * ZEROS / 20  # the server took the compressed requests and answered them


@pytest.mark.parametrize("transport", ["raw", "library"])
def test_http_json_tensors(test_server: EmbeddedServer, transport: str) -> None:
    for tensors in ("binary", "json"):
        with wire_proxy(test_server.http_url) as (address, wire):
            result = loadgen.profile_sync(
                address,
                "fast_step",
                protocol="http",
                transport=transport,
                input_data="zero",
                shape={"INPUT0": [4]},
                request_count=REQUESTS,
                input_tensor_format=tensors,
                output_tensor_format=tensors,
            )
        assert result.levels[0].error_count == 0, result.levels[0].errors
        upstream, downstream = bytes(wire.upstream), bytes(wire.downstream)
        infer = upstream[upstream.index(b"POST /v2/models/fast_step/infer") :]
        if tensors == "json":
            assert b'"data":[0,0,0,0]' in infer and b"inference-header-content-length" not in infer.lower()
            assert b'"data":[' in downstream
        else:
            assert b'"data"' not in infer and b"inference-header-content-length" in infer.lower()
