"""gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2): a call is an HTTP/2 `Stream` whose response follows gRPC's rules (HTTP
status 200, content-type application/grpc, length-prefixed messages, grpc-status in the trailers), and gRPC's
message framing both ways. A failed call gets the exception `Failure(code, message)` makes of gRPC's status code
and its message; the HTTP/2 rules are `h2_core`'s.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import unquote

from loadgen.transport.errors import Internal
from loadgen.transport.h2_core import Closed, HeaderList, Stream
from loadgen.transport.h2_frames import CANCEL, ENHANCE_YOUR_CALM, REFUSED_STREAM, error_name

# gRPC status codes (grpc.StatusCode's numbers) this module gives failed calls
CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 1, 2, 4, 7, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16
# what a gRPC client makes of an HTTP status other than 200, and of a stream the server reset (gRPC's mapping)
_HTTP_STATUS = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED}
_HTTP_STATUS |= dict.fromkeys((429, 502, 503, 504), UNAVAILABLE)
_RESET_STATUS = {CANCEL: CANCELLED, REFUSED_STREAM: UNAVAILABLE, ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED}
# how each way a stream can close fails its call (kinds of h2_core.Closed); refused ones may go again
_CLOSED_STATUS = {
    "refused": UNAVAILABLE,
    "going_away": UNAVAILABLE,
    "violation": INTERNAL,
    "limit": RESOURCE_EXHAUSTED,
    "connection": UNAVAILABLE,
    "closed": CANCELLED,
}
MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's limit on one message, the default limit on a response's

Failure = Callable[[int, str], Exception]
"""Turns a gRPC status code and message into the exception a failed call raises."""

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}
"""gRPC's message encodings (`grpc-encoding`): gzip, and deflate in zlib's format."""


def grpc_message(message: bytes, compression: str = "none") -> bytes:
    """A message in gRPC's length-prefixed framing, compressed when asked (the flag byte says so)."""
    if compression != "none":
        message = COMPRESSORS[compression](message)
    if len(message) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a gRPC message of {len(message)} bytes, over gRPC's {MAX_MESSAGE_BYTES}")
    return (b"\0" if compression == "none" else b"\1") + len(message).to_bytes(4, "big") + message


class GrpcHeaders(NamedTuple):
    """What a gRPC client needs of a response's headers or trailers."""

    grpc_status: int | None  # None: none sent; UNKNOWN: not a number
    grpc_message: str  # percent-decoded, as grpcio gives it
    content_type: str
    is_grpc: bool  # the content-type is gRPC's


def grpc_headers(headers: HeaderList) -> GrpcHeaders:
    """The gRPC fields of a header block, read once per distinct block (kept in its memo)."""
    memo = headers.memo
    if memo is None:
        fields = headers.fields
        status = fields.get("grpc-status")
        content_type = fields.get("content-type", "")
        memo = headers.memo = GrpcHeaders(
            None if status is None else int(status) if status.isascii() and status.isdigit() else UNKNOWN,
            unquote(fields.get("grpc-message", "")),
            content_type,
            _is_grpc(content_type),
        )
    return memo


def _is_grpc(content_type: str) -> bool:
    """A gRPC content-type: application/grpc, or with a subtype (+proto) or parameters."""
    return content_type == "application/grpc" or content_type.startswith(("application/grpc+", "application/grpc;"))


class GrpcCall(Stream):
    """A gRPC call on one HTTP/2 stream: gRPC's rules for the response, and how each end of the stream fails the
    call. Subclasses say what the response's data is (`on_data`) and what ends the call (`finish`, `failed`,
    `refused`)."""

    __slots__ = ("failure",)
    failure: Failure  # set by subclasses, with their own fields (one __init__ per call, the hot path)

    def on_response(self, headers: HeaderList, end_stream: bool) -> None:
        if headers.status != 200:
            code = _HTTP_STATUS.get(headers.status or 0, UNKNOWN)
            return self.fail(code, f"the server answered with HTTP status {headers.status}")
        fields = headers.memo or grpc_headers(headers)
        if not fields.is_grpc and not end_stream:  # Trailers-Only may leave it out
            return self.fail(UNKNOWN, f"the server answered with content-type {fields.content_type!r}, not gRPC")
        return None

    def on_end(self, trailers: HeaderList | None) -> None:
        if trailers is None:
            return self.fail(INTERNAL, "the server ended the stream without trailers")
        fields = trailers.memo or grpc_headers(trailers)
        if fields.grpc_status is None:
            return self.fail(UNKNOWN, "the server ended the stream without a grpc-status")
        return self.finish(fields.grpc_status, fields.grpc_message)

    def on_close(self, closed: Closed) -> None:
        kind = closed.kind
        if kind in ("refused", "going_away") and self.refused():
            return None
        if kind == "internal":
            return self.failed(Internal(closed.message))
        if kind == "reset":
            return self.failed(self.failure(_RESET_STATUS.get(closed.code, INTERNAL), closed.message))
        if kind == "violation":
            return self.failed(self.failure(INTERNAL, f"HTTP/2 {error_name(closed.code)}: {closed.message}"))
        return self.failed(self.failure(_CLOSED_STATUS.get(kind, INTERNAL), closed.message))

    def finish(self, code: int, message: str) -> None:
        """The server ended the call with a gRPC status (the stream is over)."""
        raise NotImplementedError

    def failed(self, error: Exception) -> None:
        """Hand a failure to whoever waits for this call."""
        raise NotImplementedError

    def refused(self) -> bool:
        """The server did not process the stream (REFUSED_STREAM, or above a GOAWAY's last stream): True when the
        call will be sent again elsewhere, False to fail it."""
        return False

    def fail(self, code: int, message: str) -> None:
        """The call failed on this side: the stream is reset on the wire (if still open), the failure handed on."""
        self.cancel(CANCEL)
        self.failed(self.failure(code, message))


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
