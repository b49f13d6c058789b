"""HTTP/1.1 for inference calls, on asyncio Protocols: keep-alive connections, one request in flight on each,
responses parsed with httptools (Content-Length or chunked)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import NamedTuple, cast

import httptools

from loadgen.transport.common import ClientTimes

HEADER_LENGTH = b"inference-header-content-length"


class Reply(NamedTuple):
    """One HTTP response: its status, body, and the length of the JSON header before binary tensors (None: the
    body is all JSON)."""

    status: int
    body: bytes
    header_length: int | None
    first_ns: int  # when its first bytes came (perf_counter_ns)


class MalformedResponse(Exception):
    """The server's bytes are no HTTP/1.1 response."""


class ConnectionClosed(Exception):
    """The connection closed before the response was complete; `reused` and nothing received: safe to resend."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Http1Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, parses its response, then is free again (`on_free`)."""

    def __init__(
        self, on_free: Callable[[Http1Connection], None], on_closed: Callable[[Http1Connection], None]
    ) -> None:
        self.on_free = on_free
        self.on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.body: list[bytes] = []
        self.header_length: int | None = None
        self.received = False  # bytes of the current response came
        self.first_ns = 0  # when
        self.used = False  # answered a request before
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, request: bytes) -> asyncio.Future[Reply]:
        """Send a whole request (request line, headers, body); the future gets its response."""
        assert self.transport is not None
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.body = []
        self.header_length = None
        self.received = False
        self.transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        if not self.received:
            self.received = True
            self.first_ns = time.perf_counter_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.abort(MalformedResponse(f"a malformed HTTP response: {error}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == len(HEADER_LENGTH) and name.lower() == HEADER_LENGTH:
            self.header_length = int(value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        self.waiter = None
        body = self.body
        reply = Reply(
            self.parser.get_status_code(),
            body[0] if len(body) == 1 else b"".join(body),
            self.header_length,
            self.first_ns,
        )
        keep = self.parser.should_keep_alive()
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        self.used = True
        if keep and waiter is not None:
            self.on_free(self)
        else:  # the server closes it, or sent a response nobody asked for: out of step
            self.abort(None)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the connection closed: {exc}" if exc else "the server closed the connection"
        self._closed(ConnectionClosed(reason, retry=self.used and not self.received))

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
        if not self.closed:
            self.closed = True
            self.on_closed(self)


class Http1Pool:
    """Keep-alive connections to one server, one per request in flight: a request takes a free one or opens one."""

    def __init__(
        self,
        host: str,
        port: int,
        connect_timeout_s: float,
        tls: ssl.SSLContext | None = None,
        times: ClientTimes | None = None,
    ) -> None:
        self.times = times or ClientTimes()  # what sending and receiving cost, summed
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.tls = tls  # HTTPS
        self.free: list[Http1Connection] = []
        self.connections: set[Http1Connection] = set()

    async def request(self, request: bytes, timeout_s: float | None = None) -> Reply:
        """Send a request and return its response; raises ConnectionError (no connection, or it closed before the
        response was whole), MalformedResponse, or TimeoutError after `timeout_s`."""
        clock = time.perf_counter_ns
        times = self.times
        while True:
            free = self.free
            connection = free.pop() if free else await self._open()
            start = clock()
            waiter = connection.send(request)
            times.send_ns += clock() - start
            times.sends += 1
            timer = None
            if timeout_s is not None:
                timer = asyncio.get_running_loop().call_later(timeout_s, _expire, connection)
            try:
                reply = await waiter
                times.recv_ns += clock() - reply.first_ns
                times.calls += 1
                return reply
            except ConnectionClosed as error:
                if not error.retry:  # a reused connection the server had closed: send again on another
                    raise ConnectionError(str(error)) from None
            except asyncio.CancelledError:
                connection.abort(None)  # its response would come later: the connection is out of step
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    async def _open(self) -> Http1Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Http1Connection(self.free.append, self._closed),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                ),
                self.connect_timeout_s,
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

    def close(self) -> None:
        """Close every connection; requests in flight fail."""
        for connection in list(self.connections):
            connection.abort(ConnectionError("the connection was closed"))


def _expire(connection: Http1Connection) -> None:
    connection.abort(TimeoutError())
