"""What a connection needs to know: where the server is, how to talk to it, and what to send with every call."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loadgen.errors import OptionError
from loadgen.settings import Settings

Protocol = Literal["grpc", "http"]
Transport = Literal["raw", "library"]


@dataclass(frozen=True)
class Tls:
    """TLS material for gRPC, read once (PEM bytes; None: the system's roots, or no client identity)."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


@dataclass(frozen=True)
class ConnectionOptions:
    """A connection's options: the URL, the protocol, TLS, headers sent with every call, and the request timeout."""

    url: str
    protocol: Protocol = "grpc"
    transport: Transport = "raw"  # inference calls on loadgen's own HTTP/1.1 and HTTP/2, or on grpcio / aiohttp
    tls: Tls | None = None
    headers: tuple[tuple[str, str], ...] = ()
    request_timeout_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionOptions:
        """The options the settings give; the TLS files are read and checked here, before anything connects."""
        return cls(
            url=settings.address,
            protocol="http" if settings.protocol == "http" else "grpc",
            transport="library" if settings.transport == "library" else "raw",
            tls=_tls(settings) if settings.ssl_grpc_use_ssl else None,
            headers=tuple(settings.header.items()),
            request_timeout_s=settings.request_timeout / 1000 if settings.request_timeout else None,
        )


def load_identity(context: ssl.SSLContext, certificate_chain: bytes, private_key: bytes) -> None:
    """Load a client identity given as PEM bytes (Python's ssl reads it from files only: a private temporary
    directory holds them for the moment it takes)."""
    with tempfile.TemporaryDirectory(prefix="loadgen-tls-") as directory:
        chain, key = Path(directory, "chain.pem"), Path(directory, "key.pem")
        chain.write_bytes(certificate_chain)
        key.touch(mode=0o600)
        key.write_bytes(private_key)
        context.load_cert_chain(chain, key)


def _pem(path: str | None, flag: str, what: str, marker: bytes) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise OptionError(f"{flag} {path}: {'no such file' if not Path(path).exists() else error.strerror}") from None
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
