"""A blocking liveness probe on a connection of its own, for a watchdog thread: it never shares a channel, a
connection pool or an event loop with the load, so it cannot queue behind it."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadgen.errors import ServerError
from loadgen.transport.options import ConnectionOptions


class Probe:
    """Asks the server whether it is live; `check` raises ServerError with the reason when it is not."""

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self._channel: grpc.Channel | None = None
        if options.protocol == "grpc":
            tls = options.tls
            self._channel = (
                grpc.insecure_channel(options.url)
                if tls is None
                else grpc.secure_channel(
                    options.url,
                    grpc.ssl_channel_credentials(tls.root_certificates, tls.private_key, tls.certificate_chain),
                )
            )
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def check(self, timeout_s: float) -> None:
        if self._channel is None:
            self._check_http(timeout_s)
            return
        try:
            response = self._stub.ServerLive(
                service_pb2.ServerLiveRequest(), timeout=timeout_s, metadata=self.options.headers or None
            )
        except grpc.RpcError as error:
            code = error.code()
            reason = "no answer" if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
            raise ServerError(f"{reason} within {timeout_s * 1000:.0f} ms") from None
        if not response.live:
            raise ServerError(f"Triton at {self.options.url} reports it is not live")

    def _check_http(self, timeout_s: float) -> None:
        https = self.options.https
        path = "/v1/models" if self.options.openai else "/v2/health/live"  # an OpenAI-compatible server lists models
        request = urllib.request.Request(
            f"{'https' if https else 'http'}://{self.options.url}{path}", headers=dict(self.options.headers)
        )
        try:
            context = https.context() if https is not None else None
            with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
                response.read()
        except urllib.error.HTTPError as error:
            if self.options.openai:  # it answered: it is there, whether or not it lists its models
                return
            raise ServerError(f"Triton at {self.options.url} reports it is not live (HTTP {error.code})") from None
        except (OSError, http.client.HTTPException) as error:
            raise ServerError(f"no answer within {timeout_s * 1000:.0f} ms: {error}") from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
