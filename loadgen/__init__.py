"""loadgen: a load generator for NVIDIA Triton that finds the slow step of an ensemble."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from loadgen.errors import LoadgenError, ModelRejectedError, OptionError, ServerError
from loadgen.measurement import LatencyStats
from loadgen.reports import load_result
from loadgen.results import InputDescription, LevelResult, ProfileResult
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings
from loadgen.sweep import Progress, profile

__all__ = [
    "EmbeddedServer",
    "InputDescription",
    "LatencyStats",
    "LevelResult",
    "LoadgenError",
    "ModelRejectedError",
    "OptionError",
    "ProfileResult",
    "Progress",
    "ServerError",
    "Settings",
    "load_result",
    "profile",
    "profile_sync",
    "run",
]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return uvloop.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="loadgen") as pool:
        return pool.submit(uvloop.run, coroutine).result()


def profile_sync(
    url: str | None = None,
    model: str | None = None,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ProfileResult:
    """Blocking twin of `profile`, with the same arguments; works in scripts and inside a running event loop."""
    return run(profile(url, model, settings=settings, progress=progress, **options))
