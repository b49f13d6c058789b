"""Faults the real server cannot produce, from the named fakes (tests/fake_h2.py, tests/fake_http1.py), over both
transports: nothing hangs, and every failure is one line (the same line on both paths where both can tell)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import sys
import time
import tracemalloc
from typing import Any

import pytest
import uvloop
from tritonclient.grpc import model_config_pb2, service_pb2

import loadgen
from loadgen import plan
from loadgen.settings import MAX_RESPONSE_BYTES, Settings
from loadgen.transport import (
    Connection,
    ConnectionOptions,
    ModelInfo,
    RequestFailed,
    RequestLayout,
    Tensor,
    TensorSpec,
    Unreachable,
    connect,
)
from loadgen.transport.common import within
from loadgen.transport.options import RESPONSE_MARGIN_BYTES, response_limit
from tests.fake_h2 import HUGE_MESSAGE, fake_h2
from tests.fake_http1 import HEADER, fake_http1
from tests.helpers import interrupt_when

TRANSPORTS = pytest.mark.parametrize("transport", ["raw", "library"])
MODEL = ModelInfo(
    "fake",
    "",
    "python",
    0,
    (TensorSpec("IN", "UINT8", (3,)),),
    (TensorSpec("OUT", "UINT8", (3,)),),
    model_config_pb2.ModelConfig(name="fake"),
)


def _failure(connection: Connection, error: Exception) -> RequestFailed:
    """A failed call as the load loops see it: loadgen's kind of failure."""
    return error if isinstance(error, RequestFailed) else connection.failure(error)


def _outcomes(settings: Settings, count: int, content: bytes = b"abc") -> list[str]:
    """Send the same request `count` times in turn; each outcome is "ok" or the failure's kind and one line."""

    async def run() -> list[str]:
        connection = connect(ConnectionOptions.from_settings(settings))
        sample = (Tensor("IN", "UINT8", (len(content),), content),)
        payload = connection.wire.encode(MODEL, sample, RequestLayout(request_id="7"))
        outcomes = []
        try:
            for _ in range(count):
                try:
                    response = await connection.infer(payload)
                except connection.errors as error:
                    failed = _failure(connection, error)
                    outcomes.append(f"{type(failed).__name__}: {failed}")
                else:
                    outcomes.append("ok" if connection.wire.decode_response(response)[0] == "7" else "wrong id")
        finally:
            await connection.close()
        return outcomes

    return uvloop.run(run())


def _one_line(outcomes: list[str]) -> None:
    for outcome in outcomes:
        assert outcome and "\n" not in outcome, outcome


# HTTP/1.1


def _http(url: str, transport: str, **options: Any) -> Settings:
    return Settings(url=url, protocol="http", transport=transport, **options)


@TRANSPORTS
def test_triton_errors_over_http(transport: str) -> None:
    with fake_http1("error", every=2) as fake:
        outcomes = _outcomes(_http(fake.url, transport), 4)
    assert outcomes == ["wrong id", "Rejected: HTTP 400: injected failure"] * 2  # the fake answers no id


@TRANSPORTS
def test_a_chunked_response(transport: str) -> None:
    async def run() -> bytes:
        connection = connect(ConnectionOptions.from_settings(_http(fake.url, transport)))
        try:
            payload = connection.wire.encode(MODEL, (Tensor("IN", "UINT8", (3,), b"abc"),), RequestLayout())
            response = await connection.infer(payload)
        finally:
            await connection.close()
        assert response.header_length == len(HEADER)
        return bytes(response.body)

    with fake_http1("chunked") as fake:
        assert uvloop.run(run()) == HEADER + b"abc"


@TRANSPORTS
def test_a_server_that_closes_each_keep_alive_connection(transport: str) -> None:
    with fake_http1("close_after_response") as fake:
        outcomes = _outcomes(_http(fake.url, transport), 5)
        connections = fake.connections
    _one_line(outcomes)
    if transport == "raw":  # a request on a connection the server closed is never sent again: counted, if it fails
        closed = f"Unreachable: cannot reach Triton at {fake.url}: the server closed a kept-alive connection"
        assert all(outcome == "wrong id" or outcome.startswith(closed) for outcome in outcomes), outcomes
        assert outcomes[0] == "wrong id" and connections == outcomes.count("wrong id")
    else:  # aiohttp fails it
        assert outcomes[::2] == ["wrong id"] * 3 and outcomes[1].startswith("Unreachable: cannot reach Triton")


@TRANSPORTS
def test_a_connection_closed_mid_response(transport: str) -> None:
    with fake_http1("close_mid_response", every=2) as fake:
        outcomes = _outcomes(_http(fake.url, transport), 4)
    _one_line(outcomes)
    assert outcomes[0] == outcomes[2] == "wrong id"
    assert outcomes[1] == outcomes[3]
    assert outcomes[1].startswith(f"Unreachable: cannot reach Triton at {fake.url}: ")


@TRANSPORTS
def test_an_http_server_that_never_answers(transport: str) -> None:
    with fake_http1("never_answer", every=2) as fake:
        outcomes = _outcomes(_http(fake.url, transport, request_timeout=200), 4)
    assert outcomes == ["wrong id", "TimedOut: timeout: no answer within 200 ms"] * 2


@TRANSPORTS
@pytest.mark.timeout(60)  # a hang, not a speed: without a default timeout the run never ended
def test_a_request_count_against_a_server_that_never_answers_ends(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --request-timeout: a request unanswered for half as long as a count window waits (10 windows of 100 ms
    here, with the 60 s floor lifted) fails as a timeout, so that --request-count against a silent server ends,
    every request counted."""
    monkeypatch.setattr(plan, "STALL_FLOOR_S", 0.0)
    with fake_http1("never_answer", every=3) as fake:
        result = loadgen.profile_sync(
            fake.url,
            "fake",
            protocol="http",
            transport=transport,
            input_data="zero",
            concurrency=3,
            request_count=6,
            measurement_interval=100,
            max_error_rate=1,
        )
    level = result.levels[0]
    assert level.request_count + level.error_count == 6
    assert level.errors == {"timeout: no answer within 1000 ms": 2}


# Misbehaving HTTP/1.1 servers and attacks (issue 24, items 3 to 6): one answer per request, in step, each failure a
# counted one-line failure naming the server's message or loadgen's limit; time bounded by the tests' timeout.

MALFORMED = "RequestFailed: Triton at {url} sent a malformed inference response: "


@pytest.mark.parametrize(
    ("fault", "expected", "connections"),
    [
        ("continue", "wrong id", 1),  # the interim answer skipped, the connection kept in step
        ("duplicate", "wrong id", 4),  # the second copy closes the connection: counted once
        ("until_close", "wrong id", 4),  # the body that ends with the connection is whole
        ("short_length", MALFORMED + "its outputs' binary data add up to 3 bytes, not the 1 after its JSON header", 4),
        ("bad_outputs", MALFORMED + "output 'OUT' of shape [3] has 2 bytes of binary data", 1),
        ("deep_error", 'Rejected: HTTP 500: {"error":[[[', 1),
        (
            "long_header",
            "RequestFailed: Triton at {url} sent a response header line over 8192 bytes (loadgen's limit)",
            4,
        ),
    ],
)
def test_a_misbehaving_http1_server(fault: str, expected: str, connections: int) -> None:
    with fake_http1(fault) as fake:
        outcomes = _outcomes(_http(fake.url, "raw"), 4)
        assert fake.requests == 4 and fake.connections == connections
    _one_line(outcomes)
    for outcome in outcomes:
        assert outcome.startswith(expected.replace("{url}", fake.url)), outcome
        assert len(outcome) < 400


@pytest.mark.parametrize("fault", ["deep_error", "bad_outputs"])
def test_a_misbehaving_http1_server_over_the_library(fault: str) -> None:
    with fake_http1(fault) as fake:
        outcomes = _outcomes(_http(fake.url, "library"), 2)
    _one_line(outcomes)
    prefix = "Rejected: HTTP 500: " if fault == "deep_error" else MALFORMED.format(url=fake.url)
    assert outcomes[0].startswith(prefix) and len(outcomes[0]) < 400, outcomes  # aiohttp reuses what follows


HTTP1_OVER_LIMIT = "RequestFailed: Triton at {url} sent a response over --max-response-bytes (1048576 bytes)"
HTTP1_OVER = "RequestFailed: Triton at {url} sent a response header {} over {} bytes (loadgen's limit)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("fault", "transport", "expected"),
    [
        # the raw path bounds the whole head first (the endless line never ends), aiohttp each line
        ("endless_header", "raw", HTTP1_OVER.format("block", 65536, url="{url}")),
        ("endless_header", "library", HTTP1_OVER.format("line", 8192, url="{url}")),
        ("long_header", "library", HTTP1_OVER.format("line", 8192, url="{url}")),
        ("huge_body", "raw", HTTP1_OVER_LIMIT),
        ("huge_body", "library", HTTP1_OVER_LIMIT),  # its Content-Length says so before a byte is read
        ("endless_chunked", "raw", HTTP1_OVER_LIMIT),
        ("endless_chunked", "library", HTTP1_OVER_LIMIT),
    ],
)
def test_an_http1_attack_fails_the_request_it_hits_alone(
    fault: str, transport: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracemalloc.start()
    try:
        with fake_http1(fault, every=2) as fake:
            outcomes = _outcomes(_http(fake.url, transport, max_response_bytes=1 << 20), 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcomes == ["wrong id", expected.format(url=fake.url), "wrong id"]
    assert peak < ATTACK_MEMORY, f"{peak / 2**20:.1f} MiB"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("fault", ["continue", "duplicate", "deep_error", "endless_header"])
def test_a_run_counts_each_http1_request_once(fault: str) -> None:
    with fake_http1(fault, every=3) as fake:
        result = loadgen.profile_sync(
            fake.url,
            "fake",
            protocol="http",
            input_data="zero",
            concurrency=2,
            request_count=30,
            max_error_rate=1,
        )
        served = fake.requests
    level = result.levels[0]
    assert level.request_count + level.error_count == 30 == served
    assert level.error_count == (0 if fault in ("continue", "duplicate") else 10), level.errors


FLOODED = 32 << 20  # the bytes an attack sent before the signal
LOADGEN = [sys.executable, "-m", "loadgen", "-m", "fake", "--input-data", "zero"]
WHOLE = ["--max-response-bytes", str(MAX_RESPONSE_BYTES)]  # past the fake model's outputs: the body is read on


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("huge_body", ["--transport", "raw", *WHOLE]),
        ("huge_body", ["--transport", "library", *WHOLE]),
        ("endless_header", ["--transport", "raw"]),
        ("endless_header", ["--transport", "library"]),
    ],
)
def test_ctrl_c_stops_a_run_amid_an_http1_attack(fault: str, options: list[str]) -> None:
    """As over gRPC: reading a 1 GB response or an endless header never holds the event loop for long; the first
    SIGINT stops the run within 2 s (requests in flight get a shorter grace after Ctrl-C)."""
    with fake_http1(fault) as fake:
        interrupt_when([*LOADGEN, "-u", fake.url, "-i", "http", *options], lambda: fake.flooded >= FLOODED)


# HTTP/2 (gRPC)


def _grpc(url: str, transport: str, **options: Any) -> Settings:
    return Settings(url=url, protocol="grpc", transport=transport, **options)


def _grpc_outcomes(settings: Settings, count: int, content: bytes = b"abc") -> list[str]:
    """As `_outcomes`, with the library path's grpc.aio errors described as the load loops describe them."""

    async def run() -> list[str]:
        connection = connect(ConnectionOptions.from_settings(settings))
        request = service_pb2.ModelInferRequest(model_name="fake", id="7")
        request.inputs.add(name="IN", datatype="UINT8", shape=[len(content)])
        request.raw_input_contents.append(content)
        payload = request.SerializeToString()
        outcomes = []
        try:
            for _ in range(count):
                try:
                    response = await connection.infer(payload)
                except connection.errors as error:
                    outcomes.append(str(_failure(connection, error)))
                else:
                    outcomes.append("ok" if connection.wire.decode_response(response)[0] == "7" else "wrong id")
        finally:
            await connection.close()
        return outcomes

    return uvloop.run(run())


@TRANSPORTS
def test_rst_stream(transport: str) -> None:
    with fake_h2("rst_stream", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport), 4)
    _one_line(outcomes)
    assert outcomes[0] == outcomes[2] == "ok"
    assert outcomes[1] == outcomes[3] and outcomes[1].startswith("INTERNAL: ")
    if transport == "raw":
        assert outcomes[1] == "INTERNAL: the server reset the stream (INTERNAL_ERROR)"


@TRANSPORTS
def test_goaway_finishes_the_accepted_stream_and_reconnects(transport: str) -> None:
    with fake_h2("goaway", every=3) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport), 7)
        connections = fake.connections
    assert outcomes == ["ok"] * 7
    assert connections >= 3  # requests 3 and 6 were each the last on their connection


@TRANSPORTS
def test_a_tiny_flow_control_window(transport: str) -> None:
    image = bytes(range(256)) * 400  # 100 KB through 16-byte stream windows
    with fake_h2("tiny_window") as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport), 2, image)
        largest = fake.largest_request
    assert outcomes == ["ok"] * 2
    assert largest > len(image)


def test_frames_on_a_stream_the_answer_closed() -> None:
    """DATA and HEADERS after a whole answer: each a stream error STREAM_CLOSED (RST_STREAM), the calls counted
    as answered, the connection kept."""
    with fake_h2("late_frames", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, "raw"), 5)  # the last call sends the resets before it
        for _ in range(100):  # the fake's thread reads them soon after
            if fake.stream_closed == 4:
                break
            time.sleep(0.02)
        answered, connections = fake.stream_closed, fake.connections
    assert outcomes == ["ok"] * 5
    assert answered == 4 and connections == 1  # two late frames on each of calls 2 and 4


def test_max_concurrent_streams_is_respected_by_opening_more_connections() -> None:
    async def run(url: str) -> list[bytes]:
        connection = connect(ConnectionOptions.from_settings(_grpc(url, "raw")))
        request = service_pb2.ModelInferRequest(model_name="fake")
        try:
            return await asyncio.gather(*(connection.infer(request.SerializeToString()) for _ in range(8)))
        finally:
            await connection.close()

    with fake_h2("two_streams") as fake:
        responses = uvloop.run(run(fake.url))
        connections = fake.connections
    # all answered: h2 refuses a third stream on a connection; so at least two carried them (and the control channel)
    assert len(responses) == 8
    assert connections >= 2 + 1


@TRANSPORTS
def test_an_oversized_header_block(transport: str) -> None:
    with fake_h2("oversized_headers", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport), 3)
    _one_line(outcomes)
    assert outcomes[0] == outcomes[2] == "ok"  # the connection that failed is replaced
    if transport == "raw":  # the offending stream is reset, the block read to its end and dropped
        assert outcomes[1] == (
            "RESOURCE_EXHAUSTED: a header block over SETTINGS_MAX_HEADER_LIST_SIZE (1048576 bytes, loadgen's limit)"
        )


@TRANSPORTS
def test_a_grpc_connection_closed_mid_response(transport: str) -> None:
    with fake_h2("close_mid_response", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport), 3)
    _one_line(outcomes)
    assert outcomes[0] == "ok"
    assert outcomes[1].startswith(f"cannot reach Triton at {fake.url}: ")
    if transport == "raw":  # grpcio may still send the next request on the closing connection
        assert outcomes[2] == "ok"


@TRANSPORTS
def test_without_a_request_timeout_a_grpc_request_unanswered_still_fails_in_time(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --request-timeout: half the longest a count window waits (10 windows of 100 ms here, the 60 s floor
    lifted), checked by one timer for the connection on the raw path, grpcio's deadline on the library one."""
    monkeypatch.setattr(plan, "STALL_FLOOR_S", 0.0)
    with fake_h2("never_answer", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport, measurement_interval=100), 4)
    assert outcomes == ["ok", "timeout: no answer within 1000 ms"] * 2


@TRANSPORTS
def test_a_grpc_server_that_never_answers(transport: str) -> None:
    with fake_h2("never_answer", every=2) as fake:
        outcomes = _grpc_outcomes(_grpc(fake.url, transport, request_timeout=200), 4)
        for _ in range(100):  # the fake's thread reads the last reset soon after
            if fake.resets == 2:
                break
            time.sleep(0.02)
        resets = fake.resets
    assert outcomes == ["ok", "timeout: no answer within 200 ms"] * 2
    assert resets == 2  # each timed-out request was cancelled on the wire


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("rst_stream", {}, "INTERNAL: the server reset the stream (INTERNAL_ERROR)"),
        ("never_answer", {"request_timeout": 100}, "timeout: no answer within 100 ms"),
    ],
    ids=["rst_stream", "never_answer"],
)
def test_a_run_counts_each_failure_with_its_reason(fault: str, options: dict[str, Any], expected: str) -> None:
    with fake_h2(fault, every=4) as fake:
        result = loadgen.profile_sync(
            fake.url, "fake", input_data="zero", concurrency=2, request_count=40, max_error_rate=1, **options
        )
    level = result.levels[0]
    assert set(level.errors) == {expected}
    assert 5 <= level.error_count <= 15 and level.request_count + level.error_count == 40


def test_an_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: connections are refused
        grpc_outcome = _grpc_outcomes(_grpc(url, "raw"), 1)
        http_outcome = _outcomes(_http(url, "raw"), 1)
    assert grpc_outcome[0].startswith(f"cannot reach Triton at {url}: ")
    assert http_outcome[0].startswith(f"Unreachable: cannot reach Triton at {url}: ")
    _one_line(grpc_outcome + http_outcome)


def test_a_stream_that_cannot_connect_fails_its_reader_too() -> None:
    async def run(url: str) -> None:
        connection = connect(ConnectionOptions.from_settings(_grpc(url, "raw")))
        try:
            stream = connection.open_stream()
            reader = asyncio.ensure_future(stream.read())  # StreamMux reads before its first write
            with pytest.raises(Unreachable):
                await stream.write(b"")
            with pytest.raises(Unreachable):
                await asyncio.wait_for(reader, 5)
        finally:
            await connection.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uvloop.run(run(f"127.0.0.1:{sock.getsockname()[1]}"))


# Attacks a client must bound (issue 24): each fails the request it hits with the server's message or the name of
# loadgen's limit, in bounded time (the tests' timeout), without a traceback, and with the process's traced memory
# (both the client and the fake, which run in it) under ATTACK_MEMORY at its peak.

ATTACK_MEMORY = 32 << 20
CONTROL_FLOOD = (
    "HTTP/2 ENHANCE_YOUR_CALM with the server: over 1000 PING, SETTINGS and closed streams' frames to answer while "
    "it reads nothing "
    "(loadgen's limit on queued control frames)"
)
OVER_LIMIT = "RESOURCE_EXHAUSTED: a response message over --max-response-bytes (1048576 bytes)"
LIMIT_FLAG = "--max-response-bytes ({limit} bytes)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        pytest.param(fault, options, expected, id=fault)
        for fault, options, expected in [
            (
                "endless_headers",
                {},
                "RESOURCE_EXHAUSTED: a header block over SETTINGS_MAX_HEADER_LIST_SIZE (1048576 bytes, loadgen's "
                "limit)",
            ),
            ("huge_trailer", {}, "INTERNAL: " + HUGE_MESSAGE),
            ("ping_flood", {}, "cannot reach Triton at {url}: " + CONTROL_FLOOD),
            ("settings_flood", {}, "cannot reach Triton at {url}: " + CONTROL_FLOOD),
            ("large_response", {"max_response_bytes": 1 << 20}, OVER_LIMIT),
            ("endless_response", {"max_response_bytes": 1 << 20}, OVER_LIMIT),
        ]
    ],
)
def test_an_attack_fails_the_request_it_hits_alone(
    fault: str, options: dict[str, Any], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracemalloc.start()
    try:
        with fake_h2(fault, every=2) as fake:
            outcomes = _grpc_outcomes(_grpc(fake.url, "raw", **options), 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcomes == ["ok", expected.format(url=fake.url), "ok"]
    assert peak < ATTACK_MEMORY, f"{peak / 2**20:.1f} MiB"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


FAKE_LIMIT = 4 + RESPONSE_MARGIN_BYTES  # the fakes' model: one UINT8 output of shape [4], unbatched


@pytest.mark.parametrize(
    ("outputs", "max_batch_size", "options", "expected"),
    [
        ((TensorSpec("OUT", "FP32", (-1, 16)), TensorSpec("N", "INT64", (-1, 1))), 8, {"batch_size": 4}, 4 * 72),
        ((TensorSpec("OUT", "FP32", (16,)),), 0, {"protocol": "http", "output_tensor_format": "json"}, 16 * 32),
        ((TensorSpec("OUT", "FP32", (16,)),), 0, {"max_response_bytes": 100}, 100 - RESPONSE_MARGIN_BYTES),
        ((TensorSpec("OUT", "FP32", (-1,)),), 0, {}, MAX_RESPONSE_BYTES - RESPONSE_MARGIN_BYTES),
        ((TensorSpec("OUT", "BYTES", (1,)),), 0, {}, MAX_RESPONSE_BYTES - RESPONSE_MARGIN_BYTES),
        ((TensorSpec("OUT", "UINT8", (1 << 31,)),), 0, {}, MAX_RESPONSE_BYTES - RESPONSE_MARGIN_BYTES),
    ],
    ids=["batched", "json", "flag", "dynamic", "bytes", "capped"],
)
def test_the_largest_response_follows_the_models_outputs(
    outputs: tuple[TensorSpec, ...], max_batch_size: int, options: dict[str, Any], expected: int
) -> None:
    """Fixed outputs: their size for one request (a batch of them) and a margin; else gRPC's limit; the flag wins."""
    info = dataclasses.replace(MODEL, outputs=outputs, max_batch_size=max_batch_size)
    assert response_limit(info, Settings(**options)) == expected + RESPONSE_MARGIN_BYTES


@pytest.mark.parametrize(
    ("protocol", "transport", "fault", "expected"),
    [
        ("grpc", "raw", "large_response", f"RESOURCE_EXHAUSTED: a response message over {LIMIT_FLAG}"),
        ("http", "raw", "huge_body", f"Triton at {{url}} sent a response over {LIMIT_FLAG}"),
        ("http", "library", "huge_body", f"Triton at {{url}} sent a response over {LIMIT_FLAG}"),
    ],
)
def test_a_run_bounds_responses_by_the_models_outputs(protocol: str, transport: str, fault: str, expected: str) -> None:
    """No --max-response-bytes: a model whose outputs are fixed answers no more than they take (and the margin);
    a 4 MiB or 1 GB response fails naming the limit, whatever the transport holds by default."""
    fake_server = fake_h2 if protocol == "grpc" else fake_http1
    with fake_server(fault, every=2) as fake:
        result = loadgen.profile_sync(
            fake.url,
            "fake",
            protocol=protocol,
            transport=transport,
            input_data="zero",
            request_count=6,
            max_error_rate=1,
        )
    level = result.levels[0]
    assert level.errors == {expected.format(url=fake.url, limit=FAKE_LIMIT): 3}
    assert level.request_count == 3


def test_a_run_counts_an_attack_with_the_limit_it_passed() -> None:
    with fake_h2("endless_response", every=4) as fake:
        result = loadgen.profile_sync(
            fake.url,
            "fake",
            input_data="zero",
            concurrency=2,
            request_count=20,
            max_error_rate=1,
            max_response_bytes=1 << 20,
        )
    level = result.levels[0]
    assert set(level.errors) == {OVER_LIMIT}
    assert level.request_count + level.error_count == 20 and level.error_count >= 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("fault", "options"), [("endless_response", WHOLE), ("ping_flood", [])])
def test_ctrl_c_stops_a_run_amid_an_http2_attack(fault: str, options: list[str]) -> None:
    """Reading a response or answering a flood never holds the event loop for long: the first SIGINT stops the run
    within 2 s."""
    with fake_h2(fault) as fake:
        interrupt_when([*LOADGEN, "-u", fake.url, *options], lambda: fake.flooded >= FLOODED)


# The connect timeouts (`within`): a caller's cancellation is never lost, nor a connection opened as it came.


def test_a_cancel_as_the_call_ends_propagates_and_its_result_is_discarded() -> None:
    """The race Python 3.11's asyncio.wait_for loses: the call's result is set and the caller cancelled in the same
    turn of the event loop, before the caller runs again."""

    async def run() -> list[str]:
        opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        discarded: list[str] = []
        caller = asyncio.ensure_future(within(opened, 10.0, discard=discarded.append))
        await asyncio.sleep(0)  # the caller waits for the call
        opened.set_result("connection")
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        return discarded

    assert asyncio.run(run()) == ["connection"]


def test_a_call_that_ends_despite_its_cancellation_has_its_result_discarded() -> None:
    async def run() -> list[str]:
        discarded: list[str] = []

        async def stubborn() -> str:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0)
            return "late connection"

        caller = asyncio.ensure_future(within(stubborn(), 10.0, discard=discarded.append))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        for _ in range(3):
            await asyncio.sleep(0)
        return discarded

    assert asyncio.run(run()) == ["late connection"]


def test_a_timeout_raises_and_cancels_the_call() -> None:
    async def run() -> list[str]:
        seen: list[str] = []

        async def hang() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        with pytest.raises(asyncio.TimeoutError):
            await within(hang(), 0.01)
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(run()) == ["cancelled"]


def test_a_result_or_an_error_comes_back_as_it_is() -> None:
    async def fail() -> None:
        raise ConnectionRefusedError("refused")

    async def run() -> str:
        with pytest.raises(ConnectionRefusedError, match="refused"):
            await within(fail(), 10.0)
        return await within(asyncio.sleep(0, "result"), None)

    assert asyncio.run(run()) == "result"
