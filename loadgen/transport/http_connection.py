"""Triton over HTTP: tritonclient's HTTP client for control calls and request bodies (binary tensor extension);
the run posts those bodies, built once, on one aiohttp session."""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import aiohttp
import numpy as np
from aiohttp.http_exceptions import LineTooLong
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.http.aio import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import (
    InferenceServerException,
    deserialize_bytes_tensor,
    serialize_byte_tensor,
    triton_to_np_dtype,
)

from loadgen.errors import ServerError
from loadgen.transport.common import (
    CONTROL_TIMEOUT_S,
    ITEM_BYTES,
    LOAD_TIMEOUT_S,
    ClientTimes,
    Connection,
    IndexEntry,
    ModelInfo,
    Output,
    Outputs,
    RequestLayout,
    Sample,
    Tensor,
    TensorSpec,
    Wire,
    one_line,
    within,
)
from loadgen.transport.errors import (
    PermissionDenied,
    Rejected,
    RequestFailed,
    Unreachable,
    clipped,
    permission_denied,
    timed_out,
)
from loadgen.transport.http1 import MAX_HEADER_LINE_BYTES, over, too_large
from loadgen.transport.options import ConnectionOptions

HEADER_LENGTH = "Inference-Header-Content-Length"
# Request headers start with the parameters, so that a sequence's parameters can be put in front of the others.
_PARAMETERS = b'{"parameters":{'
T = TypeVar("T")
WELL_FORMED_KEPT = 64  # JSON headers known well-formed, by their bytes (with the binary size after them)
WELL_FORMED_BYTES = 4096  # of at most this size
_WELL_FORMED: dict[bytes, int] = {}

LARGE_BODY_BYTES = 1 << 20  # aiohttp streams a body this large from a file object rather than bytes


class HttpRequest(NamedTuple):
    """One pre-built inference request: the model's infer path, the body (JSON header then binary tensors), and
    its headers (the JSON header's length)."""

    path: str
    body: bytes
    headers: dict[str, str]


class HttpResponse(NamedTuple):
    """One raw inference response: its body and the length of its JSON header (None: all JSON)."""

    body: bytes
    header_length: int | None


def _array(tensor: Tensor) -> np.ndarray:
    """A tensor's content as the numpy array tritonclient's InferInput takes."""
    if tensor.datatype == "BYTES":
        values = deserialize_bytes_tensor(tensor.content) if tensor.content else np.array([], dtype=np.object_)
        return values.reshape(tensor.shape)
    return np.frombuffer(tensor.content, dtype=triton_to_np_dtype(tensor.datatype)).reshape(tensor.shape)


def _raw(result: Any, name: str, datatype: str) -> bytes:
    array = result.as_numpy(name)
    if datatype == "BYTES":
        return serialize_byte_tensor(array).item() if array.size else b""
    return bytes(np.ascontiguousarray(array).tobytes())


class HttpWire(Wire):
    """Requests as tritonclient builds them: a JSON header, then the tensors' bytes (binary tensor extension)."""

    def encode(self, model: ModelInfo, sample: Sample, layout: RequestLayout) -> HttpRequest:
        """The request as tritonclient builds it (binary tensors after a JSON header), its parameters put first."""
        inputs = []
        for index, tensor in enumerate(sample):
            item = InferInput(tensor.name, list(tensor.shape), tensor.datatype)
            if layout.inputs_shm:
                place = layout.inputs_shm[index]
                item.set_shared_memory(place.region, place.size, place.offset)
            else:
                item.set_data_from_numpy(_array(tensor), binary_data=layout.binary_inputs)
            inputs.append(item)
        outputs = [InferRequestedOutput(name, binary_data=layout.binary_outputs) for name in layout.outputs]
        for name, place in layout.outputs_shm:
            output = InferRequestedOutput(name)
            output.set_shared_memory(place.region, place.size, place.offset)
            outputs.append(output)
        body, length = InferenceServerClient.generate_request_body(
            inputs, outputs=outputs or None, request_id=layout.request_id
        )
        header = json.loads(body[:length] if length else body)
        # never empty (see with_flags): it says at least in which format the outputs come back
        parameters = (
            header.pop("parameters", {}) | dict(layout.parameters) | {"binary_data_output": layout.binary_outputs}
        )
        rebuilt = json.dumps({"parameters": parameters, **header}, separators=(",", ":")).encode()
        binary = body[length:] if length else b""
        path = f"/v2/models/{quote(model.name)}" + (f"/versions/{model.version}" if model.version else "") + "/infer"
        return HttpRequest(path, rebuilt + binary, {HEADER_LENGTH: str(len(rebuilt))} if binary else {})

    def sequence_flags(self, sequence_id: int, start: bool = False, end: bool = False) -> bytes:
        """The sequence parameters as JSON members, to put first in a request's (never empty) parameters."""
        members = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}
        return json.dumps(members, separators=(",", ":")).encode()[1:-1] + b","

    def with_flags(self, payload: HttpRequest, flags: bytes) -> HttpRequest:
        at = len(_PARAMETERS)
        body = payload.body
        headers = {HEADER_LENGTH: str(int(payload.headers[HEADER_LENGTH]) + len(flags))} if payload.headers else {}
        return HttpRequest(payload.path, body[:at] + flags + body[at:], headers)

    def decode_request(self, payload: HttpRequest) -> tuple[int, Sample]:
        length = int(payload.headers.get(HEADER_LENGTH, len(payload.body)))
        header = json.loads(payload.body[:length])
        binary = payload.body[length:]
        inputs = []
        offset = 0
        for entry in header.get("inputs", []):
            size = entry.get("parameters", {}).get("binary_data_size")  # none for an input in shared memory
            inputs.append(
                Tensor(
                    entry["name"],
                    entry["datatype"],
                    tuple(entry["shape"]),
                    binary[offset : offset + size] if size is not None else b"",
                )
            )
            offset += size or 0
        return int(header.get("parameters", {}).get("sequence_id", 0)), tuple(inputs)

    def decode_response(self, response: HttpResponse) -> tuple[str, Outputs]:
        """A response's request id and the outputs it carries (those written to shared memory are not in it)."""
        result = InferenceServerClient.parse_response_body(response.body, header_length=response.header_length)
        document = result.get_response()
        return str(document.get("id", "")), {
            output["name"]: Output(
                output["datatype"], tuple(output["shape"]), _raw(result, output["name"], output["datatype"])
            )
            for output in document.get("outputs", [])
            if "data" in output or "binary_data_size" in output.get("parameters", {})
        }


class HttpConnection(Connection):
    """tritonclient's asyncio HTTP client for control calls, and an aiohttp session that posts pre-built bodies."""

    protocol = "http"
    wire = HttpWire()

    def __init__(self, options: ConnectionOptions) -> None:
        self.url = options.url
        self._headers = dict(options.headers) or None
        self.request_timeout_s = options.request_timeout_s or options.stall_timeout_s
        self.times = ClientTimes()
        self.max_response_bytes = options.max_response_bytes
        self.tls = options.https.context() if options.https is not None else None
        self._client = InferenceServerClient(
            options.url, conn_timeout=LOAD_TIMEOUT_S, ssl=self.tls is not None, ssl_context=self.tls
        )
        self._session = aiohttp.ClientSession(
            base_url=f"{'https' if self.tls else 'http'}://{options.url}",
            # uncompressed responses, as perf_analyzer gets them: the server spends no time compressing
            headers={"Accept-Encoding": "identity", **(self._headers or {})},
            # one connection per request in flight, like perf_analyzer
            connector=aiohttp.TCPConnector(limit=0, ssl=self.tls if self.tls is not None else True),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
            auto_decompress=False,
            # the raw path's limit on a header line (status line, each header); aiohttp's own on their number
            max_line_size=MAX_HEADER_LINE_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
        )
        self.infer = self._infer

    async def close(self) -> None:
        await self._session.close()
        await self._client.close()

    async def _infer(self, request: HttpRequest) -> HttpResponse:
        try:
            body = request.body  # aiohttp warns of sending a large body as bytes (it would write it in one go)
            data = body if len(body) < LARGE_BODY_BYTES else io.BytesIO(body)
            async with self._session.post(request.path, data=data, headers=request.headers) as response:
                start = time.perf_counter_ns()  # aiohttp sends out of sight: what is seen is reading the body
                declared = response.content_length
                if declared is not None and declared > self.max_response_bytes:
                    raise RequestFailed(f"Triton at {self.url} sent {too_large(self.max_response_bytes)}")
                if declared is None:  # chunked, or until the connection closes: read up to the limit
                    body = await self._bounded(response.content)
                else:  # the parser stops at Content-Length
                    body = await response.read()
                times = self.times
                times.recv_ns += time.perf_counter_ns() - start
                times.calls += 1
                if response.status != 200:
                    raise _failure(response.status, body, self.url)
                length = response.headers.get(HEADER_LENGTH)
                return checked(body, int(length) if length and length.isdigit() else None, self.url)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:  # payload: closed mid-response
            raise Unreachable(f"cannot reach Triton at {self.url}: {error}") from None
        except asyncio.TimeoutError:
            assert self.request_timeout_s is not None
            raise timed_out(self.request_timeout_s) from None
        except aiohttp.ClientError as error:  # a response aiohttp could not parse (ClientResponseError and the rest)
            if _caused_by(error, LineTooLong):
                raise RequestFailed(f"Triton at {self.url} sent {over('header line', MAX_HEADER_LINE_BYTES)}") from None
            raise RequestFailed(f"malformed response from Triton at {self.url}: {one_line(str(error))}") from None

    async def _bounded(self, content: aiohttp.StreamReader) -> bytes:
        """A body of no stated length, read as it comes; past --max-response-bytes the request fails (the
        connection, left unread, is closed)."""
        chunks = []
        received = 0
        while chunk := await content.readany():
            received += len(chunk)
            if received > self.max_response_bytes:
                raise RequestFailed(f"Triton at {self.url} sent {too_large(self.max_response_bytes)}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _call(self, call: Callable[[], Awaitable[T]], timeout_s: float | None = CONTROL_TIMEOUT_S) -> T:
        """A control call, its failure turned into a one-line ServerError."""
        try:
            return await within(call(), timeout_s)
        except InferenceServerException as error:
            status = str(error.status() or "")
            message = one_line(error.message() or str(error))
            raise ServerError(_described(int(status) if status.isdigit() else 0, message, self.url)) from None
        except asyncio.TimeoutError:
            raise ServerError(f"timeout: no answer from Triton at {self.url} within {timeout_s} s") from None
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, OSError) and "name" in str(error.os_error).lower():
                raise ServerError(f"cannot resolve the host of {self.url}: {error.os_error}") from None
            raise ServerError(f"cannot reach Triton at {self.url}: {error.os_error}") from None
        except (aiohttp.ClientError, ValueError) as error:
            raise ServerError(
                f"{self.url} does not answer HTTP ({type(error).__name__}): it looks like Triton's gRPC port, not "
                "its HTTP port (8000 by default), or profile over gRPC with -i grpc"
            ) from None

    async def check_reachable(self) -> None:
        if await self._call(lambda: self._client.is_server_live(headers=self._headers)):
            return
        if not await self._is_triton():
            raise ServerError(
                f"{self.url} answers HTTP but is not a Triton server (no /v2 endpoint): check -u (Triton's HTTP port "
                "is 8000 by default)"
            )
        raise ServerError(f"Triton at {self.url} answers but reports it is not live")

    async def _is_triton(self) -> bool:
        """Whether the server answers Triton's server-metadata endpoint with its JSON."""
        try:
            async with self._session.get("/v2", timeout=aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_S)) as response:
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False
        return isinstance(document, dict) and "name" in document

    async def _model_ready(self, name: str, version: str) -> bool:
        return bool(await self._call(lambda: self._client.is_model_ready(name, version, headers=self._headers)))

    async def _index(self, ready: bool = False) -> list[IndexEntry]:
        index = await self._call(lambda: self._client.get_model_repository_index(headers=self._headers))
        entries = [IndexEntry(m["name"], m.get("state", ""), m.get("reason", "")) for m in index]
        return [e for e in entries if e.state == "READY"] if ready else entries

    async def _model_metadata(
        self, name: str, version: str
    ) -> tuple[str, str, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        metadata = await self._call(lambda: self._client.get_model_metadata(name, version, headers=self._headers))
        return metadata["name"], metadata.get("platform", ""), _specs(metadata["inputs"]), _specs(metadata["outputs"])

    async def _config(self, name: str, version: str) -> model_config_pb2.ModelConfig:
        config = await self._call(lambda: self._client.get_model_config(name, version, headers=self._headers))
        return json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)

    async def _unload(self, name: str) -> None:
        await self._call(lambda: self._client.unload_model(name, headers=self._headers))

    async def _load(self, name: str, config_json: str) -> None:
        await self._call(
            lambda: self._client.load_model(name, headers=self._headers, config=config_json), LOAD_TIMEOUT_S
        )

    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        document = await self._call(lambda: self._client.get_inference_statistics(headers=self._headers))
        return json_format.ParseDict(document, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def trace_settings(self) -> dict[str, list[str]]:
        document = await self._call(lambda: self._client.get_trace_settings(headers=self._headers))
        return {key: value if isinstance(value, list) else [value] for key, value in document.items()}

    async def update_trace_settings(self, settings: Mapping[str, Sequence[str]]) -> None:
        values = {key: list(value) if key == "trace_level" else value[0] for key, value in settings.items()}
        await self._call(lambda: self._client.update_trace_settings(settings=values, headers=self._headers))

    async def register_system_shared_memory(self, name: str, key: str, size: int) -> None:
        await self._call(lambda: self._client.register_system_shared_memory(name, key, size, headers=self._headers))

    async def unregister_system_shared_memory(self, name: str) -> None:
        await self._call(lambda: self._client.unregister_system_shared_memory(name, headers=self._headers))


def checked(body: bytes, header_length: int | None, url: str) -> HttpResponse:
    """A successful response, once its body is seen to be a well-formed inference response (see `malformed`)."""
    problem = malformed(body, header_length)
    if problem is not None:
        raise RequestFailed(f"Triton at {url} sent a malformed inference response: {problem}")
    return HttpResponse(body, header_length)


def malformed(body: bytes, header_length: int | None) -> str | None:
    """What is wrong with an inference response's body, or None: its JSON header (alone) parses, and its outputs'
    binary data match their shapes and add up to the rest of the body."""
    size = len(body)
    length = size if header_length is None else header_length
    if not 0 < length <= size:
        return f"a JSON header of {length} bytes in a body of {size}"
    text = bytes(body[:length]) if length < size or type(body) is not bytes else body  # bytearray: unhashable
    if _WELL_FORMED.get(text) == size - length:  # a header seen before (a run's responses repeat theirs): no parse
        return None
    problem = _header_problem(text, size - length)
    if problem is None and length <= WELL_FORMED_BYTES:
        if len(_WELL_FORMED) >= WELL_FORMED_KEPT:
            _WELL_FORMED.clear()
        _WELL_FORMED[text] = size - length
    return problem


def _header_problem(text: bytes, binary_size: int) -> str | None:
    """What is wrong with a response's JSON header, given the size of the binary data after it."""
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:
        return f"its JSON header does not parse ({one_line(str(error))})"
    outputs = header.get("outputs", []) if isinstance(header, dict) else None
    if not isinstance(outputs, list):
        return "its JSON header is no inference response"
    binary = 0
    for output in outputs:
        output_size = _binary_size(output)
        if isinstance(output_size, str):
            return output_size
        binary += output_size
    if binary != binary_size:
        return f"its outputs' binary data add up to {binary} bytes, not the {binary_size} after its JSON header"
    return None


def _binary_size(output: Any) -> int | str:
    """The size of one output's binary data (0: none), or what is wrong with its description."""
    if not isinstance(output, dict) or not isinstance(output.get("datatype"), str):
        return "an output without a datatype"
    shape = output.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return f"output {str(output.get('name'))[:64]!r} has no valid shape"
    parameters = output.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return 0
    item = ITEM_BYTES.get(output["datatype"])
    if type(size) is not int or size < 0 or (item is not None and size != math.prod(shape) * item):
        return f"output {str(output.get('name'))[:64]!r} of shape {shape} has {size} bytes of binary data"
    return size


def _failure(status: int, body: bytes, url: str) -> RequestFailed:
    """A failed request, described from the server's error message (whatever the body holds)."""
    described = _described(status, error_message(body), url)
    return PermissionDenied(described) if status in (401, 403) else Rejected(described)


def error_message(body: bytes) -> str:
    """A server's error message from an error's body, as one short line: Triton's `{"error": "..."}`, OpenAI's
    `{"error": {"message": "..."}}`, else the body as text."""
    try:
        return error_text(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):  # no JSON, another JSON, or too deep
        return clipped(one_line(body.decode(errors="replace")))


def error_text(error: object) -> str:
    """An `error` field's value as one short line (OpenAI's object: its message)."""
    if isinstance(error, dict) and "message" in error:
        error = error["message"]
    return clipped(one_line(str(error)))


def _described(status: int, message: str, url: str) -> str:
    """An HTTP error as loadgen reports it; a refused header says what to send (as over gRPC)."""
    if status in (401, 403):
        return permission_denied(url, message)
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is among the causes of `error` (aiohttp wraps its parser's errors twice)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__ or cause.__context__
    return cause is not None


def _specs(tensors: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in tensors)
