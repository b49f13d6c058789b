"""The server side: the embedded Triton launcher, Triton's per-model statistics, and its Prometheus metrics."""

from loadgen.server.launcher import EmbeddedServer, ServerStartError, free_port

__all__ = ["EmbeddedServer", "ServerStartError", "free_port"]
