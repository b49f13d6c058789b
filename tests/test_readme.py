"""The README's commands run as written after `make demo`: every `.venv/bin/loadgen` line, against a server the
test starts (only its ports are put in, and windows shortened)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen.server import EmbeddedServer, free_port
from tests.helpers import FAST, LLM_EXAMPLES, ROOT, serve, serve_process, stop_served

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


LLM_URLS = ("localhost:9001", "localhost:9000")  # the README's LLM pipeline is served on these


@pytest.fixture(scope="module")
def llm_examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The README's LLM-shaped example pipeline."""
    yield from serve(LLM_EXAMPLES, tmp_path_factory.mktemp("llm-examples"))


def _ports(command: list[str]) -> list[str]:
    """A serve command's arguments with free ports in place of its own (or added)."""
    args = list(command[1:])
    for flag in ("--grpc-port", "--http-port", "--metrics-port"):
        if flag in args:
            del args[args.index(flag) : args.index(flag) + 2]
        args += [flag, str(free_port())]
    return args


@pytest.mark.server
@pytest.mark.parametrize("index", range(len([c for c in _commands() if c[1] == "serve"])))
def test_the_readme_serve_commands_start_the_example_servers(tmp_path: Path, index: int) -> None:
    serve_command = [command for command in _commands() if command[1] == "serve"][index]
    with serve_process([*_loadgen(), *_ports(serve_command)], cwd=ROOT) as process:
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(2)]
        assert "Triton ready" in "".join(first), first
        stop_served(process, signal.SIGINT)


@pytest.mark.parametrize("index", range(len([c for c in _commands() if c[1] != "serve"])))
def test_each_readme_profile_command_runs_as_written(
    examples_server: EmbeddedServer, request: pytest.FixtureRequest, index: int, tmp_path: Path
) -> None:
    command = [c for c in _commands() if c[1] != "serve"][index]
    urls = {"localhost:8001": examples_server.grpc_url, "localhost:8000": examples_server.http_url}
    if any(url in command for url in LLM_URLS):
        llm: EmbeddedServer = request.getfixturevalue("llm_examples_server")
        urls = dict(zip(LLM_URLS, (llm.grpc_url, llm.http_url), strict=True))
    # the README runs from the checkout; here its outputs go to a folder of the test's own
    args = [_in_checkout(arg) if "examples/" in arg else urls.get(arg, arg) for arg in command[1:]]
    done = subprocess.run([*_loadgen(), *args, *FAST], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for flag in ("--json", "-f"):
        if flag in args:
            assert (tmp_path / args[args.index(flag) + 1]).stat().st_size > 0
