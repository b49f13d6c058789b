"""What both protocols share: the model's description, tensors on the wire, and the connection's interface."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias, TypeVar

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

from loadgen.errors import OptionError, ServerError
from loadgen.transport.errors import RequestFailed
from loadgen.values import MAX_RESPONSE_BYTES

CONTROL_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0
PROBE_MODEL = "loadgen-model-control-probe"  # a name no repository has: unloading it changes nothing
# bytes per element of each datatype of a fixed size (BYTES elements are length-prefixed: their size is free)
ITEM_BYTES = {
    **dict.fromkeys(("BOOL", "INT8", "UINT8"), 1),
    **dict.fromkeys(("INT16", "UINT16", "FP16", "BF16"), 2),
    **dict.fromkeys(("INT32", "UINT32", "FP32"), 4),
    **dict.fromkeys(("INT64", "UINT64", "FP64"), 8),
}

Payload: TypeAlias = Any
"""One pre-serialised request; only the connection that encoded it looks inside (bytes over gRPC)."""
Response: TypeAlias = Any
"""One raw response; only its connection's `decode_response` looks inside."""
InferCall = Callable[[Payload], Awaitable[Response]]
"""Sends one pre-serialised request and returns its raw response."""
T = TypeVar("T")


class Output(NamedTuple):
    """One output of a response: its datatype, shape and raw content (BYTES: length-prefixed elements)."""

    datatype: str
    shape: tuple[int, ...]
    content: bytes


Outputs = Mapping[str, Output]
"""A response's outputs by name."""
StreamCheck = Callable[[Payload, Any], None]
"""Checks one streamed response (a `ModelInferResponse`) against the request (payload) it answers."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as the model's metadata declares it (-1 marks a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Tensor:
    """One input (or expected output) of one request, in Triton's wire layout (raw, BYTES length-prefixed)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    content: bytes


Sample = tuple[Tensor, ...]
"""All the inputs of one request."""


@dataclass(frozen=True)
class Placement:
    """Where a tensor lives in a registered shared-memory region."""

    region: str
    offset: int
    size: int


@dataclass(frozen=True)
class RequestLayout:
    """How one request is encoded: outputs to ask for, its id, streaming, shared-memory placements, parameters and
    (HTTP) the tensors' format.

    `inputs` places each input of the sample (in order) instead of sending its content; `outputs` places each
    requested output; both are empty without shared memory.
    """

    outputs: tuple[str, ...] = ()
    request_id: str = ""
    streaming: bool = False
    inputs_shm: tuple[Placement, ...] = ()
    outputs_shm: tuple[tuple[str, Placement], ...] = ()
    parameters: tuple[tuple[str, str | int | bool], ...] = ()  # --request-parameter
    binary_inputs: bool = True  # HTTP: tensors as binary data after the JSON header, else JSON arrays
    binary_outputs: bool = True


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


@dataclass(frozen=True)
class IndexEntry:
    """A model in the server's repository index."""

    name: str
    state: str
    reason: str


async def within(
    awaitable: Awaitable[T], timeout_s: float | None, *, discard: Callable[[T], object] | None = None
) -> T:
    """`awaitable`'s result, or asyncio.TimeoutError after `timeout_s` (None: no limit), the call then cancelled.

    Not asyncio.wait_for: before Python 3.12 it swallows the caller's cancellation when the call ends at that moment
    (returning its result), and a cancelled loop went on. Here the caller's cancellation always propagates; the call
    is cancelled, and a result it produces anyway (a connection opened at that moment) goes to `discard`.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout_s)
    except asyncio.CancelledError:
        _abandon(task, discard)
        raise
    if not done:
        _abandon(task, discard)
        raise asyncio.TimeoutError
    return task.result()


def _abandon(task: asyncio.Future[T], discard: Callable[[T], object] | None) -> None:
    """Cancel a call nobody waits for any more; its result, whenever it comes, goes to `discard`."""

    def settle(task: asyncio.Future[T]) -> None:
        if not task.cancelled() and task.exception() is None and discard is not None:
            discard(task.result())

    task.cancel()
    if task.done():
        settle(task)
    else:
        task.add_done_callback(settle)


def one_line(text: str) -> str:
    """The first line of a server message (the Python backend appends a stack after a blank line)."""
    return text.strip().splitlines()[0].strip() if text.strip() else ""


class Wire(ABC):
    """How requests and responses look on one protocol: requests are encoded once before the run, responses
    decoded only to validate them (and, after the run, for the profile export)."""

    @abstractmethod
    def encode(self, model: ModelInfo, sample: Sample, layout: RequestLayout) -> Payload:
        """The request for one sample, serialised once before the run."""

    @abstractmethod
    def sequence_flags(self, sequence_id: int, start: bool = False, end: bool = False) -> bytes:
        """The serialised sequence parameters of one request, built once per sequence."""

    @abstractmethod
    def with_flags(self, payload: Payload, flags: bytes) -> Payload:
        """A request with sequence parameters added."""

    @abstractmethod
    def decode_response(self, response: Response) -> tuple[str, Outputs]:
        """A response's request id and outputs (shape and raw content) by name."""

    @abstractmethod
    def decode_request(self, payload: Payload) -> tuple[int, Sample]:
        """A request's sequence id (0: none) and its inputs as sent (no content for those in shared memory); read
        after the run, for the profile export."""


class ClientTimes:
    """What a connection's inference calls cost loadgen, summed since it opened (ns), perf_analyzer's Client Send
    and Client Recv:
    - send: framing each request and writing it to the socket (the raw transports time the socket writes
      themselves; HTTP/2 writes a loop turn's frames in one call, whose time counts once); the library gRPC path
      sees only the call being started (grpcio writes out of sight), the library HTTP path nothing (0);
    - receive: from each response's first byte until the caller has it (successful calls only).
    `sends` counts every request sent (failed ones too), `calls` the successful calls `recv_ns` sums over."""

    __slots__ = ("calls", "recv_ns", "send_ns", "sends")

    def __init__(self) -> None:
        self.send_ns = 0
        self.sends = 0
        self.recv_ns = 0
        self.calls = 0


class Connection(ABC):
    """One connection to a Triton server; open it inside the event loop that uses it.

    Subclasses speak one protocol: they send requests their `wire` encoded (`infer`) and answer the few control
    calls below; everything else (model discovery, readiness, errors that name what to do) is here.
    """

    protocol: str
    url: str
    wire: Wire
    infer: InferCall
    """Send one pre-serialised request; raises one of `errors`, which `failure` turns into a `RequestFailed`."""
    times: ClientTimes
    """The inference calls' send and receive times, summed (windows take their differences)."""
    errors: tuple[type[Exception], ...] = (RequestFailed,)
    """What `infer` and streams raise when a request fails: the library's own errors, mapped by `failure` only on
    the failure path, so that the success path stays a plain call."""
    max_response_bytes: int = MAX_RESPONSE_BYTES
    """A larger inference response fails before it is all read (grpcio's transport keeps its own limit)."""

    def limit_responses(self, max_bytes: int) -> None:
        """Fail inference responses over `max_bytes` from now on (a model's limit, once its metadata is known)."""
        self.max_response_bytes = max_bytes

    def failure(self, error: Exception) -> RequestFailed:
        """A failed request's error as loadgen's own kind (see `transport.errors`)."""
        assert isinstance(error, RequestFailed)
        return error

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def check_reachable(self) -> None:
        """Fail with a clear message unless the server answers on this protocol (and is live)."""

    @abstractmethod
    async def _model_ready(self, name: str, version: str) -> bool: ...

    @abstractmethod
    async def _index(self, ready: bool = False) -> list[IndexEntry]: ...

    @abstractmethod
    async def _model_metadata(
        self, name: str, version: str
    ) -> tuple[str, str, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Name, platform, inputs and outputs; raises ServerError with the server's message."""

    @abstractmethod
    async def _config(self, name: str, version: str) -> model_config_pb2.ModelConfig:
        """A model's configuration; raises ServerError with the server's message."""

    @abstractmethod
    async def _unload(self, name: str) -> None: ...

    @abstractmethod
    async def _load(self, name: str, config_json: str) -> None: ...

    @abstractmethod
    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        """Cumulative inference statistics of every model on the server."""

    @abstractmethod
    async def trace_settings(self) -> dict[str, list[str]]:
        """The server's global trace settings, each as a list of values."""

    @abstractmethod
    async def update_trace_settings(self, settings: Mapping[str, Sequence[str]]) -> None:
        """Change some of the server's global trace settings; raises ServerError with the server's message."""

    @abstractmethod
    async def register_system_shared_memory(self, name: str, key: str, size: int) -> None: ...

    @abstractmethod
    async def unregister_system_shared_memory(self, name: str) -> None: ...

    def open_stream(self) -> Any:
        raise OptionError(f"--streaming needs -i grpc: Triton streams responses over gRPC only, not {self.protocol}")

    async def ready_models(self) -> list[str]:
        """Names of the models the server has loaded and ready."""
        return sorted({entry.name for entry in await self._index(ready=True)})

    async def check_model_ready(self, name: str, version: str) -> None:
        """Fail unless the model is ready, saying what state the server reports it in."""
        if not await self._model_ready(name, version):
            states = [e.state + (f" ({e.reason})" if e.reason else "") for e in await self._index() if e.name == name]
            shown = name + (f" version {version}" if version else "")
            raise ServerError(
                f"model {shown!r} is in the repository at {self.url} but {states[0] if states else 'not ready'}"
            )

    async def model_info(self, name: str, version: str = "") -> ModelInfo:
        """Metadata and config of one model; an unknown model lists the ones the server has."""
        try:
            found, platform, inputs, outputs = await self._model_metadata(name, version)
        except ServerError as error:
            raise await self._model_error(str(error), name, version) from None
        config = await self.model_config(name, version)
        return ModelInfo(found, version, platform, config.max_batch_size, inputs, outputs, config)

    async def model_config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        """A model's configuration; an unknown model lists the ones the server has."""
        try:
            return await self._config(name, version)
        except ServerError as error:
            raise await self._model_error(str(error), name, version) from None

    async def _model_error(self, message: str, name: str, version: str) -> Exception:
        if "unknown model" not in message and "not found" not in message:
            return ServerError(message)
        shown = name + (f" version {version}" if version else "")
        states = [e for e in await self._index() if e.name == name and e.state != "READY"]
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
            await self._unload(PROBE_MODEL)
        except ServerError as error:
            if "not allowed" in str(error):
                raise ServerError(
                    f"Triton at {self.url} does not allow loading models: start it with "
                    "--model-control-mode=explicit --load-model=* (or: python -m loadgen serve "
                    "--model-control-mode explicit)"
                ) from None

    async def load_model(self, name: str, config: model_config_pb2.ModelConfig) -> None:
        """(Re)load a model with a configuration override, and wait until it is ready."""
        await self._load(name, json_format.MessageToJson(config, preserving_proto_field_name=True))
        await self.check_model_ready(name, "")
