"""A FAKE Triton HTTP/1.1 inference endpoint, for the faults a real server cannot produce on demand.

Every `every`-th request gets its `fault`: the connection closed mid-response, closed right after a keep-alive
response (the next request on it finds it gone), no answer at all, Triton's JSON error, or a chunked answer; the
rest get a small binary-tensor response. Everything else is tested against the real server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httptools

FAULTS = ("none", "close_mid_response", "close_after_response", "never_answer", "error", "chunked")
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
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (HEADER[:10], HEADER[10:]))
    + b"0\r\n\r\n"
)


@dataclass
class FakeHttp1State:
    """What the fake saw, for the tests to check."""

    fault: str
    every: int
    url: str = ""
    connections: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    transports: set[asyncio.BaseTransport] = field(default_factory=set)


class _Server(asyncio.Protocol):
    def __init__(self, state: FakeHttp1State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

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
        transport.write({"error": ERROR, "chunked": CHUNKED}.get(fault, OK))
        if fault == "close_after_response":
            transport.close()


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
