"""The watchdog: notices within seconds that the server went away, without being fooled by a busy client."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from loadgen.errors import ServerError
from loadgen.transport import ConnectionOptions
from loadgen.transport.probe import Probe

WATCH_INTERVAL_S = 1.0  # the server's liveness is checked this often during a run
WATCH_MISSES = 2  # liveness checks missed in a row before the server counts as gone


class Watchdog:
    """Checks the server's liveness every second from a thread of its own, on a connection of its own, so that the
    check never queues behind the load's requests nor behind a busy event loop: a client too busy to keep up is
    not mistaken for a server that went away.

    `start` returns a future that gets the reason once the server missed its check twice in a row.
    """

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[str] = loop.create_future()

        def report(reason: str) -> None:
            if not verdict.done():
                verdict.set_result(reason)

        def watch() -> None:
            reason = self._watch()
            if reason is not None:
                with contextlib.suppress(RuntimeError):  # the run's loop closed meanwhile
                    loop.call_soon_threadsafe(report, reason)

        self._thread = threading.Thread(target=watch, name="loadgen-watchdog", daemon=True)
        self._thread.start()
        return verdict

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> str | None:
        probe = Probe(self.options)
        misses = 0
        try:
            while not self._stopped.wait(WATCH_INTERVAL_S):
                try:
                    probe.check(WATCH_INTERVAL_S)
                    misses = 0
                except ServerError as error:
                    misses += 1
                    if misses >= WATCH_MISSES:
                        return f"Triton at {self.options.url} went away: {error}"
            return None
        finally:
            probe.close()
