"""An OpenAI-compatible server as the sweep's connection: it lists its models (`GET /v1/models`) and answers the
liveness check; it has no Triton statistics, traces or shared memory (a run then has no server breakdown)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence

from tritonclient.grpc import model_config_pb2, service_pb2

from loadgen.errors import OptionError, ServerError
from loadgen.transport.common import (
    CONTROL_TIMEOUT_S,
    ClientTimes,
    Connection,
    IndexEntry,
    Payload,
    Response,
    TensorSpec,
)
from loadgen.transport.http1 import Http1Pool, MalformedResponse
from loadgen.transport.options import ConnectionOptions
from loadgen.transport.raw_http import header_lines

PLATFORM = "openai"  # the ModelInfo platform of a model behind an OpenAI-compatible endpoint
MAX_MODELS = 1000


class OpenAIServer(Connection):
    """An OpenAI-compatible server's control surface: its models, and whether it answers."""

    protocol = "http"

    def __init__(self, options: ConnectionOptions) -> None:
        self.url = options.url
        self.times = ClientTimes()  # it sends no inference call: the run's token endpoint times its own
        self.infer = self._no_infer
        parts = urllib.parse.urlsplit(f"//{options.url}")
        if parts.hostname is None or parts.port is None:
            raise OptionError(f"-u {options.url}: give the server as HOST:PORT")
        self._pool = Http1Pool(
            parts.hostname,
            parts.port,
            CONTROL_TIMEOUT_S,
            options.https.context() if options.https is not None else None,
            max_response_bytes=1 << 20,
        )
        fields = {"Host": options.url, "Accept": "application/json", **dict(options.headers)}
        if options.api_key is not None:
            fields["Authorization"] = f"Bearer {options.api_key}"
        self._models_request = f"GET /v1/models HTTP/1.1\r\n{header_lines(fields)}\r\n".encode()

    async def _models(self) -> list[str] | None:
        """The served models' ids (None: the server has no model list), or ServerError when it does not answer."""
        try:
            reply = await self._pool.request(self._models_request, CONTROL_TIMEOUT_S)
        except (OSError, TimeoutError, MalformedResponse) as error:
            raise ServerError(f"no OpenAI-compatible server answers at {self.url}: {error or 'no answer'}") from None
        if reply.status != 200:
            return None
        try:
            listed = json.loads(reply.body)["data"]
            return [str(entry["id"]) for entry in listed[:MAX_MODELS]]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    async def _no_infer(self, payload: Payload) -> Response:
        raise OptionError(f"{self.url} is an OpenAI-compatible server: its requests go through a token endpoint")

    async def close(self) -> None:
        self._pool.close()

    async def check_reachable(self) -> None:
        await self._models()

    async def _model_ready(self, name: str, version: str) -> bool:
        models = await self._models()
        return models is None or name in models

    async def _index(self, ready: bool = False) -> list[IndexEntry]:
        return [IndexEntry(name, "READY", "") for name in await self._models() or []]

    async def _model_metadata(
        self, name: str, version: str
    ) -> tuple[str, str, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        models = await self._models()
        if models is not None and name not in models:
            raise ServerError(f"unknown model {name!r}")
        return name, PLATFORM, (), ()

    async def _config(self, name: str, version: str) -> model_config_pb2.ModelConfig:
        return model_config_pb2.ModelConfig(name=name)

    def _none(self, what: str) -> OptionError:
        return OptionError(f"{what}: an OpenAI-compatible server at {self.url} has none (Triton's only)")

    async def _unload(self, name: str) -> None:
        raise self._none("loading models")

    async def _load(self, name: str, config_json: str) -> None:
        raise self._none("loading models")

    async def statistics(self) -> service_pb2.ModelStatisticsResponse:
        """None to read: the run's figures are the client's alone."""
        return service_pb2.ModelStatisticsResponse()

    async def trace_settings(self) -> dict[str, list[str]]:
        return {}

    async def update_trace_settings(self, settings: Mapping[str, Sequence[str]]) -> None:
        raise self._none("--trace-level and the like")

    async def register_system_shared_memory(self, name: str, key: str, size: int) -> None:
        raise self._none("--shared-memory")

    async def unregister_system_shared_memory(self, name: str) -> None:
        raise self._none("--shared-memory")
