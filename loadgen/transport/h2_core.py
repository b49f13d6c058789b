"""A client's HTTP/2 connection without I/O (RFC 9113), as python-hyper's h2 is built: bytes in (`receive`), bytes
out (`out`, with `wake`), and explicit state: the connection's (`ConnectionState`), each stream's
(`StreamState`, section 5.1), flow-control windows both ways (`Window`, sections 5.2 and 6.9),
the server's SETTINGS (`PeerSettings`, section 6.5). What a response means is not decided here: a `Stream`
subclass says it through its hooks (gRPC's in `grpc_http2`).

Every error path ends in the frame RFC 9113 asks for: a fault on one stream resets that stream (RST_STREAM) and
tells it why; a fault of the connection ends it (GOAWAY) and tells every stream. Nothing the server sends raises
out of `receive`. Limits bound what a server can make the client hold: header blocks (`MAX_HEADER_LIST_SIZE`,
advertised and given to the HPACK decoder), answers queued while the server reads nothing (`MAX_QUEUED_CONTROL`).

The client's SETTINGS set the HPACK table size to 0, so the server's header blocks repeat: each distinct block is
decoded and checked once (with `hpack`) and looked up by its bytes afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import hpack

from loadgen.transport.errors import internal
from loadgen.transport.h2_frames import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    HEADERS,
    INTERNAL_ERROR,
    MAX_FRAME_SIZE,
    MAX_STREAM_ID,
    MAX_WINDOW,
    MIN_FRAME_SIZE,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    ConnectionFault,
    Request,
    error_name,
    frame,
    goaway,
    header_frames,
    rst_stream,
    settings_frame,
    unpad,
    window_update,
)

WINDOW_REFILL = 1 << 30  # received bytes after which a window is topped up again
MAX_HEADER_LIST_SIZE = 1 << 20  # advertised, and the decoder's limit: a larger header block fails its stream
MAX_DROPPED_BLOCK = 16 << 20  # a header block read this far without its end (all dropped) ends the connection
MAX_BLOCK_FRAMES = 2048  # a header block in more frames ends the connection (CONTINUATION floods)
MAX_CACHED_BLOCK = 4096  # larger header blocks are decoded each time, never kept
HEADER_CACHE_SIZE = 256
BIG_READ = 64 << 10  # a read this large completes the frame an earlier one began without copying all of it
JOINED_BODY = 16 << 10  # a request body up to this size is copied behind its frames' headers into one write
MAX_QUEUED_WRITES = 256  # frames queued before the I/O layer is asked to write them at once (a flood of PINGs)
MAX_QUEUED_CONTROL = 1000  # PING and SETTINGS answered while the server reads nothing, before GOAWAY
MAX_DEBUG = 256  # bytes of a message in a GOAWAY's debug data
RESET_GRACE_S = 1.0  # DATA and HEADERS on a stream the client reset are ignored this long (the server sent them before
# it learnt of the reset); later, or on a stream that closed otherwise, they are answered with STREAM_CLOSED
MAX_RESETS_KEPT = 4096  # streams the client reset within the grace period, remembered (the oldest forgotten first)
LOCAL_SETTINGS = (
    (SETTINGS_HEADER_TABLE_SIZE, 0),
    (SETTINGS_ENABLE_PUSH, 0),
    (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
    (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE),
)
CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_FRAME_HEADER = struct.Struct(">BHBBL")  # a frame's 24-bit length as a byte and a short, type, flags, stream id


class StreamState(enum.IntEnum):
    """RFC 9113's stream states a client's stream passes through (no push: never reserved)."""

    IDLE = 0
    OPEN = 1
    HALF_CLOSED_LOCAL = 2  # the client sent END_STREAM
    HALF_CLOSED_REMOTE = 3  # the server sent END_STREAM
    CLOSED = 4


IDLE, OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED = StreamState


class ConnectionState(enum.IntEnum):
    """A client connection's life: the server's SETTINGS awaited, open, taking no new streams, over."""

    AWAITING_SETTINGS = 0  # the preface is sent; the server's first frame must be SETTINGS
    OPEN = 1
    DRAINING = 2  # no new streams (GOAWAY, stream ids used up, a header block dropped); open ones finish
    CLOSED = 3


ACCEPTING = ConnectionState.OPEN  # a connection in this state or an earlier one takes new streams
_LIVE, _DRAINING, _OVER = ConnectionState.OPEN, ConnectionState.DRAINING, ConnectionState.CLOSED  # for hot paths


class Window:
    """Flow-control windows, both ways (RFC 9113, 5.2 and 6.9): the connection's, and each stream's (a `Stream` is
    a Window: one object per request). `outbound`: how much DATA the server lets the client send (a smaller
    SETTINGS_INITIAL_WINDOW_SIZE can take it below 0; it never passes 2^31-1). The client lets the server send
    2^31-1 bytes on each (its SETTINGS and its preface's WINDOW_UPDATE say so) and gives back what it `taken` once
    that reaches WINDOW_REFILL."""

    __slots__ = ("outbound", "taken")

    def __init__(self, outbound: int) -> None:
        self.outbound = outbound
        self.taken = 0  # DATA received since the last WINDOW_UPDATE

    def grow(self, increment: int) -> bool:
        """Add a WINDOW_UPDATE's increment (or a SETTINGS change) to `outbound`: False, and no change, past 2^31-1."""
        size = self.outbound + increment
        if size > MAX_WINDOW:
            return False
        self.outbound = size
        return True

    def take(self, size: int, refill: int = WINDOW_REFILL) -> int | None:
        """Count `size` bytes received: the increment to grant back now (0: not yet, under `refill`), None past the
        window."""
        taken = self.taken + size
        if taken < refill:
            self.taken = taken
            return 0
        if taken > MAX_WINDOW:
            return None
        self.taken = 0
        return taken


class PeerSettings:
    """The server's SETTINGS as they stand, each checked as RFC 9113, 6.5.2 asks."""

    __slots__ = ("header_table_size", "initial_window", "max_frame", "max_header_list", "max_streams")

    def __init__(self) -> None:
        self.header_table_size = 4096
        self.max_streams = MAX_STREAM_ID  # no limit until the server sets one
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = MIN_FRAME_SIZE
        self.max_header_list = MAX_STREAM_ID

    def apply(self, payload: bytes) -> int:
        """Take a SETTINGS frame's payload; return how much SETTINGS_INITIAL_WINDOW_SIZE changed."""
        if len(payload) % 6:
            raise ConnectionFault(FRAME_SIZE_ERROR, f"a SETTINGS frame of {len(payload)} bytes")
        before = self.initial_window
        for at in range(0, len(payload), 6):
            self._set(int.from_bytes(payload[at : at + 2], "big"), int.from_bytes(payload[at + 2 : at + 6], "big"))
        return self.initial_window - before

    def _set(self, key: int, value: int) -> None:
        if key == SETTINGS_HEADER_TABLE_SIZE:
            self.header_table_size = value  # the client's blocks use no table: any size will do
        elif key == SETTINGS_ENABLE_PUSH:
            if value != 0:  # a server may only say 0 (RFC 9113, 6.5.2)
                raise ConnectionFault(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value} from a server")
        elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.max_streams = value
        elif key == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise ConnectionFault(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
            self.initial_window = value
        elif key == SETTINGS_MAX_FRAME_SIZE:
            if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE:
                raise ConnectionFault(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
            self.max_frame = value
        elif key == SETTINGS_MAX_HEADER_LIST_SIZE:
            self.max_header_list = value
        # other identifiers are ignored, as RFC 9113 asks


class HeaderList:
    """A decoded header block: its fields by name, and what HTTP makes of it as a response's headers or as
    trailers (RFC 9113, 8.1 and 8.3). Decoded and checked once per distinct block; `memo` holds what the layer
    above makes of it, once too."""

    __slots__ = ("fields", "informational", "memo", "response_problem", "status", "trailer_problem")

    def __init__(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        self.fields: dict[str, str] = {}
        self.memo: Any = None
        self.status: int | None = None  # :status, when it is three digits
        problem = ""  # why the block is malformed, as either
        pseudo = regular = False
        for raw_name, raw_value in pairs:
            name, value = _text(raw_name), _text(raw_value)
            if name.startswith(":"):
                pseudo = True
                problem = problem or self._pseudo(name, value, regular)
            else:
                regular = True
                problem = problem or _regular_problem(name)
            self.fields[name] = value
        self.informational = self.status is not None and 100 <= self.status < 200  # a 1xx: more headers follow
        self.response_problem = problem or self._status_problem()  # why it cannot be a response's headers
        self.trailer_problem = problem or ("a pseudo-header in trailers" if pseudo else "")  # or trailers

    def _pseudo(self, name: str, value: str, after_regular: bool) -> str:
        """Take a pseudo-header field; what is wrong with it ("" if nothing)."""
        if after_regular:
            return f"the pseudo-header {name} after regular fields"
        if name != ":status":
            return f"the pseudo-header {name} in a response"
        if ":status" in self.fields:
            return "two :status fields"
        if len(value) == 3 and value.isascii() and value.isdigit():
            self.status = int(value)
        return ""

    def _status_problem(self) -> str:
        if self.status is None:
            status = self.fields.get(":status")
            return f"a :status of {status!r}, not three digits" if status is not None else "no :status"
        return "101 Switching Protocols, which HTTP/2 forbids" if self.status == 101 else ""


def _regular_problem(name: str) -> str:
    """What is wrong with a regular field's name in HTTP/2 ("" if nothing)."""
    if name != name.lower():
        return f"the field name {name!r} in capitals"
    if name in CONNECTION_HEADERS:
        return f"the connection-specific field {name}"
    return ""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Closed(NamedTuple):
    """Why a stream ended other than by the server ending it: `kind` says who ended it and whether the server
    processed it (`refused`: it did not, the request may go again)."""

    kind: str  # reset, refused, going_away, violation, limit, internal, connection, closed
    code: int  # the HTTP/2 error code (RST_STREAM's or GOAWAY's)
    message: str


class Stream(Window):
    """One stream the client opens, as RFC 9113's state machine (section 5.1) drives it, with its flow-control
    windows (set when it opens). Subclasses say what a response means through the hooks: `on_response`,
    `on_data`, `on_end`, `on_close`. A hook that raises resets the stream (INTERNAL_ERROR) and gets `on_close`
    with the exception's description."""

    __slots__ = ("connection", "ending", "held", "responded", "state", "stream_id")

    def __init__(self) -> None:
        self.connection: ClientConnection | None = None  # while the stream is active on one
        self.stream_id = 0
        self.state = IDLE
        self.held: collections.deque[memoryview] | None = None  # DATA flow control holds back
        self.ending = False  # END_STREAM is to go once `held` is out
        self.responded = False  # the response's (final) headers came: the next header block is the trailers

    def on_response(self, headers: HeaderList, end_stream: bool) -> None:
        """The response's headers (not a 1xx): with `end_stream`, the stream ends with them (Trailers-Only)."""

    def on_data(self, data: bytes) -> None:
        """A DATA frame's content (padding removed)."""

    def on_end(self, trailers: HeaderList | None) -> None:
        """The server ended the stream: with trailers, or None when its last DATA frame ended it."""

    def on_close(self, closed: Closed) -> None:
        """The stream ended otherwise: see `Closed`."""

    def cancel(self, code: int = CANCEL) -> None:
        """Reset the stream (RST_STREAM `code`) if it is still active; no hook is called."""
        connection = self.connection
        if connection is not None:
            connection.reset(self, code)


class Events(Protocol):
    """What the I/O layer hears from a connection (besides `wake`, a plain callable for the hot path)."""

    def flush(self) -> None:
        """MAX_QUEUED_WRITES frames are in `out` (a read that asks for many answers): write them now."""

    def settled(self) -> None:
        """The server's first SETTINGS came: the connection is ready."""

    def retired(self) -> None:
        """The connection takes no new streams (once)."""

    def over(self, abort: bool) -> None:
        """The connection is over: write `out` and close (`abort`: at once, after a protocol error)."""


class ClientConnection:
    """A client's HTTP/2 connection without I/O: `initiate`, then `receive` what the server sends; open streams with
    `send_request` (a unary request's pre-built frames), `send_headers` and `send_data`; `out` holds what to
    write (`wake` is called when it gets its first bytes). `peer` names the server in messages."""

    def __init__(self, events: Events, wake: Callable[[], object], peer: str = "the server") -> None:
        self.events = events
        self.wake = wake  # called when `out` gets its first bytes since it was last taken: write them soon
        self.peer = peer
        self.state = ConnectionState.AWAITING_SETTINGS
        self.out: list[bytes | memoryview] = []
        self.streams: dict[int, Stream] = {}
        self.resets: dict[int, float] = {}  # streams the client reset, oldest first, and when (time.monotonic)
        self.next_id = 1
        self.last_id = 0  # the last stream the client opened
        self.settings = PeerSettings()
        self.max_frame = MIN_FRAME_SIZE  # the server's SETTINGS, as the hot path reads them
        self.initial_window = DEFAULT_WINDOW
        self.max_streams = MAX_STREAM_ID
        self.window = Window(DEFAULT_WINDOW)  # the connection's (the client's opened to 2^31-1 by its preface)
        self.blocked: collections.deque[Stream] = collections.deque()  # streams with DATA held back
        self.decoder = hpack.Decoder(MAX_HEADER_LIST_SIZE)
        self.blocks: dict[bytes, HeaderList] = {}
        self.continued: HeaderBlock | None = None  # a header block awaiting CONTINUATION frames
        self._irregular = True  # frames must be checked for their order (no SETTINGS yet, or `continued`)
        self.paused = False  # the transport's buffer is full: the server reads nothing for now
        self.unanswered = 0  # PING and SETTINGS answered while paused
        self._buffer = b""  # the start of a frame not whole yet
        self._handlers: tuple[Callable[[int, int, bytes], None], ...] = (
            self._on_data,
            self._on_headers,
            self._on_priority,
            self._on_rst_stream,
            self._on_settings,
            self._on_push_promise,
            self._on_ping,
            self._on_goaway,
            self._on_window_update,
            self._on_continuation,
        )

    # the connection

    @property
    def accepting(self) -> bool:
        """Takes new streams."""
        return self.state <= ACCEPTING

    @property
    def has_room(self) -> bool:
        """Takes one more stream."""
        return self.state <= _LIVE and len(self.streams) < self.max_streams

    def _write(self, data: bytes | memoryview) -> None:
        out = self.out
        out.append(data)
        queued = len(out)
        if queued == 1:
            self.wake()
        elif queued >= MAX_QUEUED_WRITES:
            self.events.flush()

    def initiate(self) -> None:
        """The client's preface: SETTINGS (no HPACK table, no push, windows of 2^31-1, the header list limit)."""
        self._write(PREFACE + settings_frame(LOCAL_SETTINGS) + window_update(0, MAX_WINDOW - DEFAULT_WINDOW))

    def _retire(self) -> None:
        if self.state <= ConnectionState.OPEN:
            self.state = ConnectionState.DRAINING
            self.events.retired()

    def close(self, message: str = "the connection was closed") -> None:
        """Say goodbye (GOAWAY NO_ERROR) and end: streams still active close with `message` (kind "closed")."""
        if self.state != ConnectionState.CLOSED:
            self._write(goaway(0, NO_ERROR))
            self._end(Closed("closed", NO_ERROR, message), abort=False)

    def lost(self, message: str) -> None:
        """The transport closed: every stream closes with `message` (kind "connection")."""
        self._end(Closed("connection", NO_ERROR, message), abort=True)

    def fault(self, code: int, message: str) -> None:
        """End the connection for a protocol error: GOAWAY with `code`, every stream closes saying why."""
        if self.state == ConnectionState.CLOSED:
            return
        self._write(goaway(0, code, message.encode()[:MAX_DEBUG]))
        text = f"HTTP/2 {error_name(code)} with {self.peer}: {message}"
        self._end(Closed("connection", code, text), abort=True)

    def _end(self, closed: Closed, abort: bool) -> None:
        if self.state == ConnectionState.CLOSED:
            return
        self._retire()
        self.state = ConnectionState.CLOSED
        for stream in list(self.streams.values()):
            self._close(stream)
            _tell(stream, closed)
        self.events.over(abort)

    def pause(self) -> None:
        """The transport's buffer is full: hold DATA back, and count what is answered meanwhile."""
        self.paused = True

    def resume(self) -> None:
        """The transport's buffer drained: send what is held."""
        self.paused = False
        self.unanswered = 0
        if self.blocked:
            self._flush()

    def _answer(self, answer: bytes) -> None:
        """Answer a PING, SETTINGS or a frame on a closed stream; while the server reads nothing, only so many (CVE-2019-9512's flood)."""
        if self.paused:
            self.unanswered += 1
            if self.unanswered > MAX_QUEUED_CONTROL:
                raise ConnectionFault(
                    ENHANCE_YOUR_CALM,
                    f"over {MAX_QUEUED_CONTROL} PING, SETTINGS and closed streams' frames to answer while it reads "
                    "nothing (loadgen's limit on queued control frames)",
                )
        self._write(answer)

    # streams out

    def _open(self, stream: Stream) -> bytes:
        """Give `stream` the next id and its windows; its id as a frame header's last 4 bytes."""
        if self.state > _LIVE:
            raise RuntimeError("the connection takes no new streams")
        stream_id = self.next_id
        self.next_id = stream_id + 2
        if stream_id + 2 > MAX_STREAM_ID:
            self._retire()
        self.last_id = stream_id
        stream.stream_id = stream_id
        stream.connection = self
        stream.outbound = self.initial_window
        stream.taken = 0
        self.streams[stream_id] = stream
        return stream_id.to_bytes(4, "big")

    def send_request(self, stream: Stream, request: Request) -> None:
        """Open `stream` with a request: HEADERS, then DATA that ends the stream, as flow control allows."""
        sid = self._open(stream)
        body = request.body
        size = len(body)
        window = self.window
        if (
            size <= self.max_frame
            and size <= window.outbound
            and size <= stream.outbound
            and len(request.block) <= self.max_frame
            and not self.blocked
            and not self.paused
        ):
            if size <= JOINED_BODY:
                self._write(b"".join((request.head, sid, request.middle, sid, body)))
            else:  # the frames' headers then the body itself: written together (writev), the body never copied
                self._write(b"".join((request.head, sid, request.middle, sid)))
                self._write(body)
            window.outbound -= size
            stream.outbound -= size
            stream.state = HALF_CLOSED_LOCAL
        else:
            self._write(header_frames(stream.stream_id, request.block, self.max_frame))
            stream.state = OPEN
            self._hold(stream, body, end_stream=True)

    def send_headers(self, stream: Stream, block: bytes) -> None:
        """Open `stream` with a header block; its DATA follows with `send_data` (a streaming call)."""
        self._open(stream)
        self._write(header_frames(stream.stream_id, block, self.max_frame))
        stream.state = OPEN

    def send_data(self, stream: Stream, body: bytes, end_stream: bool = False) -> None:
        """More DATA on an open stream, as flow control allows."""
        if stream.connection is not self or stream.state != OPEN or stream.ending:
            raise RuntimeError(f"stream {stream.stream_id} cannot send DATA in state {stream.state.name}")
        size = len(body)
        window = self.window
        if (
            stream.held is None
            and size <= self.max_frame
            and size <= window.outbound
            and size <= stream.outbound
            and not self.blocked
            and not self.paused
        ):
            flags = END_STREAM if end_stream else 0
            header = _data_header(size, flags, stream.stream_id)
            if size <= JOINED_BODY:
                self._write(header + body)
            else:
                self._write(header)
                self._write(body)
            window.outbound -= size
            stream.outbound -= size
            if end_stream:
                self._sent_end(stream)
        else:
            self._hold(stream, body, end_stream)

    def _hold(self, stream: Stream, body: bytes, end_stream: bool) -> None:
        if stream.held is None:
            stream.held = collections.deque()
            self.blocked.append(stream)
        if body:
            stream.held.append(memoryview(body))
        stream.ending = end_stream
        self._flush()

    def _flush(self) -> None:
        """Send what the windows allow of the DATA held back, each blocked stream in turn, until the transport's
        buffer is full (then `resume` goes on)."""
        for _ in range(len(self.blocked)):
            if self.paused or self.state == ConnectionState.CLOSED:
                return
            stream = self.blocked.popleft()
            if self._send_held(stream):
                stream.held = None
            else:
                self.blocked.append(stream)

    def _send_held(self, stream: Stream) -> bool:
        """Send what the windows allow of one stream's held DATA (then its END_STREAM): True when all of it went."""
        held = stream.held
        assert held is not None
        window = self.window
        ended = False
        while held:
            chunk = held[0]
            size = min(len(chunk), self.max_frame, window.outbound, stream.outbound)
            if size <= 0:
                return False  # a window is shut (or below 0): wait for WINDOW_UPDATE
            last = size == len(chunk)
            ended = last and len(held) == 1 and stream.ending
            self._write(_data_header(size, END_STREAM if ended else 0, stream.stream_id))
            self._write(chunk[:size])  # a view of the body: `out` is joined once, when written
            window.outbound -= size
            stream.outbound -= size
            if last:
                held.popleft()
            else:
                held[0] = chunk[size:]
        if stream.ending:
            if not ended:
                self._write(frame(DATA, END_STREAM, stream.stream_id))
            stream.ending = False
            self._sent_end(stream)
        return True

    def _sent_end(self, stream: Stream) -> None:
        """The client's END_STREAM went out."""
        if stream.state == OPEN:
            stream.state = HALF_CLOSED_LOCAL
        elif stream.state == HALF_CLOSED_REMOTE:
            self._close(stream)

    def reset(self, stream: Stream, code: int) -> None:
        """Reset an active stream (RST_STREAM `code`) and forget it; what the server sends on it before it learns of
        the reset is ignored for RESET_GRACE_S."""
        stream_id = stream.stream_id
        if self.streams.get(stream_id) is stream:
            self._write(rst_stream(stream_id, code))
            self._close(stream)
            now = time.monotonic()
            resets = self.resets
            resets[stream_id] = now
            while resets:  # forget the resets past their grace period (and the oldest past the bound)
                oldest = next(iter(resets))
                if now - resets[oldest] < RESET_GRACE_S and len(resets) <= MAX_RESETS_KEPT:
                    break
                del resets[oldest]

    def _close(self, stream: Stream) -> None:
        """The stream is over: forget it; a draining connection with none left closes."""
        if self.streams.pop(stream.stream_id, None) is not None:
            stream.state = CLOSED
            stream.connection = None
            if stream.held is not None:
                stream.held = None
                if stream in self.blocked:  # (not while `_flush` sends its DATA)
                    self.blocked.remove(stream)
            if not self.streams and self.state == _DRAINING:
                self.close()

    # frames in

    def receive(self, data: bytes) -> None:
        """Take what the server sent; nothing it sends raises: a fault ends the connection or resets a stream."""
        at = 0
        if self._buffer:  # a frame begun in an earlier read
            if len(data) < BIG_READ:
                data = self._buffer + data
            else:
                at = self._complete(data)
                if at < 0:
                    return None
        size = len(data)
        unpack = _FRAME_HEADER.unpack_from
        handlers = self._handlers
        try:
            while size - at >= 9:
                high, low, kind, flags, stream_id = unpack(data, at)
                length = (high << 16) | low
                if length > MIN_FRAME_SIZE:
                    raise ConnectionFault(
                        FRAME_SIZE_ERROR, f"a frame of {length} bytes, over the client's {MIN_FRAME_SIZE}"
                    )
                end = at + 9 + length
                if end > size:
                    break
                payload = data[at + 9 : end]
                at = end
                if self._irregular:
                    self._check_order(kind, flags)
                if kind < 10:
                    handlers[kind](flags, stream_id & MAX_STREAM_ID, payload)
                if self.state == _OVER:
                    return
        except ConnectionFault as fault:
            return self.fault(fault.code, fault.message)
        except Exception as error:  # a bug, or a server that broke a parser: the connection ends, its streams fail
            return self.fault(INTERNAL_ERROR, str(internal(error)))
        self._buffer = data[at:] if at < size else b""
        return None

    def _complete(self, data: bytes) -> int:
        """Take the frame an earlier read began, completed from a big read: where in `data` the next frame starts
        (-1: nothing more to read now). Only that frame is copied, not the whole read (a large response's)."""
        buffer = self._buffer
        head = buffer[:9] if len(buffer) >= 9 else buffer + data[: 9 - len(buffer)]
        length = int.from_bytes(head[:3], "big")
        need = 9 + length - len(buffer)
        if len(head) < 9 or length > MIN_FRAME_SIZE or len(data) < need:
            self._buffer = b""  # the frame loop takes it from here: it waits for more, or refuses the length
            self.receive(buffer + data)
            return -1
        self._buffer = b""
        self.receive(buffer + data[:need])
        return need if self.state != _OVER else -1

    def _check_order(self, kind: int, flags: int) -> None:
        """Frames only some states take: the server's SETTINGS first, nothing inside a header block."""
        if self.continued is not None and kind != CONTINUATION:
            raise ConnectionFault(PROTOCOL_ERROR, f"a frame of type {kind} inside a header block")
        if self.state == ConnectionState.AWAITING_SETTINGS and (kind != SETTINGS or flags & ACK):
            raise ConnectionFault(PROTOCOL_ERROR, f"a first frame of type {kind}, not SETTINGS")

    def _stream(self, stream_id: int, kind: int) -> Stream | None:
        """The active stream a frame is for; None for one already closed (see `_on_closed_stream`). A frame for a
        stream the client never opened ends the connection (RFC 9113, 5.1)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id == 0:
            raise ConnectionFault(PROTOCOL_ERROR, f"a frame of type {kind} on stream 0")
        if stream_id % 2 == 0 or stream_id > self.last_id:
            raise ConnectionFault(PROTOCOL_ERROR, f"a frame of type {kind} on stream {stream_id}, never opened")
        return None

    def _on_closed_stream(self, stream_id: int) -> None:
        """DATA or HEADERS on a closed stream (DATA counted in the connection's window already): ignored within
        RESET_GRACE_S of the client's own reset, else a stream error STREAM_CLOSED (RFC 9113, 5.1 and 6.1)."""
        reset_at = self.resets.get(stream_id)
        if reset_at is None or time.monotonic() - reset_at >= RESET_GRACE_S:
            self._answer(rst_stream(stream_id, STREAM_CLOSED))

    def _violation(self, stream: Stream, code: int, message: str, kind: str = "violation") -> None:
        """The server broke the protocol on one stream: reset it (RST_STREAM `code`) and tell it why."""
        self.reset(stream, code)
        _tell(stream, Closed(kind, code, message))

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id) or self._stream(stream_id, DATA)
        size = len(payload)  # padding counts in both windows
        increment = self.window.take(size)
        if increment is None:
            raise ConnectionFault(FLOW_CONTROL_ERROR, f"{size} bytes of DATA beyond the connection's window")
        if increment:
            self._write(window_update(0, increment))
        if flags & PADDED:
            payload = unpad(payload)
        if stream is None:
            return self._on_closed_stream(stream_id)
        increment = stream.take(size)
        if increment is None:
            return self._violation(stream, FLOW_CONTROL_ERROR, f"{size} bytes of DATA beyond the stream's window")
        if stream.state >= HALF_CLOSED_REMOTE:
            return self._violation(stream, STREAM_CLOSED, "DATA after the server ended the stream")
        if not stream.responded:
            return self._violation(stream, PROTOCOL_ERROR, "DATA before the response's HEADERS")
        if increment and not flags & END_STREAM:
            self._write(window_update(stream_id, increment))
        if payload:
            try:
                stream.on_data(payload)
            except Exception as error:
                return self._crashed(stream, error)
        if flags & END_STREAM and stream.state < HALF_CLOSED_REMOTE:
            self._ended(stream, None)
        return None

    def _crashed(self, stream: Stream, error: Exception) -> None:
        """A hook raised: the stream is reset, and told with the exception's description."""
        self._violation(stream, INTERNAL_ERROR, str(internal(error)), "internal")

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        """A HEADERS frame; a whole header block (END_HEADERS, or after its CONTINUATION frames) is decoded and, as
        the response's headers, its trailers or a 1xx, checked against the stream's state."""
        if flags & (PADDED | PRIORITY_FLAG):
            payload = _strip(flags, payload)
        if not flags & END_HEADERS:
            if stream_id == 0:
                raise ConnectionFault(PROTOCOL_ERROR, "HEADERS on stream 0")
            self._continue(HeaderBlock(stream_id, flags, payload))
            return None
        stream = self.streams.get(stream_id) or self._stream(stream_id, HEADERS)
        headers = self.blocks.get(payload) or self._decode(payload, stream_id)  # a stream over too: HPACK follows
        if headers is None:
            return None
        if stream is None:
            return self._on_closed_stream(stream_id)
        end_stream = bool(flags & END_STREAM)
        if stream.state >= HALF_CLOSED_REMOTE:
            return self._violation(stream, STREAM_CLOSED, "HEADERS after the server ended the stream")
        if stream.responded:  # trailers
            if not end_stream:
                return self._violation(stream, PROTOCOL_ERROR, "a second header block that does not end the stream")
            if headers.trailer_problem:
                return self._violation(stream, PROTOCOL_ERROR, f"malformed trailers: {headers.trailer_problem}")
            return self._ended(stream, headers)
        if headers.response_problem:
            return self._violation(stream, PROTOCOL_ERROR, f"a malformed response: {headers.response_problem}")
        if headers.informational:
            if end_stream:
                return self._violation(stream, PROTOCOL_ERROR, f"a {headers.status} response that ends the stream")
            return None  # 1xx: the response's headers are still to come
        stream.responded = True
        try:
            stream.on_response(headers, end_stream)
        except Exception as error:
            return self._crashed(stream, error)
        if end_stream and stream.connection is self:
            self._ended(stream, headers)
        return None

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self.continued
        if block is None or block.stream_id != stream_id:
            raise ConnectionFault(PROTOCOL_ERROR, "a CONTINUATION frame that continues no header block")
        block.add(payload)
        if block.size > MAX_DROPPED_BLOCK or block.frames > MAX_BLOCK_FRAMES:
            raise ConnectionFault(
                ENHANCE_YOUR_CALM,
                f"a header block without its end after {MAX_DROPPED_BLOCK} bytes or {MAX_BLOCK_FRAMES} frames "
                "(loadgen's limit)",
            )
        if block.size > MAX_HEADER_LIST_SIZE and not block.dropped:
            block.drop()
            self._retire()  # new streams go elsewhere while this block is read to its end
            self._oversized(stream_id)
        if flags & END_HEADERS:
            self._continue(None)
            if not block.dropped:  # the whole block, as one HEADERS frame
                self._on_headers(block.flags & END_STREAM | END_HEADERS, stream_id, b"".join(block.parts))

    def _continue(self, block: HeaderBlock | None) -> None:
        """A header block awaits CONTINUATION frames (no other frame may come), or no longer."""
        self.continued = block
        self._irregular = block is not None or self.state == ConnectionState.AWAITING_SETTINGS

    def _oversized(self, stream_id: int) -> None:
        """A header block over the advertised limit fails its stream. Once the server has acknowledged the client's
        HPACK table size of 0, a block cannot change the table (but to shrink it to 0): skipping it keeps the decoder
        in step. Before, the block may have changed the table, and the connection ends."""
        message = f"a header block over SETTINGS_MAX_HEADER_LIST_SIZE ({MAX_HEADER_LIST_SIZE} bytes, loadgen's limit)"
        if self.decoder.max_allowed_table_size:
            raise ConnectionFault(ENHANCE_YOUR_CALM, message)
        self.decoder.header_table_size = 0  # what the block skipped had to do first, if not done yet
        stream = self._stream(stream_id, HEADERS)
        if stream is not None:
            self._violation(stream, CANCEL, message, "limit")

    def _decode(self, block: bytes, stream_id: int) -> HeaderList | None:
        """The block decoded (once per distinct block while the HPACK table is 0: `_on_headers` looks it up first);
        None when it was over the limit (its stream failed)."""
        table = self.decoder.header_table
        stateless = table.maxsize == 0
        try:
            headers = HeaderList(self.decoder.decode(block, raw=True))
        except hpack.OversizedHeaderListError:
            self._oversized(stream_id)
            return None
        except hpack.HPACKError as error:
            raise ConnectionFault(COMPRESSION_ERROR, f"a header block hpack cannot decode ({error})") from None
        if stateless and table.maxsize == 0 and len(block) <= MAX_CACHED_BLOCK and len(self.blocks) < HEADER_CACHE_SIZE:
            self.blocks[block] = headers  # decoding it used no table and changed none: the same next time
        return headers

    def _ended(self, stream: Stream, trailers: HeaderList | None) -> None:
        """The server sent END_STREAM. A client still sending stops: RST_STREAM NO_ERROR (RFC 9113, 8.1)."""
        if stream.state == OPEN:  # no grace: the server sends nothing after its END_STREAM
            self._write(rst_stream(stream.stream_id, NO_ERROR))
        self._close(stream)
        try:
            stream.on_end(trailers)
        except Exception as error:
            _tell(stream, Closed("internal", INTERNAL_ERROR, str(internal(error))))

    def _on_priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionFault(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._violation(stream, FRAME_SIZE_ERROR, f"a PRIORITY frame of {len(payload)} bytes")

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFault(FRAME_SIZE_ERROR, f"a RST_STREAM frame of {len(payload)} bytes")
        stream = self._stream(stream_id, RST_STREAM)
        if stream is None:
            return
        code = int.from_bytes(payload, "big")
        self._close(stream)
        kind = "refused" if code == REFUSED_STREAM else "reset"
        _tell(stream, Closed(kind, code, f"the server reset the stream ({error_name(code)})"))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionFault(PROTOCOL_ERROR, f"SETTINGS on stream {stream_id}")
        if flags & ACK:
            if payload:
                raise ConnectionFault(FRAME_SIZE_ERROR, f"a SETTINGS acknowledgement of {len(payload)} bytes")
            self._table_settled()
            return
        delta = self.settings.apply(payload)
        self.max_frame = self.settings.max_frame
        self.initial_window = self.settings.initial_window
        self.max_streams = self.settings.max_streams
        if delta:
            for stream in self.streams.values():
                if not stream.grow(delta):
                    raise ConnectionFault(FLOW_CONTROL_ERROR, f"a stream window over 2^31-1 after a change of {delta}")
        self._answer(SETTINGS_ACK)
        if self.state == ConnectionState.AWAITING_SETTINGS:
            self.state = ConnectionState.OPEN
            self._continue(None)
            self.events.settled()
        if self.blocked:
            self._flush()

    def _table_settled(self) -> None:
        """The server acknowledged the client's SETTINGS: its header blocks may use no dynamic table from now on.
        RFC 7541 (4.2) has the server say so at the start of its next block; some do not (Triton's gRPC server):
        the table is emptied here, and a block that refers to an entry, or sizes the table above 0, is a
        COMPRESSION_ERROR."""
        self.decoder.max_allowed_table_size = 0
        self.decoder.header_table_size = 0

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ConnectionFault(PROTOCOL_ERROR, "a PUSH_PROMISE, though the client disabled push")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionFault(PROTOCOL_ERROR, f"PING on stream {stream_id}")
        if len(payload) != 8:
            raise ConnectionFault(FRAME_SIZE_ERROR, f"a PING frame of {len(payload)} bytes")
        if not flags & ACK:
            self._answer(frame(PING, ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        """The server takes no new streams: those above its last stream were not processed (refused); the rest
        finish here, then the connection closes."""
        if stream_id:
            raise ConnectionFault(PROTOCOL_ERROR, f"GOAWAY on stream {stream_id}")
        if len(payload) < 8:
            raise ConnectionFault(FRAME_SIZE_ERROR, f"a GOAWAY frame of {len(payload)} bytes")
        last_id = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
        code = int.from_bytes(payload[4:8], "big")
        self._retire()
        closed = Closed("going_away", code, f"the server is going away (GOAWAY {error_name(code)})")
        for stream in [stream for stream_id, stream in self.streams.items() if stream_id > last_id]:
            self._close(stream)
            _tell(stream, closed)
        if not self.streams:
            self.close()

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFault(FRAME_SIZE_ERROR, f"a WINDOW_UPDATE frame of {len(payload)} bytes")
        increment = int.from_bytes(payload, "big") & MAX_WINDOW
        if stream_id == 0:
            if increment == 0:
                raise ConnectionFault(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 for the connection")
            if not self.window.grow(increment):
                raise ConnectionFault(FLOW_CONTROL_ERROR, "a connection window over 2^31-1")
        else:
            stream = self._stream(stream_id, WINDOW_UPDATE)
            if stream is None:
                return
            if increment == 0:
                return self._violation(stream, PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            if not stream.grow(increment):
                return self._violation(stream, FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
        if self.blocked:
            self._flush()


def _data_header(size: int, flags: int, stream_id: int) -> bytes:
    """A DATA frame's 9-byte header (its payload is written after it, as it is)."""
    return size.to_bytes(3, "big") + bytes((DATA, flags)) + stream_id.to_bytes(4, "big")


def _strip(flags: int, payload: bytes) -> bytes:
    """A HEADERS frame's header block fragment, without its padding and priority."""
    if flags & PADDED:
        payload = unpad(payload)
    if flags & PRIORITY_FLAG:
        if len(payload) < 5:
            raise ConnectionFault(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        payload = payload[5:]
    return payload


def _tell(stream: Stream, closed: Closed) -> None:
    """Call a stream's `on_close`; a hook that raises there has nobody left to tell: the connection goes on."""
    with contextlib.suppress(Exception):
        stream.on_close(closed)


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
