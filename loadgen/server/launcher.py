"""The embedded server: the real `tritonserver` 2.51 shipped in the nvidia-pytriton wheel, launched locally."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from loadgen._blas_env import without_blas_limits
from loadgen.errors import LoadgenError

PR_SET_PDEATHSIG = 1  # Linux prctl option
LOOPBACK = "127.0.0.1"
METRICS_INTERVAL_MS = 250
READY_TIMEOUT_S = 120.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 30.0
SHM_DIR = "/dev/shm"


class ServerStartError(LoadgenError):
    """The embedded server could not be found or did not become ready."""


class ServerExitedError(ServerStartError):
    """The embedded server exited while starting."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _taken(host: str, port: int) -> bool:
    """True when something already listens on the port (binding it as the server would fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _group_alive(group: int) -> bool:
    """Whether a process of the group is still running (zombies, already dead, do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # state, then ppid, then pgrp
            return True
    return False


def _wait_for_group(group: int, timeout_s: float = 5.0) -> None:
    """Wait until the processes of a group killed with SIGKILL are gone."""
    deadline = time.monotonic() + timeout_s
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the process that launched it dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _check_numpy() -> None:
    """The Python backend's stub (nvidia-pytriton 0.7) runs its models on this environment's numpy, and needs numpy 1:
    with numpy 2 every model fails with errors that do not say why, so the server is not started."""
    try:
        installed = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is None or int(installed.split(".")[0]) >= 2:
        found = f"numpy {installed} is installed" if installed else "numpy is not installed"
        raise ServerStartError(
            f"{found}, but the embedded Triton server's Python backend (nvidia-pytriton 0.7) needs numpy 1: "
            "pip install 'numpy<2'"
        )


def _pytriton_root() -> tuple[Path, Path]:
    """The wheel's `pytriton/tritonserver` directory and its bundled shared libraries; the environment checked."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("the embedded Triton server needs the 'server' extra: pip install 'loadgen[server]'")
    _check_numpy()
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


@dataclass
class EmbeddedServer:
    """A `tritonserver` process serving a model repository on local ports; use it as a context manager.

    Its ports (the model-control API among them) listen on `host`, loopback unless widened on purpose
    (`host="0.0.0.0"` lets anyone who reaches this machine load and unload models).
    """

    model_repository: Path
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    explicit_model_control: bool = False
    host: str = LOOPBACK
    load_models: Sequence[str] = ("*",)
    extra_args: Sequence[str] = ()
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)

    @property
    def _reachable_host(self) -> str:
        """Where clients on this machine find the server."""
        return "localhost" if self.host in ("0.0.0.0", "::", "", LOOPBACK) else self.host

    @property
    def process_group(self) -> int | None:
        """The process group of the running server and its model stubs (its leader's id); None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def grpc_url(self) -> str:
        return f"{self._reachable_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self._reachable_host}:{self.http_port}"

    def url(self, protocol: str = "grpc") -> str:
        """The endpoint for loadgen's `-i grpc` or `-i http`."""
        return self.http_url if protocol == "http" else self.grpc_url

    @property
    def metrics_url(self) -> str:
        return f"{self._reachable_host}:{self.metrics_port}"

    def _backends(self, root: Path, workdir: Path) -> Path:
        """A backend directory holding the Python backend and the stub for this interpreter."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise ServerStartError(f"nvidia-pytriton has no Python backend stub for Python {version}")
        python = workdir / "backends" / "python"
        python.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            (python / name).symlink_to(root / "backends" / "python" / name)
        shutil.copy2(stub, python / "triton_python_backend_stub")
        return python.parent

    def _environment(self, libs: Path) -> dict[str, str]:
        env = without_blas_limits(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
        # The stub finds numpy, Pillow and the rest through the `python3` first on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self) -> EmbeddedServer:
        """Launch the server and wait until it is ready.

        Ports left at 0 are picked free; if the server then exits at start-up (another process took a port
        in between), it is started again on other free ports, up to `START_ATTEMPTS` times.
        """
        root, libs = _pytriton_root()
        repository = Path(self.model_repository).resolve()
        if not repository.is_dir():
            raise ServerStartError(f"model repository {self.model_repository} is not a directory")
        chosen = (self.grpc_port, self.http_port, self.metrics_port)
        for name, port in zip(("gRPC", "HTTP", "metrics"), chosen, strict=True):
            if port and _taken(self.host, port):
                raise ServerStartError(f"the {name} port {port} is taken (another server listens on it): pick another")
        self._workdir = Path(tempfile.mkdtemp(prefix="loadgen-server-"))
        try:
            return self._start_in(self._workdir, root, libs, repository, chosen)
        except BaseException:  # a start that failed, or was interrupted (Ctrl-C): nothing of it is left behind
            self.stop()
            raise

    def _start_in(
        self, workdir: Path, root: Path, libs: Path, repository: Path, chosen: tuple[int, int, int]
    ) -> EmbeddedServer:
        if self.log_path is None:
            self.log_path = workdir / "tritonserver.log"
        backends = self._backends(root, workdir)
        for attempt in range(1, START_ATTEMPTS + 1):
            self.grpc_port, self.http_port, self.metrics_port = (port or free_port() for port in chosen)
            self._launch(root, libs, repository, backends)
            try:
                self._wait_ready()
                return self
            except ServerExitedError:
                self._process = None
                if attempt == START_ATTEMPTS or all(chosen):
                    raise
        raise AssertionError("unreachable")

    def _launch(self, root: Path, libs: Path, repository: Path, backends: Path) -> None:
        command = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--grpc-address={self.host}",
            f"--http-address={self.host}",
            f"--metrics-address={self.host}",
            # the host's CPU figures refresh this often (Triton's default, 2000 ms, is longer than short windows)
            f"--metrics-interval-ms={METRICS_INTERVAL_MS}",
        ]
        if self.explicit_model_control:
            command += ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.load_models)]
        # The Python backend's shared-memory regions get this server's own prefix, so that `stop` can remove what
        # a killed server leaves in /dev/shm.
        command.append(f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}")
        command += list(self.extra_args)
        assert self.log_path is not None
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(libs),
                start_new_session=True,  # its own process group: `stop` ends the model stubs with it
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://{self._reachable_host}:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerExitedError(
                    f"tritonserver exited with status {self._process.returncode}: {self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200 and self._process.poll() is None:  # ready, and it is ours that answers
                    return
            time.sleep(0.2)
        raise ServerStartError(f"tritonserver not ready after {READY_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server logged."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period), whatever is left of its process group
        (model stubs orphaned by a server killed with SIGKILL), and remove its work files: all of them, unless the
        server had exited by itself, whose log (in them, unless it was given a path) is kept to be read."""
        process, self._process = self._process, None
        exited = process is not None and process.poll() is not None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            _wait_for_group(process.pid)
        if self._workdir is not None:
            for region in Path(SHM_DIR).glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)  # left by a server (or its model stubs) that was killed
            keep_log = exited and self.log_path is not None and self._workdir in self.log_path.parents
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
            if not keep_log:
                shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def _shm_prefix(self) -> str:
        assert self._workdir is not None
        return f"{self._workdir.name}_"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
