"""Token streams on the wire: what a generative request's answer is to the rest of loadgen, whatever endpoint
carried it (a Triton gRPC stream, Triton's generate extension, an OpenAI-compatible server)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """One generative request before it is encoded: its text, its length in the run's tokenizer, and the output
    length it asks for (None: the server's default)."""

    text: str
    input_tokens: int
    output_tokens: int | None = None


class TokenReply:
    """A generative request's answer as it streamed.

    `events` holds the perf_counter_ns at which each event that carried output (a token, or a chunk of several)
    came off the socket, stamped before the event is parsed; `texts` the text each carried (for a tokenizer to
    count); `output_tokens`/`input_tokens` the server's own counts (OpenAI `usage`, a pipeline's token ids), None
    where it gave none. A non-streamed answer is one event.
    """

    __slots__ = ("events", "input_tokens", "output_tokens", "texts")

    def __init__(self) -> None:
        self.events: list[int] = []
        self.texts: list[str] = []
        self.output_tokens: int | None = None
        self.input_tokens: int | None = None
