"""HTTP inference calls over loadgen's own HTTP/1.1 (`--transport raw`): each request's bytes (request line,
headers, body) are built once per sample; control calls stay on tritonclient's HTTP client."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

from loadgen.errors import OptionError
from loadgen.transport.common import CONTROL_TIMEOUT_S, ModelInfo, RequestLayout, Sample
from loadgen.transport.errors import RequestFailed, Unreachable, timed_out
from loadgen.transport.http1 import Http1Pool, MalformedResponse
from loadgen.transport.http_connection import HttpConnection, HttpRequest, HttpResponse, HttpWire, _failure, checked
from loadgen.transport.options import ConnectionOptions


class RawHttpRequest(NamedTuple):
    """A request as it goes on the wire, and the parts it was built from (for sequence flags)."""

    data: bytes
    request: HttpRequest


class RawHttpWire(HttpWire):
    """Requests as whole HTTP/1.1 messages: tritonclient's body, behind a head built once."""

    def __init__(self, host: str, headers: Mapping[str, str]) -> None:
        self._fields = header_lines(
            {"Host": host, "Accept-Encoding": "identity", "Content-Type": "application/octet-stream", **headers}
        )

    def _message(self, request: HttpRequest) -> RawHttpRequest:
        extra = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
        head = f"POST {request.path} HTTP/1.1\r\n{self._fields}{extra}Content-Length: {len(request.body)}\r\n\r\n"
        return RawHttpRequest(head.encode() + request.body, request)

    def encode(self, model: ModelInfo, sample: Sample, layout: RequestLayout) -> RawHttpRequest:  # type: ignore[override]
        return self._message(super().encode(model, sample, layout))

    def with_flags(self, payload: RawHttpRequest, flags: bytes) -> RawHttpRequest:  # type: ignore[override]
        return self._message(super().with_flags(payload.request, flags))

    def decode_request(self, payload: RawHttpRequest) -> tuple[int, Sample]:  # type: ignore[override]
        return super().decode_request(payload.request)


def header_lines(fields: Mapping[str, str]) -> str:
    """Request headers as they go on the wire, each line ended; a line break in one (from -H) is refused."""
    if any("\r" in text or "\n" in text for field in fields.items() for text in field):
        raise OptionError("-H: a header name or value must not hold a line break")
    return "".join(f"{name}: {value}\r\n" for name, value in fields.items())


class RawHttpConnection(HttpConnection):
    """HTTP inference calls on loadgen's own keep-alive connections; everything else on tritonclient."""

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self.wire = RawHttpWire(options.url, dict(options.headers))
        parts = urllib.parse.urlsplit(f"//{options.url}")
        assert parts.hostname is not None and parts.port is not None
        self._pool = Http1Pool(
            parts.hostname,
            parts.port,
            CONTROL_TIMEOUT_S,
            self.tls,
            self.times,
            options.max_response_bytes,
            options.stall_timeout_s,
        )
        self._timeout_s = options.request_timeout_s  # timed per request; the stall guard is the pool's
        self.infer = self._raw_infer

    async def _raw_infer(self, request: RawHttpRequest) -> HttpResponse:
        try:
            status, body, header_length, _, _ = await self._pool.request(request.data, self._timeout_s)
        except TimeoutError:
            assert self.request_timeout_s is not None
            raise timed_out(self.request_timeout_s) from None
        except OSError as error:
            raise Unreachable(f"cannot reach Triton at {self.url}: {error}") from None
        except MalformedResponse as error:
            raise RequestFailed(f"Triton at {self.url} sent {error}") from None
        if status != 200:
            raise _failure(status, body, self.url)
        return checked(body, header_length, self.url)

    def limit_responses(self, max_bytes: int) -> None:
        super().limit_responses(max_bytes)
        self._pool.max_response_bytes = max_bytes
        for connection in self._pool.connections:
            connection.max_response_bytes = max_bytes

    async def close(self) -> None:
        self._pool.close()
        await super().close()
