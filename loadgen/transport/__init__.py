"""The connection to Triton, over gRPC (the default) or HTTP: model discovery, statistics, shared-memory
registration, and inference calls whose requests were serialised once before the run."""

from __future__ import annotations

from loadgen.settings import Settings
from loadgen.transport.common import (
    TIMEOUT,
    Connection,
    IndexEntry,
    InferCall,
    Mismatch,
    ModelInfo,
    Outputs,
    Payload,
    Placement,
    RequestFailed,
    RequestLayout,
    Response,
    Sample,
    StreamCheck,
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
    decode_message,
    describe_rpc_error,
    stream_one,
)

__all__ = [
    "TIMEOUT",
    "Connection",
    "GrpcConnection",
    "GrpcWire",
    "IndexEntry",
    "InferCall",
    "Mismatch",
    "ModelInfo",
    "Outputs",
    "Payload",
    "Placement",
    "RequestFailed",
    "RequestLayout",
    "Response",
    "Sample",
    "Stream",
    "StreamCheck",
    "StreamMux",
    "Tensor",
    "TensorSpec",
    "Unreachable",
    "Wire",
    "connect",
    "decode_message",
    "describe_rpc_error",
    "stream_one",
]


def connect(settings: Settings) -> Connection:
    """A connection speaking `settings.protocol`; open it inside the event loop that uses it."""
    if settings.protocol == "http":
        from loadgen.transport.http_connection import HttpConnection  # aiohttp is only imported when used
        from loadgen.transport.raw_http import RawHttpConnection

        return RawHttpConnection(settings) if settings.transport == "raw" else HttpConnection(settings)
    from loadgen.transport.raw_grpc import RawGrpcConnection

    return RawGrpcConnection(settings) if settings.transport == "raw" else GrpcConnection(settings)
