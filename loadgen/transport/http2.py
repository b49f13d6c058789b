"""HTTP/2 for gRPC calls on uvloop, hand-written because client CPU per request is the point (RFC 9113, gRPC's
PROTOCOL-HTTP2), in layers as python-hyper's h2 and httpcore are built:

- `h2_frames`: frames, and a request's frames built once (only the stream id is written per request);
- `h2_core`: the connection's and streams' state machines, flow-control windows, SETTINGS, without I/O;
- this module: a thin asyncio protocol that feeds the socket's bytes to the core and writes what it queues (what
  one turn of the event loop queues goes out in one system call), and a pool of connections;
- `grpc_http2`: gRPC's rules for a call's response and its message framing, above the core's streams.

Request header blocks are HPACK-encoded once (static table and literals, the dynamic table set to 0), so every
request's HEADERS frame is the same bytes but for the stream id; the server's blocks repeat too, and each distinct
one is decoded once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import cast

from loadgen.transport.common import ClientTimes
from loadgen.transport.grpc_http2 import UNAVAILABLE, Failure, GrpcCall
from loadgen.transport.h2_core import ACCEPTING, ClientConnection, ConnectionState

MAX_OPENINGS = 3  # connections opened in a row that take no stream before a request fails


class Connection(asyncio.Protocol):
    """One HTTP/2 connection on a socket: the sans-I/O `ClientConnection` (`core`) with the event loop's transport.

    `ready` is done once the server's first SETTINGS came (or the connection failed). `on_retired` is called once
    the connection takes no new streams (GOAWAY, closed, stream ids used up), and again when it has closed.
    `times` gets the socket writes' time (Client Send: framing plus the write).
    """

    def __init__(
        self,
        failure: Failure,
        peer: str,
        on_retired: Callable[[Connection], None] | None = None,
        times: ClientTimes | None = None,
    ) -> None:
        self.failure = failure
        self.times = times  # the socket writes' time goes to its sends
        self.peer = peer  # the server's address, for messages
        self.on_retired = on_retired
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.core = ClientConnection(self, functools.partial(self._loop.call_soon, self.drain), peer)
        # the hot paths, without a call between: start(call, request) opens a stream with a unary request's
        # frames; the socket's bytes go to the core as they come
        self.start = self.core.send_request
        self.data_received = self.core.receive  # type: ignore[method-assign]

    # what the core tells

    def flush(self) -> None:
        """A read asked for many answers (a flood of PINGs): write them at once. Otherwise the core's `wake` has
        what it queues written at the end of this turn of the event loop, with whatever else the turn queues."""
        self.drain()

    @property
    def has_room(self) -> bool:
        """Takes one more stream."""
        core = self.core
        return core.state <= ACCEPTING and len(core.streams) < core.max_streams

    def settled(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def retired(self) -> None:
        if self.on_retired is not None:
            self.on_retired(self)

    def over(self, abort: bool) -> None:
        """The core ended the connection: tell the pool, write its last frames, close the socket."""
        if not self.ready.done():
            self.ready.set_exception(self.failure(UNAVAILABLE, f"the connection to {self.peer} ended"))
            self.ready.exception()  # whoever awaits it gets it; nobody else needs to hear
        if self.on_retired is not None:
            self.on_retired(self)
        transport = self.transport
        if transport is not None:
            self.drain()
            if abort:
                transport.abort()
            else:
                transport.close()

    # the socket

    def drain(self) -> None:
        """Write what is queued."""
        out = self.core.out
        if out:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                start = time.perf_counter_ns()
                if len(out) == 1:
                    transport.write(out[0])
                else:  # uvloop writes the frames (a large body's DATA are views of it) as one writev, uncopied
                    transport.writelines(out)
                if self.times is not None:
                    self.times.send_ns += time.perf_counter_ns() - start
            out.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.core.initiate()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the connection to {self.peer} closed: {exc}" if exc else f"{self.peer} closed the connection"
        if not self.ready.done():
            self.ready.set_exception(self.failure(UNAVAILABLE, reason))
            self.ready.exception()
        self.core.lost(reason)

    def pause_writing(self) -> None:
        self.core.pause()

    def resume_writing(self) -> None:
        self.core.resume()

    # what calls use

    @property
    def closed(self) -> bool:
        """The connection is over."""
        return self.core.state == ConnectionState.CLOSED

    def start_stream(self, call: GrpcCall, block: bytes) -> None:
        """Open a stream whose messages follow with `send` (a streaming call)."""
        self.core.send_headers(call, block)

    def send(self, call: GrpcCall, body: bytes) -> None:
        """One more message (in gRPC framing) on an open stream, as flow control allows."""
        self.core.send_data(call, body)

    def close(self) -> None:
        """Say goodbye and close; calls still in flight fail."""
        self.core.close()


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
