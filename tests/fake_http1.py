"""A FAKE Triton HTTP/1.1 inference endpoint, for the faults a real server cannot produce on demand.

Every `every`-th request gets its `fault`: the connection closed mid-response, closed right after a keep-alive
response (the next request on it finds it gone), no answer at all, Triton's JSON error, or a chunked answer; the
rest get a small binary-tensor response. A metrics page (a path ending in /metrics) is served as a request too, for
the metrics collector's faults. Everything else is tested against the real server.

The attacks and misbehaviours of issue 24: `continue` (a 100 Continue before the answer), `duplicate` (the answer
sent twice), `until_close` (an HTTP/1.0 answer without Content-Length, ended by closing), `short_length`
(Content-Length shorter than the body), `bad_outputs` (an output's binary size not its shape's), `deep_error` (an
error body nested past Python's recursion limit), `long_header` (one header line of 20 KB), `endless_header` (a
header value that never ends), `huge_body` (1 GB declared, sent as fast as read), `endless_chunked` (chunks that
never end). The endless ones count what they sent in `flooded`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httptools
from google.protobuf import json_format

from tests.fake_triton import FakeTriton

FAULTS = (
    "none",
    "close_mid_response",
    "close_after_response",
    "never_answer",
    "error",
    "chunked",
    "continue",
    "duplicate",
    "until_close",
    "short_length",
    "bad_outputs",
    "deep_error",
    "long_header",
    "endless_header",
    "huge_body",
    "endless_chunked",
)
HEADER = json.dumps(
    {
        "model_name": "fake",
        "outputs": [{"name": "OUT", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}}],
    }
).encode()
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    + f"Inference-Header-Content-Length: {len(HEADER)}\r\nContent-Length: {len(HEADER) + 3}\r\n\r\n".encode()
    + HEADER
    + b"abc"
)
ERROR = b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{"error":"injected failure"}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    + f"Inference-Header-Content-Length: {len(HEADER)}\r\n\r\n".encode()
    + b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (HEADER[:10], HEADER[10:] + b"abc"))
    + b"0\r\n\r\n"
)
DEPTH = 100_000  # past any recursion limit
DEEP_ERROR_BODY = b'{"error":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
BAD_HEADER = HEADER.replace(b'"binary_data_size": 3', b'"binary_data_size": 2')
ANSWERS = {
    "error": ERROR,
    "chunked": CHUNKED,
    "continue": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    "duplicate": OK + OK,
    "until_close": b"HTTP/1.0 200 OK\r\n" + OK.split(b"\r\n", 1)[1].replace(b"\r\nContent-Length", b"\r\nX-Length"),
    "short_length": OK.replace(
        f"Content-Length: {len(HEADER) + 3}".encode(), f"Content-Length: {len(HEADER) + 1}".encode()
    ),
    "bad_outputs": OK.replace(HEADER, BAD_HEADER).replace(
        f"Content-Length: {len(HEADER) + 3}".encode(), f"Content-Length: {len(HEADER) + 2}".encode()
    )[:-1],
    "deep_error": b"HTTP/1.1 500 Internal Server Error\r\n"
    + f"Content-Length: {len(DEEP_ERROR_BODY)}\r\n\r\n".encode()
    + DEEP_ERROR_BODY,
    "long_header": OK.replace(b"Content-Type", b"X-Long: " + b"a" * 20_000 + b"\r\nContent-Type"),
}
CLOSE_AFTER = ("close_after_response", "until_close")
# endless answers: what comes first, then what repeats
FLOODS = {
    "endless_header": (b"HTTP/1.1 200 OK\r\nX-Endless: ", b"a" * 65536),
    "huge_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n", bytes(65536)),
    "endless_chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"10000\r\n" + bytes(65536) + b"\r\n",
    ),
}
FLOOD_BUFFER = 1 << 20  # the fake writes while the client reads, never more than this ahead


@dataclass
class FakeHttp1State:
    """What the fake saw, for the tests to check."""

    fault: str
    every: int
    url: str = ""
    connections: int = 0
    requests: int = 0
    flooded: int = 0  # bytes the endless answers sent
    lock: threading.Lock = field(default_factory=threading.Lock)
    transports: set[asyncio.BaseTransport] = field(default_factory=set)


class _Server(asyncio.Protocol):
    def __init__(self, state: FakeHttp1State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        with self.state.lock:
            self.state.connections += 1
            self.state.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        state = self.state
        transport = self.transport
        assert transport is not None
        path, self.url = self.url.decode(), b""
        if not path.endswith(("/infer", "/metrics")):
            transport.write(_control(path))
            return
        with state.lock:
            state.requests += 1
            number = state.requests
        fault = state.fault if number % state.every == 0 else "none"
        if fault == "never_answer":
            return
        if fault == "close_mid_response":
            transport.write(OK[:-20])
            transport.close()
            return
        if fault in FLOODS:
            asyncio.get_running_loop().create_task(self.flood(*FLOODS[fault]))
            return
        transport.write(ANSWERS.get(fault, OK))
        if fault in CLOSE_AFTER:
            transport.close()

    async def flood(self, first: bytes, again: bytes) -> None:
        """Send `first`, then `again` until the client closes the connection, as fast as it reads."""
        transport = self.transport
        assert transport is not None
        transport.write(first)
        while not transport.is_closing():
            if transport.get_write_buffer_size() > FLOOD_BUFFER:
                await asyncio.sleep(0.001)
                continue
            transport.write(again)
            self.state.flooded += len(again)
            await asyncio.sleep(0)


def _control(path: str) -> bytes:
    """Triton's answer to a control call, as FakeTriton's gRPC answers have it (JSON), so that a run can start."""
    method = {
        "/v2/models/fake": "ModelMetadata",
        "/v2/models/fake/config": "ModelConfig",
        "/v2/models/stats": "ModelStatistics",
        "/v2/models/fake/stats": "ModelStatistics",
    }.get(path)
    if method is None:  # live, ready, and anything else: yes
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    document = json_format.MessageToDict(getattr(FakeTriton(), method)(None, None), preserving_proto_field_name=True)
    for tensor in document.get("inputs", []) + document.get("outputs", []):
        tensor["shape"] = [int(size) for size in tensor["shape"]]  # int64s, which protobuf's JSON writes as text
    body = json.dumps(document.get("config", document)).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@contextmanager
def fake_http1(fault: str = "none", every: int = 1) -> Iterator[FakeHttp1State]:
    """Serve the fake on a free local port from its own thread's event loop; yields its state (with its URL)."""
    assert fault in FAULTS
    state = FakeHttp1State(fault, every)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-http1", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(loop.create_server(lambda: _Server(state), "127.0.0.1", 0), loop).result(
        10
    )
    state.url = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:

        async def stop() -> None:
            server.close()
            for transport in state.transports:
                transport.abort()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
