"""Load: a closed-loop worker pool, an open-loop sender that follows a schedule, and the generator over both."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from loadgen import schedule
from loadgen.errors import OptionError
from loadgen.inputs import Requests
from loadgen.measurement import DESCHEDULED, IN_FLIGHT_LIMIT, LATE_US, LOOP_BUSY, Recorder, Unfinished, Window
from loadgen.plan import Load, RunPlan, Shard, Windows
from loadgen.prompts import Session, SessionPlan, load_tokenizer
from loadgen.records import TOKEN_SAMPLE, RequestLog
from loadgen.sequences import Sequences, SequenceSlot
from loadgen.timers import Timer, precise_timer
from loadgen.tokens import TokenCounter, TokenMetrics
from loadgen.transport import (
    Connection,
    InferCall,
    Mismatch,
    Payload,
    Rejected,
    RequestFailed,
    Stream,
    StreamCheck,
    StreamMux,
    Unreachable,
    clipped,
    decode_message,
    internal,
    stream_counted,
    stream_one,
)
from loadgen.transport.errors import Cancelled
from loadgen.transport.options import ConnectionOptions
from loadgen.transport.tokens import TokenCall, TritonTokens, Turn
from loadgen.validation import Validator
from loadgen.values import parse_goodput
from loadgen.workloads import Cancelling, TurnEncoder, triton_turns

if TYPE_CHECKING:  # an HTTP token endpoint's module imports aiohttp and tritonclient's HTTP client: imported when used
    from loadgen.transport.endpoints import TokenEndpoint

WARMUP_TIMEOUT_S = 120.0
UNAVAILABLE_PAUSE_S = 0.05
SEQUENCE_END_TIMEOUT_S = 5.0
COUNT_WINDOW_MIN_S = 1.0
LATE_NS = LATE_US * 1000
HELD_NS = 20_000_000  # a loop that ran this long of other work before a late send was busy, however loaded the machine


def schedule_for(load: Load, run: RunPlan) -> Iterator[int]:
    """The full schedule (offsets in ns) of an open-loop level."""
    if run.schedule_ns is not None:
        return iter(run.schedule_ns)
    if run.intervals_us is not None:
        return schedule.intervals(run.intervals_us)
    assert load.rate is not None
    if run.settings.request_distribution == "poisson":
        return schedule.poisson(load.rate)
    return schedule.constant(load.rate)


class _Failures:
    """Counts a failed call under its one-line description, as the transport classifies it.

    A request the model rejects before any request of the run has succeeded means the data does not suit the
    model (random bytes into an image decoder): `rejected` then holds it, and the run stops with the model's
    message instead of measuring failures. A server that refuses connections gets a short pause.
    """

    def __init__(
        self,
        recorder: Recorder,
        errors: tuple[type[Exception], ...],
        failure: Callable[[Exception], RequestFailed],
        rejection: asyncio.Event | None = None,
    ) -> None:
        self.recorder = recorder
        self.errors = errors  # what the transport raises when a request fails
        self.failure = failure
        self.rejected: RequestFailed | None = None
        self.rejection = rejection or asyncio.Event()  # shared by the models of a mix

    def describe(self, error: Exception) -> RequestFailed:
        """A failed request's error as loadgen's kind, its message one short printable line: the transport maps
        its own errors; anything else raised on a request's path is an `internal` failure, counted like any other
        (the slot goes on)."""
        if isinstance(error, RequestFailed):
            failed = error
        elif isinstance(error, self.errors):
            try:
                failed = self.failure(error)
            except Exception as unmapped:  # a mapping that fails on a server's odd answer is still a failure
                return internal(unmapped)
        else:
            return internal(error)
        text = str(failed)
        shown = clipped(text)
        return failed if shown == text else type(failed)(shown)

    async def record(self, error: Exception, generation: int) -> None:
        if isinstance(error, Cancelled):  # on purpose: counted apart
            self.recorder.record_cancelled(generation)
            return
        failed = self.describe(error)
        self.recorder.record_error(str(failed), generation)
        if isinstance(failed, Rejected) and self.rejected is None and not self.recorder.answered:
            self.rejected = failed
            self.rejection.set()
        if isinstance(failed, Unreachable):
            await asyncio.sleep(UNAVAILABLE_PAUSE_S)  # no busy loop of instant failures while the server is gone


SlotSource = Callable[[int], Iterator[Payload]]
"""The requests one concurrency slot sends, in order."""


def _cycle(payloads: tuple[Payload, ...], slot: int) -> Iterator[Payload]:
    """The payloads in turn, slot k starting at the k-th so that slots spread over the data."""
    start = slot % len(payloads)
    return itertools.cycle(payloads[start:] + payloads[:start])


class _Slots:
    """Concurrency slots, each a task that sends its next request when the previous one has returned."""

    def __init__(self, source: SlotSource, recorder: Recorder, failures: _Failures) -> None:
        self._source = source
        self._recorder = recorder
        self._failures = failures
        self._stopping = False
        self._size = 0
        self._budget: Iterator[None] = itertools.repeat(None)
        self._workers: list[asyncio.Task[None]] = []
        self._retired: list[asyncio.Task[None]] = []  # slots above the size, finishing their last request

    def resize(self, concurrency: int, budget: Iterator[None] | None = None) -> None:
        """Start workers, or let the extra ones stop after their current request, so that `concurrency` are in
        flight. Requests are never cancelled mid-flight here: tritonserver 2.51 can crash on a gRPC request
        cancelled as it completes (triton-inference-server/server#7368).

        With a `budget`, the slots together send one request per item it yields, then stop (--request-count);
        slots that stopped so are started again with the next budget.
        """
        self._size = concurrency
        if budget is not None:
            self._budget = budget
        self._retired = [task for task in self._retired if not task.done()]
        for slot, task in enumerate(self._workers):
            if task.done():
                task.result()  # a slot that crashed is a bug: let it show
                self._workers[slot] = asyncio.ensure_future(self._work(slot))
        while len(self._workers) < concurrency:
            slot = len(self._workers)
            self._workers.append(asyncio.ensure_future(self._work(slot)))
        while len(self._workers) > concurrency:
            self._retired.append(self._workers.pop())

    async def stop(self, grace_s: float = 0.0) -> None:
        """Send nothing more, give requests in flight `grace_s` to return, then cancel what is left."""
        workers, self._workers = [*self._workers, *self._retired], []
        self._retired = []
        self._stopping = True
        if workers and grace_s > 0:
            await asyncio.wait(workers, timeout=grace_s)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _requests(self, source: Iterator[Payload]) -> Iterator[Payload]:
        """The slot's requests while the budget lasts (the budget is the same for every slot)."""
        return (payload for _, payload in zip(self._budget, source, strict=False))  # the budget first: no draw past it

    @staticmethod
    def _ending(source: Iterator[Payload]) -> Payload | None:
        """The request that ends the sequence a stopping slot leaves open (sequence models), else None."""
        return source.ending() if isinstance(source, SequenceSlot) else None

    async def _work(self, slot: int) -> None:
        raise NotImplementedError


def _ends_sequence(source: Iterator[Payload]) -> bool:
    """Whether the request a slot's source just gave ends its sequence (a sequence model's slot)."""
    return isinstance(source, SequenceSlot) and source.current is None


class ClosedLoop(_Slots):
    """Keeps exactly `concurrency` requests in flight; each worker sends its next request when one returns."""

    def __init__(self, call: InferCall, source: SlotSource, recorder: Recorder, failures: _Failures) -> None:
        super().__init__(source, recorder, failures)
        self._call = call

    async def _work(self, slot: int) -> None:
        call = self._call
        begin = self._recorder.start
        record = self._recorder.record
        errors = self._failures.errors
        clock = time.perf_counter_ns
        source = self._source(slot)
        requests = self._requests(source)
        while not self._stopping and slot < self._size:  # checked per request: attributes only
            payload = next(requests, None)
            if payload is None:  # the budget is spent
                break
            ends = _ends_sequence(source)
            generation = begin()
            start = clock()
            try:
                await call(payload)
            except Exception as error:  # whatever it is, a counted failure: the slot goes on
                await self._failures.record(error, generation)
                continue
            if ends:
                self._recorder.record_sequence_end(generation)
            record((clock() - start) // 1000, generation)
        ending = self._ending(source)
        if ending is not None:  # right after its last request: the server frees the sequence's slot at once
            with contextlib.suppress(*errors):
                await call(ending)


class StreamingLoop(_Slots):
    """The closed loop over gRPC streams, one per slot: a request's responses (a decoupled model may send any
    number) are read up to its final flag before the slot sends the next."""

    def __init__(
        self,
        open_stream: Callable[[], Stream],
        source: SlotSource,
        recorder: Recorder,
        failures: _Failures,
        check: StreamCheck | None = None,
    ) -> None:
        super().__init__(source, recorder, failures)
        self._open_stream = open_stream
        self._check = check

    async def _work(self, slot: int) -> None:
        begin = self._recorder.start
        record = self._recorder.record_stream
        errors = self._failures.errors
        clock = time.perf_counter_ns
        check = self._check
        stream = self._open_stream()
        source = self._source(slot)
        requests = self._requests(source)
        try:
            while not self._stopping and slot < self._size:  # checked per request: attributes only
                payload = next(requests, None)
                if payload is None:  # the budget is spent
                    break
                ends = _ends_sequence(source)
                generation = begin()
                start = clock()
                try:
                    first, responses = await stream_one(stream, payload, clock, check)
                except Mismatch as error:  # all its responses were read: the stream is still in step
                    await self._failures.record(error, generation)
                    continue
                except Exception as error:  # whatever it is, a counted failure: the slot goes on
                    stream.cancel()  # a stream that failed may still carry that request's responses
                    stream = self._open_stream()
                    await self._failures.record(error, generation)
                    continue
                if ends:
                    self._recorder.record_sequence_end(generation)
                record((first - start) // 1000, (clock() - start) // 1000, responses, generation)
            ending = self._ending(source)
            if ending is not None:  # right after its last request: the server frees the sequence's slot at once
                with contextlib.suppress(*errors):
                    await stream_one(stream, ending, clock)
        finally:
            stream.cancel()


class TokenLoop(_Slots):
    """The closed loop over generative requests: a slot sends its next prompt once the previous answer is whole,
    and records its token figures (`Recorder.record_tokens`)."""

    def __init__(
        self,
        call: TokenCall,
        inputs: Mapping[Payload, int],
        source: SlotSource,
        recorder: Recorder,
        failures: _Failures,
    ) -> None:
        super().__init__(source, recorder, failures)
        self._call = call
        self._inputs = inputs  # each payload's prompt tokens

    async def _work(self, slot: int) -> None:
        call = self._call
        inputs = self._inputs
        begin = self._recorder.start
        record = self._recorder.record_tokens
        clock = time.perf_counter_ns
        requests = self._requests(self._source(slot))
        while not self._stopping and slot < self._size:  # checked per request: attributes only
            payload = next(requests, None)
            if payload is None:  # the budget is spent
                break
            generation = begin()
            start = clock()
            try:
                reply = await call(payload)
            except Exception as error:  # whatever it is, a counted failure: the slot goes on
                await self._failures.record(error, generation)
                continue
            record(reply, start, start, clock(), inputs.get(payload, 0), generation)


class SessionLoop(_Slots):
    """The closed loop over multi-turn sessions: slot k takes the sessions in turn from the k-th and sends a
    session's turns in order, each once the previous answer is whole and the think time after it has passed, each
    resending the conversation so far (`encode`); a turn that fails (or is cancelled) ends its session. Each turn
    is measured as any request; its input tokens are the conversation's so far, counted from the prompts and the
    answers' token counts (the server's own, where it gives them, prevails)."""

    def __init__(
        self, call: TokenCall, sessions: SessionPlan, encode: TurnEncoder, recorder: Recorder, failures: _Failures
    ) -> None:
        super().__init__(functools.partial(_cycle, sessions.sessions), recorder, failures)
        self._call = call
        self._encode = encode

    async def _work(self, slot: int) -> None:
        call = self._call
        encode = self._encode
        begin = self._recorder.start
        record = self._recorder.record_tokens
        clock = time.perf_counter_ns
        sessions: Iterator[Session] = self._source(slot)
        while not self._stopping and slot < self._size:
            session = next(sessions)
            history: list[Turn] = []
            tokens = 0  # the conversation's so far
            for turn, prompt in enumerate(session.prompts):
                if turn:
                    await asyncio.sleep(session.delays_s[turn - 1])  # think time
                if self._stopping or slot >= self._size or next(self._budget, False) is not None:
                    return  # stopped, or the budget is spent
                payload = encode(history, prompt)
                tokens += prompt.input_tokens
                generation = begin()
                start = clock()
                try:
                    reply = await call(payload)
                except Exception as error:  # whatever it is, a counted failure: the slot takes the next session
                    await self._failures.record(error, generation)
                    break
                record(reply, start, start, clock(), tokens, generation)
                history.append((prompt.text, "".join(reply.texts)))
                tokens += reply.output_tokens if reply.output_tokens is not None else len(reply.events)


class OpenLoop:
    """Sends each request at its scheduled time whether or not earlier ones have returned.

    Latency counts from the scheduled time (response time) as well as from the actual send (service time), so
    a generator that falls behind shows up in the numbers instead of hiding (no coordinated omission); with
    `from_send` (perf_analyzer's rule), from the actual send alone. Requests in flight are capped at
    `max_in_flight` as a safety limit; every request that had to wait is counted.

    With `lanes` (a sequence model: request k belongs to sequence slot k mod lanes), a request leaves only once
    the previous request of its sequence has returned, so that a sequence's requests reach the server in order
    (over HTTP, a request overtaken on another connection would reach the model before its sequence's start);
    the wait counts as send lag and as a wait for the server (an in-flight-limit hit), and the other sequences keep
    their schedule. A request that leaves over 1 ms late is counted under its cause: the in-flight limit (or its
    sequence), else the loop busy with other work or its thread descheduled (`_late_cause`).

    The sender sleeps on a precise timer (`timers.precise_timer`: on Linux the loop's own timerfd) until just before
    a send and yields the last microseconds: requests leave within tens of microseconds of their time without
    spinning the loop.
    """

    def __init__(
        self,
        call: InferCall,
        payloads: Iterator[Payload],
        recorder: Recorder,
        failures: _Failures,
        max_in_flight: int,
        streaming: bool = False,
        lanes: Sequence[SequenceSlot] = (),
        from_send: bool = False,
        tokens: Mapping[Payload, int] | None = None,
    ) -> None:
        """With `tokens` (each payload's prompt tokens), `call` answers generative requests (a `TokenReply`)."""
        self._call = call
        self._tokens = tokens
        self._from_send = from_send  # the latency's origin: the actual send, not the scheduled time
        self._streaming = streaming  # `call` returns the first response's time and the responses' count
        self._payloads = payloads
        self._recorder = recorder
        self._failures = failures
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()  # kept so that tasks are not collected, and can be cancelled
        self._in_flight = 0
        self._slot_free = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._timer: Timer | None = None  # wakes the sender just before each send
        self._slots = lanes
        self._lanes: list[asyncio.Task[None] | None] = [None] * len(lanes)  # each sequence slot's request in flight
        self._lane_of = itertools.cycle(range(len(lanes))) if lanes else None
        self._yield_ns = 0  # when the sender last gave the loop away (`_yielded`), and the loop thread's CPU then
        self._yield_cpu_ns = 0
        self._stall: str | None = None  # the cause of the sender's current stall, once it was named

    def start(self, offsets: Iterator[int], start_ns: int) -> None:
        """Follow a new schedule (offsets in ns from `start_ns`, a perf_counter_ns instant); requests in flight carry on."""
        if self._sender is not None:
            self._sender.cancel()
        if self._timer is None:
            self._timer = precise_timer(asyncio.get_running_loop())
        self._sender = asyncio.ensure_future(self._send(offsets, start_ns, self._timer))

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop sending, give requests in flight `grace_s` to return, then cancel what is left."""
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        tasks = list(self._tasks)
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight = 0

    async def _send(self, offsets: Iterator[int], start: int, timer: Timer) -> None:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter_ns
        payloads = self._payloads
        tasks = self._tasks
        discard = tasks.discard
        begin = self._recorder.start
        yielded = self._yielded
        for offset in offsets:
            due = start + offset
            if due > clock():  # sleep until just before the send...
                yielded()
                await timer.sleep_until(due)
                while clock() < due:  # ...and yield the last few microseconds
                    yielded()
                    await asyncio.sleep(0)
            cause = None
            if self._in_flight >= self._max_in_flight:
                self._recorder.record_limit_hit()
                cause = IN_FLIGHT_LIMIT
                while self._in_flight >= self._max_in_flight:
                    self._slot_free.clear()
                    await self._slot_free.wait()
            elif clock() - due > LATE_NS:  # the requests of one stall, sent in a burst, share its cause
                cause = self._stall = self._stall or self._late_cause(due)
            self._in_flight += 1
            generation = begin()
            if self._lane_of is None:
                task = loop.create_task(self._one(next(payloads), due, generation, cause=cause))
            else:
                lane = next(self._lane_of)
                payload = next(payloads)
                ends = _ends_sequence(self._slots[lane])
                task = loop.create_task(self._one(payload, due, generation, self._lanes[lane], ends, cause))
                self._lanes[lane] = task
            tasks.add(task)
            task.add_done_callback(discard)
        self._end_sequences()

    def _yielded(self) -> None:
        """The sender gives the loop away: when, and the loop thread's CPU time then (see `_late_cause`)."""
        self._yield_ns = time.perf_counter_ns()
        self._yield_cpu_ns = time.thread_time_ns()
        self._stall = None

    def _late_cause(self, due: int) -> str:
        """Why a request that did not wait for the in-flight limit leaves over 1 ms late: since the sender last gave
        the loop away, the loop's thread ran other work for at least half the lateness, or for HELD_NS whatever the
        machine did meanwhile (`LOOP_BUSY`); else it mostly did not run (`DESCHEDULED`: the machine's cores were
        taken, or another thread of the process held the interpreter)."""
        late = time.perf_counter_ns() - max(due, self._yield_ns)
        ran = time.thread_time_ns() - self._yield_cpu_ns
        return LOOP_BUSY if 2 * ran >= late or ran >= HELD_NS else DESCHEDULED

    def _end_sequences(self) -> None:
        """The schedule is spent (a request count): end each sequence left open once its last request returned, so
        that the server frees its slot for sequences queued behind it (they are part of the count), rather than
        after its max_sequence_idle_microseconds. The endings are not measured."""
        for slot, previous in zip(self._slots, self._lanes, strict=True):
            ending = slot.ending()
            if ending is not None:
                task = asyncio.ensure_future(self._end(ending, previous))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _end(self, ending: Payload, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait((previous,))
        with contextlib.suppress(*self._failures.errors):
            await self._call(ending)

    async def _one(
        self,
        payload: Payload,
        due: int,
        generation: int,
        previous: asyncio.Task[None] | None = None,
        ends: bool = False,
        cause: str | None = None,
    ) -> None:
        """Send one request due at `due`; `cause`: why the sender was late with it, if it was."""
        if previous is not None and not previous.done():  # it waits for the server, as at the in-flight limit
            self._recorder.record_limit_hit()
            cause = IN_FLIGHT_LIMIT
            await asyncio.wait((previous,))  # the request before it in its sequence has returned
        clock = time.perf_counter_ns
        sent = clock()
        if cause is None and sent - due > LATE_NS:  # the task itself started late
            cause = self._late_cause(due)
        recorder = self._recorder
        recorder.record_sent((sent - due) // 1000, generation, cause)
        if self._from_send:
            due = sent
        try:
            result = await self._call(payload)
        except Exception as error:  # whatever it is, a counted failure
            await self._failures.record(error, generation)
        else:
            done = clock()
            if ends:
                recorder.record_sequence_end(generation)
            if self._tokens is not None:
                recorder.record_tokens(result, sent, due, done, self._tokens.get(payload, 0), generation)
            elif self._streaming:
                first, responses = result
                recorder.record_stream_response(
                    (first - due) // 1000, (done - due) // 1000, (done - sent) // 1000, responses, generation
                )
            else:
                recorder.record_response((done - due) // 1000, (done - sent) // 1000, generation)
        finally:
            self._in_flight -= 1
            self._slot_free.set()


async def ramp(
    open_stream: Callable[[], Stream], payloads: Iterator[Payload], start: int, end: int, step: int, period: int
) -> None:
    """perf_analyzer's periodic concurrency: `start` requests, each on a stream of its own; each time every request
    of the latest batch has had `period` responses, `step` more, until `end` were sent; returns once every request
    has had its final response."""
    streams: list[Stream] = []
    tasks: list[asyncio.Task[int]] = []
    short = 0  # requests of the latest batch that have not had `period` responses yet

    def launch(count: int) -> None:
        nonlocal short
        short = count
        for _ in range(count):
            stream = open_stream()
            streams.append(stream)
            tasks.append(asyncio.ensure_future(stream_counted(stream, next(payloads), period, reached)))

    def reached() -> None:
        nonlocal short
        short -= 1
        if short == 0 and len(tasks) < end:
            launch(min(step, end - len(tasks)))

    launch(start)
    try:
        while True:
            running = len(tasks)
            await asyncio.gather(*tasks)
            if len(tasks) == running:  # no batch was added meanwhile: all are done
                break
    finally:
        for stream in streams:
            stream.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    fewest = min(task.result() for task in tasks)
    if fewest < period:
        raise OptionError(
            f"--request-period {period}: a request had only {fewest} responses (its empty final one included), so "
            "the next requests were never sent; give a period no larger than every request's responses"
        )


class Generator(Protocol):
    """A source of load and its windows: in this process (`LocalGenerator`) or over worker processes."""

    rejection: asyncio.Event
    """Set when the model rejected a request before any request of the run succeeded (see `_Failures`)."""

    failing: asyncio.Event
    """Set when the current window's share of failed requests passed --max-error-rate (see `Recorder`); worker
    processes answer only when asked, so over them the share is checked at the window's end alone."""

    @property
    def rejected(self) -> RequestFailed | None:
        """That first rejected request."""

    async def apply(self, load: Load, start_ns: int, count: int | None = None) -> Window:
        """Switch to a load level (an open-loop schedule starts at `start_ns`, a perf_counter_ns instant); with
        `count`, send exactly that many requests at it. Returns the window that closed at the switch: the level's
        requests complete in the next."""

    async def fill(self, count: int, timeout_s: float) -> Window:
        """The window that closes once `count` requests completed in it (or, after `timeout_s`, as it is)."""

    async def drain(self, timeout_s: float) -> int:
        """Wait (at most `timeout_s`) until no request of an earlier level is in flight; how many still are."""

    async def rotate(self) -> Window:
        """Close the current window now and start the next."""

    async def stop(self, grace_s: float = 0.0) -> Unfinished:
        """Stop the load; requests in flight get `grace_s` to return; what was in flight and never answered."""


async def next_window(generator: Generator, windows: Windows, deadline_ns: int | None = None) -> Window:
    """The next window by the run's rule, for any generator: at `deadline_ns` (a logged run's wall-clock grid),
    once its count of requests completed and a second passed (count windows), or after the measurement interval."""
    if deadline_ns is None and windows.count is not None:
        if not windows.single:  # perf_analyzer's count windows: at least the count, and at least a second
            await asyncio.sleep(COUNT_WINDOW_MIN_S)
        window = await generator.fill(windows.count, windows.timeout_s)
        return await _whole_seconds(window) if windows.single and windows.perf_analyzer else window
    if deadline_ns is None:
        deadline_ns = time.perf_counter_ns() + windows.length_ms * 1_000_000
    await asyncio.sleep(max(deadline_ns - time.perf_counter_ns(), 0) / 1e9)
    return await generator.rotate()


async def _whole_seconds(window: Window) -> Window:
    """perf_analyzer's --request-count window: it looks once a second whether the requests are done, so the window
    lasts whole seconds (at least one) and its throughput divides by them."""
    second = 1_000_000_000
    end_ns = window.start_ns + max(-(-(window.end_ns - window.start_ns) // second), 1) * second
    await asyncio.sleep(max(end_ns - time.perf_counter_ns(), 0) / 1e9)
    return dataclasses.replace(window, end_ns=end_ns)


class LocalGenerator:
    """Generates load from this process's event loop and hands out its measurement windows."""

    def __init__(
        self,
        connection: Connection,
        requests: Requests,
        run: RunPlan,
        shard: Shard | None = None,
        select: Callable[[Iterator[int]], Iterator[int]] | None = None,
        rejection: asyncio.Event | None = None,
        failing: asyncio.Event | None = None,
    ) -> None:
        """`select` takes this generator's part of an open loop's schedule (a model's in a mix, shard included: see
        `mix.selector`); without it, the shard takes its part. A mix's models share `rejection` and `failing`."""
        settings = run.settings
        self.run = run
        self.shard = shard or run.shard
        self.select = select
        metrics = None
        self.counter: TokenCounter | None = None
        if requests.tokens is not None:
            tokenizer = load_tokenizer(settings.tokenizer) if settings.tokenizer else None
            self.counter = TokenCounter(tokenizer)
            metrics = TokenMetrics(self.counter, parse_goodput(settings.goodput))
        streaming = settings.streaming and metrics is None  # token streams have their own first-token figures
        self.recorder = Recorder(not run.closed_loop, streaming, settings.max_error_rate, failing, metrics)
        self.failures = failures = _Failures(self.recorder, connection.errors, connection.failure, rejection)
        self.times = connection.times
        self.rejection = failures.rejection
        self.failing = self.recorder.failing
        self.connection = connection
        self.requests = requests
        call: InferCall = connection.infer
        check: StreamCheck | None = None
        if requests.expected is not None:  # responses are decoded only to validate them
            call = Validator(requests.expected, connection.wire.decode_response).wrap(call)
            if settings.streaming:
                check = Validator(requests.expected, decode_message).for_stream(requests.payloads)
        open_stream = connection.open_stream
        self.records: RequestLog | None = None
        if settings.record_requests:  # for the profile export: the loops stay the same, the call records
            self.records = RequestLog(settings.record_requests)
            if requests.tokens is None:  # a token run's own call is wrapped below
                call = self.records.wrap(call)
                open_stream = self.records.streams(open_stream)
        elif requests.tokens is not None:  # a token run keeps a sample of each level for its plots
            self.records = RequestLog(TOKEN_SAMPLE, per_level=True)
        self.open_stream = open_stream
        self.call = call
        self.sequences: Sequences | None = None
        lanes: list[SequenceSlot]
        if requests.sequential:
            self.sequences = sequences = Sequences(requests, run, connection.wire, self.shard)
            source: SlotSource = sequences.slot
            stream, lanes = sequences.interleaved(self.shard.concurrency(settings.num_of_sequences) or 1)
        else:
            source = functools.partial(_cycle, requests.payloads)
            stream, lanes = itertools.cycle(requests.payloads), []
        self.load: Load | None = None  # the level applied last
        self.tokens: TritonTokens | None = None
        inputs: Mapping[Payload, int] | None = None  # a token run's prompt tokens, by payload
        self.closed: _Slots
        self.mux: StreamMux | None = None
        self.endpoint: TokenEndpoint | None = None
        if requests.tokens is not None:  # generative requests: each answer's events and tokens are measured
            inputs = dict(zip(requests.payloads, requests.input_tokens, strict=True))
            if settings.endpoint_type not in (None, "kserve"):  # an HTTP endpoint
                from loadgen.transport.endpoints import endpoint_for

                model = requests.sessions.model.name if requests.sessions is not None else ""  # a turn's body names it
                self.endpoint = endpoint_for(model, settings, ConnectionOptions.from_settings(settings))
                self.times = self.endpoint.times  # its own connections' send and receive times
                call = self.endpoint.call
            else:
                self.tokens = TritonTokens(connection, requests.tokens, settings.streaming)
                call = self.tokens.call
            if settings.request_cancellation_rate:
                call = Cancelling(call, settings, self.shard.index)
            if self.records is not None:
                call = self.records.wrap_tokens(call)
            if requests.sessions is not None:
                turns = self.endpoint.encode_turn if self.endpoint is not None else None
                encode = turns or triton_turns(connection.wire, requests.sessions.model, settings)
                self.closed = SessionLoop(call, requests.sessions, encode, self.recorder, failures)
            else:
                self.closed = TokenLoop(call, inputs, source, self.recorder, failures)
        elif settings.streaming:
            self.closed = StreamingLoop(open_stream, source, self.recorder, failures, check)
        else:
            self.closed = ClosedLoop(call, source, self.recorder, failures)
        self.input_tokens: Mapping[Payload, int] = inputs or {}
        if settings.streaming and not run.closed_loop and inputs is None:  # requests on schedule share one stream
            self.mux = StreamMux(open_stream, time.perf_counter_ns, check)
            call = self.mux.send
        self.open = OpenLoop(
            call,
            stream,
            self.recorder,
            failures,
            run.max_in_flight,
            settings.streaming,
            lanes,
            from_send=settings.perf_analyzer_rules,
            tokens=inputs,
        )
        self._times_mark = (self.times.send_ns, self.times.sends, self.times.recv_ns, self.times.calls)

    @property
    def rejected(self) -> RequestFailed | None:
        return self.failures.rejected

    def _share(self, count: int) -> int:
        """This generator's part of a request count: in a closed loop in proportion to its slots (none at this
        level: no part), in an open loop its part of the schedule's first `count` requests."""
        load = self.load
        if load is not None and load.concurrency is not None:
            return self.shard.by_slots(count, load.concurrency)
        return self.shard.concurrency(count)

    async def apply(self, load: Load, start_ns: int, count: int | None = None) -> Window:
        self.load = load
        before = self._client_times(self.recorder.rotate())
        self.recorder.next_level()
        if load.concurrency is not None:
            budget = itertools.repeat(None, self._share(count)) if count else itertools.repeat(None)
            self.closed.resize(self.shard.concurrency(load.concurrency), budget)
        else:
            whole = schedule_for(load, self.run)
            offsets = self.select(whole) if self.select is not None else self.shard.schedule(whole)
            self.open.start(itertools.islice(offsets, self._share(count)) if count else offsets, start_ns)
        return before

    async def drain(self, timeout_s: float) -> int:
        return await self.recorder.drained(timeout_s)

    async def fill(self, count: int, timeout_s: float) -> Window:
        return self._client_times(await self.recorder.fill(self._share(count), timeout_s))

    async def ramp(self, start: int, end: int, step: int, period: int) -> None:
        """Periodic concurrency (see `ramp`) over the requests in turn; a failed request is raised as loadgen's
        own kind of failure."""
        try:
            await ramp(self.open_stream, itertools.cycle(self.requests.payloads), start, end, step, period)
        except self.failures.errors as error:
            raise self.connection.failure(error) from None

    async def rotate(self) -> Window:
        return self._client_times(self.recorder.rotate())

    def _client_times(self, window: Window) -> Window:
        """The connection's send and receive times during the window (the differences of its sums)."""
        times, (send, sends, recv, calls) = self.times, self._times_mark
        window.client_send_ns, window.client_sends, window.client_recv_ns, window.client_calls = (
            times.send_ns - send,
            times.sends - sends,
            times.recv_ns - recv,
            times.calls - calls,
        )
        self._times_mark = (times.send_ns, times.sends, times.recv_ns, times.calls)
        return window

    async def stop(self, grace_s: float = 0.0) -> Unfinished:
        """Stop the load; requests in flight get `grace_s` to return; sequences left open are ended."""
        in_flight = self.recorder.outstanding
        await asyncio.gather(self.closed.stop(grace_s), self.open.stop(grace_s))
        unfinished = Unfinished(in_flight, self.recorder.outstanding)  # a cancelled request never records
        if self.mux is not None:
            await self.mux.close()
        if self.tokens is not None:
            self.tokens.close()
        if self.endpoint is not None:
            await self.endpoint.close()
        if self.sequences is not None:
            # best effort: the server also drops idle sequences itself, after max_sequence_idle_microseconds
            endings = [asyncio.ensure_future(self.call(payload)) for payload in self.sequences.closing()]
            if endings:
                await asyncio.wait(endings, timeout=SEQUENCE_END_TIMEOUT_S)
            for ending in endings:
                ending.cancel()
            await asyncio.gather(*endings, return_exceptions=True)
        return unfinished
