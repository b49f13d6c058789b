"""A FAKE Triton gRPC server on the `h2` library, for the HTTP/2 faults a real server cannot produce on demand.

It answers the control calls as tests/fake_triton.py's fake does (one model, `fake`), and every `every`-th
inference with its `fault`: the connection closed mid-response, GOAWAY, RST_STREAM, a tiny flow-control window,
a header block over a megabyte, or no answer at all; and the attacks a client must bound (issue 24): a header
block that never ends, a 70 KB grpc-message, floods of PING or SETTINGS while reading nothing (CVE-2019-9512),
a response larger than the client's limit, and one that never ends; frames on a stream the answer closed. Floods respect the fake's own transport
(they wait while its buffer is full), so that its memory stays small and a test can bound the client's.
Everything else is tested against the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from tritonclient.grpc import service_pb2

from tests.fake_triton import FakeTriton

FAULTS = (
    "none",
    "close_mid_response",
    "goaway",
    "rst_stream",
    "tiny_window",
    "oversized_headers",
    "never_answer",
    "two_streams",  # MAX_CONCURRENT_STREAMS 2: a client needs more connections
    "endless_headers",  # a response header block whose CONTINUATION frames never end
    "huge_trailer",  # grpc-status 13 with a 70 KB grpc-message
    "ping_flood",  # stops reading, then PING after PING
    "settings_flood",  # stops reading, then SETTINGS after SETTINGS
    "large_response",  # a 4 MiB response message
    "endless_response",  # a message's prefix says 16 bytes, then DATA that never ends
    "late_frames",  # after the whole answer, DATA and HEADERS on its stream, closed (written by hand)
)
TINY_WINDOW = 16
HUGE_MESSAGE = "m" * 70_000
LARGE_RESPONSE = 4 << 20
FLOOD_LIMIT = 256 << 20  # a flood stops here even if the client never stops it (the test then fails, not hangs)
FLOOD_CHUNK = 64 << 10
STREAM_CLOSED = (5).to_bytes(4, "big")  # the error code, as RST_STREAM's payload


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def _repeated(frame: bytes) -> bytes:
    """`frame` over and over, about FLOOD_CHUNK bytes of it."""
    return frame * max(1, FLOOD_CHUNK // len(frame))


def _framed(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


def _oversized_headers(stream_id: int) -> bytes:
    """A 2 MB response header block: a HEADERS frame, then CONTINUATION frames of 16 KB."""
    # never-indexed literals: the block leaves the client's table as h2's encoder expects it
    block = hpack.Encoder().encode([(":status", "200", True), ("x-big", "x" * (2 << 20), True)], huffman=False)
    parts = [block[at : at + 16_384] for at in range(0, len(block), 16_384)]
    frames = []
    for index, part in enumerate(parts):
        kind = 1 if index == 0 else 9  # HEADERS, then CONTINUATION
        flags = 4 if index == len(parts) - 1 else 0  # END_HEADERS on the last
        frames.append(len(part).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + part)
    return b"".join(frames)


@dataclass
class FakeH2State:
    """What the fake saw, for the tests to check."""

    fault: str
    every: int
    url: str = ""
    connections: int = 0
    inferences: int = 0
    resets: int = 0  # streams the client reset (RST_STREAM)
    stream_closed: int = 0  # RST_STREAM STREAM_CLOSED from the client (late_frames: read off the wire)
    largest_request: int = 0
    flooded: int = 0  # bytes a flood wrote
    lock: threading.Lock = field(default_factory=threading.Lock)
    transports: set[asyncio.BaseTransport] = field(default_factory=set)


class _Server(asyncio.Protocol):
    def __init__(self, state: FakeH2State) -> None:
        self.state = state
        self.connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.floods: dict[int, asyncio.Task[None]] = {}  # by stream (0: the connection's)
        self.wire = b""  # late_frames: what the client sent not yet looked at frame by frame
        self.wire_read = False  # past the client's preface

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # a flood sees the transport closing and stops

    def _pour(self, stream_id: int, first: bytes, chunk: bytes) -> None:
        """Write `first`, then `chunk` again and again while the client reads, until it resets the stream or
        closes the connection."""
        assert self.transport is not None
        self.transport.write(first)
        self.floods[stream_id] = asyncio.ensure_future(self._flood(chunk))

    async def _flood(self, chunk: bytes) -> None:
        transport = self.transport
        assert transport is not None
        while not transport.is_closing() and self.state.flooded < FLOOD_LIMIT:
            await self.writable.wait()
            if transport.is_closing():
                break
            transport.write(chunk)
            with self.state.lock:
                self.state.flooded += len(chunk)
            await asyncio.sleep(0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.state.fault in ("ping_flood", "settings_flood"):  # fills the client's socket buffer sooner
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with self.state.lock:
            self.state.connections += 1
            self.state.transports.add(transport)
        if self.state.fault == "two_streams":
            self.connection.local_settings = h2.settings.Settings(
                client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2}
            )
        self.connection.initiate_connection()
        if self.state.fault == "tiny_window":
            self.connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: TINY_WINDOW})
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(self.connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.state.fault == "late_frames":
            self._count_stream_closed(data)
        for event in self.connection.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.paths[event.stream_id] = dict(event.headers)[b":path"].decode()
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                with contextlib.suppress(h2.exceptions.StreamClosedError):  # the client reset it meanwhile
                    self._answer(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                with self.state.lock:
                    self.state.resets += 1
                flood = self.floods.pop(event.stream_id, None)
                if flood is not None:  # the client refused what the flood writes
                    flood.cancel()
            if self.transport is None or self.transport.is_closing():
                return
        self._flush()

    def _count_stream_closed(self, data: bytes) -> None:
        """Count the client's RST_STREAM STREAM_CLOSED frames (h2 takes a reset of a closed stream silently)."""
        wire = self.wire + data
        if not self.wire_read and len(wire) < 24:  # the client's preface, not whole yet
            self.wire = wire
            return
        at = 0 if self.wire_read else 24
        while len(wire) >= at + 9 and len(wire) >= at + 9 + int.from_bytes(wire[at : at + 3], "big"):
            end = at + 9 + int.from_bytes(wire[at : at + 3], "big")
            if wire[at + 3] == 3 and wire[at + 9 : end] == STREAM_CLOSED:
                with self.state.lock:
                    self.state.stream_closed += 1
            at = end
        self.wire, self.wire_read = wire[at:], True

    def _answer(self, stream_id: int) -> None:
        method = self.paths[stream_id].rsplit("/", 1)[-1]
        body = bytes(self.bodies.pop(stream_id))
        if method != "ModelInfer":
            response = getattr(FakeTriton(), method)(None, None)
            return self._respond(stream_id, response.SerializeToString())
        state = self.state
        with state.lock:
            state.inferences += 1
            number = state.inferences
            state.largest_request = max(state.largest_request, len(body))
        request = service_pb2.ModelInferRequest.FromString(body[5:])
        message = service_pb2.ModelInferResponse(model_name="fake", id=request.id).SerializeToString()
        fault = state.fault if number % state.every == 0 else "none"
        if fault == "never_answer":
            return None
        if fault == "rst_stream":
            return self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        if fault == "oversized_headers":  # written by hand: h2 would Huffman-code 2 MB in Python
            assert self.transport is not None
            self.transport.write(_oversized_headers(stream_id))
            return None
        if fault in ATTACKS:
            return ATTACKS[fault](self, stream_id, message)
        if fault == "close_mid_response":
            self.connection.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            self.connection.send_data(stream_id, _framed(message)[:3])
            self._flush()
            assert self.transport is not None
            self.transport.close()
            return None
        self._respond(stream_id, message)
        if fault == "goaway":  # this stream is the last the server takes on this connection
            self.connection.close_connection(last_stream_id=stream_id)
        return None

    def _respond(self, stream_id: int, message: bytes, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self.connection.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        framed = _framed(message)
        size = self.connection.max_outbound_frame_size
        for at in range(0, len(framed), size):
            self.connection.send_data(stream_id, framed[at : at + size])
        self.connection.send_headers(stream_id, trailers or [("grpc-status", "0")], end_stream=True)

    def _late_frames(self, stream_id: int, message: bytes) -> None:
        self._respond(stream_id, message)
        self._flush()
        assert self.transport is not None
        block = hpack.Encoder().encode([(":status", "200")], huffman=False)
        self.transport.write(_frame(0, 0, stream_id, b"late") + _frame(1, 4, stream_id, block))  # DATA, HEADERS

    def _endless_headers(self, stream_id: int, message: bytes) -> None:
        self._flush()
        block = hpack.Encoder().encode([(":status", "200", True)], huffman=False)
        continuation = _frame(9, 0, stream_id, b"\0" * 16_384)  # CONTINUATION, never END_HEADERS
        self._pour(stream_id, _frame(1, 0, stream_id, block), _repeated(continuation))

    def _huge_trailer(self, stream_id: int, message: bytes) -> None:
        self._respond(stream_id, message, (("grpc-status", "13"), ("grpc-message", HUGE_MESSAGE)))

    def _control_flood(self, stream_id: int, message: bytes) -> None:
        self._flush()
        assert self.transport is not None
        self.transport.pause_reading()  # reads nothing from now on
        control = _frame(6, 0, 0, b"12345678") if self.state.fault == "ping_flood" else _frame(4, 0, 0)
        self._pour(0, b"", _repeated(control))

    def _large_response(self, stream_id: int, message: bytes) -> None:
        self._respond(stream_id, bytes(LARGE_RESPONSE))

    def _endless_response(self, stream_id: int, message: bytes) -> None:
        self.connection.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        self._flush()
        data = _frame(0, 0, stream_id, bytes(16_384))  # DATA, never END_STREAM
        self._pour(stream_id, _frame(0, 0, stream_id, _framed(bytes(16))), _repeated(data))


ATTACKS = {
    "endless_headers": _Server._endless_headers,
    "huge_trailer": _Server._huge_trailer,
    "ping_flood": _Server._control_flood,
    "settings_flood": _Server._control_flood,
    "large_response": _Server._large_response,
    "endless_response": _Server._endless_response,
    "late_frames": _Server._late_frames,
}


@contextmanager
def fake_h2(fault: str = "none", every: int = 1) -> Iterator[FakeH2State]:
    """Serve the fake on a free local port from its own thread's event loop; yields its state (with its URL)."""
    assert fault in FAULTS
    state = FakeH2State(fault, every)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-h2", daemon=True)
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
