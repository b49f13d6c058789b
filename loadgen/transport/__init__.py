"""The connection to Triton, over gRPC (the default) or HTTP: model discovery, statistics, shared-memory
registration, and inference calls whose requests were serialised once before the run. Failures come out as
loadgen's own kinds (`transport.errors`), whatever library raised them."""

from __future__ import annotations

from loadgen.transport.common import (
    Connection,
    IndexEntry,
    InferCall,
    ModelInfo,
    Output,
    Outputs,
    Payload,
    Placement,
    RequestLayout,
    Response,
    Sample,
    StreamCheck,
    Tensor,
    TensorSpec,
    Wire,
)
from loadgen.transport.errors import (
    Internal,
    Mismatch,
    PermissionDenied,
    Rejected,
    RequestFailed,
    TimedOut,
    Unreachable,
    clipped,
    internal,
)
from loadgen.transport.grpc_connection import (
    GrpcConnection,
    GrpcWire,
    Stream,
    StreamMux,
    decode_message,
    request_id,
    stream_counted,
    stream_one,
    stream_outputs,
    stream_reply,
)
from loadgen.transport.options import ConnectionOptions, Tls

__all__ = [
    "Connection",
    "ConnectionOptions",
    "GrpcConnection",
    "GrpcWire",
    "IndexEntry",
    "InferCall",
    "Internal",
    "Mismatch",
    "ModelInfo",
    "Output",
    "Outputs",
    "Payload",
    "PermissionDenied",
    "Placement",
    "Rejected",
    "RequestFailed",
    "RequestLayout",
    "Response",
    "Sample",
    "Stream",
    "StreamCheck",
    "StreamMux",
    "Tensor",
    "TensorSpec",
    "TimedOut",
    "Tls",
    "Unreachable",
    "Wire",
    "clipped",
    "connect",
    "decode_message",
    "internal",
    "request_id",
    "stream_counted",
    "stream_one",
    "stream_outputs",
    "stream_reply",
]


def connect(options: ConnectionOptions) -> Connection:
    """A connection speaking `options.protocol`; open it inside the event loop that uses it."""
    if options.openai:
        from loadgen.transport.openai_server import OpenAIServer

        return OpenAIServer(options)
    if options.protocol == "http":
        from loadgen.transport.http_connection import HttpConnection  # aiohttp is only imported when used
        from loadgen.transport.raw_http import RawHttpConnection

        return RawHttpConnection(options) if options.transport == "raw" else HttpConnection(options)
    from loadgen.transport.raw_grpc import RawGrpcConnection

    return RawGrpcConnection(options) if options.transport == "raw" else GrpcConnection(options)
