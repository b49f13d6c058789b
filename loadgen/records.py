"""Request records for the profile export: each request's send time, payload and raw responses, kept up to a
bound while the load runs, and decoded only after the run.

Recording wraps the infer call (or each stream, or a token run's call) once when it is asked for, so the load loops
are the same with or without it. Over a stream, the proxy only notes what was written and read, and when; which
response answers which request is worked out when the records are taken, off the hot path. A token run keeps each
answer as it streamed (its events' times, texts and the server's counts); its tokens are counted when the records are
taken.
"""

from __future__ import annotations

import bisect
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from loadgen.results import RequestRecord, TokenRecord
from loadgen.transport import (
    InferCall,
    Payload,
    Response,
    Stream,
    Tensor,
    TensorSpec,
    Wire,
    request_id,
    stream_outputs,
    stream_reply,
)
from loadgen.transport.tokens import TokenReply

if TYPE_CHECKING:
    from loadgen.tokens import TokenCounter

EVERYTHING = (0, sys.maxsize)  # the span of `take` that holds every record
TOKEN_SAMPLE = 200  # a token run without --record-requests keeps its first requests of each level, for its plots


@dataclass(slots=True)
class Exchange:
    """One request as the load recorded it: when it was sent (perf_counter ns), its payload, and each response
    (raw) with the time it came."""

    start_ns: int
    payload: Payload
    times: list[int] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    key: str | None = None  # the request id a shared stream gave it, read when needed

    @property
    def end_ns(self) -> int:
        return self.times[-1]


@dataclass(slots=True)
class TokenExchange:
    """One generative request as the load recorded it: when it was sent and when its answer was whole (perf_counter
    ns), its payload, and its answer as it streamed."""

    start_ns: int
    end_ns: int
    payload: Payload
    reply: TokenReply


Recorded = Exchange | TokenExchange


class _RecordedStream:
    """A gRPC stream that notes each request written and each response read, with its time."""

    __slots__ = ("_log", "_stream", "events", "pending")

    def __init__(self, stream: Stream, log: RequestLog) -> None:
        self._stream = stream
        self._log = log
        self.events: list[tuple[int, bool, Any]] = []  # (perf_counter ns, written, payload or response)
        self.pending: list[Exchange] = []  # requests written whose final response has not been taken yet

    async def write(self, payload: Payload) -> None:
        log = self._log
        if log.count < log.limit:
            log.count += 1
            self.events.append((time.perf_counter_ns(), True, payload))
        else:
            log.full = True
        await self._stream.write(payload)

    async def read(self) -> Any:
        response = await self._stream.read()
        if not self._log.full:
            self.events.append((time.perf_counter_ns(), False, response))
        return response

    def cancel(self) -> bool:
        return bool(self._stream.cancel())

    def exchanges(self) -> list[Exchange]:
        """The requests whose final response has been read since the last call, in the order they completed."""
        completed = []
        for at, written, item in self.events:
            if written:
                self.pending.append(Exchange(at, item))
                continue
            key, final, failed = stream_reply(item)
            exchange = _answered(self.pending, key)
            if exchange is None:  # a response to a request written before recording started, or an error
                continue
            if failed:  # a failed request is not exported
                self.pending.remove(exchange)
                self._log.forget(1)
                continue
            exchange.times.append(at)
            exchange.responses.append(item)
            if final:
                self.pending.remove(exchange)
                completed.append(exchange)
        self.events.clear()
        return completed


def _answered(pending: list[Exchange], key: str) -> Exchange | None:
    """The request a streamed response answers: the only one in flight on its stream, or the one with its id."""
    if len(pending) == 1:
        return pending[0]
    for exchange in pending:
        if exchange.key is None:
            exchange.key = request_id(exchange.payload)
        if exchange.key == key:
            return exchange
    return None


class RequestLog:
    """The requests a run recorded, at most `limit` of them at a time.

    Requests that completed outside the levels' windows (a warm-up, between levels) are dropped when records are
    taken, which frees their room; once the bound is reached (`full`), nothing more is recorded for the rest of
    the run.

    With `per_level` (a sample, not an export), the bound applies to each level anew: its first `limit` requests
    are kept.
    """

    def __init__(self, limit: int, per_level: bool = False) -> None:
        self.limit = limit
        self.per_level = per_level
        self.count = 0  # requests recorded and not dropped
        self.full = False
        self.offset_ns = time.time_ns() - time.perf_counter_ns()  # perf_counter ns to ns since the UNIX epoch
        self._done: list[Recorded] = []  # completed requests, in the order they completed
        self._streams: list[_RecordedStream] = []

    def wrap(self, call: InferCall) -> InferCall:
        """The call, recording each request that succeeds."""
        done = self._done
        clock = time.perf_counter_ns

        async def recorded(payload: Payload) -> Response:
            start = clock()
            response = await call(payload)
            if self.count < self.limit:
                self.count += 1
                done.append(Exchange(start, payload, [clock()], [response]))
            else:
                self.full = True
            return response

        return recorded

    def wrap_tokens(
        self, call: Callable[[Payload], Awaitable[TokenReply]]
    ) -> Callable[[Payload], Awaitable[TokenReply]]:
        """A token run's call, recording each answer that carried output."""
        done = self._done
        clock = time.perf_counter_ns

        async def recorded(payload: Payload) -> TokenReply:
            start = clock()
            reply = await call(payload)
            if self.count < self.limit:
                if reply.events:  # an answer without output is a failure: not exported
                    self.count += 1
                    done.append(TokenExchange(start, clock(), payload, reply))
            else:
                self.full = True
            return reply

        return recorded

    def streams(self, open_stream: Callable[[], Stream]) -> Callable[[], Stream]:
        """A stream opener whose streams record what goes over them."""

        def opened() -> Stream:
            stream = _RecordedStream(open_stream(), self)
            self._streams.append(stream)
            return stream

        return opened

    def forget(self, count: int) -> None:
        """`count` recorded requests are dropped: their room is free again, unless the bound was reached."""
        if not self.full:
            self.count -= count

    def take(self, start_ns: int, end_ns: int) -> list[Recorded]:
        """The requests that completed from `start_ns` to `end_ns` (perf_counter ns); those that completed
        before are dropped, later ones are kept for the next call."""
        done = self._done
        for stream in self._streams:
            done.extend(stream.exchanges())
        if self._streams:
            done.sort(key=lambda exchange: exchange.end_ns)  # several streams' requests, by completion
        first = bisect.bisect_left(done, start_ns, key=lambda exchange: exchange.end_ns)
        last = bisect.bisect_right(done, end_ns, key=lambda exchange: exchange.end_ns)
        taken = done[first:last]
        self.forget(first)
        del done[:last]
        return taken

    def drop_before(self, start_ns: int) -> None:
        """Drop the requests that completed before `start_ns` (a warm-up, the previous level): their room is free
        (a per-level sample: the level's bound starts here)."""
        self.take(start_ns, start_ns - 1)
        if self.per_level:
            self.full = False
            self.count = len(self._done)

    def epoch(self, perf_ns: int) -> int:
        """A perf_counter instant in ns since the UNIX epoch."""
        return perf_ns + self.offset_ns


def first_of_batch(tensor: Tensor, batch_size: int) -> Tensor:
    """A batched input's first element (shape [1, ...]); any other tensor as it is."""
    if batch_size <= 1 or not tensor.shape or tensor.shape[0] != batch_size:
        return tensor
    if tensor.datatype == "BYTES":  # elements one after another, each after its 4-byte length
        size = 4 + int.from_bytes(tensor.content[:4], "little")
    else:
        size = len(tensor.content) // batch_size
    return replace(tensor, shape=(1, *tensor.shape[1:]), content=tensor.content[:size])


def request_records(
    exchanges: Sequence[Recorded],
    wire: Wire,
    outputs: Iterable[TensorSpec],
    streaming: bool,
    offset_ns: int,
    batch_size: int = 1,
) -> tuple[RequestRecord, ...]:
    """The recorded requests decoded: inputs from their payloads (each payload once; of a batch, its first element,
    as perf_analyzer records them), each response's `outputs` (the requested ones), times in ns since the UNIX
    epoch."""
    specs = tuple(outputs)
    decode = stream_outputs if streaming else (lambda response: wire.decode_response(response)[1])
    decoded: dict[int, tuple[int, tuple[Tensor, ...]]] = {}
    records = []
    for exchange in exchanges:
        if not isinstance(exchange, Exchange):
            continue
        key = id(exchange.payload)
        if key not in decoded:
            sequence_id, tensors = wire.decode_request(exchange.payload)
            decoded[key] = sequence_id, tuple(first_of_batch(tensor, batch_size) for tensor in tensors)
        sequence_id, inputs = decoded[key]
        responses = []
        for response in exchange.responses:
            got = decode(response)
            responses.append(
                tuple(
                    Tensor(spec.name, got[spec.name].datatype, got[spec.name].shape, got[spec.name].content)
                    if spec.name in got
                    else Tensor(spec.name, spec.datatype, (0,), b"")
                    for spec in specs
                )
            )
        records.append(
            RequestRecord(
                timestamp=exchange.start_ns + offset_ns,
                sequence_id=sequence_id,
                request_inputs=inputs,
                response_timestamps=tuple(at + offset_ns for at in exchange.times),
                response_outputs=tuple(responses),
            )
        )
    return tuple(records)


def body_inputs(payload: Payload) -> dict[str, Any]:
    """A request to an HTTP token endpoint: its JSON body (for Triton's generate extension, the inputs by name),
    after the request's line and headers."""
    body = json.loads(bytes(payload).partition(b"\r\n\r\n")[2])
    return body if isinstance(body, dict) else {}


def token_records(
    exchanges: Sequence[Recorded],
    inputs: Callable[[Payload], dict[str, Any]],
    text_output: str,
    counter: TokenCounter,
    input_tokens: Mapping[Payload, int],
    offset_ns: int,
) -> tuple[TokenRecord, ...]:
    """A token run's recorded requests: each one's inputs as sent (`inputs` reads a payload, once each), each
    event's time and text (`text_output` names it) in ns since the UNIX epoch, and its token counts as the run
    counted them."""
    decoded: dict[int, dict[str, Any]] = {}
    records = []
    for exchange in exchanges:
        if not isinstance(exchange, TokenExchange):
            continue
        key = id(exchange.payload)
        if key not in decoded:
            decoded[key] = inputs(exchange.payload)
        reply = exchange.reply
        texts = reply.texts if len(reply.texts) == len(reply.events) else [""] * len(reply.events)
        records.append(
            TokenRecord(
                timestamp=exchange.start_ns + offset_ns,
                request_inputs=decoded[key],
                response_timestamps=tuple(at + offset_ns for at in reply.events),
                response_texts=tuple(texts),
                text_output=text_output,
                input_tokens=reply.input_tokens
                if reply.input_tokens is not None
                else input_tokens.get(exchange.payload, 0),
                output_tokens=counter.count(reply)[0],
                end_timestamp=exchange.end_ns + offset_ns,
            )
        )
    return tuple(records)
