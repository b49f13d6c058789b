"""The server side: the embedded Triton launcher, Triton's per-model statistics, and its Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loadgen.lazy import lazy_names

if TYPE_CHECKING:
    from loadgen.server.launcher import EmbeddedServer, ServerStartError, free_port

__all__ = ["EmbeddedServer", "ServerStartError", "free_port"]
__getattr__, __dir__ = lazy_names(
    __name__, {"loadgen.server.launcher": ("EmbeddedServer", "ServerStartError", "free_port")}
)
