"""Triton over gRPC: a grpc.aio channel with identity serialisers, so requests go out as pre-built bytes."""

from __future__ import annotations

import asyncio
import functools
import http.client
import itertools
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from loadgen.errors import ServerError
from loadgen.transport.common import (
    CONTROL_TIMEOUT_S,
    LOAD_TIMEOUT_S,
    ClientTimes,
    Connection,
    IndexEntry,
    ModelInfo,
    Output,
    Outputs,
    RequestLayout,
    Sample,
    StreamCheck,
    Tensor,
    TensorSpec,
    Wire,
    one_line,
)
from loadgen.transport.errors import (
    Mismatch,
    PermissionDenied,
    Rejected,
    RequestFailed,
    Unreachable,
    permission_denied,
    timed_out,
)
from loadgen.transport.options import ConnectionOptions

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
Stream: TypeAlias = grpc.aio.StreamStreamCall
FINAL_RESPONSE = "triton_final_response"  # the parameter that marks a request's last response on a stream
# Triton accepts large tensors; gRPC's 4 MB default would refuse big images.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def rpc_failure(error: grpc.RpcError, url: str, timeout_s: float | None, tls: bool) -> RequestFailed:
    """A failed gRPC call as loadgen's kind of failure, its message saying what to do where loadgen can tell."""
    code = error.code()
    details = one_line(error.details() or "").removesuffix(": OK")
    lowered = details.lower()
    # Triton answers a missing or wrong --grpc-restricted-protocol header with UNAVAILABLE.
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) or "protocol is restricted" in (
        lowered
    ):
        return PermissionDenied(permission_denied(url, details))
    if code == grpc.StatusCode.UNAVAILABLE:
        if "dns resolution failed" in lowered:
            return Unreachable(f"cannot resolve the host of {url}: {details}")
        if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
            return Unreachable(f"TLS with Triton at {url} failed (check the --ssl-grpc-* files): {details}")
        if "socket closed" in lowered and tls:
            return Unreachable(
                f"TLS with Triton at {url} failed: {details} (a server that requires client certificates closes "
                "connections without one: pass --ssl-grpc-private-key-file and --ssl-grpc-certificate-chain-file)"
            )
        if "socket closed" in lowered:
            return Unreachable(
                f"cannot reach Triton at {url}: {details} (if the server uses TLS, pass --ssl-grpc-use-ssl)"
            )
        return Unreachable(f"cannot reach Triton at {url}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout_s:
        return timed_out(timeout_s)
    return Rejected(f"{code.name}: {details}")


def _answers_http(url: str) -> bool:
    """True when `url` answers plain HTTP (someone passed Triton's HTTP port to the gRPC client)."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/live", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError, http.client.HTTPException):
        return False


_COMPRESSION = {
    "none": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}


def _channel(options: ConnectionOptions) -> grpc.aio.Channel:
    compression = _COMPRESSION[options.compression]
    if options.tls is None:
        return grpc.aio.insecure_channel(options.url, options=_CHANNEL_OPTIONS, compression=compression)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=options.tls.root_certificates,
        private_key=options.tls.private_key,
        certificate_chain=options.tls.certificate_chain,
    )
    return grpc.aio.secure_channel(options.url, credentials, options=_CHANNEL_OPTIONS, compression=compression)


def _set_parameter(parameter: service_pb2.InferParameter, value: str | int | bool) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    else:
        parameter.string_param = value


def _shm_parameters(message: Any, placement: Any) -> None:
    """Point an input or output at its place in a registered shared-memory region."""
    message.parameters["shared_memory_region"].string_param = placement.region
    message.parameters["shared_memory_byte_size"].int64_param = placement.size
    if placement.offset:
        message.parameters["shared_memory_offset"].int64_param = placement.offset


class GrpcWire(Wire):
    """Requests as serialised `ModelInferRequest` bytes."""

    def encode(self, model: ModelInfo, sample: Sample, layout: RequestLayout) -> bytes:
        """The serialised `ModelInferRequest`; `streaming` asks for an empty final response, so that a stream
        tells when a request's responses are complete."""
        request = service_pb2.ModelInferRequest(
            model_name=model.name, model_version=model.version, id=layout.request_id
        )
        if layout.streaming:
            request.parameters["triton_enable_empty_final_response"].bool_param = True
        for name, value in layout.parameters:
            _set_parameter(request.parameters[name], value)
        for index, tensor in enumerate(sample):
            entry = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if layout.inputs_shm:
                _shm_parameters(entry, layout.inputs_shm[index])
            else:
                request.raw_input_contents.append(tensor.content)
        for name in layout.outputs:
            request.outputs.add(name=name)
        for name, placement in layout.outputs_shm:
            _shm_parameters(request.outputs.add(name=name), placement)
        return request.SerializeToString()

    def sequence_flags(self, sequence_id: int, start: bool = False, end: bool = False) -> bytes:
        """Serialised parameters to append: protobuf merges concatenated messages, so nothing is re-encoded."""
        request = service_pb2.ModelInferRequest()
        request.parameters["sequence_id"].int64_param = sequence_id
        if start:
            request.parameters["sequence_start"].bool_param = True
        if end:
            request.parameters["sequence_end"].bool_param = True
        return request.SerializeToString()

    def with_flags(self, payload: bytes, flags: bytes) -> bytes:
        return payload + flags

    def decode_response(self, response: bytes) -> tuple[str, Outputs]:
        return decode_message(service_pb2.ModelInferResponse.FromString(response))

    def decode_request(self, payload: bytes) -> tuple[int, Sample]:
        request = service_pb2.ModelInferRequest.FromString(payload)  # sequence parameters appended are merged
        contents = request.raw_input_contents  # none when the inputs are in shared memory
        inputs = tuple(
            Tensor(entry.name, entry.datatype, tuple(entry.shape), contents[index] if index < len(contents) else b"")
            for index, entry in enumerate(request.inputs)
        )
        sequence = request.parameters.get("sequence_id")
        return (sequence.int64_param if sequence is not None else 0), inputs


class GrpcConnection(Connection):
    """One gRPC channel to a Triton server."""

    protocol = "grpc"
    wire = GrpcWire()
    errors: tuple[type[Exception], ...] = (grpc.aio.AioRpcError, RequestFailed)

    def __init__(self, options: ConnectionOptions) -> None:
        self.url = options.url
        self.tls = options.tls is not None
        self._channel = _channel(options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = options.headers or None
        self.request_timeout_s = options.request_timeout_s or options.stall_timeout_s  # grpcio: a deadline, cheap
        self.times = ClientTimes()
        # Identity (de)serialisers: requests are serialised once before the run, responses stay bytes.
        unary = self._channel.unary_unary(INFER_METHOD)
        self._unary = (
            functools.partial(unary, timeout=self.request_timeout_s, metadata=self._metadata)
            if self._metadata or self.request_timeout_s
            else unary
        )
        self.infer = self._infer
        self._stream = self._channel.stream_stream(
            STREAM_METHOD, response_deserializer=service_pb2.ModelStreamInferResponse.FromString
        )

    async def _infer(self, payload: bytes) -> bytes:
        """grpcio sends and receives out of sight: what is seen is starting the call."""
        start = time.perf_counter_ns()
        call = self._unary(payload)
        times = self.times
        times.send_ns += time.perf_counter_ns() - start
        times.sends += 1
        return await call

    def failure(self, error: Exception) -> RequestFailed:
        if isinstance(error, grpc.RpcError):
            return rpc_failure(error, self.url, self.request_timeout_s, self.tls)
        return super().failure(error)

    def open_stream(self) -> Stream:
        """A bidirectional inference stream (`ModelStreamInfer`); requests on it are pre-serialised too."""
        return self._stream(metadata=self._metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: object, timeout_s: float = CONTROL_TIMEOUT_S) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise ServerError(str(rpc_failure(error, self.url, timeout_s, self.tls))) from None

    async def check_reachable(self) -> None:
        try:
            response = await self._stub.ServerLive(
                service_pb2.ServerLiveRequest(), timeout=CONTROL_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE and await asyncio.to_thread(_answers_http, self.url):
                raise ServerError(
                    f"{self.url} looks like Triton's HTTP port, not its gRPC port (8001 by default; "
                    "or profile over HTTP with -i http)"
                ) from None
            raise ServerError(str(rpc_failure(error, self.url, CONTROL_TIMEOUT_S, self.tls))) from None
        if not response.live:
            raise ServerError(f"Triton at {self.url} answers but reports it is not live")

    async def _model_ready(self, name: str, version: str) -> bool:
        response = await self._call("ModelReady", service_pb2.ModelReadyRequest(name=name, version=version))
        return bool(response.ready)

    async def _index(self, ready: bool = False) -> list[IndexEntry]:
        index = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest(ready=ready))
        return [IndexEntry(m.name, m.state, m.reason) for m in index.models]

    async def _model_metadata(
        self, name: str, version: str
    ) -> tuple[str, str, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        metadata = await self._call("ModelMetadata", service_pb2.ModelMetadataRequest(name=name, version=version))
        return metadata.name, metadata.platform, _specs(metadata.inputs), _specs(metadata.outputs)

    async def _config(self, name: str, version: str) -> model_config_pb2.ModelConfig:
        response = await self._call("ModelConfig", service_pb2.ModelConfigRequest(name=name, version=version))
        return response.config

    async def _unload(self, name: str) -> None:
        await self._call("RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest(model_name=name))

    async def _load(self, name: str, config_json: str) -> None:
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        request.parameters["config"].string_param = config_json
        await self._call("RepositoryModelLoad", request, LOAD_TIMEOUT_S)

    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        response = await self._call("ModelStatistics", service_pb2.ModelStatisticsRequest())
        assert isinstance(response, service_pb2.ModelStatisticsResponse)
        return response

    async def trace_settings(self) -> dict[str, list[str]]:
        response = await self._call("TraceSetting", service_pb2.TraceSettingRequest())
        return {key: list(value.value) for key, value in response.settings.items()}

    async def update_trace_settings(self, settings: Mapping[str, Sequence[str]]) -> None:
        request = service_pb2.TraceSettingRequest()
        for key, values in settings.items():
            request.settings[key].value.extend(values)
        await self._call("TraceSetting", request)

    async def register_system_shared_memory(self, name: str, key: str, size: int) -> None:
        request = service_pb2.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=0, byte_size=size)
        await self._call("SystemSharedMemoryRegister", request)

    async def unregister_system_shared_memory(self, name: str) -> None:
        await self._call("SystemSharedMemoryUnregister", service_pb2.SystemSharedMemoryUnregisterRequest(name=name))


def decode_message(message: service_pb2.ModelInferResponse) -> tuple[str, Outputs]:
    """A response's request id and its outputs by name."""
    return message.id, {
        output.name: Output(output.datatype, tuple(output.shape), content)
        for output, content in zip(message.outputs, message.raw_output_contents, strict=False)
    }


async def stream_one(
    stream: Stream, payload: bytes, clock: Callable[[], int], check: StreamCheck | None = None
) -> tuple[int, int]:
    """Send one request on a stream and read its responses up to the final flag.

    Returns the `clock()` time of the first response and the number of responses that carried outputs (the empty
    final response that the request asks for with `triton_enable_empty_final_response` is not counted). With
    `check`, every response with outputs is validated; a mismatch is raised once the final flag has come.
    """
    await stream.write(payload)
    first = 0
    count = 0
    mismatch: Mismatch | None = None
    while True:
        response = await stream.read()
        if response is grpc.aio.EOF:
            raise Unreachable("the server closed the stream")
        if response.error_message:
            raise Rejected(one_line(response.error_message))
        first = first or clock()
        result = response.infer_response
        if result.outputs:
            count += 1
            if check is not None and mismatch is None:
                try:
                    check(payload, result)
                except Mismatch as error:
                    mismatch = error
        final = result.parameters.get(FINAL_RESPONSE)
        if final is not None and final.bool_param:
            if mismatch is not None:
                raise mismatch
            return first, count


async def stream_counted(stream: Stream, payload: bytes, period: int, reached: Callable[[], None]) -> int:
    """Send one request on a stream and read its responses up to the final flag, calling `reached` at the
    `period`-th response (the empty final one counts, as perf_analyzer counts it); the number of responses."""
    await stream.write(payload)
    count = 0
    while True:
        response = await stream.read()
        if response is grpc.aio.EOF:
            raise Unreachable("the server closed the stream")
        _, final, failed = stream_reply(response)
        if failed:
            raise Rejected(one_line(response.error_message))
        count += 1
        if count == period:
            reached()
        if final:
            return count


def stream_reply(response: service_pb2.ModelStreamInferResponse) -> tuple[str, bool, bool]:
    """A streamed response's request id, whether it is its request's last, and whether it reports a failure."""
    result = response.infer_response
    final = result.parameters.get(FINAL_RESPONSE)
    return result.id, final is not None and final.bool_param, bool(response.error_message)


def stream_outputs(response: service_pb2.ModelStreamInferResponse) -> Outputs:
    """A streamed response's outputs by name."""
    return decode_message(response.infer_response)[1]


def request_id(payload: bytes) -> str:
    """The id a serialised request carries (a shared stream's own id, when it added one)."""
    return str(service_pb2.ModelInferRequest.FromString(payload).id)


class _Waiting:
    """One request sent on a shared stream: its responses so far, and the future its sender awaits."""

    __slots__ = ("first", "future", "mismatch", "payload", "responses")

    def __init__(self, future: asyncio.Future[tuple[int, int]], payload: bytes) -> None:
        self.future = future
        self.payload = payload
        self.first = 0
        self.responses = 0
        self.mismatch: Mismatch | None = None


class StreamMux:
    """Requests sent on schedule (open loop) over one gRPC stream: each gets a unique id, and a reader task hands
    every response, up to a request's final flag, to the sender waiting for that request.

    `send` returns what `stream_one` does: the `clock()` time of the first response and the number of responses
    that carried outputs. A broken stream fails every request waiting on it; the next `send` opens a new one.
    """

    def __init__(
        self, open_stream: Callable[[], Stream], clock: Callable[[], int], check: StreamCheck | None = None
    ) -> None:
        self._open_stream = open_stream
        self._clock = clock
        self._check = check
        self._stream: Stream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, _Waiting] = {}
        self._ids = itertools.count(1)
        self._writing = asyncio.Lock()  # gRPC allows one write in progress per call

    async def send(self, payload: bytes) -> tuple[int, int]:
        if self._stream is None:
            self._stream = self._open_stream()
            self._reader = asyncio.ensure_future(self._read(self._stream))
        stream = self._stream
        key = str(next(self._ids))
        waiting = _Waiting(asyncio.get_running_loop().create_future(), payload)
        self._waiting[key] = waiting
        try:
            async with self._writing:
                await stream.write(payload + service_pb2.ModelInferRequest(id=key).SerializeToString())
            return await waiting.future
        finally:
            del self._waiting[key]

    async def _read(self, stream: Stream) -> None:
        clock = self._clock
        check = self._check
        waiting = self._waiting
        try:
            while True:
                response = await stream.read()
                if response is grpc.aio.EOF:
                    raise Unreachable("the server closed the stream")
                result = response.infer_response
                request = waiting.get(result.id)
                if request is None or request.future.done():
                    continue
                if response.error_message:
                    request.future.set_exception(Rejected(one_line(response.error_message)))
                    continue
                request.first = request.first or clock()
                if result.outputs:
                    request.responses += 1
                    if check is not None and request.mismatch is None:
                        try:
                            check(request.payload, result)
                        except Mismatch as error:
                            request.mismatch = error
                final = result.parameters.get(FINAL_RESPONSE)
                if final is not None and final.bool_param:
                    if request.mismatch is not None:
                        request.future.set_exception(request.mismatch)
                    else:
                        request.future.set_result((request.first, request.responses))
        except (grpc.aio.AioRpcError, RequestFailed) as error:
            if self._stream is stream:
                self._stream = None
            for request in list(waiting.values()):
                if not request.future.done():
                    request.future.set_exception(error)

    async def close(self) -> None:
        """Cancel the stream and its reader; requests still waiting fail."""
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


def _specs(tensors: Sequence[service_pb2.ModelMetadataResponse.TensorMetadata]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in tensors)
