"""gRPC inference calls over loadgen's own HTTP/2 (`--transport raw`): control calls stay on grpcio.

A request's frames are built once per payload (the serialised `ModelInferRequest`); per request only the stream
id is written into them. Failures raise `RequestFailed` (`Unreachable` for UNAVAILABLE) with the text the library
path gives for the same status.
"""

from __future__ import annotations

import asyncio
import collections
import math
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

import loadgen.transport.http2 as http2
from loadgen.transport.common import CONTROL_TIMEOUT_S, within
from loadgen.transport.errors import RequestFailed, timed_out
from loadgen.transport.grpc_connection import INFER_METHOD, STREAM_METHOD, GrpcConnection, rpc_failure
from loadgen.transport.grpc_http2 import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    INTERNAL,
    MAX_MESSAGE_BYTES,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Failure,
    GrpcCall,
    MessageReader,
    MessageTooLarge,
    grpc_message,
)
from loadgen.transport.h2_frames import CANCEL, Request, prepare, request_block
from loadgen.transport.options import ConnectionOptions, Tls, load_identity

ATTEMPTS = 3  # sends of one request the server refused unprocessed (GOAWAY, REFUSED_STREAM) before it fails
PREPARED_MAX = 1024  # payloads whose frames are kept (a sequence's requests are new payloads: built per request)
PREPARED_MAX_BYTES = 64 << 20
RESPONSE_LIMIT = "--max-response-bytes"  # the limit's name in failures
PARSED_MAX = 256  # small responses known to parse, kept so that a repeated one is not parsed again
PARSED_MAX_BYTES = 4096
PARSED_WHOLE = 1 << 20  # a larger response's raw output contents are not copied to check that it parses
RAW_OUTPUT_CONTENTS_TAG = 6 << 3 | 2  # ModelInferResponse.raw_output_contents: field 6, length-delimited
_PARSED: set[bytes] = set()
_STATUS = {code.value[0]: code for code in grpc.StatusCode}


class _Refused(Exception):
    """The server did not process the request: it can be sent again."""


class UnaryCall(GrpcCall):
    """A `ModelInfer` call: its response message, its deadline."""

    __slots__ = ("chunks", "first_ns", "future", "max_bytes", "sent_ns", "size", "timer")

    def __init__(self, failure: Failure, future: asyncio.Future[bytes], max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.failure = failure
        self.future = future
        self.max_bytes = max_bytes  # the largest response message: past it the call fails
        self.chunks: list[bytes] = []  # the response's DATA as it came, joined once at the end
        self.size = 0  # bytes in `chunks`
        self.sent_ns = 0  # when it left (the stall guard reads it)
        self.first_ns = 0  # when the response's first bytes came
        self.timer: asyncio.TimerHandle | None = None

    def on_data(self, data: bytes) -> None:
        chunks = self.chunks
        chunks.append(data)
        self.size += len(data)
        if len(chunks) == 1:
            self.first_ns = time.perf_counter_ns()
        elif len(chunks) == 2 and int.from_bytes(chunks[0][1:5], "big") > self.max_bytes:
            return self.too_large()  # the message goes on past this frame, and its prefix says it is too large
        if self.size > self.max_bytes + 5:
            self.too_large()
        return None

    def too_large(self) -> None:
        """The response is over the limit: the stream is reset, the call fails naming the limit."""
        self.chunks = []
        self.fail(RESOURCE_EXHAUSTED, too_large(self.max_bytes))

    def finish(self, code: int, message: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        future = self.future
        if future.done():
            return
        if code:
            return future.set_exception(self.failure(code, message))
        try:
            response = _message(self.chunks, self.size)
        except ValueError as error:
            return future.set_exception(self.failure(INTERNAL, str(error)))
        if (len(response) > PARSED_MAX_BYTES or response not in _PARSED) and not _parses(response):
            return future.set_exception(self.failure(INTERNAL, "the server's response is no ModelInferResponse"))
        return future.set_result(response)

    def failed(self, error: Exception) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.future.done():
            self.future.set_exception(error)

    def refused(self) -> bool:
        self.failed(_Refused())
        return True

    def expire(self) -> None:
        """The request timeout passed: the stream is cancelled (RST_STREAM CANCEL)."""
        self.timer = None
        self.fail(DEADLINE_EXCEEDED, "Deadline Exceeded")


def _message(chunks: list[bytes], size: int) -> bytes:
    """The one message a unary response's DATA holds (`size` bytes in `chunks`), without its gRPC prefix (a message
    in many frames is joined once); raises ValueError when it is not one whole, uncompressed message."""
    first = chunks[0] if chunks else b""
    head = first if len(first) >= 5 else b"".join(chunks)[:5]
    if size < 5 or size - 5 != int.from_bytes(head[1:5], "big"):
        raise ValueError("the server sent no whole response message")
    if head[0]:
        raise ValueError("the server sent a compressed message")
    if len(chunks) == 1:
        return first[5:]
    if len(first) >= 5:
        chunks[0] = first[5:]
        return b"".join(chunks)
    return b"".join(chunks)[5:]


def _parses(message: bytes) -> bool:
    """`message` parses as a `ModelInferResponse`. Small responses repeat (the same outputs, the same id): those
    that parsed are kept in _PARSED, which `finish` looks in first. In a large one, the outputs' raw contents
    (bytes: any content parses) are stepped over rather than copied."""
    try:
        service_pb2.ModelInferResponse.FromString(
            message if len(message) <= PARSED_WHOLE else _without_contents(message)
        )
    except DecodeError:
        return False
    if len(message) <= PARSED_MAX_BYTES:
        if len(_PARSED) >= PARSED_MAX:
            _PARSED.clear()
        _PARSED.add(message)
    return True


def _without_contents(message: bytes) -> bytes:
    """A serialised `ModelInferResponse` without its `raw_output_contents` fields, each checked to be a whole
    length-delimited field; raises DecodeError where the message's top level is not protobuf's wire format."""
    kept = []
    at = 0
    while at < len(message):
        start = at
        tag, at = _varint(message, at)
        kind = tag & 7
        if kind == 0:
            _, at = _varint(message, at)
        elif kind == 2:
            length, at = _varint(message, at)
            at += length
        elif kind in (1, 5):
            at += 8 if kind == 1 else 4
        else:
            raise DecodeError(f"wire type {kind} at byte {start}")
        if at > len(message):
            raise DecodeError(f"a field at byte {start} runs past the message's end")
        if tag != RAW_OUTPUT_CONTENTS_TAG:
            kept.append(message[start:at])
    return b"".join(kept)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A protobuf varint at `at`: its value and where it ends."""
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise DecodeError("a varint that does not end")


class StreamCall(GrpcCall):
    """A `ModelStreamInfer` call: responses queue up until read."""

    __slots__ = ("arrivals", "error", "reader", "received_ns", "responses", "waiter")

    def __init__(self, failure: Failure, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.failure = failure
        self.reader = MessageReader(max_bytes)
        self.responses: collections.deque[Any] = collections.deque()
        self.arrivals: collections.deque[int] = collections.deque()  # each response's bytes' arrival (perf_counter_ns)
        self.received_ns = 0
        self.waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None  # set once the stream is over; EOF when it ended well

    def on_data(self, data: bytes) -> None:
        self.received_ns = time.perf_counter_ns()  # before the messages in it are parsed
        try:
            self.reader.feed(data, self.on_message)
        except MessageTooLarge:
            self.fail(RESOURCE_EXHAUSTED, too_large(self.reader.max_bytes))
        except (ValueError, DecodeError) as error:
            self.fail(INTERNAL, f"cannot read the server's message: {error}")

    def on_message(self, message: bytes) -> None:
        self.arrivals.append(self.received_ns)
        self.responses.append(service_pb2.ModelStreamInferResponse.FromString(message))
        self._wake()

    def finish(self, code: int, message: str) -> None:
        self.failed(self.failure(code, message) if code else _EndOfStream())

    def failed(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def too_large(max_bytes: int) -> str:
    """The failure of a response over the limit, naming it."""
    return f"a response message over {RESPONSE_LIMIT} ({max_bytes} bytes)"


class _EndOfStream(Exception):
    """The server ended the stream with status OK: reads return grpc.aio.EOF."""


class RawStream:
    """A `ModelStreamInfer` stream on the raw path, with what `stream_one` and `StreamMux` use of a grpc.aio
    stream: `write`, `read` (a `ModelStreamInferResponse`, or `grpc.aio.EOF` once the server ended the stream),
    `cancel`."""

    def __init__(self, owner: RawGrpcConnection) -> None:
        self._owner = owner
        self._call = StreamCall(owner.status_failure, owner.max_response_bytes)
        self._started = False
        self.arrived_ns = 0  # when the bytes of the response `read` returned last came off the socket

    async def write(self, payload: bytes) -> None:
        call = self._call
        if not self._started:
            self._started = True
            try:
                opened = await self._owner.pool.connection()
            except RequestFailed as failure:
                call.failed(failure)  # a reader waiting on this stream hears it too
                raise
            if call.error is None:  # not cancelled meanwhile
                opened.start_stream(call, self._owner.stream_block)
        connection = call.connection
        if connection is None:
            error = call.error
            raise (
                self._owner.status_failure(INTERNAL, "the server ended the stream")
                if (error is None or isinstance(error, _EndOfStream))
                else error
            )
        connection.send_data(call, grpc_message(payload, self._owner.compression))

    async def read(self) -> Any:
        call = self._call
        while not call.responses:
            if call.error is not None:
                if isinstance(call.error, _EndOfStream):
                    return grpc.aio.EOF
                raise call.error
            call.waiter = asyncio.get_running_loop().create_future()
            await call.waiter
        self.arrived_ns = call.arrivals.popleft()
        return call.responses.popleft()

    def cancel(self) -> bool:
        """Reset the stream (RST_STREAM CANCEL); reads and writes fail from now on."""
        call = self._call
        if call.error is not None:
            return False
        call.cancel(CANCEL)
        call.failed(self._owner.status_failure(CANCELLED, "the stream was cancelled"))
        return True


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(f"//{url}")
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _grpc_timeout(seconds: float) -> str:
    """A timeout in gRPC's header format: at most 8 digits and a unit, rounded up."""
    for unit, per_second in (("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        value = math.ceil(seconds * per_second)
        if value < 10**8:
            return f"{value}{unit}"
    return "99999999H"


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    """TLS as the grpcio channel gets it: the given CA (else the system's), a client identity for mutual TLS,
    and ALPN h2."""
    roots = tls.root_certificates.decode() if tls.root_certificates is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=roots)
    if tls.certificate_chain is not None and tls.private_key is not None:
        load_identity(context, tls.certificate_chain, tls.private_key)
    context.set_alpn_protocols(["h2"])
    return context


class RawGrpcConnection(GrpcConnection):
    """gRPC inference calls on loadgen's own HTTP/2 connections; everything else on the grpcio channel."""

    errors: tuple[type[Exception], ...] = (
        RequestFailed,
    )  # inference calls and streams fail with loadgen's kinds already

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self.request_timeout_s = options.request_timeout_s  # --request-timeout only: a timer per request here
        self._stall_ns = int(options.stall_timeout_s * 1e9) if options.stall_timeout_s else 0
        self._sweeping: asyncio.TimerHandle | None = None
        self._host, self._port = _host_port(options.url)
        self._ssl = _ssl_context(options.tls) if options.tls is not None else None
        common = [
            (":method", "POST"),
            (":scheme", "https" if self._ssl else "http"),
            (":authority", options.url),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *options.headers,
        ]
        self.compression = options.compression
        self.max_response_bytes = options.max_response_bytes
        if self.compression != "none":  # the requests' encoding; the responses come plain
            common += [("grpc-encoding", self.compression), ("grpc-accept-encoding", "identity")]
        if self.request_timeout_s is not None:  # the server learns the deadline too, as from grpcio
            common.append(("grpc-timeout", _grpc_timeout(self.request_timeout_s)))
        self.infer_block = request_block([(":path", INFER_METHOD), *common])
        self.stream_block = request_block([(":path", STREAM_METHOD), *common])
        self.pool = http2.Pool(self._open, self.status_failure)
        self._prepared: dict[bytes, Request] = {}
        self._prepared_bytes = 0
        self.infer = self._infer

    def status_failure(self, code: int, details: str) -> RequestFailed:
        """A failed call as the library path reports the same gRPC status."""
        status = _STATUS.get(code, grpc.StatusCode.UNKNOWN)
        return rpc_failure(grpc.aio.AioRpcError(status, details=details), self.url, self.request_timeout_s, self.tls)

    def _prepare(self, payload: bytes) -> Request:
        request = prepare(self.infer_block, grpc_message(payload, self.compression))
        if len(self._prepared) < PREPARED_MAX and self._prepared_bytes < PREPARED_MAX_BYTES:
            self._prepared[payload] = request
            self._prepared_bytes += len(payload)
        return request

    async def _infer(self, payload: bytes) -> bytes:
        request = self._prepared.get(payload) or self._prepare(payload)
        pool = self.pool
        timeout_s = self.request_timeout_s
        loop = asyncio.get_running_loop()
        clock = time.perf_counter_ns
        times = self.times
        failure = self.status_failure
        for _ in range(ATTEMPTS):
            connection = pool.current
            if connection is None or not connection.has_room:
                connection = await pool.connection()
            call = UnaryCall(failure, loop.create_future(), self.max_response_bytes)
            call.sent_ns = start = clock()
            connection.start(call, request)
            times.send_ns += clock() - start
            times.sends += 1
            if timeout_s is not None:
                call.timer = loop.call_later(timeout_s, call.expire)
            elif self._sweeping is None and self._stall_ns:
                self._sweep_later()
            try:
                response = await call.future
                times.recv_ns += clock() - call.first_ns
                times.calls += 1
                return response
            except _Refused:
                continue
            except asyncio.CancelledError:
                call.cancel(CANCEL)
                if call.timer is not None:
                    call.timer.cancel()
                raise
        raise self.status_failure(UNAVAILABLE, f"the server refused the request {ATTEMPTS} times unprocessed")

    def _sweep_later(self) -> None:
        self._sweeping = asyncio.get_running_loop().call_later(self._stall_ns / 4e9, self._sweep)

    def _sweep(self) -> None:
        """Without --request-timeout: fail the calls unanswered for longer than the stall timeout (between 1 and
        1.25 times it), one timer for the connection instead of one per request; look again while calls are out."""
        self._sweeping = None
        oldest = time.perf_counter_ns() - self._stall_ns
        out = False
        for connection in self.pool.connections:
            for call in list(connection.core.streams.values()):
                if isinstance(call, UnaryCall):
                    out = True
                    if call.sent_ns < oldest:  # the stream is reset (RST_STREAM CANCEL), the call a timeout
                        call.cancel(CANCEL)
                        call.failed(timed_out(self._stall_ns / 1e9))
        if out:
            self._sweep_later()

    def open_stream(self) -> RawStream:
        """A bidirectional `ModelStreamInfer` stream on the raw path."""
        return RawStream(self)

    async def _open(self, on_retired: Callable[[http2.Connection], None]) -> http2.Connection:
        """A new HTTP/2 connection, once the server's SETTINGS came."""
        loop = asyncio.get_running_loop()
        peer = "the server"
        try:
            _, connection = await within(
                loop.create_connection(
                    lambda: http2.Connection(self.status_failure, peer, on_retired, self.times),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                CONTROL_TIMEOUT_S,
                discard=_close,
            )
        except ssl.SSLError as error:
            raise self.status_failure(UNAVAILABLE, f"ssl handshake failed: {error}") from None
        except (OSError, asyncio.TimeoutError) as error:
            raise self.status_failure(UNAVAILABLE, str(error) or "no connection within 10 s") from None
        if self._ssl is not None:
            assert connection.transport is not None
            chosen = connection.transport.get_extra_info("ssl_object").selected_alpn_protocol()
            if chosen != "h2":
                connection.close()
                raise self.status_failure(UNAVAILABLE, f"ssl handshake: the server chose ALPN {chosen!r}, not h2")
        try:
            await within(asyncio.shield(connection.ready), CONTROL_TIMEOUT_S)
        except asyncio.TimeoutError:
            connection.close()
            raise self.status_failure(
                UNAVAILABLE, f"no HTTP/2 SETTINGS from the server within {CONTROL_TIMEOUT_S:g} s"
            ) from None
        except asyncio.CancelledError:
            connection.close()  # nobody will have it
            raise
        return connection

    async def close(self) -> None:
        await self.pool.close()
        await super().close()


def _close(opened: tuple[asyncio.BaseTransport, http2.Connection]) -> None:
    """Close a connection that opened as its caller was cancelled."""
    opened[1].close()
