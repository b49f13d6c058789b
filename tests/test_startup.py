"""Start-up: the command line's --version, --help and a bad option import none of the heavy libraries, a run imports
only what its options need, and the lazily imported public API is the same API. Each check runs in a process of
its own: this one has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadgen.errors import EXIT_BAD_OPTION, EXIT_OTHER, EXIT_SUCCESS
from loadgen.server import EmbeddedServer
from tests.helpers import QUICK, one_line_error

HEAVY = ("grpc", "tritonclient", "numpy", "aiohttp", "prometheus_client", "matplotlib", "pandas")
IMPORTED = "import time:"  # how `python -X importtime` starts each of its lines (on stderr)


def _command(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`python -m loadgen ARGS` under `-X importtime`: what it printed (without the import lines), and every
    module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith(IMPORTED)}
    assert "loadgen.cli" in modules, done.stderr
    stderr = "".join(f"{line}\n" for line in lines if not line.startswith(IMPORTED))
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, stderr), modules


def _heavy(modules: set[str]) -> list[str]:
    return sorted(module for module in modules if module.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "args",
    [("--version",), ("--help",), ("perf-analyzer", "--help"), ("perf-analyzer", "--version")],
    ids=["version", "help", "perf-analyzer-help", "perf-analyzer-version"],
)
def test_version_and_help_import_no_heavy_library(args: tuple[str, ...]) -> None:
    done, modules = _command(*args)
    assert done.returncode == (EXIT_OTHER if args == ("perf-analyzer", "--help") else EXIT_SUCCESS), done.stderr
    assert "Traceback" not in done.stderr
    assert "2.51" in done.stdout + done.stderr or "usage:" in done.stdout + done.stderr  # the version, or the help
    assert _heavy(modules) == []


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("--no-such-option",), EXIT_BAD_OPTION),
        (("-m", "any", "--concurrency-range", "abc"), EXIT_BAD_OPTION),
        (("perf-analyzer", "-m", "any", "--no-such-option"), EXIT_OTHER),
    ],
    ids=["unknown-option", "bad-value", "perf-analyzer-unknown-option"],
)
def test_a_bad_option_imports_no_heavy_library(args: tuple[str, ...], status: int) -> None:
    done, modules = _command(*args)
    if args[0] == "perf-analyzer":  # perf_analyzer prints its usage after the error
        assert done.returncode == status and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("perf_analyzer: error: unrecognized arguments: --no-such-option\nusage:")
    else:
        one_line_error(done, status)
    assert _heavy(modules) == []


RUN = """
import json, sys
import loadgen

result = loadgen.profile_sync(sys.argv[1], "identity_uint8", **json.loads(sys.argv[2]))
assert result.levels and result.levels[0].request_count > 0, result
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("metrics", [False, True], ids=["no-metrics", "metrics"])
def test_a_grpc_run_imports_what_its_options_need(examples_server: EmbeddedServer, metrics: bool) -> None:
    """Raw gRPC (the default): no tritonclient HTTP client, no aiohttp (the metrics scrape uses loadgen's own
    HTTP/1.1), no reports' plotting; the Prometheus parser only when the server's metrics are scraped."""
    options = {**QUICK, "concurrency_range": "1", "collect_metrics": metrics}
    if metrics:
        options["metrics_url"] = examples_server.metrics_url
    done = subprocess.run(
        [sys.executable, "-c", RUN, examples_server.grpc_url, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    needed = {"grpc", "tritonclient", "numpy"} | ({"prometheus_client"} if metrics else set())
    assert {module.split(".")[0] for module in _heavy(modules)} == needed
    assert "tritonclient.grpc" in modules and "tritonclient.http" not in modules


API = """
import loadgen
import loadgen.tune  # the submodule first: the package's `tune` is still the function

assert callable(loadgen.tune) and loadgen.tune.__module__ == "loadgen.tune", loadgen.tune
assert loadgen.ProfileResult.__module__ == "loadgen.results"
assert loadgen.EmbeddedServer.__module__ == "loadgen.server.launcher"
assert set(loadgen.__all__) <= set(dir(loadgen))
namespace = {}
exec("from loadgen import *", namespace)
assert set(loadgen.__all__) <= set(namespace)
from loadgen import Settings, tune
assert tune is loadgen.tune and Settings.__module__ == "loadgen.settings"
from loadgen.reports import ConsoleProgress
from loadgen.server import free_port
assert ConsoleProgress.__module__ == "loadgen.reports.console" and callable(free_port)
try:
    loadgen.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("loadgen.no_such_name resolved")
"""


def test_the_public_api_resolves_on_first_use() -> None:
    done = subprocess.run([sys.executable, "-c", API], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


BLAS = """
import contextlib, json, os
import loadgen
from loadgen._blas_env import SINGLE_THREADED, without_blas_limits

untouched = all(name not in os.environ for name in SINGLE_THREADED if name != "OMP_NUM_THREADS")
from loadgen.cli import main

with contextlib.suppress(SystemExit):
    main(["--version"])
import numpy  # noqa: F401

print(json.dumps({
    "untouched": untouched,
    "threads": len(os.listdir("/proc/self/task")),
    "set": {name: os.environ.get(name) for name in SINGLE_THREADED},
    "server": {name: value for name, value in without_blas_limits(os.environ).items() if name in SINGLE_THREADED},
}))
"""


def test_the_command_line_keeps_numpy_to_one_thread() -> None:
    """loadgen does no linear algebra: the command line (not `import loadgen`) sets the BLAS thread counts the user
    left unset to 1, so numpy starts no spinning thread; a server it starts gets the user's own environment back."""
    environment = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", BLAS],
        env={**environment, "OMP_NUM_THREADS": "3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["untouched"] and seen["threads"] == 1
    assert seen["set"] == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
    assert seen["server"] == {"OMP_NUM_THREADS": "3"}
