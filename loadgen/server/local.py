"""A Triton server on this machine: its metrics port, read from the command line of the process that listens on its
gRPC or HTTP port (Linux's /proc), so that a server started on other ports than 8000-8002 is scraped where it
serves its metrics."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
LISTEN = "0A"  # the state of a listening socket in /proc/net/tcp
TRITON_METRICS_PORT = 8002  # tritonserver's default --metrics-port


def is_local(address: str) -> bool:
    """Whether `HOST:PORT` names this machine by a loopback name or address."""
    host = urlsplit(f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets that listen on `port` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _owner(inodes: set[str]) -> int | None:
    """The process that holds one of these sockets (only processes this user may look into)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
    return None


def metrics_port_of(argv: list[str]) -> int | None:
    """tritonserver's --metrics-port in its command line (its default when not given); None for another program."""
    if not argv or not Path(argv[0]).name.startswith("tritonserver"):
        return None
    for index, arg in enumerate(argv):
        if arg.startswith("--metrics-port="):
            return int(arg.split("=", 1)[1])
        if arg == "--metrics-port" and index + 1 < len(argv):
            return int(argv[index + 1])
    return TRITON_METRICS_PORT


def local_metrics_port(port: int) -> int | None:
    """The metrics port of the tritonserver on this machine that listens on `port`; None when it cannot be told (no
    /proc, another user's process, not tritonserver, a server in a container)."""
    if not PROC.is_dir():
        return None
    inodes = _listening_inodes(port)
    pid = _owner(inodes) if inodes else None
    if pid is None:
        return None
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
        return metrics_port_of([arg for arg in argv if arg])
    except (OSError, ValueError):
        return None
