"""Security against the real server: TLS and mutual TLS for gRPC, Triton's restricted protocols, secret headers."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loadgen.server import EmbeddedServer
from tests.helpers import TEST_MODELS, only, serve
from tests.wire_proxy import wire_proxy

# Tests check behaviour, never timings: a generous stability bound keeps noisy machines from failing them.
FAST = ["-p", "300", "-s", "1000", "-r", "4"]
SLEEPER = ["-m", "sleeper", "--input-data", "zero", "--shape", "INPUT0:8"]
ROOT_FLAG = "--ssl-grpc-root-certifications-file"
KEY_FLAG = "--ssl-grpc-private-key-file"
CHAIN_FLAG = "--ssl-grpc-certificate-chain-file"

# `--grpc-restricted-protocol=PROTOCOLS:KEY=VALUE`; Triton then expects the header `triton-grpc-protocol-KEY: VALUE`.
KEY = "loadgen-key"
SECRET = "s3cret-value"
HEADER = f"triton-grpc-protocol-{KEY}"
WRONG = "not-the-key-42"
EVERY_PROTOCOL = "health,metadata,inference,shared-memory,model-config,model-repository,statistics,trace,logging"


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server and a client certificate it signed, an unrelated CA, and a file that is no PEM."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    junk: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None = None,
    hosts: Sequence[x509.GeneralName] = (),
) -> bytes:
    """A PEM certificate for `key`, signed by `issuer_key`; a CA certificate unless `usage` names a leaf's purpose."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(hosts)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    hosts = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    return Pki(
        ca=_write(folder / "ca.pem", _certificate("loadgen test CA", ca_key, "loadgen test CA", ca_key)),
        server_cert=_write(
            folder / "server.pem",
            _certificate(
                "localhost", server_key, "loadgen test CA", ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts
            ),
        ),
        server_key=_write_key(folder / "server.key", server_key),
        client_cert=_write(
            folder / "client.pem",
            _certificate("loadgen", client_key, "loadgen test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        ),
        client_key=_write_key(folder / "client.key", client_key),
        other_ca=_write(folder / "other-ca.pem", _certificate("another CA", other_key, "another CA", other_key)),
        junk=_write(folder / "junk.pem", b"not a PEM file\n"),
    )


def _tls_args(pki: Pki, mode: str) -> list[str]:
    return [
        f"{mode}=true",
        f"--grpc-server-cert={pki.server_cert}",
        f"--grpc-server-key={pki.server_key}",
        f"--grpc-root-cert={pki.ca}",
    ]


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The test repository's sleeper with TLS on the gRPC port (HTTP stays plain)."""
    yield from serve(
        TEST_MODELS,
        tmp_path_factory.mktemp("tls-server"),
        extra_args=_tls_args(pki, "--grpc-use-ssl"),
        **only("sleeper"),
    )


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The sleeper with mutual TLS: clients must show a certificate signed by the CA."""
    yield from serve(
        TEST_MODELS,
        tmp_path_factory.mktemp("mtls-server"),
        extra_args=_tls_args(pki, "--grpc-use-ssl-mutual"),
        **only("sleeper"),
    )


@pytest.fixture(scope="module", params=["inference", EVERY_PROTOCOL], ids=["inference", "every-protocol"])
def restricted_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    """The sleeper where the gRPC protocols named by the parameter need the header `HEADER: SECRET`."""
    yield from serve(
        TEST_MODELS,
        tmp_path_factory.mktemp("restricted-server"),
        extra_args=[f"--grpc-restricted-protocol={request.param}:{KEY}={SECRET}"],
        **only("sleeper"),
    )


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _error(process: subprocess.CompletedProcess[str], status: int = 99) -> str:
    """The one line of a failed run's stderr, after checking that it is all the run printed there."""
    assert process.returncode == status, process.stderr
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _inference_count(server: EmbeddedServer) -> int:
    """Inferences the server counted for `sleeper`, read over plain HTTP (only gRPC is secured here)."""
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/sleeper/stats", timeout=10) as response:
        stats = json.load(response)
    return sum(int(model["inference_count"]) for model in stats["model_stats"])


def _profile(
    server: EmbeddedServer, out: Path, *args: str | Path, url: str | None = None
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Profile `sleeper` at concurrency 2, expect success, and check the server counted every measured request."""
    before = _inference_count(server)
    process = _run("-u", url or server.grpc_url, *SLEEPER, "--concurrency-range", "2", *FAST, "--json", out, *args)
    assert process.returncode == 0, process.stderr
    result = json.loads(out.read_text())
    [level] = result["levels"]
    assert level["request_count"] > 0
    assert level["error_count"] == 0, level["errors"]
    assert _inference_count(server) - before >= level["request_count"]
    return result, process


# TLS


@pytest.mark.parametrize(
    ("host", "workers", "transport"),
    [("localhost", "1", "raw"), ("127.0.0.1", "2", "raw"), ("localhost", "1", "library")],
)
def test_tls_with_the_servers_ca(
    tls_server: EmbeddedServer, pki: Pki, tmp_path: Path, host: str, workers: str, transport: str
) -> None:
    url = f"{host}:{tls_server.grpc_port}"
    flags = ["--ssl-grpc-use-ssl", ROOT_FLAG, pki.ca, "--workers", workers, "--transport", transport]
    result, _ = _profile(tls_server, tmp_path / "result.json", *flags, url=url)
    settings = result["settings"]
    assert settings["ssl_grpc_use_ssl"] is True
    assert settings["ssl_grpc_root_certifications_file"] == str(pki.ca)


@pytest.mark.parametrize("trust", ["other-ca", "system-cas"])
def test_tls_with_a_ca_that_did_not_sign_the_server(tls_server: EmbeddedServer, pki: Pki, trust: str) -> None:
    roots = [ROOT_FLAG, str(pki.other_ca)] if trust == "other-ca" else []
    line = _error(_run("-u", tls_server.grpc_url, *SLEEPER, *FAST, "--ssl-grpc-use-ssl", *roots))
    assert f"TLS with Triton at {tls_server.grpc_url} failed" in line
    assert "certificate" in line.lower()


def test_plaintext_to_a_tls_server_says_to_turn_tls_on(tls_server: EmbeddedServer) -> None:
    line = _error(_run("-u", tls_server.grpc_url, *SLEEPER, *FAST))
    assert tls_server.grpc_url in line
    assert "--ssl-grpc-use-ssl" in line


@pytest.mark.parametrize("flag", [ROOT_FLAG, KEY_FLAG, CHAIN_FLAG])
def test_a_certificate_file_without_ssl_is_a_bad_option(pki: Pki, flag: str) -> None:
    line = _error(_run(*SLEEPER, flag, pki.ca), status=3)
    assert f"{flag} needs --ssl-grpc-use-ssl" in line


def test_a_missing_certificate_file_is_a_bad_option(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    line = _error(_run(*SLEEPER, "--ssl-grpc-use-ssl", ROOT_FLAG, missing), status=3)
    assert f"{ROOT_FLAG} {missing}: no such file" in line


@pytest.mark.parametrize("flag", [ROOT_FLAG, KEY_FLAG, CHAIN_FLAG])
def test_a_file_that_is_no_pem_is_a_bad_option(mtls_server: EmbeddedServer, pki: Pki, flag: str) -> None:
    files = {ROOT_FLAG: pki.ca, KEY_FLAG: pki.client_key, CHAIN_FLAG: pki.client_cert} | {flag: pki.junk}
    flags = [str(part) for pair in files.items() for part in pair]
    line = _error(_run("-u", mtls_server.grpc_url, *SLEEPER, *FAST, "--ssl-grpc-use-ssl", *flags), status=3)
    assert flag in line
    assert str(pki.junk) in line


# Mutual TLS


@pytest.mark.parametrize(("workers", "transport"), [("1", "raw"), ("2", "raw"), ("1", "library")])
def test_mutual_tls_with_a_client_certificate(
    mtls_server: EmbeddedServer, pki: Pki, tmp_path: Path, workers: str, transport: str
) -> None:
    client: list[str | Path] = [ROOT_FLAG, pki.ca, KEY_FLAG, pki.client_key, CHAIN_FLAG, pki.client_cert]
    _profile(
        mtls_server,
        tmp_path / "result.json",
        "--ssl-grpc-use-ssl",
        *client,
        "--workers",
        workers,
        "--transport",
        transport,
    )


def test_mutual_tls_without_a_client_certificate(mtls_server: EmbeddedServer, pki: Pki) -> None:
    line = _error(_run("-u", mtls_server.grpc_url, *SLEEPER, *FAST, "--ssl-grpc-use-ssl", ROOT_FLAG, pki.ca))
    assert f"TLS with Triton at {mtls_server.grpc_url} failed" in line


@pytest.mark.parametrize("given", [KEY_FLAG, CHAIN_FLAG])
def test_half_a_client_identity_is_a_bad_option(pki: Pki, given: str) -> None:
    path = pki.client_key if given == KEY_FLAG else pki.client_cert
    line = _error(_run(*SLEEPER, "--ssl-grpc-use-ssl", ROOT_FLAG, pki.ca, given, path), status=3)
    assert KEY_FLAG in line
    assert CHAIN_FLAG in line


# HTTPS (Triton serves plain HTTP: a TLS terminator the test starts stands in front of it, as in production)


def _terminator_context(pki: Pki, client_ca: Path | None = None) -> ssl.SSLContext:
    """The terminator's side: the server certificate, and with `client_ca`, client certificates required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


@pytest.mark.parametrize(("workers", "transport"), [("1", "raw"), ("2", "raw"), ("1", "library")])
def test_https_through_a_tls_terminator(
    test_server: EmbeddedServer, pki: Pki, tmp_path: Path, workers: str, transport: str
) -> None:
    with wire_proxy(test_server.http_url, _terminator_context(pki)) as (address, wire):
        flags = [
            "-i",
            "http",
            "--ssl-https-ca-certificates-file",
            pki.ca,
            "--workers",
            workers,
            "--transport",
            transport,
        ]
        result, _ = _profile(test_server, tmp_path / "result.json", *flags, url=f"https://{address}")
    assert wire.connections > 0 and b"POST /v2/models/sleeper/infer" in wire.upstream  # it went through TLS
    assert result["url"] == f"https://{address}"


def test_https_with_a_client_certificate_and_der_files(test_server: EmbeddedServer, pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    der_key = _write(
        tmp_path / "client.der.key",
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    der_cert = _write(tmp_path / "client.der", ssl.PEM_cert_to_DER_cert(pki.client_cert.read_text()))
    with wire_proxy(test_server.http_url, _terminator_context(pki, client_ca=pki.ca)) as (address, _):
        url = f"https://{address}"
        common = ["-i", "http", "--ssl-https-ca-certificates-file", pki.ca]
        pem = ["--ssl-https-client-certificate-file", pki.client_cert, "--ssl-https-private-key-file", pki.client_key]
        _profile(test_server, tmp_path / "pem.json", *common, *pem, url=url)
        der = [
            "--ssl-https-client-certificate-file", der_cert, "--ssl-https-client-certificate-type", "DER",
            "--ssl-https-private-key-file", der_key, "--ssl-https-private-key-type", "DER",
        ]  # fmt: skip
        _profile(test_server, tmp_path / "der.json", *common, *der, url=url)
        line = _error(_run("-i", "http", "-u", url, *SLEEPER, *FAST, *common))  # no client certificate
        assert address in line


def test_https_checks_the_server_unless_told_not_to(test_server: EmbeddedServer, pki: Pki, tmp_path: Path) -> None:
    with wire_proxy(test_server.http_url, _terminator_context(pki)) as (address, _):
        url = f"https://{address}"
        line = _error(_run("-i", "http", "-u", url, *SLEEPER, *FAST))  # the test CA is not among the system's
        assert "certificate" in line.lower() and address in line
        _profile(test_server, tmp_path / "result.json", "-i", "http", "--ssl-https-verify-peer", "0", url=url)


def test_https_options_need_an_https_url(pki: Pki) -> None:
    line = _error(_run("-i", "http", *SLEEPER, "--ssl-https-ca-certificates-file", pki.ca), status=3)
    assert "https://HOST:PORT" in line


# Restricted protocols and secret headers


@pytest.mark.parametrize(
    "headers",
    [[], ["-H", f"{KEY}: {SECRET}"], ["-H", f"{HEADER}: {WRONG}"]],
    ids=["no-header", "key-without-tritons-prefix", "wrong-value"],
)
def test_without_the_expected_header_permission_is_denied(
    restricted_server: EmbeddedServer, headers: list[str]
) -> None:
    process = _run("-u", restricted_server.grpc_url, *SLEEPER, *FAST, *headers)
    line = _error(process)
    assert f"permission denied by Triton at {restricted_server.grpc_url}" in line
    assert HEADER in line  # Triton names the header it expects
    assert "--input-data" not in line  # no hint about the data: the data is not what failed
    for value in (SECRET, WRONG):
        assert value not in process.stdout + process.stderr


@pytest.mark.parametrize(("workers", "transport"), [("1", "raw"), ("2", "raw"), ("1", "library")])
def test_the_expected_header_is_sent_and_never_shown(
    restricted_server: EmbeddedServer, tmp_path: Path, workers: str, transport: str
) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    header = f"Triton-GRPC-Protocol-Loadgen-Key: {SECRET}"  # names are case-insensitive; gRPC sends them lowercase
    result, process = _profile(
        restricted_server,
        outputs / "result.json",
        "-H",
        header,
        "-f",
        outputs / "latency.csv",
        "-v",
        "--workers",
        workers,
        "--transport",
        transport,
    )
    assert result["settings"]["header"] == {HEADER: "<redacted>"}
    assert process.stdout
    assert SECRET not in process.stdout + process.stderr
    written = sorted(outputs.iterdir())
    assert [p.name for p in written if p.suffix == ".csv"]
    for path in written:
        assert SECRET not in path.read_text(), path.name


# Over HTTP: `--http-restricted-api=APIS:KEY=VALUE`; Triton then expects the header `KEY: VALUE` as it is.
HTTP_KEY = "loadgen-http-key"


@pytest.fixture(scope="module")
def http_restricted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The sleeper where HTTP inference needs the header `HTTP_KEY: SECRET`."""
    yield from serve(
        TEST_MODELS,
        tmp_path_factory.mktemp("http-restricted-server"),
        extra_args=[f"--http-restricted-api=inference:{HTTP_KEY}={SECRET}"],
        **only("sleeper"),
    )


def test_over_http_without_the_expected_header_permission_is_denied(http_restricted_server: EmbeddedServer) -> None:
    url = http_restricted_server.http_url
    process = _run("-i", "http", "-u", url, *SLEEPER, *FAST, "-H", f"{HTTP_KEY}: {WRONG}")
    line = _error(process)
    assert f"permission denied by Triton at {url}" in line and HTTP_KEY in line
    assert "--input-data" not in line
    assert WRONG not in process.stdout + process.stderr


def test_over_http_the_expected_header_is_sent_and_never_shown(
    http_restricted_server: EmbeddedServer, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    result, process = _profile(
        http_restricted_server, out, "-i", "http", "-H", f"{HTTP_KEY}: {SECRET}", url=http_restricted_server.http_url
    )
    assert result["settings"]["header"] == {HTTP_KEY: "<redacted>"}
    assert SECRET not in process.stdout + process.stderr + out.read_text()


def test_a_malformed_header_is_not_echoed() -> None:
    process = _run(*SLEEPER, "-H", SECRET)
    line = _error(process, status=3)
    assert "-H" in line
    assert SECRET not in process.stdout + process.stderr
