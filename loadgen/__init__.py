"""loadgen: a load generator for NVIDIA Triton that finds the slow step of an ensemble."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import loadgen._grpc_env  # noqa: F401  (before anything imports grpc)
from loadgen.errors import LoadgenError, MissingExtraError, ModelRejectedError, OptionError, ServerError
from loadgen.lazy import lazy_names

if TYPE_CHECKING:
    from loadgen.analysis import Bottleneck
    from loadgen.comparison import Comparison, LevelChange, compare
    from loadgen.measurement import LatencyStats
    from loadgen.results import (
        Experiment,
        InputDescription,
        LevelResult,
        ProfileResult,
        RequestRecord,
        RunDescription,
        Trial,
        TuneResult,
        load_result,
    )
    from loadgen.server import EmbeddedServer
    from loadgen.settings import Settings
    from loadgen.sweep import Progress, profile
    from loadgen.tune import TuneSettings, tune

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "loadgen.analysis": ("Bottleneck",),
        "loadgen.comparison": ("Comparison", "LevelChange", "compare"),
        "loadgen.measurement": ("LatencyStats",),
        "loadgen.results": (
            "Experiment",
            "InputDescription",
            "LevelResult",
            "ProfileResult",
            "RequestRecord",
            "RunDescription",
            "Trial",
            "TuneResult",
            "load_result",
        ),
        "loadgen.server": ("EmbeddedServer",),
        "loadgen.settings": ("Settings",),
        "loadgen.sweep": ("Progress", "profile"),
        "loadgen.tune": ("TuneSettings", "tune"),
    },
)


class _Package(types.ModuleType):
    """The package, whose `tune` is the function: importing the submodule of that name does not replace it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tune" and isinstance(value, types.ModuleType):
            value = value.tune
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "Bottleneck",
    "Comparison",
    "EmbeddedServer",
    "Experiment",
    "InputDescription",
    "LatencyStats",
    "LevelChange",
    "LevelResult",
    "LoadgenError",
    "MissingExtraError",
    "ModelRejectedError",
    "OptionError",
    "ProfileResult",
    "Progress",
    "RequestRecord",
    "RunDescription",
    "ServerError",
    "Settings",
    "Trial",
    "TuneResult",
    "TuneSettings",
    "compare",
    "load_result",
    "profile",
    "profile_sync",
    "run",
    "tune",
]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop, also from inside a running event loop (Jupyter).

    Inside a running loop it runs on a loop of its own in a helper thread. An interrupt of the waiting thread
    (Ctrl-C, a notebook's "interrupt kernel") cancels it there and waits until it has cleaned up, so that the
    load stops before the interrupt propagates.
    """
    import asyncio
    import concurrent.futures

    import uvloop

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # run outside the except clause: its RuntimeError is no context of the run's exceptions
        return uvloop.run(coroutine)
    started: concurrent.futures.Future[asyncio.Task[T]] = concurrent.futures.Future()

    async def main() -> T:
        task = asyncio.ensure_future(coroutine)
        started.set_result(task)
        return await task

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="loadgen") as pool:
        done = pool.submit(uvloop.run, main())
        try:
            return done.result()
        except BaseException:
            if not done.done():  # interrupted while waiting, not failed in the thread
                task = started.result()
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to cancel
                    task.get_loop().call_soon_threadsafe(task.cancel)
                concurrent.futures.wait([done])
            raise


def profile_sync(
    url: str | None = None,
    model: str | None = None,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ProfileResult:
    """Blocking twin of `profile`, with the same arguments; works in scripts and inside a running event loop."""
    from loadgen.sweep import profile

    return run(profile(url, model, settings=settings, progress=progress, **options))
