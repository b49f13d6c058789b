"""What a connection needs to know: where the server is, how to talk to it, and what to send with every call."""

from __future__ import annotations

import dataclasses
import math
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loadgen.errors import OptionError
from loadgen.plan import stall_timeout_s
from loadgen.settings import MAX_RESPONSE_BYTES, Settings, flag, split_url
from loadgen.transport.common import ITEM_BYTES, ModelInfo

Protocol = Literal["grpc", "http"]
# what a response carries besides its outputs' data: its id, the model's name and version, each output's name,
# datatype, shape and parameters (over HTTP, the JSON header before the binary tensors); HTTP headers are bounded
# apart from the body
RESPONSE_MARGIN_BYTES = 64 << 10
JSON_ELEMENT_BYTES = 32  # an element of a JSON output at most ("-1.7976931348623157e+308" and a separator)
Transport = Literal["raw", "library"]


@dataclass(frozen=True)
class Tls:
    """TLS material for gRPC, read once (PEM bytes; None: the system's roots, or no client identity)."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


@dataclass(frozen=True)
class Https:
    """HTTPS as perf_analyzer's --ssl-https-* options ask for it: which checks, and the material (PEM, read once)."""

    verify_peer: bool = True
    verify_host: bool = True
    ca_certificates: bytes | None = None
    client_certificate: bytes | None = None
    private_key: bytes | None = None

    def context(self) -> ssl.SSLContext:
        """The client's TLS context (built per connection: contexts do not cross to worker processes)."""
        cadata = self.ca_certificates.decode() if self.ca_certificates is not None else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
        context.check_hostname = self.verify_peer and self.verify_host
        if not self.verify_peer:
            context.verify_mode = ssl.CERT_NONE
        if self.client_certificate is not None and self.private_key is not None:
            load_identity(context, self.client_certificate, self.private_key)
        return context


@dataclass(frozen=True)
class ConnectionOptions:
    """A connection's options: the URL, the protocol, TLS, headers sent with every call, and the request timeout."""

    url: str
    protocol: Protocol = "grpc"
    transport: Transport = "raw"  # inference calls on loadgen's own HTTP/1.1 and HTTP/2, or on grpcio / aiohttp
    tls: Tls | None = None  # gRPC over TLS
    https: Https | None = None  # HTTP over TLS (-u https://HOST:PORT)
    headers: tuple[tuple[str, str], ...] = ()
    request_timeout_s: float | None = None  # --request-timeout: each request timed precisely
    api_key: str | None = None  # an OpenAI-compatible server's key
    openai: bool = False  # the server is an OpenAI-compatible one, not Triton
    stall_timeout_s: float | None = None  # without it: a request unanswered this long fails (checked coarsely)
    compression: str = "none"  # gRPC: how requests are compressed (none, gzip or deflate)
    max_response_bytes: int = MAX_RESPONSE_BYTES  # a larger response fails (see `for_model`; grpcio: its own)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionOptions:
        """The options the settings give; the TLS files are read and checked here, before anything connects."""
        return cls(
            url=settings.address,
            protocol="http" if settings.protocol == "http" else "grpc",
            transport="library" if settings.transport == "library" else "raw",
            tls=_tls(settings) if settings.ssl_grpc_use_ssl else None,
            https=_https(settings) if split_url(settings.url)[0] == "https" else None,
            headers=tuple(settings.header.items()),
            request_timeout_s=settings.request_timeout / 1000 if settings.request_timeout else None,
            stall_timeout_s=None if settings.request_timeout else stall_timeout_s(settings.measurement_interval),
            compression=settings.grpc_compression_algorithm,
            max_response_bytes=settings.max_response_bytes or MAX_RESPONSE_BYTES,
            api_key=settings.api_key,
            openai=settings.openai,
        )

    def for_model(self, info: ModelInfo, settings: Settings) -> ConnectionOptions:
        """The options for a load on one model: its largest response from `response_limit`."""
        return dataclasses.replace(self, max_response_bytes=response_limit(info, settings))


def response_limit(info: ModelInfo, settings: Settings) -> int:
    """The largest inference response to read: --max-response-bytes if given; else, when every output of the
    model has a fixed shape and datatype (no BYTES, no -1 dimension), their size for one request (times the batch
    size) and RESPONSE_MARGIN_BYTES for the rest of the message; else gRPC's limit on a message."""
    if settings.max_response_bytes is not None:
        return settings.max_response_bytes
    json_outputs = settings.protocol == "http" and settings.output_tensor_format == "json"
    batched = info.max_batch_size > 0
    data = 0
    for output in info.outputs:
        shape = output.shape[1:] if batched else output.shape
        item = ITEM_BYTES.get(output.datatype)
        if item is None or any(size < 0 for size in shape):
            return MAX_RESPONSE_BYTES
        data += math.prod(shape) * (JSON_ELEMENT_BYTES if json_outputs else item)
    return min(MAX_RESPONSE_BYTES, data * (settings.batch_size if batched else 1) + RESPONSE_MARGIN_BYTES)


def load_identity(context: ssl.SSLContext, certificate_chain: bytes, private_key: bytes) -> None:
    """Load a client identity given as PEM bytes (Python's ssl reads it from files only: a private temporary
    directory holds them for the moment it takes)."""
    with tempfile.TemporaryDirectory(prefix="loadgen-tls-") as directory:
        chain, key = Path(directory, "chain.pem"), Path(directory, "key.pem")
        chain.write_bytes(certificate_chain)
        key.touch(mode=0o600)
        key.write_bytes(private_key)
        context.load_cert_chain(chain, key)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise OptionError(f"{flag} {path}: {'no such file' if not Path(path).exists() else error.strerror}") from None


def _pem(path: str | None, flag: str, what: str, marker: bytes) -> bytes | None:
    if path is None:
        return None
    data = _read(path, flag)
    if marker not in data:
        raise OptionError(f"{flag} {path}: not a PEM {what}")
    return data


def _tls(settings: Settings) -> Tls:
    certificate = b"-----BEGIN CERTIFICATE-----"
    return Tls(
        _pem(
            settings.ssl_grpc_root_certifications_file,
            "--ssl-grpc-root-certifications-file",
            "certificate",
            certificate,
        ),
        _pem(settings.ssl_grpc_private_key_file, "--ssl-grpc-private-key-file", "private key", b"PRIVATE KEY-----"),
        _pem(settings.ssl_grpc_certificate_chain_file, "--ssl-grpc-certificate-chain-file", "certificate", certificate),
    )


def _der(path: str | None, flag: str, kind: str, what: str) -> bytes | None:
    """A certificate or key file in PEM, converting DER (Python's ssl reads PEM only)."""
    if path is None:
        return None
    if kind == "PEM":
        marker = b"-----BEGIN CERTIFICATE-----" if what == "certificate" else b"PRIVATE KEY-----"
        return _pem(path, flag, what, marker)
    data = _read(path, flag)
    if what == "certificate":
        return ssl.DER_cert_to_PEM_cert(data).encode()
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise OptionError(
            f"{flag} {path}: a DER private key needs the cryptography package (pip install cryptography), or "
            "convert it: openssl pkey -inform DER -in KEY -out key.pem"
        ) from None
    try:
        key = serialization.load_der_private_key(data, password=None)
    except ValueError:
        raise OptionError(f"{flag} {path}: not a DER private key") from None
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _https(settings: Settings) -> Https:
    return Https(
        verify_peer=settings.ssl_https_verify_peer == 1,
        verify_host=settings.ssl_https_verify_host != 0,
        ca_certificates=_pem(
            settings.ssl_https_ca_certificates_file,
            flag("ssl_https_ca_certificates_file"),
            "certificate",
            b"-----BEGIN CERTIFICATE-----",
        ),
        client_certificate=_der(
            settings.ssl_https_client_certificate_file,
            flag("ssl_https_client_certificate_file"),
            settings.ssl_https_client_certificate_type,
            "certificate",
        ),
        private_key=_der(
            settings.ssl_https_private_key_file,
            flag("ssl_https_private_key_file"),
            settings.ssl_https_private_key_type,
            "private key",
        ),
    )
