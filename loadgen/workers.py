"""Worker processes: the load split over N spawned processes, each with its own event loop and gRPC channel.

The parent keeps the schedule's clock and the windows: it tells every worker when to switch level and when to
close a window, and merges their encoded windows exactly. Workers are spawned, never forked (gRPC does not
survive a fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import uvloop

from loadgen.errors import LoadgenError
from loadgen.inputs import Requests
from loadgen.load import Load, LocalGenerator, Shard
from loadgen.measurement import EncodedWindow, Window, combine, encode_window
from loadgen.settings import Settings
from loadgen.transport import connect

START_TIMEOUT_S = 60.0


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
    """The `LocalGenerator` interface over N worker processes; results identical in shape to one process."""

    def __init__(self, requests: Requests, settings: Settings, count: int) -> None:
        self.requests = requests
        self.settings = settings
        self.count = count
        self.links: list[_Link] = []

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child, self.requests, self.settings, Shard(index, self.count)),
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
        return list(await asyncio.gather(*(link.receive(timeout_s) for link in self.links)))

    async def apply(self, load: Load, start_ns: int) -> None:
        await self._all(("apply", (load, start_ns)))

    async def warm_up(self, count: int) -> None:
        await self._all(("warm_up", count))

    async def discard(self) -> None:
        await self._all(("discard", None))

    async def window(self, deadline_ns: int | None = None) -> Window:
        if deadline_ns is not None:
            await asyncio.sleep(max(deadline_ns - time.perf_counter_ns(), 0) / 1e9)
            return await self.rotate()
        if self.settings.request_count or self.settings.measurement_mode == "count_windows":
            return combine(await self._all(("window", None)))
        await asyncio.sleep(self.settings.measurement_interval / 1000)
        return await self.rotate()

    async def rotate(self) -> Window:
        return combine(await self._all(("rotate", None)))

    async def stop(self, grace_s: float = 0.0) -> None:
        for link in self.links:
            if link.process.is_alive():
                with contextlib.suppress(OSError):
                    link.pipe.send(("stop", grace_s))
        for link in self.links:
            await asyncio.to_thread(link.process.join, 10 + grace_s)
            if link.process.is_alive():
                link.process.kill()
            link.pipe.close()
        self.links = []


def _worker_main(pipe: Pipe, requests: Requests, settings: Settings, shard: Shard) -> None:
    uvloop.run(_serve(pipe, requests, settings, shard))


async def _serve(pipe: Pipe, requests: Requests, settings: Settings, shard: Shard) -> None:
    """A worker: run a LocalGenerator for its shard and answer the parent's commands until told to stop."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(pipe.recv())
        except EOFError:
            commands.put_nowait(("stop", None))
            loop.remove_reader(pipe.fileno())

    connection = connect(settings)
    generator = LocalGenerator(connection, requests, settings, shard)
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
                reply: EncodedWindow | None = None
                if kind == "apply":
                    load, start_ns = value
                    await generator.apply(load, start_ns)
                elif kind == "warm_up":
                    await generator.warm_up(value)
                elif kind == "discard":
                    await generator.discard()
                elif kind == "rotate":
                    reply = encode_window(await generator.rotate())
                elif kind == "window":
                    reply = encode_window(await generator.window())
                pipe.send(("ok", reply))
            except Exception as error:  # reported to the parent, which stops the run with it
                pipe.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        loop.remove_reader(pipe.fileno())
        await generator.stop(grace_s)
        await connection.close()
