"""HTTP/2 for gRPC calls, hand-written because client CPU per request is the point (RFC 9113, gRPC's
PROTOCOL-HTTP2): frames, a connection's streams, flow control both ways, gRPC's message framing, and a pool of
connections.

Request header blocks are HPACK-encoded once (static table and literals, the dynamic table set to 0), so every
request's HEADERS frame is the same bytes but for the stream id. The client's SETTINGS set the header table size
to 0, so the server's response and trailer blocks repeat too: each distinct block is decoded once (with `hpack`)
and looked up by its bytes afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import unquote

import hpack

from loadgen.transport.errors import internal

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 1, 2, 3, 6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11
ERROR_NAMES = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
]

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MIN_FRAME_SIZE = 16_384  # every peer accepts frames this large; the client's SETTINGS keep it as its own limit
MAX_FRAME_SIZE = 2**24 - 1  # the largest SETTINGS_MAX_FRAME_SIZE a peer may set (a frame's 3-byte length)
MAX_HEADER_LIST_SIZE = 1 << 20  # advertised, and the decoder's limit: a larger header block fails its stream
MAX_DROPPED_BLOCK = 16 << 20  # a header block read this far without its end (all dropped) ends the connection
MAX_BLOCK_FRAMES = 2048  # a header block in more frames ends the connection (CONTINUATION floods)
MAX_CACHED_BLOCK = 4096  # larger header blocks are decoded each time, never kept
MAX_QUEUED_WRITES = 256  # frames queued in one turn of the event loop before they are written at once
MAX_QUEUED_CONTROL = 1000  # PING and SETTINGS answered while the server reads nothing, before GOAWAY
MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's limit on one message, the default limit on a response's
WINDOW_REFILL = 1 << 30  # received bytes after which a window is topped up again
HEADER_CACHE_SIZE = 256
MAX_OPENINGS = 3  # connections opened in a row that take no stream before a request fails

# gRPC status codes (grpc.StatusCode's numbers) this module gives failed calls
CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 1, 2, 4, 7, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16
# what a gRPC client makes of an HTTP status other than 200, and of a stream the server reset (gRPC's mapping)
_HTTP_STATUS = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED}
_HTTP_STATUS |= dict.fromkeys((429, 502, 503, 504), UNAVAILABLE)
_RESET_STATUS = {CANCEL: CANCELLED, REFUSED_STREAM: UNAVAILABLE, ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED}

Failure = Callable[[int, str], Exception]
"""Turns a gRPC status code and message into the exception a failed call raises."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header and payload."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def settings_frame(settings: Iterable[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in settings))


def header_frames(stream_id: int, block: bytes, max_frame: int, end_stream: bool = False) -> bytes:
    """A header block as a HEADERS frame and, past `max_frame` bytes, CONTINUATION frames."""
    if not MIN_FRAME_SIZE <= max_frame <= MAX_FRAME_SIZE:
        raise ValueError(f"a frame size of {max_frame} bytes, outside HTTP/2's {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}")
    parts = [block[at : at + max_frame] for at in range(0, len(block), max_frame)] or [b""]
    flags = END_STREAM if end_stream else 0
    if len(parts) == 1:
        return frame(HEADERS, flags | END_HEADERS, stream_id, parts[0])
    middle = [frame(CONTINUATION, 0, stream_id, part) for part in parts[1:-1]]
    return b"".join(
        [frame(HEADERS, flags, stream_id, parts[0]), *middle, frame(CONTINUATION, END_HEADERS, stream_id, parts[-1])]
    )


def request_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """A request's header block, encoded once. It starts by setting the dynamic table to 0, so it refers to no
    table entry and leaves none behind: the same bytes serve every request."""
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    return bytes(encoder.encode(list(headers)))


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}
"""gRPC's message encodings (`grpc-encoding`): gzip, and deflate in zlib's format."""


def grpc_message(message: bytes, compression: str = "none") -> bytes:
    """A message in gRPC's length-prefixed framing, compressed when asked (the flag byte says so)."""
    if compression == "none":
        return b"\0" + len(message).to_bytes(4, "big") + message
    compressed = COMPRESSORS[compression](message)
    return b"\1" + len(compressed).to_bytes(4, "big") + compressed


class Request(NamedTuple):
    """A request's frames built once: only the stream id (twice) goes between the parts."""

    head: bytes  # the HEADERS frame's header up to its stream id
    middle: bytes  # the header block, then the DATA frame's header up to its stream id (END_STREAM set)
    body: bytes  # the message in gRPC framing
    block: bytes  # the header block alone


def prepare(block: bytes, body: bytes) -> Request:
    """The frames of a unary request: HEADERS with `block`, then `body` as DATA that ends the stream. A block or body
    larger than any frame gets no pre-built frame header: `Connection.start` splits it into frames."""
    head = _length(block) + bytes((HEADERS, END_HEADERS))
    return Request(head, block + _length(body) + bytes((DATA, END_STREAM)), body, block)


def _length(payload: bytes) -> bytes:
    """A frame header's length field for `payload`, or zeros when no frame can hold it (never sent whole)."""
    return len(payload).to_bytes(3, "big") if len(payload) <= MAX_FRAME_SIZE else bytes(3)


class Headers(NamedTuple):
    """What a gRPC client needs of a decoded header block."""

    status: int | None  # :status
    grpc_status: int | None
    grpc_message: str


def summarise(headers: Iterable[tuple[Any, Any]]) -> Headers:
    """The parts of a decoded header block a gRPC call needs (grpc-message is percent-decoded)."""
    fields = {_text(name): _text(value) for name, value in headers}
    grpc_status = fields.get("grpc-status")
    return Headers(
        _number(fields.get(":status", "")),
        None if grpc_status is None else _number(grpc_status, UNKNOWN),
        unquote(fields.get("grpc-message", "")),
    )


def _number(text: str, otherwise: int | None = None) -> int | None:
    """A header's decimal number: ASCII digits only (`str.isdigit` takes "²", which `int` refuses)."""
    return int(text) if text.isascii() and text.isdigit() else otherwise


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _error_name(code: int) -> str:
    return ERROR_NAMES[code] if code < len(ERROR_NAMES) else f"error {code}"


class Call:
    """One stream of a connection: what the connection hands it (header blocks, data, a reset, a failure) and the
    data it still has to send. Subclasses say what a response is."""

    __slots__ = ("answered", "connection", "failure", "outgoing", "received", "send_window", "stream_id")

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self.connection: Connection | None = None
        self.stream_id = 0
        self.send_window = 0
        self.outgoing: collections.deque[memoryview] | None = None  # data flow control holds back
        self.received = 0
        self.answered = False  # the response's headers came: the next header block is the trailers

    def on_headers(self, headers: Headers, end_stream: bool) -> None:
        """A header block arrived: the response's headers, its trailers, or both at once (Trailers-Only)."""
        if not self.answered:
            self.answered = True
            if headers.status is None:
                return self.fail(UNKNOWN, "the server answered without a valid HTTP :status")
            if headers.status != 200:
                code = _HTTP_STATUS.get(headers.status, UNKNOWN)
                return self.fail(code, f"the server answered with HTTP status {headers.status}")
        if end_stream:
            if headers.grpc_status is None:
                return self.fail(UNKNOWN, "the server ended the stream without a grpc-status")
            self.close_stream()
            self.finish(headers.grpc_status, headers.grpc_message)
        return None

    def on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self, code: int, message: str) -> None:
        """The server ended the stream with a gRPC status (the stream is already forgotten)."""
        raise NotImplementedError

    def failed(self, error: Exception) -> None:
        """Hand a failure to whoever waits for this call."""
        raise NotImplementedError

    def refused(self) -> bool:
        """The server did not process the stream (REFUSED_STREAM, or above a GOAWAY's last stream): True when the
        call will be sent again elsewhere, False to fail it."""
        return False

    def fail(self, code: int, message: str) -> None:
        """The call failed on this side: the stream is reset on the wire, and the failure handed on."""
        self.close_stream(CANCEL)
        self.failed(self.failure(code, message))

    def crash(self, error: Exception) -> None:
        """Handling the call's frames raised: the stream is reset and the call fails with what was raised."""
        self.close_stream(INTERNAL_ERROR)
        self.failed(internal(error))

    def close_stream(self, error_code: int | None = None) -> None:
        """Forget the stream; with `error_code`, reset it on the wire."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.forget(self, error_code)


class HeaderBlock:
    """A header block arriving in a HEADERS frame and CONTINUATION frames; past the limit its bytes are dropped."""

    __slots__ = ("dropped", "flags", "frames", "parts", "size", "stream_id")

    def __init__(self, stream_id: int, flags: int, first: bytes) -> None:
        self.stream_id = stream_id
        self.flags = flags  # the HEADERS frame's (END_STREAM)
        self.parts = [first]
        self.size = len(first)
        self.frames = 1
        self.dropped = False

    def add(self, part: bytes) -> None:
        """One more CONTINUATION frame's fragment."""
        self.size += len(part)
        self.frames += 1
        if not self.dropped:
            self.parts.append(part)

    def drop(self) -> None:
        """Keep none of it: the block is over the limit."""
        self.dropped = True
        self.parts = []


class MessageTooLarge(ValueError):
    """A message's length prefix says more than the reader's limit."""


class MessageReader:
    """gRPC's length-prefixed messages out of DATA frames: several in one frame, or one split across frames. The
    frames of a message split across many are kept as they come and joined once, when the message is whole."""

    __slots__ = ("chunks", "max_bytes", "pending", "wanted")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes  # a longer message raises MessageTooLarge once its prefix came
        self.pending = 0  # bytes in `chunks`
        self.chunks: list[bytes] = []
        self.wanted = 5  # bytes needed before anything more can be read: a prefix, or a whole message

    def feed(self, data: bytes, deliver: Callable[[bytes], None]) -> None:
        """Hand every whole message to `deliver`; keep the rest. Raises ValueError on a compressed message, and
        MessageTooLarge on one over the limit."""
        if self.chunks:
            self.chunks.append(data)
            self.pending += len(data)
            if self.pending < self.wanted:
                return
            data = b"".join(self.chunks)
            self.chunks = []
            self.pending = 0
        at = 0
        size = len(data)
        self.wanted = 5
        while size - at >= 5:
            if data[at]:
                raise ValueError("the server sent a compressed message, which loadgen never asks for")
            length = int.from_bytes(data[at + 1 : at + 5], "big")
            if length > self.max_bytes:
                raise MessageTooLarge(f"a message of {length} bytes, over the limit of {self.max_bytes}")
            end = at + 5 + length
            if end > size:
                self.wanted = end - at
                break
            deliver(data[at + 5 : end])
            at = end
        if at < size:
            self.chunks.append(data[at:])
            self.pending = size - at


class Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in and out, its streams, flow control, SETTINGS, PING, GOAWAY.

    `ready` is done once the server's first SETTINGS came (or the connection failed). `on_retired` is called once
    the connection takes no new streams (GOAWAY, closed, stream ids used up).
    """

    def __init__(self, failure: Failure, peer: str, on_retired: Callable[[Connection], None] | None = None) -> None:
        self.failure = failure
        self.peer = peer  # the server's address, for messages
        self.on_retired = on_retired
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._out: list[bytes] = []  # bytes written this turn of the event loop
        self.streams: dict[int, Call] = {}
        self.next_id = 1
        self.accepting = True  # takes new streams
        self.closed = False
        self.max_streams = MAX_STREAM_ID
        self.max_frame = MIN_FRAME_SIZE
        self.initial_window = DEFAULT_WINDOW  # the server's window for each new stream
        self.send_window = DEFAULT_WINDOW  # the server's window for the whole connection
        self.blocked: collections.deque[Call] = collections.deque()  # calls with data flow control holds back
        self.received = 0
        self._buffer = b""
        self._decoder = hpack.Decoder(MAX_HEADER_LIST_SIZE)
        self._blocks: dict[bytes, Headers] = {}
        self._continued: HeaderBlock | None = None  # a header block awaiting CONTINUATION frames
        self.paused = False  # the transport's buffer is full: the server reads nothing for now
        self._unanswered = 0  # PING and SETTINGS answered while paused

    # the connection

    def _write(self, data: bytes) -> None:
        """Queue bytes for the wire: what one turn of the event loop writes goes out in one system call."""
        out = self._out
        if not out and not self.closed:
            self._loop.call_soon(self.drain)
        out.append(data)
        if len(out) >= MAX_QUEUED_WRITES:  # a turn that reads much (a flood of PINGs) writes as it goes
            self.drain()

    def drain(self) -> None:
        """Write what is queued."""
        out = self._out
        if out:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        settings = [
            (SETTINGS_HEADER_TABLE_SIZE, 0),
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE),
        ]
        self._write(
            PREFACE
            + settings_frame(settings)
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._unanswered = 0
        if self.blocked:
            self._flush()

    def _answer(self, answer: bytes) -> None:
        """Answer a PING or SETTINGS; while the server reads nothing, only so many (CVE-2019-9512's flood)."""
        if self.paused:
            self._unanswered += 1
            if self._unanswered > MAX_QUEUED_CONTROL:
                return self._connection_error(
                    ENHANCE_YOUR_CALM,
                    f"over {MAX_QUEUED_CONTROL} PING and SETTINGS frames to answer while it reads nothing "
                    "(loadgen's limit on queued control frames)",
                )
        self._write(answer)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the connection to {self.peer} closed: {exc}" if exc else f"{self.peer} closed the connection"
        self._end(self.failure(UNAVAILABLE, reason))

    def _retire(self) -> None:
        if self.accepting:
            self.accepting = False
            if self.on_retired is not None:
                self.on_retired(self)

    def _end(self, error: Exception, abort: bool = True) -> None:
        """The connection is over: every call on it fails with `error`."""
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        if self.on_retired is not None:
            self.on_retired(self)
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # whoever awaits it gets it; nobody else needs to hear
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for call in streams.values():
            call.connection = None
            call.outgoing = None
            call.failed(error)
        if self.transport is not None:
            self.drain()
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def close(self) -> None:
        """Say goodbye and close; calls still in flight fail."""
        self._write(frame(GOAWAY, 0, 0, bytes(8)))
        self._end(self.failure(CANCELLED, "the connection was closed"), abort=False)

    def _connection_error(self, code: int, message: str) -> None:
        """A protocol error the connection cannot recover from: tell the server, fail every call on it."""
        self._write(frame(GOAWAY, 0, 0, bytes(4) + code.to_bytes(4, "big")))
        self._end(self.failure(UNAVAILABLE, f"HTTP/2 {_error_name(code)} with {self.peer}: {message}"))

    # streams out

    @property
    def has_room(self) -> bool:
        """Takes one more stream."""
        return self.accepting and len(self.streams) < self.max_streams

    def _open(self, call: Call) -> bytes:
        stream_id = self.next_id
        self.next_id = stream_id + 2
        if stream_id + 2 > MAX_STREAM_ID:
            self._retire()
        call.stream_id = stream_id
        call.connection = self
        call.send_window = self.initial_window
        self.streams[stream_id] = call
        return stream_id.to_bytes(4, "big")

    def start(self, call: Call, request: Request) -> None:
        """Send a unary request: HEADERS, then DATA that ends the stream, as flow control allows."""
        sid = self._open(call)
        try:
            self._send_request(call, sid, request)
        except BaseException:
            self._abandon(call)
            raise

    def _abandon(self, call: Call) -> None:
        """Forget a stream whose opening failed before anything of it went out."""
        self.streams.pop(call.stream_id, None)
        call.connection = None

    def _send_request(self, call: Call, sid: bytes, request: Request) -> None:
        body = request.body
        size = len(body)
        if (
            size <= self.max_frame
            and size <= self.send_window
            and size <= call.send_window
            and len(request.block) <= self.max_frame
            and not self.blocked
            and not self.paused
        ):
            self._write(b"".join((request.head, sid, request.middle, sid, body)))
            self.send_window -= size
            call.send_window -= size
        else:
            self._write(header_frames(call.stream_id, request.block, self.max_frame))
            self._hold(call, body, end_stream=True)

    def start_stream(self, call: Call, block: bytes) -> None:
        """Open a stream whose messages follow with `send` (a streaming call)."""
        self._open(call)
        self._write(header_frames(call.stream_id, block, self.max_frame))

    def send(self, call: Call, body: bytes) -> None:
        """One more message (in gRPC framing) on an open stream, as flow control allows."""
        size = len(body)
        if (
            call.outgoing is None
            and size <= self.max_frame
            and size <= self.send_window
            and size <= call.send_window
            and not self.blocked
            and not self.paused
        ):
            self._write(b"".join((size.to_bytes(3, "big"), b"\0\0", call.stream_id.to_bytes(4, "big"), body)))
            self.send_window -= size
            call.send_window -= size
        else:
            self._hold(call, body, end_stream=False)

    def _hold(self, call: Call, body: bytes, end_stream: bool) -> None:
        if call.outgoing is None:
            call.outgoing = collections.deque()
            self.blocked.append(call)
        call.outgoing.append(memoryview(body))
        if end_stream:
            call.outgoing.append(memoryview(b""))  # the end of the stream
        self._flush()

    def _flush(self) -> None:
        """Send what the windows allow of the data held back, each blocked call in turn, until the transport's buffer
        is full (then `resume_writing` goes on)."""
        if self.closed:
            return
        for _ in range(len(self.blocked)):
            if self.paused:
                return
            call = self.blocked.popleft()
            outgoing = call.outgoing
            assert outgoing is not None
            while outgoing:
                chunk = outgoing[0]
                end = len(outgoing) == 2 and not outgoing[1]
                size = min(len(chunk), self.max_frame, self.send_window, call.send_window)
                if size == 0 and chunk:
                    break  # a window is shut: wait for WINDOW_UPDATE
                last = size == len(chunk)
                flags = END_STREAM if last and end else 0
                self._write(frame(DATA, flags, call.stream_id, bytes(chunk[:size])))
                self.send_window -= size
                call.send_window -= size
                if not last:
                    outgoing[0] = chunk[size:]
                    continue
                outgoing.popleft()
                if end:
                    outgoing.popleft()
            if outgoing:
                self.blocked.append(call)
            else:
                call.outgoing = None

    def forget(self, call: Call, error_code: int | None) -> None:
        """A call is over: drop its stream, resetting it on the wire with `error_code`."""
        stream_id = call.stream_id
        if self.streams.pop(stream_id, None) is None:
            return
        if call.outgoing is not None:
            call.outgoing = None
            self.blocked.remove(call)
        if error_code is not None:
            self._write(frame(RST_STREAM, 0, stream_id, error_code.to_bytes(4, "big")))
        if not self.streams and not self.accepting:
            self.close()

    # frames in

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as error:  # a bug, or a server that broke a parser: the connection ends, its calls fail
            self._connection_error(INTERNAL_ERROR, str(internal(error)))

    def _receive(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        size = len(data)
        at = 0
        while size - at >= 9:
            length = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
            if length > MIN_FRAME_SIZE:
                return self._connection_error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            end = at + 9 + length
            if end > size:
                break
            kind = data[at + 3]
            flags = data[at + 4]
            stream_id = int.from_bytes(data[at + 5 : at + 9], "big") & MAX_STREAM_ID
            payload = data[at + 9 : end]
            at = end
            if self._continued is not None and kind != CONTINUATION:
                return self._connection_error(PROTOCOL_ERROR, "a header block interrupted by another frame")
            if kind == DATA:
                self._on_data(flags, stream_id, payload)
            elif kind == HEADERS:
                self._on_headers(flags, stream_id, payload)
            elif kind == CONTINUATION:
                self._on_continuation(flags, stream_id, payload)
            else:
                self._on_control(kind, flags, stream_id, payload)
            if self.closed:
                return None
        self._buffer = data[at:] if at < size else b""
        return None

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.received += len(payload)
        if self.received >= WINDOW_REFILL:
            self._refill(0, self.received)
            self.received = 0
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]] if payload else payload
        call = self.streams.get(stream_id)
        if call is None:
            return  # a stream already over (cancelled, reset, timed out)
        call.received += len(payload)
        if call.received >= WINDOW_REFILL:
            self._refill(stream_id, call.received)
            call.received = 0
        if payload:
            try:
                call.on_data(payload)
            except Exception as error:
                return call.crash(error)
        if flags & END_STREAM and call.connection is self:
            call.fail(INTERNAL, "the server ended the stream without trailers")

    def _refill(self, stream_id: int, size: int) -> None:
        self._write(frame(WINDOW_UPDATE, 0, stream_id, size.to_bytes(4, "big")))

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]] if payload else payload
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._on_block(stream_id, flags, payload)
        else:
            self._continued = HeaderBlock(stream_id, flags, payload)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._continued
        if block is None or block.stream_id != stream_id:
            return self._connection_error(PROTOCOL_ERROR, "a CONTINUATION frame that continues no header block")
        block.add(payload)
        if block.size > MAX_DROPPED_BLOCK or block.frames > MAX_BLOCK_FRAMES:
            return self._connection_error(
                ENHANCE_YOUR_CALM,
                f"a header block without its end after {MAX_DROPPED_BLOCK} bytes or {MAX_BLOCK_FRAMES} frames "
                "(loadgen's limit)",
            )
        if block.size > MAX_HEADER_LIST_SIZE and not block.dropped:
            block.drop()
            self._retire()  # new streams go elsewhere while this block is read to its end
            self._oversized(stream_id)
        if flags & END_HEADERS:
            self._continued = None
            if not block.dropped:
                self._on_block(stream_id, block.flags, b"".join(block.parts))
        return None

    def _oversized(self, stream_id: int) -> None:
        """A header block over the advertised limit fails its stream. Once the server has acknowledged the client's
        HPACK table size of 0, a block cannot change the table (but to shrink it to 0): skipping it keeps the decoder
        in step. Before, the block may have changed the table, and the connection ends."""
        message = f"a header block over SETTINGS_MAX_HEADER_LIST_SIZE ({MAX_HEADER_LIST_SIZE} bytes, loadgen's limit)"
        if self._decoder.max_allowed_table_size:
            return self._connection_error(ENHANCE_YOUR_CALM, message)
        self._decoder.header_table_size = 0  # what the block skipped had to do first, if not done yet
        call = self.streams.get(stream_id)
        if call is not None:
            call.fail(RESOURCE_EXHAUSTED, message)
        return None

    def _on_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._blocks.get(block)
        if headers is None:
            table = self._decoder.header_table
            stateless = table.maxsize == 0
            try:
                headers = summarise(self._decoder.decode(block, raw=True))
            except hpack.OversizedHeaderListError:
                return self._oversized(stream_id)
            except hpack.HPACKError as error:
                return self._connection_error(COMPRESSION_ERROR, f"a header block hpack cannot decode ({error})")
            if stateless and len(block) <= MAX_CACHED_BLOCK and len(self._blocks) < HEADER_CACHE_SIZE:
                self._blocks[block] = headers  # decoding it used no table and changed none: the same next time
        call = self.streams.get(stream_id)
        if call is not None:
            try:
                call.on_headers(headers, bool(flags & END_STREAM))
            except Exception as error:
                call.crash(error)
        return None

    def _on_control(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == SETTINGS:
            if flags & ACK:  # the client's SETTINGS hold: no dynamic HPACK table from now on
                self._decoder.max_allowed_table_size = 0
                return
            self._on_settings(payload)
            if self.closed:
                return
            self._answer(SETTINGS_ACK)
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == PING:
            if not flags & ACK:
                self._answer(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, int.from_bytes(payload[:4], "big") & MAX_WINDOW)
        elif kind == RST_STREAM:
            call = self.streams.get(stream_id)
            if call is not None:
                code = int.from_bytes(payload[:4], "big")
                call.close_stream()
                if not (code == REFUSED_STREAM and call.refused()):
                    status = _RESET_STATUS.get(code, INTERNAL)
                    call.failed(self.failure(status, f"the server reset the stream ({_error_name(code)})"))
        elif kind == GOAWAY:
            self._on_goaway(int.from_bytes(payload[:4], "big") & MAX_STREAM_ID, int.from_bytes(payload[4:8], "big"))
        elif kind == PUSH_PROMISE:
            self._connection_error(PROTOCOL_ERROR, "a PUSH_PROMISE, though the client disabled push")

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                return self._connection_error(FLOW_CONTROL_ERROR, "a connection window over 2^31-1")
        else:
            call = self.streams.get(stream_id)
            if call is None:
                return None
            call.send_window += increment
        if self.blocked:
            self._flush()
        return None

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            return self._connection_error(FRAME_SIZE_ERROR, f"a SETTINGS frame of {len(payload)} bytes")
        for at in range(0, len(payload), 6):
            key = int.from_bytes(payload[at : at + 2], "big")
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    return self._connection_error(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
                delta = value - self.initial_window
                self.initial_window = value
                for call in self.streams.values():
                    call.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE:
                    return self._connection_error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_frame = value
        if self.blocked:
            self._flush()
        return None

    def _on_goaway(self, last_id: int, code: int) -> None:
        """The server takes no new streams: those above `last_id` were not processed (sent again elsewhere, or
        failed); the rest finish here, then the connection closes."""
        self._retire()
        for stream_id in [stream_id for stream_id in self.streams if stream_id > last_id]:
            call = self.streams[stream_id]
            call.close_stream()
            if not call.refused():
                call.failed(self.failure(UNAVAILABLE, f"the server is going away (GOAWAY {_error_name(code)})"))
        if not self.streams:
            self.close()


class Pool:
    """HTTP/2 connections to one server: new streams go to one with room; another opens when all are full (the
    server's MAX_CONCURRENT_STREAMS) or going away."""

    def __init__(
        self,
        open_connection: Callable[[Callable[[Connection], None]], Awaitable[Connection]],
        failure: Failure,
    ) -> None:
        self._open_connection = open_connection
        self._failure = failure
        self.connections: list[Connection] = []  # every connection not closed yet
        self.current: Connection | None = None  # the one new streams go to while it has room
        self._opening: asyncio.Future[None] | None = None
        self._useless = 0  # connections opened in a row that took no stream

    async def connection(self) -> Connection:
        """A connection with room for one more stream."""
        while True:
            current = self.current
            if current is not None and current.has_room:
                return current
            for connection in self.connections:
                if connection.has_room:
                    self.current = connection
                    return connection
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
                self._opening.add_done_callback(_retrieved)
            await asyncio.shield(self._opening)

    async def _open(self) -> None:
        try:
            connection = await self._open_connection(self._retired)
        finally:
            self._opening = None
        if not connection.closed:
            self.connections.append(connection)
        if not connection.has_room:  # going away already, or no stream allowed
            self._useless += 1
            if self._useless >= MAX_OPENINGS:
                self._useless = 0
                raise self._failure(UNAVAILABLE, f"{MAX_OPENINGS} new connections in a row took no new stream")
            return
        self._useless = 0
        self.current = connection

    def _retired(self, connection: Connection) -> None:
        """A connection takes no new streams any more (or has closed)."""
        if self.current is connection:
            self.current = None
        if connection.closed and connection in self.connections:
            self.connections.remove(connection)

    async def close(self) -> None:
        """Close every connection (calls in flight fail) and stop opening one."""
        if self._opening is not None:
            self._opening.cancel()
            await asyncio.gather(self._opening, return_exceptions=True)
        for connection in list(self.connections):
            connection.close()


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a shared future's failure as seen: whoever awaited it got it."""
    if not future.cancelled():
        future.exception()
