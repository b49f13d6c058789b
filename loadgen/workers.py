"""Worker processes: the load split over N spawned processes, each with its own event loop and connection.

The parent keeps the schedule's clock and the windows: it tells every worker when to switch level and when to
close a window, and merges their encoded windows exactly. Workers are spawned, never forked (gRPC does not
survive a fork), and ignore Ctrl-C and SIGTERM: the parent stops them.

Instants cross the pipe as they are, `time.perf_counter_ns` values: the parent's `start_ns` of a level's schedule
goes to the workers, and their windows' `start_ns` and `end_ns` come back. On Linux perf_counter_ns reads
CLOCK_MONOTONIC, one clock for the whole system, so a worker's instant and the parent's agree (see `loadgen.clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection as Pipe
from typing import Any

import uvloop

from loadgen.errors import LoadgenError
from loadgen.inputs import Requests
from loadgen.load import LocalGenerator
from loadgen.measurement import Unfinished, Window, combine, keep_memory_flat
from loadgen.plan import Load, RunPlan, Shard
from loadgen.transport import ConnectionOptions, Rejected, RequestFailed, connect

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def worker_count(text: str) -> int:
    """`--workers N` or `auto` (one per core)."""
    return os.cpu_count() or 1 if text == "auto" else int(text)


class _Link:
    """The parent's end of one worker's pipe, read without blocking the event loop."""

    def __init__(self, index: int, pipe: Pipe, process: multiprocessing.process.BaseProcess) -> None:
        self.index = index
        self.pipe = pipe
        self.process = process

    async def receive(self, timeout_s: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.pipe.fileno(), wake)
        try:
            await asyncio.wait_for(ready, timeout_s)
        except asyncio.TimeoutError:
            raise LoadgenError(f"worker {self.index} did not answer within {timeout_s:.0f} s") from None
        finally:
            loop.remove_reader(self.pipe.fileno())
        try:
            kind, value = self.pipe.recv()
        except EOFError:
            raise LoadgenError(f"worker {self.index} exited (status {self.process.exitcode})") from None
        if kind == "error":
            raise LoadgenError(f"worker {self.index}: {value}")
        return value


class ProcessGenerator:
    """The `Generator` interface over N worker processes; results identical in shape to one process."""

    def __init__(self, requests: Requests, run: RunPlan, options: ConnectionOptions, count: int) -> None:
        self.requests = requests
        self.run = run
        self.options = options
        self.count = count
        self.links: list[_Link] = []
        self.rejection = asyncio.Event()
        self.failing = asyncio.Event()  # never set: workers answer only when asked (their windows are checked)
        self.rejected: RequestFailed | None = None

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child, self.requests, self.run, self.options, Shard(index, self.count)),
                name=f"loadgen-worker-{index}",
                daemon=True,
            )
            process.start()
            child.close()
            self.links.append(_Link(index, parent, process))
        await self._all(None, START_TIMEOUT_S)

    async def _all(self, command: tuple[str, Any] | None, timeout_s: float | None = None) -> list[Any]:
        if command is not None:
            for link in self.links:
                link.pipe.send(command)
        replies = list(await asyncio.gather(*(link.receive(timeout_s) for link in self.links)))
        for reply in replies:
            if reply is not None and reply[1] is not None and self.rejected is None:
                self.rejected = Rejected(reply[1])
                self.rejection.set()
        return replies

    async def _window(self, command: tuple[str, Any]) -> Window:
        return combine([Window.decode(encoded) for encoded, _ in await self._all(command)])

    async def apply(self, load: Load, start_ns: int, count: int | None = None) -> Window:
        return await self._window(("apply", (load, start_ns, count)))  # start_ns means the same instant in every worker

    async def fill(self, count: int, timeout_s: float) -> Window:
        return await self._window(("fill", (count, timeout_s)))

    async def rotate(self) -> Window:
        return await self._window(("rotate", None))

    async def drain(self, timeout_s: float) -> int:
        return sum(old for old, _ in await self._all(("drain", timeout_s)))

    async def stop(self, grace_s: float = 0.0) -> Unfinished:
        unfinished = Unfinished()
        for link in self.links:
            if link.process.is_alive():
                with contextlib.suppress(OSError):
                    link.pipe.send(("stop", grace_s))
        for link in self.links:
            with contextlib.suppress(LoadgenError, OSError):  # a worker that died has nothing more to say
                unfinished += Unfinished(*await link.receive(STOP_TIMEOUT_S + grace_s))
            await asyncio.to_thread(link.process.join, STOP_TIMEOUT_S + grace_s)
            if link.process.is_alive():
                link.process.kill()
            link.pipe.close()
        self.links = []
        return unfinished


def _worker_main(pipe: Pipe, requests: Requests, run: RunPlan, options: ConnectionOptions, shard: Shard) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # the parent stops its workers; a signal would only print tracebacks
    keep_memory_flat()
    uvloop.run(_serve(pipe, requests, run, options, shard))


async def _serve(pipe: Pipe, requests: Requests, run: RunPlan, options: ConnectionOptions, shard: Shard) -> None:
    """A worker: run a LocalGenerator for its shard and answer the parent's commands until told to stop.

    Every reply is (the encoded window or None, the message of a rejected request or None)."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(pipe.recv())
        except EOFError:
            commands.put_nowait(("stop", None))
            loop.remove_reader(pipe.fileno())

    connection = connect(options)
    generator = LocalGenerator(connection, requests, run, shard)
    loop.add_reader(pipe.fileno(), readable)
    pipe.send(("ready", None))
    grace_s = 0.0
    try:
        while True:
            kind, value = await commands.get()
            if kind == "stop":
                grace_s = value or 0.0
                return
            try:
                reply: Any = None
                if kind == "apply":
                    reply = (await generator.apply(*value)).encode()
                elif kind == "fill":
                    reply = (await generator.fill(*value)).encode()
                elif kind == "rotate":
                    reply = (await generator.rotate()).encode()
                elif kind == "drain":
                    reply = await generator.drain(value)
                rejected = str(generator.rejected) if generator.rejected is not None else None
                pipe.send(("ok", (reply, rejected)))
            except Exception as error:  # reported to the parent, which stops the run with it
                pipe.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        loop.remove_reader(pipe.fileno())
        unfinished = await generator.stop(grace_s)
        await connection.close()
        with contextlib.suppress(OSError):  # the parent reads what was left in flight
            pipe.send(("ok", (unfinished.in_flight, unfinished.cancelled)))
