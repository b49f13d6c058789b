"""The raw transport's parsers fed directly: HTTP/1.1 responses and HTTP/2 frames split at every byte boundary,
chunked and Content-Length bodies, CONTINUATION, gRPC messages several per frame and split across frames, flow
control, and the frames that end a call (RST_STREAM, GOAWAY, Trailers-Only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import hpack
import pytest
import uvloop
from tritonclient.grpc import service_pb2

from loadgen.transport import grpc_http2, h2_core, h2_frames, http2
from loadgen.transport.http1 import ConnectionClosed, Http1Connection, MalformedResponse
from loadgen.transport.raw_grpc import StreamCall, UnaryCall


class FakeTransport:
    """Collects what a protocol writes; knows whether it was closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, pieces: Iterable[bytes | memoryview]) -> None:
        for data in pieces:
            self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


def run(test: Callable[[], Any]) -> Any:
    """Run an async test body on uvloop, as loadgen runs."""
    return uvloop.run(test())


def splits(data: bytes) -> Iterator[list[bytes]]:
    """`data` whole, then cut in two at every byte boundary."""
    yield [data]
    for at in range(1, len(data)):
        yield [data[:at], data[at:]]


# HTTP/1.1

CONTENT_LENGTH = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: 4\r\n"
    b"Content-Length: 7\r\n\r\n{..}abc"
)
CHUNKED = b'HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"err\r\n8\r\nor":"x"}\r\n0\r\n\r\n'


def _http1() -> tuple[Http1Connection, FakeTransport, list[Http1Connection], list[Http1Connection]]:
    free: list[Http1Connection] = []
    closed: list[Http1Connection] = []
    connection = Http1Connection(free.append, closed.append)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport, free, closed


@pytest.mark.parametrize(
    ("response", "expected"),
    [(CONTENT_LENGTH, (200, b"{..}abc", 4)), (CHUNKED, (400, b'{"error":"x"}', None))],
    ids=["content-length", "chunked"],
)
def test_an_http1_response_split_at_every_byte(response: bytes, expected: tuple[int, bytes, int | None]) -> None:
    async def body() -> None:
        connection, transport, free, _ = _http1()
        for parts in splits(response):
            waiter = connection.send(b"POST / HTTP/1.1\r\n\r\n")
            for part in parts:
                connection.data_received(part)
            assert waiter.done() and waiter.result()[:3] == expected and waiter.result().first_ns > 0
            assert free.pop() is connection  # kept alive for the next request
        assert transport.written.count(b"POST") == len(response)

    run(body)


def test_an_http1_connection_the_server_closes() -> None:
    async def body() -> None:
        connection, transport, free, closed = _http1()
        waiter = connection.send(b"req")
        connection.data_received(CONTENT_LENGTH.replace(b"Content-Type", b"Connection: close\r\nContent-Type"))
        assert waiter.result().status == 200
        assert transport.closing and closed == [connection] and not free  # never reused

        connection, _, _, _ = _http1()
        waiter = connection.send(b"req")
        connection.data_received(CONTENT_LENGTH[:-3])
        connection.connection_lost(None)  # mid-response: fails, not to be sent again
        error = waiter.exception()
        assert isinstance(error, ConnectionClosed)
        assert str(error) == "the server closed the connection"

        connection, _, _, _ = _http1()
        connection.send(b"req")
        connection.data_received(CONTENT_LENGTH)
        waiter = connection.send(b"req")
        connection.connection_lost(None)  # a reused connection closed before any byte: the server may have run it
        error = waiter.exception()
        assert isinstance(error, ConnectionClosed) and "not sent again" in str(error)

        connection, transport, _, _ = _http1()
        waiter = connection.send(b"req")
        connection.data_received(b"SSH-2.0-OpenSSH\r\n")
        assert isinstance(waiter.exception(), MalformedResponse) and transport.closing

    run(body)


# HTTP/2

OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def _message(text: str) -> bytes:
    """A response message, as the raw path checks it: a serialised ModelInferResponse."""
    return service_pb2.ModelInferResponse(id=text).SerializeToString()


class Server:
    """Builds what a server sends: its own HPACK encoder (a real dynamic table unless told otherwise)."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0  # as the client's SETTINGS ask

    def headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool = False) -> bytes:
        flags = h2_frames.END_HEADERS | (h2_frames.END_STREAM if end_stream else 0)
        return h2_frames.frame(h2_frames.HEADERS, flags, stream_id, self.encoder.encode(headers))

    def response(self, stream_id: int, message: bytes, status: str = "0") -> bytes:
        return (
            self.headers(stream_id, OK_HEADERS)
            + h2_frames.frame(h2_frames.DATA, 0, stream_id, grpc_http2.grpc_message(message))
            + self.headers(stream_id, [("grpc-status", status)], end_stream=True)
        )


def _failure(code: int, message: str) -> Exception:
    return RuntimeError(f"{code}: {message}")


def _h2() -> tuple[http2.Connection, FakeTransport]:
    connection = http2.Connection(_failure, "the fake")
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(h2_frames.settings_frame([]))
    connection.drain()
    transport.written.clear()
    return connection, transport


def _written(connection: http2.Connection, transport: FakeTransport) -> bytes:
    """What the client wrote so far (its writes are queued until the event loop's turn ends)."""
    connection.drain()
    return bytes(transport.written)


def _unary(connection: http2.Connection, body: bytes = b"request") -> UnaryCall:
    call = UnaryCall(_failure, asyncio.get_running_loop().create_future())
    connection.start(call, h2_frames.prepare(h2_frames.request_block([(":path", "/x")]), grpc_http2.grpc_message(body)))
    return call


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The frames in what the client wrote: (type, flags, stream id, payload)."""
    frames = []
    at = 0
    while at < len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kind, flags = data[at + 3], data[at + 4]
        stream_id = int.from_bytes(data[at + 5 : at + 9], "big")
        frames.append((kind, flags, stream_id, bytes(data[at + 9 : at + 9 + length])))
        at += 9 + length
    return frames


def test_the_client_preface_and_a_request_on_the_wire() -> None:
    async def body() -> None:
        connection = http2.Connection(_failure, "the fake")
        transport = FakeTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        written = _written(connection, transport)
        assert written.startswith(h2_frames.PREFACE)
        [settings, window] = _frames(written[len(h2_frames.PREFACE) :])
        assert settings[0] == h2_frames.SETTINGS and window[0] == h2_frames.WINDOW_UPDATE
        connection.data_received(h2_frames.settings_frame([(h2_frames.SETTINGS_MAX_CONCURRENT_STREAMS, 2)]))
        assert connection.ready.done() and connection.core.settings.max_streams == 2
        _written(connection, transport)
        transport.written.clear()
        _unary(connection, b"one")
        _unary(connection, b"two")
        assert not connection.has_room
        frames = _frames(_written(connection, transport))
        assert [(kind, stream_id) for kind, _, stream_id, _ in frames] == [(1, 1), (0, 1), (1, 3), (0, 3)]
        decoder = hpack.Decoder()
        assert decoder.decode(frames[0][3]) == [(":path", "/x")] == decoder.decode(frames[2][3])
        assert frames[1][3] == grpc_http2.grpc_message(b"one") and frames[1][1] == h2_frames.END_STREAM

    run(body)


def test_a_unary_response_split_at_every_byte_and_its_blocks_decoded_once() -> None:
    async def body() -> None:
        connection, _ = _h2()
        server = Server()
        size = len(Server().response(1, _message("the response")))
        for stream_id, cut in zip(range(1, 4 * size, 2), range(size), strict=False):
            call = _unary(connection)
            response = server.response(stream_id, _message("the response"))
            for part in (response[:cut], response[cut:]):
                if part:
                    connection.data_received(part)
            assert call.future.result() == _message("the response")
            assert not connection.core.streams
        # the first response's block sets the table size; after it, headers and trailers are decoded once each
        assert len(connection.core.blocks) == 2

    run(body)


def test_continuation_frames_and_trailers_only_errors() -> None:
    async def body() -> None:
        connection, transport = _h2()
        call = _unary(connection)
        block = hpack.Encoder().encode([*OK_HEADERS, ("grpc-status", "13"), ("grpc-message", "boom%20here")])
        third = len(block) // 3
        connection.data_received(
            h2_frames.frame(h2_frames.HEADERS, h2_frames.END_STREAM, 1, block[:third])
            + h2_frames.frame(h2_frames.CONTINUATION, 0, 1, block[third : 2 * third])
            + h2_frames.frame(h2_frames.CONTINUATION, h2_frames.END_HEADERS, 1, block[2 * third :])
        )
        assert str(call.future.exception()) == "13: boom here"  # percent-decoded, as grpcio gives it

        call = _unary(connection)  # HTTP status other than 200: gRPC's mapping
        connection.data_received(Server().headers(3, [(":status", "503")], end_stream=True))
        assert str(call.future.exception()) == "14: the server answered with HTTP status 503"
        assert h2_frames.RST_STREAM in [kind for kind, *_ in _frames(_written(connection, transport))]

    run(body)


def _continued_block(stream_id: int, size: int, end: bool = True) -> Iterator[bytes]:
    """A header block of `size` bytes of zeros in 16 KB frames: HEADERS, then CONTINUATION frames."""
    yield h2_frames.frame(h2_frames.HEADERS, 0, stream_id, b"\x88")
    chunk = h2_frames.frame(h2_frames.CONTINUATION, 0, stream_id, b"\0" * h2_frames.MIN_FRAME_SIZE)
    for _ in range(size // h2_frames.MIN_FRAME_SIZE):
        yield chunk
    if end:
        yield h2_frames.frame(h2_frames.CONTINUATION, h2_frames.END_HEADERS | h2_frames.END_STREAM, stream_id)


def test_an_oversized_header_block_before_the_table_is_settled_ends_the_connection() -> None:
    async def body() -> None:
        connection, transport = _h2()  # the server has not acknowledged the client's SETTINGS (table size 0)
        call = _unary(connection)
        for chunk in _continued_block(1, h2_core.MAX_HEADER_LIST_SIZE + h2_frames.MIN_FRAME_SIZE):
            connection.data_received(chunk)
            if connection.closed:
                break
        assert connection.closed and transport.closing
        assert str(call.future.exception()) == (
            "14: HTTP/2 ENHANCE_YOUR_CALM with the fake: a header block over SETTINGS_MAX_HEADER_LIST_SIZE "
            "(1048576 bytes, loadgen's limit)"
        )
        assert _frames(_written(connection, transport))[-1][0] == h2_frames.GOAWAY

    run(body)


def test_an_oversized_header_block_fails_its_stream_alone() -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(h2_frames.frame(h2_frames.SETTINGS, h2_frames.ACK, 0))
        call, other = _unary(connection), _unary(connection)
        for chunk in _continued_block(1, 2 * h2_core.MAX_HEADER_LIST_SIZE):
            connection.data_received(chunk)
        assert str(call.future.exception()) == (
            "8: a header block over SETTINGS_MAX_HEADER_LIST_SIZE (1048576 bytes, loadgen's limit)"
        )
        assert (h2_frames.RST_STREAM, 0, 1, h2_frames.CANCEL.to_bytes(4, "big")) in _frames(
            _written(connection, transport)
        )
        assert not connection.has_room  # new streams go elsewhere; those open finish
        connection.data_received(Server().response(3, _message("fine")))
        assert other.future.result() == _message("fine") and connection.closed

        # a header list that decodes to more than the limit (a 70 KB grpc-message is well within it)
        connection, transport = _h2()
        connection.data_received(h2_frames.frame(h2_frames.SETTINGS, h2_frames.ACK, 0))
        call = _unary(connection)
        encoder = hpack.Encoder()
        encoder.header_table_size = 0
        connection.data_received(Server().headers(1, OK_HEADERS))
        trailers = [("grpc-status", "13"), ("grpc-message", "m" * 70_000)]
        connection.data_received(h2_frames.header_frames(1, encoder.encode(trailers), h2_frames.MIN_FRAME_SIZE, True))
        assert str(call.future.exception()) == "13: " + "m" * 70_000
        call = _unary(connection)  # stream 3
        connection.data_received(Server().headers(3, OK_HEADERS))
        huge = encoder.encode([("x", "y" * 100)] * 10_000, huffman=False)  # 1.3 MB listed, 1 MB sent
        assert len(huge) < h2_core.MAX_HEADER_LIST_SIZE
        connection.data_received(h2_frames.header_frames(3, huge, h2_frames.MIN_FRAME_SIZE, True))
        assert "SETTINGS_MAX_HEADER_LIST_SIZE" in str(call.future.exception()) and connection.has_room

    run(body)


def test_an_unending_header_block_ends_the_connection() -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(h2_frames.frame(h2_frames.SETTINGS, h2_frames.ACK, 0))
        call, other = _unary(connection), _unary(connection)  # the other keeps the connection open
        for chunk in _continued_block(1, 4 * h2_core.MAX_DROPPED_BLOCK, end=False):
            connection.data_received(chunk)
            if connection.closed:
                break
        assert connection.closed and str(call.future.exception()).startswith("8: a header block over")
        kind, _, _, payload = _frames(_written(connection, transport))[-1]
        assert kind == h2_frames.GOAWAY and payload[4:8] == h2_frames.ENHANCE_YOUR_CALM.to_bytes(4, "big")
        assert str(other.future.exception()) == (
            "14: HTTP/2 ENHANCE_YOUR_CALM with the fake: a header block without its end after 16777216 bytes or 2048 "
            "frames (loadgen's limit)"
        )

    run(body)


def test_rst_stream_goaway_and_refused_streams() -> None:
    async def body() -> None:
        connection, _ = _h2()
        call = _unary(connection)
        connection.data_received(
            h2_frames.frame(h2_frames.RST_STREAM, 0, 1, h2_frames.ENHANCE_YOUR_CALM.to_bytes(4, "big"))
        )
        assert str(call.future.exception()) == "8: the server reset the stream (ENHANCE_YOUR_CALM)"

        refused = _unary(connection)  # stream 3: the server never processed it, so it may be sent again
        connection.data_received(
            h2_frames.frame(h2_frames.RST_STREAM, 0, 3, h2_frames.REFUSED_STREAM.to_bytes(4, "big"))
        )
        assert type(refused.future.exception()).__name__ == "_Refused"

        retired: list[http2.Connection] = []
        connection.on_retired = retired.append
        finishing, dropped = _unary(connection), _unary(connection)  # streams 5 and 7
        connection.data_received(h2_frames.frame(h2_frames.GOAWAY, 0, 0, (5).to_bytes(4, "big") + bytes(4)))
        assert retired == [connection] and not connection.has_room
        assert type(dropped.future.exception()).__name__ == "_Refused"
        assert not finishing.future.done() and not connection.closed  # what the server accepted finishes
        connection.data_received(Server().response(5, _message("done")))
        assert finishing.future.result() == _message("done")
        assert connection.closed  # then the connection closes

    run(body)


def test_pings_are_answered_and_lost_connections_fail_every_call() -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(h2_frames.frame(h2_frames.PING, 0, 0, b"12345678"))
        assert _frames(_written(connection, transport)) == [(h2_frames.PING, h2_frames.ACK, 0, b"12345678")]
        calls = [_unary(connection) for _ in range(3)]
        connection.connection_lost(None)
        assert {str(call.future.exception()) for call in calls} == {"14: the fake closed the connection"}

    run(body)


def test_flow_control_holds_a_large_body_until_the_server_opens_its_windows() -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(h2_frames.settings_frame([(h2_frames.SETTINGS_INITIAL_WINDOW_SIZE, 1000)]))
        _written(connection, transport)
        transport.written.clear()
        image = bytes(range(256)) * 400  # 100 KB, as the seed's JPEG
        call = _unary(connection, image)
        sent = [frame for frame in _frames(_written(connection, transport)) if frame[0] == h2_frames.DATA]
        assert sum(len(payload) for *_, payload in sent) == 1000  # the stream's window
        for _ in range(200):
            transport.written.clear()
            connection.data_received(
                h2_frames.frame(h2_frames.WINDOW_UPDATE, 0, 1, (700).to_bytes(4, "big"))
                + h2_frames.frame(h2_frames.WINDOW_UPDATE, 0, 0, (700).to_bytes(4, "big"))
            )
            data = [frame for frame in _frames(_written(connection, transport)) if frame[0] == h2_frames.DATA]
            assert all(len(payload) <= 700 for *_, payload in data)
            sent += data
            if data and data[-1][1] & h2_frames.END_STREAM:
                break
        assert b"".join(payload for *_, payload in sent) == grpc_http2.grpc_message(image)
        assert not connection.core.blocked and not call.future.done()

    run(body)


def test_grpc_messages_several_per_frame_and_split_across_frames() -> None:
    messages = [service_pb2.ModelStreamInferResponse(error_message=f"m{i}" * i) for i in range(1, 6)]
    stream = b"".join(grpc_http2.grpc_message(m.SerializeToString()) for m in messages)

    async def body() -> None:
        for parts in splits(stream):
            reader = grpc_http2.MessageReader()
            got: list[bytes] = []
            for part in parts:
                reader.feed(part, got.append)
            assert [service_pb2.ModelStreamInferResponse.FromString(m) for m in got] == messages
            assert not reader.pending
        with pytest.raises(ValueError, match="compressed"):
            grpc_http2.MessageReader().feed(b"\x01\0\0\0\0", list().append)

        connection, _ = _h2()
        call = StreamCall(_failure)
        connection.start_stream(call, h2_frames.request_block([(":path", "/stream")]))
        server = Server()
        connection.data_received(server.headers(1, OK_HEADERS) + h2_frames.frame(h2_frames.DATA, 0, 1, stream[:7]))
        connection.data_received(h2_frames.frame(h2_frames.DATA, 0, 1, stream[7:]))
        assert list(call.responses) == messages
        connection.data_received(server.headers(1, [("grpc-status", "0")], end_stream=True))
        assert type(call.error).__name__ == "_EndOfStream" and not connection.core.streams

    run(body)


# Issue 24: requests larger than a frame's 3-byte length, responses of many frames, and servers that break parsers


def _data_frames(written: bytes, stream_id: int) -> list[tuple[int, bytes]]:
    """The DATA frames of one stream in what the client wrote: (flags, payload)."""
    return [
        (flags, payload)
        for kind, flags, sid, payload in _frames(written)
        if kind == h2_frames.DATA and sid == stream_id
    ]


@pytest.mark.parametrize("mib", [16, 64])
def test_a_request_larger_than_a_frame_can_say_goes_out_in_frames(mib: int) -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(
            h2_frames.frame(h2_frames.WINDOW_UPDATE, 0, 0, (h2_frames.MAX_WINDOW - 65_535).to_bytes(4, "big"))
        )
        connection.data_received(
            h2_frames.settings_frame([(h2_frames.SETTINGS_INITIAL_WINDOW_SIZE, h2_frames.MAX_WINDOW)])
        )
        _written(connection, transport)
        transport.written.clear()
        message = bytes(range(256)) * (mib << 12)
        call = _unary(connection, message)
        data = _data_frames(_written(connection, transport), 1)
        assert all(len(payload) <= h2_frames.MIN_FRAME_SIZE for _, payload in data)
        assert [flags for flags, _ in data] == [0] * (len(data) - 1) + [h2_frames.END_STREAM]
        assert b"".join(payload for _, payload in data) == grpc_http2.grpc_message(message)
        assert not call.future.done() and not connection.core.blocked

    run(body)


def test_a_larger_max_frame_size_carries_the_request_in_fewer_frames() -> None:
    async def body() -> None:
        connection, transport = _h2()
        connection.data_received(
            h2_frames.settings_frame([(h2_frames.SETTINGS_MAX_FRAME_SIZE, h2_frames.MAX_FRAME_SIZE)])
        )
        connection.data_received(
            h2_frames.frame(h2_frames.WINDOW_UPDATE, 0, 0, (h2_frames.MAX_WINDOW - 65_535).to_bytes(4, "big"))
        )
        connection.data_received(
            h2_frames.settings_frame([(h2_frames.SETTINGS_INITIAL_WINDOW_SIZE, h2_frames.MAX_WINDOW)])
        )
        _written(connection, transport)
        transport.written.clear()
        message = bytes(17_000_000)
        _unary(connection, message)
        data = _data_frames(_written(connection, transport), 1)
        assert [len(payload) for _, payload in data] == [
            h2_frames.MAX_FRAME_SIZE,
            len(message) + 5 - h2_frames.MAX_FRAME_SIZE,
        ]

    run(body)


@pytest.mark.timeout(60)  # joined once, 64 MiB takes well under a second; appended frame by frame, many minutes
def test_a_64_mib_response_is_joined_once() -> None:
    message = service_pb2.ModelInferResponse(raw_output_contents=[bytes(range(256)) * (64 << 12)]).SerializeToString()

    async def body() -> None:
        connection, _ = _h2()
        call = _unary(connection)
        server = Server()
        framed = grpc_http2.grpc_message(message)
        connection.data_received(server.headers(1, OK_HEADERS))
        for at in range(0, len(framed), h2_frames.MIN_FRAME_SIZE):
            connection.data_received(h2_frames.frame(h2_frames.DATA, 0, 1, framed[at : at + h2_frames.MIN_FRAME_SIZE]))
        connection.data_received(server.headers(1, [("grpc-status", "0")], end_stream=True))
        assert call.future.result() == message

        reader = grpc_http2.MessageReader()
        got: list[bytes] = []
        for at in range(0, len(framed), h2_frames.MIN_FRAME_SIZE):
            reader.feed(framed[at : at + h2_frames.MIN_FRAME_SIZE], got.append)
        assert got == [message] and not reader.chunks

    run(body)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            h2_frames.settings_frame([(h2_frames.SETTINGS_MAX_FRAME_SIZE, 0)]),
            "PROTOCOL_ERROR with the fake: SETTINGS_MAX_FRAME_SIZE 0",
        ),
        (
            h2_frames.settings_frame([(h2_frames.SETTINGS_MAX_FRAME_SIZE, 1 << 24)]),
            "PROTOCOL_ERROR with the fake: SETTINGS_MAX_FRAME_SIZE 16777216",
        ),
        (
            h2_frames.settings_frame([(h2_frames.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]),
            "FLOW_CONTROL_ERROR with the fake: SETTINGS_INITIAL_WINDOW_SIZE 2147483648",
        ),
        (
            h2_frames.frame(h2_frames.SETTINGS, 0, 0, bytes(7)),
            "FRAME_SIZE_ERROR with the fake: a SETTINGS frame of 7 bytes",
        ),
    ],
    ids=["max-frame-size-0", "max-frame-size-2^24", "initial-window-2^31", "length-7"],
)
def test_settings_out_of_range_end_the_connection(settings: bytes, expected: str) -> None:
    async def body() -> None:
        connection, transport = _h2()
        call = _unary(connection)
        connection.data_received(settings)  # raises nothing
        assert connection.closed and transport.closing
        assert str(call.future.exception()) == f"14: HTTP/2 {expected}"
        assert _frames(_written(connection, transport))[-1][0] == h2_frames.GOAWAY

    run(body)


def test_a_status_in_digits_int_refuses_fails_the_call_alone() -> None:
    async def body() -> None:
        connection, _ = _h2()
        server = Server()
        odd, other = _unary(connection), _unary(connection)
        connection.data_received(server.headers(1, [(":status", "²")], end_stream=True))  # raises nothing
        assert str(odd.future.exception()) == (
            "13: HTTP/2 PROTOCOL_ERROR: a malformed response: a :status of '²', not three digits"
        )
        connection.data_received(server.response(3, _message("fine")))
        assert other.future.result() == _message("fine") and not connection.closed

        odd = _unary(connection)  # stream 5
        connection.data_received(
            server.headers(5, OK_HEADERS) + server.headers(5, [("grpc-status", "²"), ("grpc-message", "odd")], True)
        )
        assert str(odd.future.exception()) == "2: odd"  # UNKNOWN, with the server's message

    run(body)


def test_an_exception_handling_one_stream_fails_that_call_alone() -> None:
    async def body() -> None:
        connection, transport = _h2()
        server = Server()

        class Broken(UnaryCall):
            def on_data(self, data: bytes) -> None:
                raise ZeroDivisionError("a bug")

        broken = Broken(_failure, asyncio.get_running_loop().create_future())
        connection.start(
            broken, h2_frames.prepare(h2_frames.request_block([(":path", "/x")]), grpc_http2.grpc_message(b""))
        )
        other = _unary(connection)
        connection.data_received(server.response(1, _message("x")) + server.response(3, _message("fine")))
        assert str(broken.future.exception()) == "internal: ZeroDivisionError: a bug"
        assert other.future.result() == _message("fine") and not connection.closed
        resets = [
            (sid, payload)
            for kind, _, sid, payload in _frames(_written(connection, transport))
            if kind == h2_frames.RST_STREAM
        ]
        assert resets == [(1, h2_frames.INTERNAL_ERROR.to_bytes(4, "big"))]

    run(body)


def test_a_response_that_is_not_grpc_fails_its_call() -> None:
    """gRPC's rules above HTTP/2's: a content-type other than gRPC's, and a message that does not parse as a
    ModelInferResponse (it used to count as a success), each fail the call alone."""

    async def body() -> None:
        connection, transport = _h2()
        server = Server()
        html, garbage, fine = _unary(connection), _unary(connection), _unary(connection)
        connection.data_received(server.headers(1, [(":status", "200"), ("content-type", "text/html")]))
        assert str(html.future.exception()) == "2: the server answered with content-type 'text/html', not gRPC"
        assert (h2_frames.RST_STREAM, 0, 1, h2_frames.CANCEL.to_bytes(4, "big")) in _frames(
            _written(connection, transport)
        )
        connection.data_received(server.response(3, b"\xff\xff\xff not protobuf"))
        assert str(garbage.future.exception()) == "13: the server's response is no ModelInferResponse"
        connection.data_received(server.response(5, _message("fine")))
        assert fine.future.result() == _message("fine") and not connection.closed

    run(body)
