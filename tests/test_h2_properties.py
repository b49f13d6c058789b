"""The sans-I/O HTTP/2 client (loadgen.transport.h2_core) under property-based tests, with python-hyper's h2 as the
server: random sequences of requests, streams, responses, resets, pings, SETTINGS changed mid-stream, windows
lowered and raised, bytes delivered in random pieces. h2 checks every frame the client sends (a frame over the
window or the frame size, or in the wrong state, raises in h2), and the test checks that every stream ends once,
with the bytes each side sent. A second property sends the client each kind of protocol violation and checks that
it answers with the RST_STREAM or GOAWAY RFC 9113 asks for, tells the streams why, and raises nothing; a third
feeds it random bytes. Examples are bounded (a few hundred in all) so that the suite takes well under a minute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.transport import h2_core
from loadgen.transport.h2_core import ClientConnection, Closed, ConnectionState, HeaderList, Stream
from loadgen.transport.h2_frames import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    prepare,
    request_block,
    settings_frame,
)

EXAMPLES = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BLOCK = request_block(
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "fake"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
)
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
# the largest initial window the server sets: h2 refuses (as its own error) a window it has raised with WINDOW_UPDATE
# that a new SETTINGS_INITIAL_WINDOW_SIZE would take past 2^31-1; the test's updates add up to 30 MiB at most
SAFE_WINDOW = MAX_WINDOW - (32 << 20)
TRAILERS = [("grpc-status", "0")]


def _nothing() -> None:
    """The I/O layer's wake-up: the tests take `out` themselves."""


class Events:
    """What the I/O layer would hear."""

    def __init__(self) -> None:
        self.settlements = 0
        self.retirements = 0
        self.ended: bool | None = None  # how the connection ended: aborted (True) or closed

    def flush(self) -> None:
        pass

    def settled(self) -> None:
        self.settlements += 1

    def retired(self) -> None:
        self.retirements += 1

    def over(self, abort: bool) -> None:
        self.ended = abort


class Recorder(Stream):
    """A stream that records what the connection tells it."""

    __slots__ = ("body", "closed", "data", "ends", "responses", "trailers")

    def __init__(self, body: bytes = b"") -> None:
        super().__init__()
        self.body = body  # what the client sends
        self.responses: list[tuple[int | None, bool]] = []
        self.data = bytearray()
        self.ends = 0
        self.trailers: HeaderList | None = None
        self.closed: list[Closed] = []

    def on_response(self, headers: HeaderList, end_stream: bool) -> None:
        self.responses.append((headers.status, end_stream))

    def on_data(self, data: bytes) -> None:
        self.data += data

    def on_end(self, trailers: HeaderList | None) -> None:
        self.ends += 1
        self.trailers = trailers

    def on_close(self, closed: Closed) -> None:
        self.closed.append(closed)

    @property
    def outcomes(self) -> int:
        """How many times the stream ended (one is right)."""
        return self.ends + len(self.closed)


@dataclass
class Served:
    """What the server (h2) saw of one stream, and what it still has to send."""

    body: bytearray = field(default_factory=bytearray)
    ended: bool = False  # the client's END_STREAM came
    reset: bool = False  # either side reset it
    response: bytes | None = None  # what the server answers, once it decided to
    sent: int = 0  # how much of the response went out
    finished: bool = False  # the trailers went out


class Pair:
    """The client core and an h2 server, joined in memory."""

    def __init__(self) -> None:
        self.events = Events()
        self.client = ClientConnection(self.events, _nothing, "h2")
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.server.initiate_connection()
        self.client.initiate()
        self.to_client = b""  # what the server wrote that the client has not read yet
        self.served: dict[int, Served] = {}
        self.streams: list[Recorder] = []
        self.cancelled: list[Recorder] = []  # streams the client reset itself (no hook is called)
        self.terminated: list[h2.events.ConnectionTerminated] = []  # the client's GOAWAY, as h2 saw it
        self.prefaced = False  # the client's preface went to the server
        self.unacknowledged: dict[int, int] = {}  # DATA the server has not given window back for yet
        self.sent: list[tuple[int, int, int, bytes]] = []  # every frame the client wrote, as `_frames_of` gives them

    # the wire

    def client_writes(self, part: float = 1.0) -> None:
        """Hand (a part of) what the client wrote to the server, a frame at a time (h2 applies a SETTINGS
        acknowledgement to the frames after it only in its next read); h2 raises on any frame it must refuse."""
        data = b"".join(self.client.out)
        self.client.out.clear()
        at = 0
        if not self.prefaced:
            at = len(PREFACE)
            self.prefaced = True
            self._deliver(data[:at])
        while at < len(data) and at + 9 + int.from_bytes(data[at : at + 3], "big") <= len(data) * part:
            end = at + 9 + int.from_bytes(data[at : at + 3], "big")
            self.sent += _frames_of(data[at:end])
            self._deliver(data[at:end])
            at = end
        if at < len(data):
            self.client.out.append(data[at:])

    def _deliver(self, data: bytes) -> None:
        for event in self.server.receive_data(data):
            self._on_event(event)
        self.to_client += self.server.data_to_send()

    def server_writes(self, part: float = 1.0) -> None:
        """Hand (a part of) what the server wrote to the client."""
        self.to_client += self.server.data_to_send()
        cut = int(len(self.to_client) * part)
        data, self.to_client = self.to_client[:cut], self.to_client[cut:]
        self.client.receive(data)

    def pump(self) -> None:
        """Both ways until nothing moves."""
        for _ in range(10_000):
            self.to_client += self.server.data_to_send()
            if not self.client.out and not self.to_client:
                return
            self.client_writes()
            self.server_writes()
        raise AssertionError("the connection never went quiet")

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.served[event.stream_id] = Served()
        elif isinstance(event, h2.events.DataReceived):
            self.served[event.stream_id].body += event.data
            self.unacknowledged[event.stream_id] = (
                self.unacknowledged.get(event.stream_id, 0) + event.flow_controlled_length
            )
        elif isinstance(event, h2.events.StreamEnded):
            self.served[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.served[event.stream_id].reset = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated.append(event)

    # what the server does

    def acknowledge(self) -> None:
        """The server gives back the window of what it read (h2 sends WINDOW_UPDATE as it sees fit)."""
        for stream_id, size in self.unacknowledged.items():
            self.server.acknowledge_received_data(size, stream_id)  # a stream closed: the connection's alone
        self.unacknowledged.clear()
        self.to_client += self.server.data_to_send()

    def answer(self, index: int, size: int) -> None:
        """The server starts answering one of the streams it has (headers, then the response as windows allow)."""
        open_ids = [sid for sid, served in self.served.items() if served.response is None and not served.reset]
        if not open_ids:
            return
        stream_id = open_ids[index % len(open_ids)]
        self.served[stream_id].response = bytes(range(256)) * (size // 256) + bytes(size % 256)
        self.server.send_headers(stream_id, RESPONSE)
        self.send_responses()

    def send_responses(self) -> None:
        """Send what the client's windows let through of every response begun; trailers after the last byte."""
        for stream_id, served in self.served.items():
            if served.response is None or served.finished or served.reset:
                continue
            try:
                while served.sent < len(served.response):
                    room = min(self.server.local_flow_control_window(stream_id), self.server.max_outbound_frame_size)
                    if room <= 0:
                        break
                    part = served.response[served.sent : served.sent + room]
                    self.server.send_data(stream_id, part)
                    served.sent += len(part)
                if served.sent == len(served.response):
                    self.server.send_headers(stream_id, TRAILERS, end_stream=True)
                    served.finished = True
            except h2.exceptions.StreamClosedError:
                served.reset = True
        self.to_client += self.server.data_to_send()

    def reset(self, index: int) -> None:
        """The server resets one of its streams."""
        live = [sid for sid, served in self.served.items() if not served.reset and not served.finished]
        if live:
            stream_id = live[index % len(live)]
            try:
                self.server.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            except h2.exceptions.StreamClosedError:
                return  # the client ended it already; its frames are still on the way
            self.served[stream_id].reset = True
            self.to_client += self.server.data_to_send()

    def change_settings(self, window: int, frame_size: int) -> None:
        """New SETTINGS from the server, mid-stream: lowering the initial window can take windows below 0."""
        self.server.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: frame_size,
            }
        )
        self.to_client += self.server.data_to_send()

    def open_window(self, stream_index: int | None, increment: int) -> None:
        """A WINDOW_UPDATE the server chooses to send (the connection's, or a stream's)."""
        stream_id = None
        if stream_index is not None:
            live = [sid for sid, served in self.served.items() if not served.reset and not served.ended]
            if not live:
                return
            stream_id = live[stream_index % len(live)]
        try:
            self.server.increment_flow_control_window(increment, stream_id)
        except h2.exceptions.ProtocolError:
            return  # h2 keeps the window under 2^31-1 itself, and refuses closed streams
        self.to_client += self.server.data_to_send()

    # what the client does

    def request(self, size: int) -> None:
        if self.client.has_room:
            stream = Recorder(bytes(range(256)) * (size // 256) + bytes(size % 256))
            self.client.send_request(stream, prepare(BLOCK, stream.body))
            self.streams.append(stream)

    def stream_messages(self, sizes: list[int]) -> None:
        """A streaming call: HEADERS, then messages as DATA, then END_STREAM."""
        if self.client.has_room:
            stream = Recorder(b"".join(bytes(size) for size in sizes))
            self.client.send_headers(stream, BLOCK)
            for size in sizes:
                self.client.send_data(stream, bytes(size))
            self.client.send_data(stream, b"", end_stream=True)
            self.streams.append(stream)

    def cancel(self, index: int) -> None:
        live = [stream for stream in self.streams if stream.connection is not None]
        if live:
            stream = live[index % len(live)]
            stream.cancel()
            self.cancelled.append(stream)

    def finish(self) -> None:
        """The server opens every window, answers every stream, and both sides talk until all is said."""
        self.change_settings(SAFE_WINDOW, 16_384)
        self.pump()
        for _ in range(100):
            self.acknowledge()
            for stream_id, served in self.served.items():
                if served.ended and served.response is None and not served.reset:
                    served.response = bytes(100)
                    self.server.send_headers(stream_id, RESPONSE)
            self.send_responses()
            self.pump()
            if not self.client.streams:
                return


ACTIONS = st.one_of(
    st.tuples(st.just("request"), st.one_of(st.integers(0, 70_000), st.integers(0, 300_000))),
    st.tuples(st.just("stream_messages"), st.lists(st.integers(0, 40_000), max_size=4)),
    st.tuples(st.just("client_writes"), st.floats(0, 1)),
    st.tuples(st.just("server_writes"), st.floats(0, 1)),
    st.tuples(st.just("acknowledge")),
    st.tuples(st.just("answer"), st.integers(0, 10), st.integers(0, 100_000)),
    st.tuples(st.just("send_responses")),
    st.tuples(st.just("reset"), st.integers(0, 10)),
    st.tuples(st.just("cancel"), st.integers(0, 10)),
    st.tuples(
        st.just("change_settings"),
        st.one_of(st.integers(0, 70_000), st.integers(0, SAFE_WINDOW)),
        st.one_of(st.just(16_384), st.integers(16_384, 2**24 - 1)),
    ),
    st.tuples(st.just("open_window"), st.one_of(st.none(), st.integers(0, 10)), st.integers(1, 1 << 20)),
    st.tuples(st.just("ping")),
)


@EXAMPLES
@given(st.lists(ACTIONS, max_size=30))
def test_every_stream_ends_once_with_the_bytes_each_side_sent(actions: list[tuple[Any, ...]]) -> None:
    pair = Pair()
    pair.pump()  # the prefaces and SETTINGS
    for name, *arguments in actions:
        if name == "ping":
            pair.server.ping(b"12345678")
            pair.to_client += pair.server.data_to_send()
        else:
            getattr(pair, name)(*arguments)
    pair.finish()
    client = pair.client
    assert not pair.terminated and client.state == ConnectionState.OPEN and not client.streams and not client.blocked
    for stream in pair.streams:
        assert stream.outcomes == (0 if stream in pair.cancelled else 1), (stream.stream_id, stream.ends, stream.closed)
        assert stream.outbound <= MAX_WINDOW
        served = pair.served.get(stream.stream_id)
        assert served is not None
        if served.ended:  # all of the request came
            assert bytes(served.body) == stream.body
        if stream.ends:  # all of the response came
            assert stream.responses == [(200, False)] and bytes(stream.data) == served.response
    assert client.window.outbound <= MAX_WINDOW
    # every DATA frame counted in the connection's window, those on streams the client had reset too, and the
    # frames the server sent on them before it read the reset ignored (well within the grace period)
    assert pair.server.outbound_flow_control_window == MAX_WINDOW - client.window.taken
    assert not [item for item in pair.sent if item[0] == RST_STREAM and item[3] == STREAM_CLOSED.to_bytes(4, "big")]


# violations: each with the frame that must answer it


def _block(headers: list[tuple[str, str]], huffman: bool = False) -> bytes:
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    return bytes(encoder.encode(headers, huffman=huffman))[1:]  # without the table size update (already 0)


OK_BLOCK = _block(RESPONSE)


@dataclass(frozen=True)
class Violation:
    """A server's frames that break RFC 9113, and the client's answer: RST_STREAM on the stream, or GOAWAY."""

    frames: Callable[[int], bytes]  # given the id of an open stream the server has answered, or not (`answered`)
    answer: int  # RST_STREAM or GOAWAY
    code: int
    answered: bool = False  # the stream already has its response's headers


def _settings(key: int, value: int) -> bytes:
    return settings_frame([(key, value)])


VIOLATIONS: dict[str, Callable[[Any], Violation]] = {
    "settings of a length no multiple of 6": lambda d: Violation(
        lambda sid: frame(SETTINGS, 0, 0, bytes(d.draw(st.integers(1, 40).filter(lambda n: n % 6)))),
        GOAWAY,
        FRAME_SIZE_ERROR,
    ),
    "SETTINGS_MAX_FRAME_SIZE out of range": lambda d: Violation(
        lambda sid: _settings(
            SETTINGS_MAX_FRAME_SIZE, d.draw(st.one_of(st.integers(0, 16_383), st.integers(2**24, 2**32 - 1)))
        ),
        GOAWAY,
        PROTOCOL_ERROR,
    ),
    "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1": lambda d: Violation(
        lambda sid: _settings(SETTINGS_INITIAL_WINDOW_SIZE, d.draw(st.integers(2**31, 2**32 - 1))),
        GOAWAY,
        FLOW_CONTROL_ERROR,
    ),
    "SETTINGS_ENABLE_PUSH from a server": lambda d: Violation(
        lambda sid: _settings(SETTINGS_ENABLE_PUSH, d.draw(st.integers(1, 2**32 - 1))), GOAWAY, PROTOCOL_ERROR
    ),
    "SETTINGS on a stream": lambda d: Violation(lambda sid: frame(SETTINGS, 0, sid), GOAWAY, PROTOCOL_ERROR),
    "a SETTINGS acknowledgement with a payload": lambda d: Violation(
        lambda sid: frame(SETTINGS, ACK, 0, bytes(d.draw(st.integers(1, 12)))), GOAWAY, FRAME_SIZE_ERROR
    ),
    "a stream window over 2^31-1 after SETTINGS": lambda d: Violation(
        lambda sid: (
            frame(WINDOW_UPDATE, 0, sid, (MAX_WINDOW - 65_535).to_bytes(4, "big"))
            + _settings(SETTINGS_INITIAL_WINDOW_SIZE, d.draw(st.integers(65_535 + 200, MAX_WINDOW)))
        ),
        GOAWAY,
        FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE of 0 on a stream": lambda d: Violation(
        lambda sid: frame(WINDOW_UPDATE, 0, sid, bytes(4)), RST_STREAM, PROTOCOL_ERROR
    ),
    "WINDOW_UPDATE of 0 on the connection": lambda d: Violation(
        lambda sid: frame(WINDOW_UPDATE, 0, 0, bytes(4)), GOAWAY, PROTOCOL_ERROR
    ),
    "a stream window over 2^31-1": lambda d: Violation(
        lambda sid: frame(
            WINDOW_UPDATE, 0, sid, d.draw(st.integers(MAX_WINDOW - 65_000, MAX_WINDOW)).to_bytes(4, "big")
        ),
        RST_STREAM,
        FLOW_CONTROL_ERROR,
    ),
    "a connection window over 2^31-1": lambda d: Violation(
        lambda sid: frame(WINDOW_UPDATE, 0, 0, d.draw(st.integers(MAX_WINDOW - 65_000, MAX_WINDOW)).to_bytes(4, "big")),
        GOAWAY,
        FLOW_CONTROL_ERROR,
    ),
    "a WINDOW_UPDATE of the wrong length": lambda d: Violation(
        lambda sid: frame(WINDOW_UPDATE, 0, sid, bytes(d.draw(st.sampled_from([0, 1, 3, 5, 8])))),
        GOAWAY,
        FRAME_SIZE_ERROR,
    ),
    "DATA before HEADERS": lambda d: Violation(
        lambda sid: frame(DATA, 0, sid, bytes(d.draw(st.integers(0, 100)))), RST_STREAM, PROTOCOL_ERROR
    ),
    "a pad length not below the payload's": lambda d: Violation(
        lambda sid: frame(DATA, PADDED, sid, bytes([d.draw(st.integers(10, 255))]) + bytes(9)),
        GOAWAY,
        PROTOCOL_ERROR,
        answered=True,
    ),
    "DATA on stream 0": lambda d: Violation(lambda sid: frame(DATA, 0, 0, b"x"), GOAWAY, PROTOCOL_ERROR),
    "DATA on a stream never opened": lambda d: Violation(
        lambda sid: frame(DATA, 0, sid + 2 * d.draw(st.integers(4, 1000)), b"x"), GOAWAY, PROTOCOL_ERROR
    ),
    "HEADERS on a stream never opened": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid + 2 * d.draw(st.integers(4, 1000)), OK_BLOCK),
        GOAWAY,
        PROTOCOL_ERROR,
    ),
    "HEADERS on a server's stream (push)": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, 2 * d.draw(st.integers(1, 1000)), OK_BLOCK), GOAWAY, PROTOCOL_ERROR
    ),
    "a :status not of three digits": lambda d: Violation(
        lambda sid: frame(
            HEADERS,
            END_HEADERS,
            sid,
            _block([(":status", d.draw(st.sampled_from(["²", "20", "2000", "abc", "", "٢٠٠"])))]),
        ),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "a response without :status": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, _block([("content-type", "application/grpc")])),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "a field name in capitals": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, _block([(":status", "200"), ("Content-Type", "x")])),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "a connection-specific field": lambda d: Violation(
        lambda sid: frame(
            HEADERS,
            END_HEADERS,
            sid,
            _block([(":status", "200"), (d.draw(st.sampled_from(sorted(h2_core.CONNECTION_HEADERS))), "x")]),
        ),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "a request pseudo-header in a response": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, _block([(":status", "200"), (":path", "/")])),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "101 Switching Protocols": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, _block([(":status", "101")])), RST_STREAM, PROTOCOL_ERROR
    ),
    "a 1xx that ends the stream": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS | END_STREAM, sid, _block([(":status", "103")])),
        RST_STREAM,
        PROTOCOL_ERROR,
    ),
    "trailers that do not end the stream": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, _block(TRAILERS)), RST_STREAM, PROTOCOL_ERROR, answered=True
    ),
    "a pseudo-header in trailers": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS | END_STREAM, sid, _block([(":status", "200"), *TRAILERS])),
        RST_STREAM,
        PROTOCOL_ERROR,
        answered=True,
    ),
    "a reference to a dynamic table entry": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, bytes([0x80 | d.draw(st.integers(62, 127))])),
        GOAWAY,
        COMPRESSION_ERROR,
    ),
    "a dynamic table above the client's 0": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, bytes([0x3F, 0xE1, 0x1F]) + OK_BLOCK),  # size update: 4096
        GOAWAY,
        COMPRESSION_ERROR,
    ),
    "a header block hpack cannot decode": lambda d: Violation(
        lambda sid: frame(HEADERS, END_HEADERS, sid, b"\x00\x7f"), GOAWAY, COMPRESSION_ERROR
    ),
    "CONTINUATION without HEADERS": lambda d: Violation(
        lambda sid: frame(CONTINUATION, END_HEADERS, sid, OK_BLOCK), GOAWAY, PROTOCOL_ERROR
    ),
    "a frame inside a header block": lambda d: Violation(
        lambda sid: frame(HEADERS, 0, sid, OK_BLOCK) + frame(PING, 0, 0, bytes(8)), GOAWAY, PROTOCOL_ERROR
    ),
    "PUSH_PROMISE": lambda d: Violation(
        lambda sid: frame(PUSH_PROMISE, END_HEADERS, sid, bytes(4)), GOAWAY, PROTOCOL_ERROR
    ),
    "a PING of the wrong length": lambda d: Violation(
        lambda sid: frame(PING, 0, 0, bytes(d.draw(st.integers(0, 20).filter(lambda n: n != 8)))),
        GOAWAY,
        FRAME_SIZE_ERROR,
    ),
    "PING on a stream": lambda d: Violation(lambda sid: frame(PING, 0, sid, bytes(8)), GOAWAY, PROTOCOL_ERROR),
    "a RST_STREAM of the wrong length": lambda d: Violation(
        lambda sid: frame(RST_STREAM, 0, sid, bytes(d.draw(st.sampled_from([0, 3, 5, 8])))), GOAWAY, FRAME_SIZE_ERROR
    ),
    "RST_STREAM on stream 0": lambda d: Violation(
        lambda sid: frame(RST_STREAM, 0, 0, bytes(4)), GOAWAY, PROTOCOL_ERROR
    ),
    "RST_STREAM on a stream never opened": lambda d: Violation(
        lambda sid: frame(RST_STREAM, 0, sid + 8, bytes(4)), GOAWAY, PROTOCOL_ERROR
    ),
    "GOAWAY on a stream": lambda d: Violation(lambda sid: frame(GOAWAY, 0, sid, bytes(8)), GOAWAY, PROTOCOL_ERROR),
    "a frame over the client's SETTINGS_MAX_FRAME_SIZE": lambda d: Violation(
        lambda sid: frame(DATA, 0, sid, bytes(d.draw(st.integers(16_385, 20_000)))), GOAWAY, FRAME_SIZE_ERROR
    ),
}


def _frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The frames in what the client wrote: (type, flags, stream id, payload)."""
    frames, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        frames.append(
            (data[at + 3], data[at + 4], int.from_bytes(data[at + 5 : at + 9], "big"), data[at + 9 : at + 9 + length])
        )
        at += 9 + length
    return frames


@EXAMPLES
@given(st.sampled_from(sorted(VIOLATIONS)), st.integers(1, 4), st.data())
def test_each_violation_gets_the_answer_rfc_9113_asks_for(name: str, streams: int, data: st.DataObject) -> None:
    violation = VIOLATIONS[name](data)
    pair = Pair()
    pair.pump()
    for _ in range(streams):
        pair.request(100)
    pair.pump()
    target = pair.streams[data.draw(st.integers(0, streams - 1))]
    if violation.answered:
        pair.server.send_headers(target.stream_id, RESPONSE)
        pair.pump()
    pair.client.out.clear()
    pair.client.receive(violation.frames(target.stream_id))  # raises nothing
    answer = [item for item in _frames_of(b"".join(pair.client.out)) if item[0] in (RST_STREAM, GOAWAY)]
    assert answer, f"{name}: no RST_STREAM or GOAWAY"
    kind, _, stream_id, payload = answer[-1]
    code = int.from_bytes(payload[:4] if kind == RST_STREAM else payload[4:8], "big")
    assert (kind, code) == (violation.answer, violation.code), name
    others = [stream for stream in pair.streams if stream is not target]
    if kind == RST_STREAM:  # that stream alone
        assert stream_id == target.stream_id and target.closed and target.closed[0].kind == "violation"
        assert target.closed[0].message and all(stream.connection is not None for stream in others)
        assert pair.client.state == ConnectionState.OPEN
    else:  # every stream is told why
        assert pair.client.state == ConnectionState.CLOSED and pair.events.ended
        assert all(stream.closed and stream.closed[0].kind == "connection" for stream in pair.streams)
        assert all(stream.outcomes == 1 for stream in pair.streams)


CLOSINGS = ("ended", "reset by the server", "reset by the client", "reset by the client, past the grace period")


@EXAMPLES
@given(st.sampled_from(CLOSINGS), st.sampled_from([DATA, HEADERS]), st.integers(1, 3), st.data())
def test_frames_on_a_closed_stream(closing: str, kind: int, streams: int, data: st.DataObject) -> None:
    """DATA or HEADERS on a stream the client reset itself, within the grace period, are ignored; on a stream
    that closed otherwise (or longer ago), a stream error STREAM_CLOSED (RFC 9113, 5.1, 6.1): RST_STREAM on it
    alone. DATA counts in the connection's window either way (h2, the server, agrees on its size)."""
    with mock.patch.object(h2_core, "RESET_GRACE_S", 0.0 if closing.endswith("grace period") else 60.0):
        _frame_on_a_closed_stream(closing, kind, streams, data)


def _frame_on_a_closed_stream(closing: str, kind: int, streams: int, data: st.DataObject) -> None:
    pair = Pair()
    pair.pump()
    for _ in range(streams):
        pair.request(100)
    pair.pump()
    target = pair.streams[data.draw(st.integers(0, streams - 1))]
    sid = target.stream_id
    pair.server.send_headers(sid, RESPONSE)
    if closing == "ended":
        pair.server.send_headers(sid, TRAILERS, end_stream=True)
    elif closing == "reset by the server":
        pair.server.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    pair.pump()
    if closing.startswith("reset by the client"):
        target.cancel()
        pair.pump()
    assert target.connection is None
    pair.client.out.clear()
    size = data.draw(st.integers(0, 16_384))
    late = frame(DATA, 0, sid, bytes(size)) if kind == DATA else frame(HEADERS, END_HEADERS, sid, OK_BLOCK)
    taken = pair.client.window.taken
    pair.client.receive(late)
    answer = _frames_of(b"".join(pair.client.out))
    if closing == "reset by the client":
        assert answer == []
    else:
        assert answer == [(RST_STREAM, 0, sid, STREAM_CLOSED.to_bytes(4, "big"))]
    assert pair.client.window.taken == taken + (size if kind == DATA else 0)
    assert pair.client.state == ConnectionState.OPEN
    assert all(stream.connection is not None for stream in pair.streams if stream is not target)
    assert target.outcomes == (0 if closing.startswith("reset by the client") else 1)  # told once, before
    pair.client_writes()  # h2 takes the answer (a reset of a stream it closed)
    assert not pair.terminated


def test_data_beyond_a_window_the_client_gave() -> None:
    pair = Pair()
    pair.pump()
    pair.request(10)
    pair.pump()
    stream = pair.streams[0]
    pair.server.send_headers(stream.stream_id, RESPONSE)
    pair.pump()
    stream.taken = MAX_WINDOW - 10  # as if the server had used all but 10 bytes of it
    pair.client.receive(frame(DATA, 0, stream.stream_id, bytes(11)))
    assert _frames_of(b"".join(pair.client.out))[-1][:3] == (RST_STREAM, 0, stream.stream_id)
    assert stream.closed[0].code == FLOW_CONTROL_ERROR
    pair.client.window.taken = MAX_WINDOW - 10
    pair.client.receive(frame(DATA, 0, stream.stream_id, bytes(11)))
    assert pair.client.state == ConnectionState.CLOSED


def test_the_first_frame_must_be_settings() -> None:
    client = ClientConnection(Events(), _nothing)
    client.initiate()
    client.receive(frame(PING, 0, 0, bytes(8)))
    assert client.state == ConnectionState.CLOSED
    assert _frames_of(b"".join(client.out)[len(PREFACE) :])[-1][0] == GOAWAY


def test_a_response_while_the_request_is_held_resets_the_stream() -> None:
    """The server answers before the client could send all of its request: the client stops (RST_STREAM)."""
    pair = Pair()
    pair.pump()
    pair.request(200_000)  # over the first windows: most of it is held
    pair.pump()
    stream = pair.streams[0]
    assert stream.held is not None
    pair.server.send_headers(stream.stream_id, RESPONSE)
    pair.server.send_data(stream.stream_id, b"early")
    pair.server.send_headers(stream.stream_id, TRAILERS, end_stream=True)
    pair.pump()
    assert stream.ends == 1 and bytes(stream.data) == b"early" and not pair.client.streams
    assert pair.served[stream.stream_id].reset and not pair.client.blocked


def test_a_negative_window_holds_data_until_it_is_positive() -> None:
    """The server lowers SETTINGS_INITIAL_WINDOW_SIZE while a body is held: the stream's window goes below 0, and
    nothing goes out until WINDOW_UPDATE brings it above (no frame over the size, no window inflated)."""
    pair = Pair()
    pair.pump()
    pair.request(100_000)
    pair.client_writes()  # the first 65,535 bytes fill the stream's and the connection's windows
    stream = pair.streams[0]
    pair.change_settings(1000, 16_384)
    pair.server_writes()
    assert stream.outbound == 1000 - 65_535 and stream.held is not None
    pair.client_writes()  # the SETTINGS acknowledgement
    pair.open_window(None, 50_000)  # the connection's window opens; the stream's is still below 0
    pair.server_writes()
    assert not [item for item in _frames_of(b"".join(pair.client.out)) if item[0] == DATA]
    assert pair.client.window.outbound == 50_000
    pair.finish()
    assert bytes(pair.served[stream.stream_id].body) == stream.body and stream.ends == 1


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=60))
def test_random_bytes_never_raise(noise: bytes, more: bytes) -> None:
    pair = Pair()
    pair.pump()
    pair.request(10)
    pair.pump()
    pair.client.receive(noise)
    pair.client.receive(more)
    stream = pair.streams[0]
    assert stream.outcomes <= 1
    if pair.client.state == ConnectionState.CLOSED:
        assert stream.outcomes == 1 and _frames_of(b"".join(pair.client.out))[-1][0] == GOAWAY


@pytest.mark.parametrize("code", [NO_ERROR, PROTOCOL_ERROR])
def test_goaway_refuses_the_streams_it_did_not_take(code: int) -> None:
    pair = Pair()
    pair.pump()
    for _ in range(3):
        pair.request(10)
    pair.pump()
    first, *later = pair.streams
    pair.client.receive(frame(GOAWAY, 0, 0, first.stream_id.to_bytes(4, "big") + code.to_bytes(4, "big")))
    assert [stream.closed[0].kind for stream in later] == ["going_away"] * 2
    assert first.connection is not None and not pair.client.has_room
    pair.server.send_headers(first.stream_id, RESPONSE)
    pair.server.send_headers(first.stream_id, TRAILERS, end_stream=True)
    pair.pump()
    assert first.ends == 1 and pair.client.state == ConnectionState.CLOSED
