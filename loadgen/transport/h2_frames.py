"""HTTP/2's frames (RFC 9113, section 4 and 6): the numbers, building frames, and the pre-built frames of a request.

No state here: the connection's and streams' state machines are in `h2_core`, the socket in `http2`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED = range(6)
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(6, 12)
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

FRAME_HEADER = 9
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MIN_FRAME_SIZE = 16_384  # every peer accepts frames this large; the client's SETTINGS keep it as its own limit
MAX_FRAME_SIZE = 2**24 - 1  # the largest SETTINGS_MAX_FRAME_SIZE a peer may set (a frame's 3-byte length)


def error_name(code: int) -> str:
    """An HTTP/2 error code's name."""
    return ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else f"error {code}"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header and payload."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def settings_frame(settings: Iterable[tuple[int, int]]) -> bytes:
    """A SETTINGS frame with these (identifier, value) pairs."""
    return frame(SETTINGS, 0, 0, b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in settings))


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (stream 0: the connection's window)."""
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame with an error code."""
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame: the last stream this side processed, an error code, and debug data."""
    return frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


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


class Request(NamedTuple):
    """A request's frames built once: only the stream id (twice) goes between the parts."""

    head: bytes  # the HEADERS frame's header up to its stream id
    middle: bytes  # the header block, then the DATA frame's header up to its stream id (END_STREAM set)
    body: bytes  # the DATA frames' payload
    block: bytes  # the header block alone


def prepare(block: bytes, body: bytes) -> Request:
    """The frames of a request: HEADERS with `block`, then `body` as DATA that ends the stream. A block or body
    larger than any frame gets no pre-built frame header: the connection splits it into frames."""
    head = _length(block) + bytes((HEADERS, END_HEADERS))
    return Request(head, block + _length(body) + bytes((DATA, END_STREAM)), body, block)


def _length(payload: bytes) -> bytes:
    """A frame header's length field for `payload`, or zeros when no frame can hold it (never sent whole)."""
    return len(payload).to_bytes(3, "big") if len(payload) <= MAX_FRAME_SIZE else bytes(3)


class ConnectionFault(Exception):
    """The peer broke the protocol in a way the connection cannot survive: GOAWAY with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unpad(payload: bytes) -> bytes:
    """A PADDED frame's content without its pad length byte and padding (RFC 9113, 6.1)."""
    if not payload or payload[0] >= len(payload):
        padding = payload[0] if payload else 0
        raise ConnectionFault(PROTOCOL_ERROR, f"a pad length of {padding} in a frame of {len(payload)} bytes")
    return payload[1 : len(payload) - payload[0]]
