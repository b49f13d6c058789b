"""Load: a closed-loop pool of asyncio workers, each keeping one request in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

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

    @property
    def concurrency(self) -> int:
        return len(self._workers)

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
