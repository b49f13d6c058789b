"""How requests fail: loadgen's own kinds, to which each transport maps its library's errors (on the failure path
only), so that nothing above the transport imports grpc or aiohttp or reads a message to tell failures apart."""

from __future__ import annotations

import unicodedata

MESSAGE_CHARS = 300  # a failure's description is cut to this many characters, its full length said


class RequestFailed(Exception):
    """A request failed; the message is its one-line description, counted as the error's kind."""


class Cancelled(Exception):
    """A request cancelled on purpose (--request-cancellation-rate): counted apart, neither a failure nor a
    latency."""


class Rejected(RequestFailed):
    """The server or the model refused the request or failed on it (the model's own error, bad data)."""


class Unreachable(RequestFailed):
    """The server could not be reached (loops pause briefly instead of spinning on instant failures)."""


class TimedOut(RequestFailed):
    """No answer within --request-timeout: slow, not refused."""


class PermissionDenied(RequestFailed):
    """Triton refused the call for want of the right header (restricted protocol or API)."""


class Internal(RequestFailed):
    """Something on a request's path raised what no transport maps (a bug, or a server that broke a parser): the
    request is counted as failed with the exception's name and message, and its load slot goes on."""


class Mismatch(RequestFailed):
    """A response differs from the validation data; the connection or stream it came on is still in step."""


def internal(error: BaseException) -> Internal:
    """An unexpected exception on a request's path as a counted failure (its message cut to one short line)."""
    try:
        text = clipped(str(error))
    except Exception:  # an exception whose own message fails (a half-built one from a broken response)
        text = ""
    return Internal(f"internal: {type(error).__name__}: {text}" if text else f"internal: {type(error).__name__}")


def clipped(text: str) -> str:
    """A server's or a library's message as one short line that is safe on a terminal: control characters (escape
    sequences that set a window title or clear the screen) become spaces, whitespace runs one space, and a message
    over MESSAGE_CHARS (a server's can be megabytes) is cut there with its length said."""
    full = len(text)
    cleaned = " ".join(
        "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text[: 4 * MESSAGE_CHARS]).split()
    )
    if full > 4 * MESSAGE_CHARS or len(cleaned) > MESSAGE_CHARS:
        return f"{cleaned[:MESSAGE_CHARS]}... ({full} characters)"
    return cleaned


def timed_out(timeout_s: float) -> TimedOut:
    """The failure of a request with no answer within --request-timeout (either protocol)."""
    return TimedOut(f"timeout: no answer within {timeout_s * 1000:.0f} ms")


def permission_denied(url: str, details: str) -> str:
    """The message for a call Triton refused for want of the right header (restricted protocol or API)."""
    return f"permission denied by Triton at {url}: {details} (send the expected header with -H 'Name: value')"
