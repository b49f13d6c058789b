"""A TCP proxy between loadgen and a real server that keeps what went through it, to check what loadgen put on the
wire (compressed gRPC messages, JSON tensors, TLS); optionally it terminates TLS in front of the server."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from loadgen.server.launcher import free_port


@dataclass
class Wire:
    """What went through the proxy: bytes towards the server, and back."""

    upstream: bytearray = field(default_factory=bytearray)
    downstream: bytearray = field(default_factory=bytearray)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def wire_proxy(target: str, tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, Wire]]:
    """A proxy on a free local port in front of `target` (HOST:PORT); yields its address and what it saw. With
    `tls` (a server context) it is a TLS terminator: clients speak TLS to it, it speaks plain TCP to the target."""
    host, _, port = target.rpartition(":")
    wire = Wire()
    listen = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray) -> None:
        try:
            while data := await reader.read(65536):
                with wire.lock:
                    seen += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        wire.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, wire.upstream), pipe(server_reader, client_writer, wire.downstream)
        )

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=tls)
        async with server:
            ready.set()
            await server.serve_forever()

    def run() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(serve())
        with suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        pending = asyncio.all_tasks(loop)
        for left in pending:
            left.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True, name="wire-proxy")
    thread.start()
    ready.wait(10)
    try:
        yield f"localhost:{listen}", wire
    finally:

        def cancel_all() -> None:  # on the proxy's loop: once its serving task ends, the loop closes
            for task in asyncio.all_tasks(loop):
                task.cancel()

        with suppress(RuntimeError):  # the loop already closed (its server failed)
            loop.call_soon_threadsafe(cancel_all)
        thread.join(10)
