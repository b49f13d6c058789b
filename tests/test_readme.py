"""The README's commands run as written after `make demo`: every `.venv/bin/loadgen` line, against a server the
test starts (only its ports are put in, and windows shortened)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.server import EmbeddedServer, free_port
from tests.helpers import FAST, ROOT, serve_process, stop_served

VENV_LOADGEN = ".venv/bin/loadgen"


def _commands() -> list[list[str]]:
    """The README's `.venv/bin/loadgen` lines, split as a shell would."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return [shlex.split(line.strip()) for line in lines if line.strip().startswith(VENV_LOADGEN + " ")]


def _in_checkout(arg: str) -> str:
    """A README path (`examples/...`, or a model's `MODEL=examples/...`) as a path in the checkout."""
    model, sep, path = arg.rpartition("=")
    return f"{model}{sep}{ROOT / path}"


def _loadgen() -> list[str]:
    """The venv's `loadgen` where `make` built it, else this interpreter's (a checkout tested another way)."""
    installed = ROOT / VENV_LOADGEN
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "loadgen"]


def test_the_readme_shows_the_commands_it_promises() -> None:
    commands = _commands()
    assert any(command[1] == "serve" for command in commands)
    assert sum(command[1] != "serve" for command in commands) >= 2


@pytest.mark.server
@pytest.mark.parametrize("serve", [c for c in _commands() if c[1] == "serve"], ids=lambda command: command[-1])
def test_each_readme_serve_command_starts_its_server(serve: list[str]) -> None:
    ports = [str(free_port()) for _ in range(3)]
    with serve_process(
        [*_loadgen(), *serve[1:], "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]],
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(2)]
        assert "Triton ready" in "".join(first), first
        stop_served(process, signal.SIGINT)


@pytest.mark.parametrize("index", range(len([c for c in _commands() if c[1] != "serve"])))
def test_each_readme_profile_command_runs_as_written(
    examples_server: EmbeddedServer, index: int, tmp_path: Path
) -> None:
    command = [c for c in _commands() if c[1] != "serve"][index]
    urls = {"localhost:8001": examples_server.grpc_url, "localhost:8000": examples_server.http_url}
    # the README runs from the checkout; here its outputs go to a folder of the test's own
    args = [_in_checkout(arg) if "examples/" in arg else urls.get(arg, arg) for arg in command[1:]]
    done = subprocess.run([*_loadgen(), *args, *FAST], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for flag, name in (("--json", "result.json"), ("-f", "result.csv")):
        if flag in args:
            assert (tmp_path / name).stat().st_size > 0
