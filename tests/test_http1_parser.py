"""The raw HTTP/1.1 response parser under random input (issue 24): valid responses (Content-Length, chunked, or
ended by the server's close; after interim 1xx answers) cut at random points parse to the same reply, or stream the
same body to a sink, each piece stamped with its read's time; any bytes at all, cut anywhere, end as a reply or a
counted failure, never as an exception out of `data_received`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.transport.errors import RequestFailed
from loadgen.transport.http1 import (
    CLOSED,
    IDLE,
    MAX_HEAD_BYTES,
    ConnectionClosed,
    Http1Connection,
    Http1Pool,
    MalformedResponse,
    Reply,
)
from tests.test_raw_parsers import FakeTransport

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAILURES = (MalformedResponse, ConnectionClosed, RequestFailed)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, int | None, str]:
    """A valid response's bytes, its status, body, Inference-Header-Content-Length and framing."""
    status = draw(st.integers(200, 599).filter(lambda code: code not in (204, 304)))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    header_length = draw(st.none() | st.integers(0, len(body)))
    head = b"HTTP/1.0" if framing == "close" else b"HTTP/1.1"
    head += f" {status} X\r\n".encode()
    for _ in range(draw(st.integers(0, 3))):
        head += b"X-" + draw(st.text("abcxyz", min_size=1, max_size=8)).encode() + b": v\r\n"
    if header_length is not None:
        head += f"Inference-Header-Content-Length: {header_length}\r\n".encode()
    if framing == "length":
        wire = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    elif framing == "chunked":
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)]) if b > a]
        chunks = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces)
        wire = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    else:
        wire = head + b"\r\n" + body
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" * draw(st.integers(0, 2))
    return interim + wire, status, body, header_length, framing


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` cut at the given points (any, in any order)."""
    edges = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


class Sink:
    """A body sink that takes 200 answers: their pieces, the times they came with, and the read times seen."""

    def __init__(self) -> None:
        self.pieces: list[tuple[bytes, int]] = []
        self.reads: set[int] = set()

    def begin(self, status: int, content_type: bytes) -> bool:
        return status == 200

    def piece(self, data: bytes, ns: int) -> None:
        self.pieces.append((data, ns))


def _fed(
    parts: list[bytes], close: bool, max_response_bytes: int = 1 << 20, sink: Sink | None = None
) -> asyncio.Future[Reply]:
    """Feed the parts to a fresh connection after a request (then the server's close, if `close`)."""

    async def run() -> asyncio.Future[Reply]:
        connection = Http1Connection(lambda _: None, lambda _: None, max_response_bytes)
        connection.connection_made(FakeTransport())  # type: ignore[arg-type]
        waiter = connection.send(b"POST / HTTP/1.1\r\n\r\n", sink)
        for part in parts:
            connection.data_received(part)  # raises nothing, whatever the bytes
            if sink is not None:
                sink.reads.add(connection.read_ns)
        if close:
            connection.connection_lost(None)
            assert connection.state == CLOSED and waiter.done()
        elif waiter.done() and not waiter.exception():
            assert connection.state in (IDLE, CLOSED)
        return waiter

    return uvloop.run(run())


@EXAMPLES
@given(responses(), st.lists(st.integers(0, 2000), max_size=6))
def test_a_valid_response_cut_anywhere_parses_whole(
    response: tuple[bytes, int, bytes, int | None, str], points: list[int]
) -> None:
    wire, status, body, header_length, framing = response
    waiter = _fed(_cut(wire, points), close=framing == "close")
    reply = waiter.result()
    assert (reply.status, bytes(reply.body), reply.header_length) == (status, body, header_length)


@EXAMPLES
@given(responses(), st.lists(st.integers(0, 2000), max_size=6))
def test_a_streamed_body_comes_whole_in_pieces_stamped_with_their_reads(
    response: tuple[bytes, int, bytes, int | None, str], points: list[int]
) -> None:
    wire, status, body, _, framing = response
    sink = Sink()
    reply = _fed(_cut(wire, points), close=framing == "close", sink=sink).result()
    streamed = b"".join(piece for piece, _ in sink.pieces)
    assert (bytes(reply.body), streamed) == ((b"", body) if status == 200 else (body, b""))  # an error's kept whole
    times = [ns for _, ns in sink.pieces]
    assert set(times) <= sink.reads and times == sorted(times)
    assert reply.first_ns <= reply.last_ns == max(sink.reads)


@EXAMPLES
@given(
    responses(),
    st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=3)), min_size=1, max_size=4),
    st.lists(st.integers(0, 2000), max_size=6),
    st.booleans(),
)
def test_a_damaged_response_is_a_reply_or_a_failure(
    response: tuple[bytes, int, bytes, int | None, str],
    damage: list[tuple[int, bytes]],
    points: list[int],
    close: bool,
) -> None:
    wire = bytearray(response[0])
    for at, replacement in damage:  # bytes replaced, dropped or inserted anywhere
        at %= len(wire) + 1
        wire[at : at + len(replacement) % 2 + 1] = replacement
    waiter = _fed(_cut(bytes(wire), points), close)
    if waiter.done() and waiter.exception() is not None:
        error = waiter.exception()
        assert isinstance(error, FAILURES) and "\n" not in str(error), repr(error)


@EXAMPLES
@given(st.binary(max_size=400), st.lists(st.integers(0, 2000), max_size=6))
def test_any_bytes_are_a_reply_or_a_failure(data: bytes, points: list[int]) -> None:
    waiter = _fed(_cut(data, points), close=True)
    assert waiter.exception() is None or isinstance(waiter.exception(), FAILURES)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 4096),
    st.sampled_from(["length", "chunked"]),
    st.lists(st.integers(0, 10_000), max_size=6),
    st.booleans(),
)
def test_a_body_past_the_limit_fails_naming_it(limit: int, framing: str, points: list[int], streamed: bool) -> None:
    body = bytes(limit + 1)
    if framing == "length":
        wire = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    else:
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body
    error = _fed(
        _cut(wire, points), close=False, max_response_bytes=limit, sink=Sink() if streamed else None
    ).exception()
    assert str(error) == f"a response over --max-response-bytes ({limit} bytes)"


def test_a_head_or_trailers_past_the_limit_fail_naming_it() -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * MAX_HEAD_BYTES
    assert "header block over 65536 bytes" in str(_fed([endless[:100], endless[100:]], close=False).exception())
    interims = b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_HEAD_BYTES // 25 + 1)  # 1xx answers count in the head
    assert "header block over 65536 bytes" in str(_fed([interims], close=False).exception())
    trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + b"X-T: t\r\n" * 20_000
    assert "trailers) over 131072 bytes" in str(_fed([trailers], close=False).exception())
    line = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n"
    assert "header line over 8192 bytes" in str(_fed([line], close=False).exception())


def test_a_callback_that_raises_fails_the_request_alone() -> None:
    wire = b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: x\r\nContent-Length: 0\r\n\r\n"
    error = _fed([wire], close=False).exception()
    assert isinstance(error, MalformedResponse) and "Inference-Header-Content-Length" in str(error)
    assert "protocol switch" in str(_fed([b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n"], close=False).exception())


async def _streamed_through_pool(pauses_s: list[float], stall_s: float) -> tuple[Sink, BaseException | None]:
    """A local server that answers with a chunked body, one chunk after each pause, read through a pool whose
    stall guard is `stall_s`."""

    handlers: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await _answer(reader, writer)
        finally:
            writer.close()

    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for pause in pauses_s:
            await asyncio.sleep(pause)
            writer.write(b"5\r\nhello\r\n")
        writer.write(b"0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool("127.0.0.1", port, 5.0, stall_timeout_s=stall_s)
    sink = Sink()
    error: BaseException | None = None
    try:
        await pool.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", sink=sink)
    except (TimeoutError, ConnectionError) as failed:
        error = failed
    finally:
        pool.close()
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
    return sink, error


def test_a_stream_that_keeps_sending_outlives_the_stall_guard_and_a_silent_one_does_not() -> None:
    """The stall guard counts a streamed answer from its last bytes: a long generation lives on, a silence ends."""
    sink, error = asyncio.run(_streamed_through_pool([0.1] * 12, stall_s=0.4))  # 1.2 s in all, never 0.4 s quiet
    assert error is None and b"".join(piece for piece, _ in sink.pieces) == b"hello" * 12
    sink, error = asyncio.run(_streamed_through_pool([0.1, 3.0], stall_s=0.4))  # then quiet for longer than the guard
    assert error is not None
