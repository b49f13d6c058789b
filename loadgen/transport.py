"""The gRPC connection to Triton: model discovery, statistics, and pre-serialised inference calls."""

from __future__ import annotations

import asyncio
import functools
import http.client
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from loadgen.errors import OptionError, ServerError
from loadgen.settings import Settings

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
Stream: TypeAlias = grpc.aio.StreamStreamCall
CONTROL_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0
_PROBE_MODEL = "loadgen-model-control-probe"  # a name no repository has: unloading it changes nothing
# Triton accepts large tensors; gRPC's 4 MB default would refuse big images.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class RequestFailed(Exception):
    """A request failed without a gRPC status (a validation mismatch, an HTTP error, an error in a stream)."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as the model's metadata declares it (-1 marks a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What loadgen needs to know of a model before it sends anything."""

    name: str
    version: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    config: model_config_pb2.ModelConfig

    @property
    def is_ensemble(self) -> bool:
        return self.platform == "ensemble"

    @property
    def is_decoupled(self) -> bool:
        """A decoupled model: it answers a request with any number of responses, over a stream only."""
        return self.config.model_transaction_policy.decoupled

    @property
    def is_sequence(self) -> bool:
        """A stateful model: its requests carry correlation IDs and start/end flags."""
        return self.config.HasField("sequence_batching")


def _one_line(text: str) -> str:
    """The first line of a server message (the Python backend appends a stack after a blank line)."""
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def describe_rpc_error(
    error: grpc.RpcError, url: str, timeout_s: float | None = CONTROL_TIMEOUT_S, tls: bool | None = None
) -> str:
    """A one-line description of a failed gRPC call, saying what to do where loadgen can tell."""
    code = error.code()
    details = _one_line(error.details() or "").removesuffix(": OK")
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and "protocol is restricted" not in lowered:
        if "dns resolution failed" in lowered:
            return f"cannot resolve the host of {url}: {details}"
        if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
            return f"TLS with Triton at {url} failed (check the --ssl-grpc-* files): {details}"
        if "socket closed" in lowered and tls is True:
            return (
                f"TLS with Triton at {url} failed: {details} (a server that requires client certificates closes "
                "connections without one: pass --ssl-grpc-private-key-file and --ssl-grpc-certificate-chain-file)"
            )
        if "socket closed" in lowered and tls is False:
            return f"cannot reach Triton at {url}: {details} (if the server uses TLS, pass --ssl-grpc-use-ssl)"
        return f"cannot reach Triton at {url}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"timeout: no answer within {timeout_s * 1000:.0f} ms" if timeout_s else f"DEADLINE_EXCEEDED: {details}"
    # Triton answers a missing or wrong --grpc-restricted-protocol header with UNAVAILABLE.
    if (
        code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        or "protocol is restricted" in lowered
    ):
        return f"permission denied by Triton at {url}: {details} (send the expected header with -H 'Name: value')"
    return f"{code.name}: {details}"


def _answers_http(url: str) -> bool:
    """True when `url` answers plain HTTP (someone passed Triton's HTTP port to the gRPC client)."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/live", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise OptionError(f"cannot read {path}: {error.strerror}") from None


def _channel(settings: Settings) -> grpc.aio.Channel:
    if not settings.ssl_grpc_use_ssl:
        return grpc.aio.insecure_channel(settings.url, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(settings.ssl_grpc_root_certifications_file),
        private_key=_read(settings.ssl_grpc_private_key_file),
        certificate_chain=_read(settings.ssl_grpc_certificate_chain_file),
    )
    return grpc.aio.secure_channel(settings.url, credentials, options=_CHANNEL_OPTIONS)


class Connection:
    """One gRPC channel to a Triton server; open it inside the event loop that uses it."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.url
        self.tls = settings.ssl_grpc_use_ssl
        self._channel = _channel(settings)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = tuple(settings.header.items()) or None
        self.request_timeout_s = settings.request_timeout / 1000 if settings.request_timeout else None
        # Identity (de)serialisers: requests are serialised once before the run, responses stay bytes.
        infer = self._channel.unary_unary(INFER_METHOD)
        self.infer: Callable[[bytes], Awaitable[bytes]] = (
            functools.partial(infer, timeout=self.request_timeout_s, metadata=self._metadata)
            if self._metadata or self.request_timeout_s
            else infer
        )

        self._stream = self._channel.stream_stream(
            STREAM_METHOD, response_deserializer=service_pb2.ModelStreamInferResponse.FromString
        )

    def open_stream(self) -> Stream:
        """A bidirectional inference stream (`ModelStreamInfer`); requests on it are pre-serialised too."""
        return self._stream(metadata=self._metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: object, timeout_s: float = CONTROL_TIMEOUT_S) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise ServerError(describe_rpc_error(error, self.url, timeout_s, self.tls)) from None

    async def check_reachable(self) -> None:
        """Fail with a clear message unless the server answers (and is live)."""
        try:
            response = await self._stub.ServerLive(
                service_pb2.ServerLiveRequest(), timeout=CONTROL_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE and await asyncio.to_thread(_answers_http, self.url):
                raise ServerError(
                    f"{self.url} looks like Triton's HTTP port, not its gRPC port (8001 by default)"
                ) from None
            raise ServerError(describe_rpc_error(error, self.url, tls=self.tls)) from None
        if not response.live:
            raise ServerError(f"Triton at {self.url} answers but reports it is not live")

    async def check_model_ready(self, name: str, version: str) -> None:
        """Fail unless the model is ready, saying what state the server reports it in."""
        response = await self._call("ModelReady", service_pb2.ModelReadyRequest(name=name, version=version))
        if not response.ready:
            index = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest())
            states = [f"{m.state}" + (f" ({m.reason})" if m.reason else "") for m in index.models if m.name == name]
            shown = name + (f" version {version}" if version else "")
            raise ServerError(
                f"model {shown!r} is in the repository at {self.url} but {states[0] if states else 'not ready'}"
            )

    async def check_live(self, timeout_s: float) -> None:
        """Fail unless the server answers its liveness check within `timeout_s`."""
        response = await self._call("ServerLive", service_pb2.ServerLiveRequest(), timeout_s)
        if not response.live:
            raise ServerError(f"Triton at {self.url} reports it is not live")

    async def ready_models(self) -> list[str]:
        """Names of the models the server has loaded and ready."""
        index = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest(ready=True))
        return sorted({m.name for m in index.models})

    async def model_config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        """A model's configuration; an unknown model lists the ones the server has."""
        try:
            response = await self._stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=name, version=version),
                timeout=CONTROL_TIMEOUT_S,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise await self._model_error(error, name, version) from None
        return response.config

    async def model_info(self, name: str, version: str = "") -> ModelInfo:
        """Metadata and config of one model."""
        try:
            metadata = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=name, version=version),
                timeout=CONTROL_TIMEOUT_S,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise await self._model_error(error, name, version) from None
        config = await self.model_config(name, version)
        return ModelInfo(
            name=metadata.name,
            version=version,
            platform=metadata.platform,
            max_batch_size=config.max_batch_size,
            inputs=_specs(metadata.inputs),
            outputs=_specs(metadata.outputs),
            config=config,
        )

    async def _model_error(self, error: grpc.aio.AioRpcError, name: str, version: str) -> Exception:
        details = error.details() or ""
        if "unknown model" not in details and "not found" not in details:
            return ServerError(describe_rpc_error(error, self.url, tls=self.tls))
        shown = name + (f" version {version}" if version else "")
        index = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest())
        states = [m for m in index.models if m.name == name and m.state != "READY"]
        if states:
            reason = f" ({states[0].reason})" if states[0].reason else ""
            return ServerError(f"model {shown!r} is in the repository at {self.url} but {states[0].state}{reason}")
        known = ", ".join(await self.ready_models()) or "none"
        return OptionError(f"model {shown!r} is not on {self.url}; ready models: {known}")

    async def choose_model(self) -> str:
        """The model to profile when none is named: the only ensemble, else the only model."""
        names = await self.ready_models()
        if len(names) == 1:
            return names[0]
        infos = [await self.model_info(name) for name in names]
        ensembles = [info.name for info in infos if info.is_ensemble]
        if len(ensembles) == 1:
            return ensembles[0]
        listed = ", ".join(names) or "none"
        raise OptionError(f"-m/--model-name is required: {self.url} has models {listed}")

    async def check_model_control(self) -> None:
        """Fail with how to fix it unless the server lets clients load and unload models (explicit mode)."""
        try:
            await self._stub.RepositoryModelUnload(
                service_pb2.RepositoryModelUnloadRequest(model_name=_PROBE_MODEL),
                timeout=CONTROL_TIMEOUT_S,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            if "not allowed" in (error.details() or ""):
                raise ServerError(
                    f"Triton at {self.url} does not allow loading models: start it with "
                    "--model-control-mode=explicit --load-model=* (or: python -m loadgen serve "
                    "--model-control-mode explicit)"
                ) from None

    async def load_model(self, name: str, config: model_config_pb2.ModelConfig) -> None:
        """(Re)load a model with a configuration override, and wait until it is ready."""
        override = json_format.MessageToJson(config, preserving_proto_field_name=True)
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        request.parameters["config"].string_param = override
        await self._call("RepositoryModelLoad", request, LOAD_TIMEOUT_S)
        await self.check_model_ready(name, "")

    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        """Cumulative inference statistics of every model on the server."""
        response = await self._call("ModelStatistics", service_pb2.ModelStatisticsRequest())
        assert isinstance(response, service_pb2.ModelStatisticsResponse)
        return response


async def stream_one(stream: Stream, payload: bytes, clock: Callable[[], int]) -> tuple[int, int]:
    """Send one request on a stream and read its responses up to the final flag.

    Returns the `clock()` time of the first response and the number of responses that carried outputs (the empty
    final response that the request asks for with `triton_enable_empty_final_response` is not counted).
    """
    await stream.write(payload)
    first = 0
    count = 0
    while True:
        response = await stream.read()
        if response is grpc.aio.EOF:
            raise RequestFailed("the server closed the stream")
        if response.error_message:
            raise RequestFailed(_one_line(response.error_message))
        first = first or clock()
        result = response.infer_response
        if result.outputs:
            count += 1
        final = result.parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            return first, count


def decode_response(response: bytes) -> tuple[str, dict[str, tuple[tuple[int, ...], bytes]]]:
    """A serialised `ModelInferResponse`'s request id and its outputs (shape and raw content) by name."""
    message = service_pb2.ModelInferResponse.FromString(response)
    return message.id, {
        output.name: (tuple(output.shape), content)
        for output, content in zip(message.outputs, message.raw_output_contents, strict=False)
    }


def _specs(tensors: Sequence[service_pb2.ModelMetadataResponse.TensorMetadata]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in tensors)
