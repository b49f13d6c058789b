"""The gRPC connection to Triton: model discovery, statistics, and pre-serialised inference calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from loadgen.errors import OptionError, ServerError

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CONTROL_TIMEOUT_S = 10.0
# Triton accepts large tensors; gRPC's 4 MB default would refuse big images.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


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


def _one_line(text: str) -> str:
    """The first line of a server message (the Python backend appends a stack after a blank line)."""
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def describe_rpc_error(error: grpc.RpcError, url: str) -> str:
    """A one-line description of a failed gRPC call."""
    code = error.code()
    details = _one_line(error.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach Triton at {url}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"Triton at {url} did not answer within {CONTROL_TIMEOUT_S:.0f} s"
    return f"{code.name}: {details}"


class Connection:
    """One gRPC channel to a Triton server; open it inside the event loop that uses it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        # Identity (de)serialisers: requests are serialised once before the run, responses stay bytes.
        self.infer = self._channel.unary_unary(INFER_METHOD)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: object) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise ServerError(describe_rpc_error(error, self.url)) from None

    async def check_ready(self) -> None:
        """Fail with a clear message unless the server answers and is ready."""
        response = await self._call("ServerReady", service_pb2.ServerReadyRequest())
        if not response.ready:
            raise ServerError(f"Triton at {self.url} is up but not ready")

    async def ready_models(self) -> list[str]:
        """Names of the models the server has loaded and ready."""
        index = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest(ready=True))
        return sorted({m.name for m in index.models})

    async def model_config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        """A model's configuration; an unknown model lists the ones the server has."""
        try:
            response = await self._stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=name, version=version), timeout=CONTROL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise await self._model_error(error, name, version) from None
        return response.config

    async def model_info(self, name: str, version: str = "") -> ModelInfo:
        """Metadata and config of one model."""
        try:
            metadata = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=name, version=version), timeout=CONTROL_TIMEOUT_S
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
        if "unknown model" in details or "not found" in details:
            known = ", ".join(await self.ready_models()) or "none"
            shown = name + (f" version {version}" if version else "")
            return OptionError(f"model {shown!r} is not ready on {self.url}; ready models: {known}")
        return ServerError(describe_rpc_error(error, self.url))

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

    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        """Cumulative inference statistics of every model on the server."""
        response = await self._call("ModelStatistics", service_pb2.ModelStatisticsRequest())
        assert isinstance(response, service_pb2.ModelStatisticsResponse)
        return response


def _specs(tensors: Sequence[service_pb2.ModelMetadataResponse.TensorMetadata]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in tensors)
