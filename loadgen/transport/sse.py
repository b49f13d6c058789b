"""Server-sent events (the WHATWG HTML standard's `text/event-stream`), parsed incrementally from a response body
fed in pieces cut anywhere: lines end with LF, CRLF or CR (a CRLF cut between two pieces is one ending); `data:`
lines are joined with LF; `event:` names the event; a line starting with `:` is a comment; a blank line dispatches
the event (none when it had no `data:` line). Fields are UTF-8, invalid bytes replaced. `id` and `retry` are read
and ignored (there is no reconnection). Bounded: a line, or an event's data, over its limit raises SseTooLarge.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_LINE_BYTES = 1 << 20  # one line of the stream
MAX_EVENT_BYTES = 1 << 20  # one event's data, its lines joined
_ENDINGS = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SseEvent(NamedTuple):
    """One dispatched event: its data (the `data:` lines joined with LF) and its type (`message` by default)."""

    data: str
    event: str = "message"


class SseTooLarge(ValueError):
    """A line or an event's data over the parser's limit (the message names it)."""


class SseParser:
    """Feed a stream's bytes as they come; each `feed` returns the events its bytes completed."""

    __slots__ = (
        "_data",
        "_data_bytes",
        "_event",
        "_line",
        "_line_bytes",
        "_skip_lf",
        "_started",
        "max_event_bytes",
        "max_line_bytes",
    )

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        self._line: list[bytes] = []  # the pieces of a line not yet ended
        self._line_bytes = 0
        self._data: list[bytes] = []  # the event's data lines so far
        self._data_bytes = 0
        self._event = b""
        self._skip_lf = False  # the last piece ended with CR: an LF first in the next ends the same line
        self._started = False  # the first line was seen (a byte-order mark before it is dropped)

    @property
    def pending(self) -> bool:
        """Bytes of a line or an event wait for their end (a stream that stops here was cut mid-event)."""
        return bool(self._line or self._data)

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events completed by these bytes (the stream's next ones, cut anywhere)."""
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return []
        lines = data.split(b"\n") if b"\r" not in data else _ENDINGS.split(data)
        rest = lines.pop()  # after the last line ending: the start of a line (or b"")
        events: list[SseEvent] = []
        if lines:
            if self._line:
                self._line.append(lines[0])
                lines[0] = b"".join(self._line)
                self._line.clear()
                self._line_bytes = 0
            limit = self.max_line_bytes
            for line in lines:
                if len(line) > limit:
                    raise SseTooLarge(f"an event-stream line over {limit} bytes")
                self._take(line, events)
            self._skip_lf = data[-1] == 13  # CR
        if rest:
            self._line_bytes += len(rest)
            if self._line_bytes > self.max_line_bytes:
                raise SseTooLarge(f"an event-stream line over {self.max_line_bytes} bytes")
            self._line.append(rest)
        return events

    def _take(self, line: bytes, events: list[SseEvent]) -> None:
        """One whole line: a field of the event, a comment, or the blank line that dispatches it."""
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[3:]
        if not line:
            if self._data:
                text = b"\n".join(self._data).decode(errors="replace")
                events.append(SseEvent(text, self._event.decode(errors="replace") if self._event else "message"))
                self._data.clear()
                self._data_bytes = 0
            self._event = b""
            return
        field, colon, value = line.partition(b":")
        if not field:  # a comment
            return
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data_bytes += len(value) + 1
            if self._data_bytes > self.max_event_bytes + 1:
                raise SseTooLarge(f"an event's data over {self.max_event_bytes} bytes")
            self._data.append(value)
        elif field == b"event":
            self._event = value
