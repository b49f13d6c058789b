"""HTTP/1.1 for inference calls, on asyncio Protocols: keep-alive connections, one request in flight on each,
responses parsed with httptools (Content-Length, chunked, or a body that ends when the server closes).

A connection is in one state at a time (IDLE, WAITING, HEAD, BODY, CLOSED). Interim responses (1xx) are skipped
(RFC 9110, 15.2); bytes that come while no request waits close the connection (a response nobody asked for would
answer the next request). Every response is bounded: its head (interim responses included) by MAX_HEAD_BYTES, each
header line by MAX_HEADER_LINE_BYTES, its body by --max-response-bytes; past a limit the request fails with the
limit's name and the connection closes. No exception leaves `data_received`: whatever the parser or a callback
raises fails the request in flight and closes the connection alone.

A request may give a body sink (a token stream's reader): once its response's head is whole the sink says whether
it takes the body in pieces, each with the time its read came off the socket (taken once per read, before any
parsing); a body it declines (an error's) is kept whole as usual. The limits hold the same either way.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol, cast

import httptools

from loadgen.settings import MAX_RESPONSE_BYTES
from loadgen.transport.common import ClientTimes, within
from loadgen.transport.errors import RequestFailed, internal

HEADER_LENGTH = b"inference-header-content-length"
CONTENT_LENGTH = b"content-length"
TRANSFER_ENCODING = b"transfer-encoding"
CONTENT_TYPE = b"content-type"
MAX_HEAD_BYTES = 64 << 10  # a response's status lines and headers, its interim responses' too
MAX_HEADER_LINE_BYTES = 8 << 10  # one header's name and value
IDLE, WAITING, HEAD, BODY, CLOSED = "idle", "waiting", "head", "body", "closed"
ANSWERING = (WAITING, HEAD, BODY)  # a request is out and its answer not whole
_UPGRADE = "a protocol switch (HTTP 101) no request asked for"


class Reply(NamedTuple):
    """One HTTP response: its status, body, and the length of the JSON header before binary tensors (None: the
    body is all JSON)."""

    status: int
    body: bytes
    header_length: int | None
    first_ns: int  # when its first bytes came (perf_counter_ns)
    last_ns: int  # when its last bytes came


class BodySink(Protocol):
    """Takes a response's body in pieces as they come off the socket (a token stream)."""

    def begin(self, status: int, content_type: bytes) -> bool:
        """The final response's head is whole: True to take its body in pieces, False to leave it in the Reply."""
        ...

    def piece(self, data: bytes, ns: int) -> None:
        """The next piece of the body, and the perf_counter_ns of the read that brought it; what it raises (a
        RequestFailed) fails the request and closes the connection."""
        ...


class MalformedResponse(Exception):
    """The server's bytes are no HTTP/1.1 response, or one past a limit (the message names it)."""


class ConnectionClosed(ConnectionError):
    """The connection closed before the response was complete (never sent again: the server may have run it)."""


def over(what: str, limit: int) -> MalformedResponse:
    """A response past one of loadgen's limits, named."""
    return MalformedResponse(f"a response {what} over {limit} bytes (loadgen's limit)")


class TooLarge(MalformedResponse):
    """A response whose body is past the connection's limit (a pool with a limit of its own names it itself)."""


def too_large(limit: int) -> TooLarge:
    """A response whose body is past --max-response-bytes."""
    return TooLarge(f"a response over --max-response-bytes ({limit} bytes)")


class Http1Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, parses its response, then is free again (`on_free`)."""

    def __init__(
        self,
        on_free: Callable[[Http1Connection], None],
        on_closed: Callable[[Http1Connection], None],
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.on_free = on_free
        self.on_closed = on_closed
        self.max_response_bytes = max_response_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = IDLE
        self.waiter: asyncio.Future[Reply] | None = None
        self.sink: BodySink | None = None  # the request's, if it streams
        self.read_ns = 0  # when the last read came
        self.used = False  # answered a request before
        self.sent_ns = 0  # when its request left (the pool's stall guard reads it)
        self._begin()

    def _begin(self) -> None:
        """Forget the last response: nothing of the next one came yet."""
        self.body: bytes | bytearray = b""
        self.received = 0  # the body's bytes, kept or streamed
        self.streaming = False  # the body goes to the sink
        self.header_length: int | None = None
        self.content_length: int | None = None
        self.content_type = b""
        self.chunked = False
        self.wire = 0  # the response's bytes as they came (head, body and its framing)
        self.first_ns = 0  # when its first bytes came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, request: bytes, sink: BodySink | None = None) -> asyncio.Future[Reply]:
        """Send a whole request (request line, headers, body); the future gets its response (its body, unless the
        sink took it)."""
        assert self.transport is not None and self.state == IDLE
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.sink = sink
        self._begin()
        self.state = WAITING
        self.transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        self.read_ns = now = time.perf_counter_ns()
        state = self.state
        if state == WAITING:
            self.state = HEAD
            self.first_ns = now
        elif state != HEAD and state != BODY:  # IDLE: a response nobody asked for; CLOSED: aborted
            self.abort(None)
            return
        self.wire += len(data)
        try:
            self.parser.feed_data(data)
            self._check_framing()
        except MalformedResponse as error:
            self.abort(error)
        except httptools.HttpParserCallbackError as error:  # a callback's exception, kept as its context
            cause = error.__context__
            self.abort(cause if isinstance(cause, (MalformedResponse, RequestFailed)) else internal(cause or error))
        except httptools.HttpParserUpgrade:
            self.abort(MalformedResponse(_UPGRADE))
        except httptools.HttpParserError as error:
            self.abort(MalformedResponse(f"a malformed HTTP response: {error}"))
        except Exception as error:  # whatever else: the request in flight fails, never the event loop
            self.abort(internal(error))

    def _check_framing(self) -> None:
        """Bound what is not body: the head (so far), or a chunked body's framing and trailers."""
        if self.state == HEAD and self.wire > MAX_HEAD_BYTES:
            raise over("header block", MAX_HEAD_BYTES)
        if self.state == BODY and self.wire - self.received > 2 * MAX_HEAD_BYTES + self.received // 2:
            raise over("framing (chunk sizes and trailers)", 2 * MAX_HEAD_BYTES)

    def on_message_begin(self) -> None:
        if self.state != HEAD:  # a second response in the bytes of the first: out of step
            raise MalformedResponse("a response nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_HEADER_LINE_BYTES:
            raise over("header line", MAX_HEADER_LINE_BYTES)
        size = len(name)
        if size == len(HEADER_LENGTH) and name.lower() == HEADER_LENGTH:
            self.header_length = _digits(value, "Inference-Header-Content-Length")
        elif size == len(CONTENT_LENGTH) and name.lower() == CONTENT_LENGTH:
            self.content_length = _digits(value, "Content-Length")
        elif size == len(TRANSFER_ENCODING) and name.lower() == TRANSFER_ENCODING:
            self.chunked = b"chunked" in value.lower()
        elif size == len(CONTENT_TYPE) and name.lower() == CONTENT_TYPE:
            self.content_type = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            raise MalformedResponse(_UPGRADE)
        if status >= 200:
            self.state = BODY
            if self.content_length is not None and self.content_length > self.max_response_bytes:
                raise too_large(self.max_response_bytes)
            if self.sink is not None:
                self.streaming = self.sink.begin(status, self.content_type)

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        if self.received > self.max_response_bytes:
            raise too_large(self.max_response_bytes)
        if self.streaming:
            cast(BodySink, self.sink).piece(body, self.read_ns)
            return
        held = self.body
        if not held:
            self.body = body  # one piece: no copy
        else:
            if isinstance(held, bytes):
                held = self.body = bytearray(held)
            held += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # interim (100 Continue, 103 Early Hints): the final response follows
            self._interim()
            return
        self._answer(status, self.parser.should_keep_alive())

    def _interim(self) -> None:
        """An interim response is over: the next bytes start another (its head still counts)."""
        wire = self.wire
        self._begin()
        self.wire = wire
        self.first_ns = self.read_ns  # the read that ended the interim response

    def _answer(self, status: int, keep: bool) -> None:
        """The response is whole: give it to the request and free the connection (or close it)."""
        waiter = self.waiter
        self.waiter = None
        self.sink = None
        self.state = IDLE
        self.used = True
        if waiter is not None and not waiter.done():
            waiter.set_result(Reply(status, cast(bytes, self.body), self.header_length, self.first_ns, self.read_ns))
        if keep:
            self.on_free(self)
        else:
            self.abort(None)

    def eof_received(self) -> bool:
        self._until_close()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._until_close()
        if self.state == WAITING and self.used:
            reason = "the server closed a kept-alive connection without answering (not sent again: it may have run)"
        elif exc is not None:
            reason = f"the connection closed: {exc}"
        else:
            reason = "the server closed the connection"
        self._closed(ConnectionClosed(reason))

    def _until_close(self) -> None:
        """A body without Content-Length or chunked framing ends when the server closes: the response is whole."""
        if self.state == BODY and self.content_length is None and not self.chunked:
            self._answer(self.parser.get_status_code(), keep=False)

    def abort(self, error: Exception | None) -> None:
        """Close at once; a request in flight fails with `error`."""
        if self.transport is not None:
            self.transport.abort()
        self._closed(error)

    def _closed(self, error: Exception | None) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done() and error is not None:
            waiter.set_exception(error)
        if self.state != CLOSED:
            self.state = CLOSED
            self.on_closed(self)


def _digits(value: bytes, name: str) -> int:
    """A header's decimal value; anything else is a malformed response."""
    if not value.isdigit() or len(value) > 19:
        raise MalformedResponse(f"a malformed HTTP response: {name} {value[:32]!r} is not a length")
    return int(value)


class Http1Pool:
    """Keep-alive connections to one server, one per request in flight: a request takes a free one or opens one."""

    def __init__(
        self,
        host: str,
        port: int,
        connect_timeout_s: float,
        tls: ssl.SSLContext | None = None,
        times: ClientTimes | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        stall_timeout_s: float | None = None,
    ) -> None:
        """`stall_timeout_s`: requests sent without a timeout of their own fail after about that long unanswered
        (between 1 and 1.25 times it), checked by one timer for the pool instead of one per request."""
        self.times = times or ClientTimes()  # what sending and receiving cost, summed
        self.stall_ns = int(stall_timeout_s * 1e9) if stall_timeout_s else 0
        self._sweeping: asyncio.TimerHandle | None = None
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.tls = tls  # HTTPS
        self.max_response_bytes = max_response_bytes
        self.free: list[Http1Connection] = []
        self.connections: set[Http1Connection] = set()

    async def request(self, request: bytes, timeout_s: float | None = None, sink: BodySink | None = None) -> Reply:
        """Send a request and return its response (its body given to `sink` in pieces if it takes it); raises
        ConnectionError (no connection, or it closed before the response was whole: never sent again),
        MalformedResponse, what the sink raised, or TimeoutError after `timeout_s` (a stream's whole length)."""
        clock = time.perf_counter_ns
        times = self.times
        free = self.free
        connection = free.pop() if free else await self._open()
        start = clock()
        waiter = connection.send(request, sink)
        connection.sent_ns = start
        times.send_ns += clock() - start
        times.sends += 1
        timer = None
        if timeout_s is not None:
            timer = asyncio.get_running_loop().call_later(timeout_s, _expire, connection)
        elif self._sweeping is None and self.stall_ns:
            self._sweep_later()
        try:
            reply = await waiter
        except asyncio.CancelledError:
            connection.abort(None)  # its response would come later: the connection is out of step
            raise
        finally:
            if timer is not None:
                timer.cancel()
        times.recv_ns += clock() - reply.first_ns
        times.calls += 1
        return reply

    async def _open(self) -> Http1Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await within(
                loop.create_connection(
                    lambda: Http1Connection(self.free.append, self._closed, self.max_response_bytes),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                ),
                self.connect_timeout_s,
                discard=_close,
            )
        except ssl.SSLError as error:
            raise ConnectionError(f"TLS handshake failed: {error}") from None
        except asyncio.TimeoutError:
            raise ConnectionError(f"no connection within {self.connect_timeout_s:g} s") from None
        self.connections.add(connection)
        return connection

    def _closed(self, connection: Http1Connection) -> None:
        self.connections.discard(connection)
        if connection in self.free:
            self.free.remove(connection)

    def _sweep_later(self) -> None:
        self._sweeping = asyncio.get_running_loop().call_later(self.stall_ns / 4e9, self._sweep)

    def _sweep(self) -> None:
        """Fail the requests unanswered for longer than the stall timeout (a streamed answer: since its last bytes,
        so that a long generation that keeps sending lives on); look again while connections are open."""
        self._sweeping = None
        oldest = time.perf_counter_ns() - self.stall_ns
        for connection in list(self.connections):
            last = max(connection.sent_ns, connection.read_ns) if connection.streaming else connection.sent_ns
            if connection.state in ANSWERING and last < oldest:
                _expire(connection)
        if self.connections:
            self._sweep_later()

    def close(self) -> None:
        """Close every connection; requests in flight fail."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for connection in list(self.connections):
            connection.abort(ConnectionError("the connection was closed"))


def _close(opened: tuple[asyncio.BaseTransport, Http1Connection]) -> None:
    """Close a connection that opened as its caller was cancelled."""
    opened[1].abort(None)


def _expire(connection: Http1Connection) -> None:
    connection.abort(TimeoutError())
