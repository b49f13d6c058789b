"""The server-sent-events parser under random input: any stream cut anywhere gives the events the WHATWG rules give
for the whole stream (a plain reading of them below); any bytes give events or the parser's own error; a line or an
event's data past the limit fails whatever the cut, and nothing under it does."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.transport.sse import SseEvent, SseParser, SseTooLarge
from tests.test_http1_parser import _cut

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENDINGS = ("\n", "\r\n", "\r")
# the pieces random streams are made of: fields, separators, a byte-order mark, invalid and multi-byte UTF-8
FRAGMENTS = (b"data", b"data:", b"data: ", b"event:", b"id:1", b"retry: 5", b":", b" ", b"x", b"\r", b"\n", b"\r\n")
FRAGMENTS += ("é€😀".encode(), b"\xff", b"\xe2\x82", b"\xef\xbb\xbf")


def whatwg(stream: bytes) -> list[SseEvent]:
    """The events of a whole stream, read as the standard says: decode, drop a leading BOM, split into lines
    (the last one, unended, dropped), and interpret each line."""
    text = stream.decode(errors="replace").removeprefix("\ufeff")
    events, data, event = [], [], ""
    for line in re.split("\r\n|\r|\n", text)[:-1]:
        if not line:
            if data:
                events.append(SseEvent("\n".join(data), event or "message"))
            data, event = [], ""
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    return events


def parsed(parts: list[bytes], max_bytes: int = 1 << 20) -> list[SseEvent]:
    parser = SseParser(max_bytes, max_bytes)
    return [event for part in parts for event in parser.feed(part)]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A well-formed stream of events (after a byte-order mark or not), its longest line and its largest event's
    data (in bytes)."""
    lines: list[str] = []
    largest = 0
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            lines.append(": " + draw(st.text(max_size=10).map(lambda t: re.sub("[\r\n]", "", t))))
        if draw(st.booleans()):
            lines.append("event: " + draw(st.sampled_from(["message", "delta", "é"])))
        values = draw(st.lists(st.text(max_size=40).map(lambda t: re.sub("[\r\n]", "", t)), min_size=1, max_size=3))
        lines += ["data: " + value for value in values]
        largest = max(largest, len("\n".join(values).encode()))
        lines.append("")
    ending = draw(st.sampled_from(ENDINGS))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    stream = bom + "".join(line + ending for line in lines).encode()
    return stream, max(len(line) for line in re.split(b"\r\n|\r|\n", stream)), largest


@EXAMPLES
@given(streams(), st.lists(st.integers(0, 4000), max_size=8))
def test_a_stream_cut_anywhere_gives_the_same_events(stream: tuple[bytes, int, int], points: list[int]) -> None:
    data = stream[0]
    assert parsed(_cut(data, points)) == parsed([data]) == whatwg(data)
    assert parsed([data[i : i + 1] for i in range(len(data))]) == whatwg(data)  # a byte at a time


@EXAMPLES
@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=4), max_size=40), st.lists(st.integers(0, 400)))
def test_any_bytes_give_the_standards_events_or_the_parsers_error(pieces: list[bytes], points: list[int]) -> None:
    data = b"".join(pieces)
    try:
        events = parsed(_cut(data, points), max_bytes=64)
    except SseTooLarge:
        return
    assert events == whatwg(data)


@EXAMPLES
@given(streams(), st.integers(0, 200), st.lists(st.integers(0, 4000), max_size=8))
def test_the_bound_holds_whatever_the_cut(stream: tuple[bytes, int, int], limit: int, points: list[int]) -> None:
    data, longest, largest = stream
    if longest > limit or largest > limit:
        with pytest.raises(SseTooLarge, match=f"over {limit} bytes"):
            parsed(_cut(data, points), max_bytes=limit)
    else:
        assert parsed(_cut(data, points), max_bytes=limit) == whatwg(data)


def test_an_endless_line_fails_once_past_the_limit() -> None:
    parser = SseParser(max_line_bytes=1000)
    with pytest.raises(SseTooLarge, match="line over 1000 bytes"):
        for _ in range(2000):
            assert parser.feed(b"data: xxxxxxxxxx") == []


def test_pending_says_a_stream_stopped_mid_event() -> None:
    parser = SseParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: [DO') == [SseEvent('{"a": 1}')]
    assert parser.pending
    assert parser.feed(b"NE]\r") == [] and parser.pending
    assert parser.feed(b"\n\r\n") == [SseEvent("[DONE]")] and not parser.pending
