"""The connection to Triton, over gRPC (the default) or HTTP: model discovery, statistics, shared-memory
registration, and inference calls whose requests were serialised once before the run."""

from __future__ import annotations

from loadgen.settings import Settings
from loadgen.transport.common import (
    Connection,
    IndexEntry,
    InferCall,
    ModelInfo,
    Outputs,
    Payload,
    Placement,
    RequestFailed,
    RequestLayout,
    Response,
    Sample,
    Tensor,
    TensorSpec,
    Unreachable,
    Wire,
)
from loadgen.transport.grpc_connection import (
    GrpcConnection,
    GrpcWire,
    Stream,
    StreamMux,
    describe_rpc_error,
    stream_one,
)

__all__ = [
    "Connection",
    "GrpcConnection",
    "GrpcWire",
    "IndexEntry",
    "InferCall",
    "ModelInfo",
    "Outputs",
    "Payload",
    "Placement",
    "RequestFailed",
    "RequestLayout",
    "Response",
    "Sample",
    "Stream",
    "StreamMux",
    "Tensor",
    "TensorSpec",
    "Unreachable",
    "Wire",
    "connect",
    "describe_rpc_error",
    "stream_one",
]


def connect(settings: Settings) -> Connection:
    """A connection speaking `settings.protocol`; open it inside the event loop that uses it."""
    if settings.protocol == "http":
        from loadgen.transport.http_connection import HttpConnection  # aiohttp is only imported when used

        return HttpConnection(settings)
    return GrpcConnection(settings)
