"""Token streams on the wire: what a generative request's answer is to the rest of loadgen, whatever endpoint
carried it (a Triton gRPC stream, Triton's generate extension, an OpenAI-compatible server)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from loadgen.transport.common import Connection, Payload, one_line
from loadgen.transport.errors import Rejected, Unreachable
from loadgen.transport.grpc_connection import FINAL_RESPONSE, Stream


@dataclass(frozen=True)
class Prompt:
    """One generative request before it is encoded: its text, its length in the run's tokenizer, and the output
    length it asks for (None: the server's default); `body`, a request body to send as it is (perf_analyzer's
    `payload` entries), else the endpoint builds one."""

    text: str
    input_tokens: int
    output_tokens: int | None = None
    body: Mapping[str, Any] | None = None


Turn = tuple[str, str]
"""A session's turn done: its prompt and the answer's text."""


def conversation_text(history: Sequence[Turn], prompt: Prompt) -> str:
    """A session's next turn as one text, for endpoints without messages: the turns so far, prompt then answer,
    and the new prompt, one after another on lines of their own."""
    return "\n".join([*(part for turn in history for part in turn), prompt.text])


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


TokenCall = Callable[[Payload], Awaitable[TokenReply]]
"""Sends one generative request and returns its answer as it streamed."""


@dataclass(frozen=True)
class TokenOutputs:
    """Where a Triton pipeline's answer holds its text and, when it has them, its token ids (the server's count)."""

    text: str | None
    ids: str | None = None
    id_size: int = 4  # bytes per token id


ID_SIZES = {"INT32": 4, "INT64": 8, "UINT32": 4, "UINT64": 8}


def _texts(content: bytes) -> str:
    """The elements of a BYTES tensor (length-prefixed) as one text."""
    parts = []
    at = 0
    while at + 4 <= len(content):
        size = int.from_bytes(content[at : at + 4], "little")
        parts.append(content[at + 4 : at + 4 + size].decode("utf-8", "replace"))
        at += 4 + size
    return "".join(parts)


class TritonTokens:
    """Generative requests over Triton's gRPC: streamed (a decoupled model's responses up to the final flag, each
    an event) on streams kept for reuse, one per request in flight, or as one unary call (one event)."""

    def __init__(self, connection: Connection, outputs: TokenOutputs, streaming: bool) -> None:
        self._connection = connection
        self._outputs = outputs
        self._free: list[Stream] = []
        self.call = self._stream if streaming else self._unary

    def _read(self, names: Iterable[str], contents: Sequence[bytes], reply: TokenReply) -> None:
        """One response's outputs into the reply: its text, and its token ids' count."""
        outputs = self._outputs
        for name, content in zip(names, contents, strict=False):
            if name == outputs.text:
                reply.texts.append(_texts(content))
            elif name == outputs.ids:
                reply.output_tokens = (reply.output_tokens or 0) + len(content) // outputs.id_size

    async def _stream(self, payload: bytes) -> TokenReply:
        clock = time.perf_counter_ns
        reply = TokenReply()
        stream = self._free.pop() if self._free else self._connection.open_stream()
        stamped = hasattr(stream, "arrived_ns")  # loadgen's own HTTP/2 stamps arrivals as they come off the socket
        try:
            await stream.write(payload)
            while True:
                response = await stream.read()
                now = stream.arrived_ns if stamped else clock()
                if response is grpc.aio.EOF:
                    raise Unreachable("the server closed the stream")
                if response.error_message:
                    raise Rejected(one_line(response.error_message))
                result = response.infer_response
                if result.outputs:
                    reply.events.append(now)
                    self._read((output.name for output in result.outputs), result.raw_output_contents, reply)
                final = result.parameters.get(FINAL_RESPONSE)
                if final is not None and final.bool_param:
                    break
        except BaseException:
            stream.cancel()  # it may still carry this request's responses
            raise
        self._free.append(stream)
        return reply

    async def _unary(self, payload: Payload) -> TokenReply:
        connection = self._connection
        response = await connection.infer(payload)
        reply = TokenReply()
        reply.events.append(time.perf_counter_ns())
        outputs = connection.wire.decode_response(response)[1]
        self._read(outputs, [output.content for output in outputs.values()], reply)
        return reply

    def close(self) -> None:
        """Cancel the streams kept for reuse."""
        for stream in self._free:
            stream.cancel()
        self._free.clear()
