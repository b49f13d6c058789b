"""The server's trace settings for the length of a run (perf_analyzer's --trace-level, --trace-rate, --trace-count
and --log-frequency), put back as they were after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from loadgen.errors import OptionError, ServerError
from loadgen.settings import Settings
from loadgen.transport import Connection


def requested(settings: Settings) -> dict[str, list[str]]:
    """The trace settings a run asks for, as Triton's trace API names them."""
    wanted: dict[str, list[str]] = {}
    if settings.trace_level:
        wanted["trace_level"] = list(settings.trace_level)
    for name in ("trace_rate", "trace_count", "log_frequency"):
        value = getattr(settings, name)
        if value is not None:
            wanted[name] = [str(value)]
    return wanted


@contextlib.asynccontextmanager
async def traced(connection: Connection, settings: Settings) -> AsyncIterator[dict[str, list[str]]]:
    """Apply the run's trace settings on entering (yields them), and restore the server's on leaving, also when the
    run fails or is cancelled."""
    wanted = requested(settings)
    if not wanted:
        yield wanted
        return
    before = await connection.trace_settings()
    try:
        await connection.update_trace_settings(wanted)
    except ServerError as error:
        hint = ""
        if "trace file" in str(error):
            hint = (
                ": the server has no trace file; start tritonserver with --trace-config triton,file=PATH "
                "(loadgen serve --trace-file PATH)"
            )
        raise OptionError(
            f"--trace-level/--trace-rate/--trace-count/--log-frequency: Triton refused them: {error}{hint}"
        ) from None
    try:
        yield wanted
    finally:
        restore = {key: before[key] for key in wanted if key in before}
        await asyncio.shield(connection.update_trace_settings(restore))
