"""Load: a closed-loop worker pool, and an open-loop sender that follows a schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import grpc

from loadgen.measurement import Recorder
from loadgen.transport import describe_rpc_error

InferCall = Callable[[bytes], Awaitable[bytes]]


class ClosedLoop:
    """Keeps exactly `concurrency` requests in flight; each worker sends its next request when one returns."""

    def __init__(self, call: InferCall, payloads: Sequence[bytes], recorder: Recorder, url: str) -> None:
        if not payloads:
            raise ValueError("no request payloads")
        self._call = call
        self._payloads = tuple(payloads)
        self._recorder = recorder
        self._url = url
        self._workers: list[asyncio.Task[None]] = []

    def resize(self, concurrency: int) -> None:
        """Start or cancel workers so that `concurrency` requests are in flight."""
        while len(self._workers) < concurrency:
            slot = len(self._workers)
            self._workers.append(asyncio.ensure_future(self._work(slot)))
        while len(self._workers) > concurrency:
            self._workers.pop().cancel()

    async def stop(self) -> None:
        """Cancel every worker and wait until all are gone."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, slot: int) -> None:
        call = self._call
        payloads = self._payloads
        count = len(payloads)
        index = slot % count
        record = self._recorder.record
        clock = time.perf_counter_ns
        while True:
            payload = payloads[index]
            index = index + 1 if index + 1 < count else 0
            start = clock()
            try:
                await call(payload)
            except grpc.aio.AioRpcError as error:
                self._recorder.record_error(describe_rpc_error(error, self._url))
                continue
            record((clock() - start) // 1000)


class OpenLoop:
    """Sends each request at its scheduled time whether or not earlier ones have returned.

    Latency counts from the scheduled time (response time) as well as from the actual send (service time), so
    a generator that falls behind shows up in the numbers instead of hiding (no coordinated omission). Requests
    in flight are capped at `max_in_flight` as a safety limit; every request that had to wait is counted.
    """

    def __init__(
        self, call: InferCall, payloads: Sequence[bytes], recorder: Recorder, url: str, max_in_flight: int
    ) -> None:
        if not payloads:
            raise ValueError("no request payloads")
        self._call = call
        self._payloads = tuple(payloads)
        self._recorder = recorder
        self._url = url
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()  # kept so that tasks are not collected, and can be cancelled
        self._in_flight = 0
        self._slot_free = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    def start(self, schedule: Iterator[int]) -> None:
        """Follow a new schedule (offsets in ns from now); requests already in flight carry on."""
        if self._sender is not None:
            self._sender.cancel()
        self._sender = asyncio.ensure_future(self._send(schedule))

    async def stop(self) -> None:
        """Stop sending, cancel what is in flight, and wait until every task is gone."""
        tasks = [*self._tasks, *([self._sender] if self._sender else [])]
        self._sender = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, schedule: Iterator[int]) -> None:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter_ns
        payloads = self._payloads
        count = len(payloads)
        tasks = self._tasks
        discard = tasks.discard
        start = clock()
        index = 0
        for offset in schedule:
            due = start + offset
            now = clock()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            if self._in_flight >= self._max_in_flight:
                self._recorder.record_limit_hit()
                while self._in_flight >= self._max_in_flight:
                    self._slot_free.clear()
                    await self._slot_free.wait()
            self._in_flight += 1
            task = loop.create_task(self._one(payloads[index], due))
            tasks.add(task)
            task.add_done_callback(discard)
            index = index + 1 if index + 1 < count else 0

    async def _one(self, payload: bytes, due: int) -> None:
        clock = time.perf_counter_ns
        sent = clock()
        recorder = self._recorder
        recorder.record_sent((sent - due) // 1000)
        try:
            await self._call(payload)
        except grpc.aio.AioRpcError as error:
            recorder.record_error(describe_rpc_error(error, self._url))
        else:
            done = clock()
            recorder.record_response((done - due) // 1000, (done - sent) // 1000)
        finally:
            self._in_flight -= 1
            self._slot_free.set()
