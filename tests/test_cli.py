"""The command line: its flags are the library's settings, so the two cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

from loadgen.cli import profile_parser, settings_from
from loadgen.server import EmbeddedServer
from loadgen.settings import ALIASES, Settings
from tests.helpers import SAMPLE_JPEG

ENSEMBLE = ["-m", "ensemble_python_resnet50", "--input-data", str(SAMPLE_JPEG), "--concurrency", "1:2"]
FAST = ["-p", "300", "-s", "1000", "-r", "5"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command with its output in a pipe, as in a CI log."""
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_setting_is_a_flag_with_the_same_default() -> None:
    parser = profile_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    defaults = parser.parse_args([])
    for field in fields(Settings):
        assert f"--{field.name.replace('_', '-')}" in flags
        # lists of texts on the command line, mappings or tuples in Settings; None: the default mode or data
        if field.name not in (
            "shape",
            "header",
            "input_range",
            "output",
            "input_data",
            "bls_composing_models",
            "request_parameter",
            "trace_level",
            "goodput",
            "extra_inputs",
            "concurrency_range",
            "url",  # empty on both sides: the protocol's default port
        ):
            assert getattr(defaults, field.name) == getattr(Settings(), field.name), field.name
    assert settings_from(defaults) == Settings()
    for alias in ALIASES:
        assert f"--{alias.replace('_', '-')}" in flags


def test_aliases_on_the_command_line() -> None:
    args = profile_parser().parse_args(["--model", "m", "--request-rate", "5:10:5", "--shape", "INPUT:3,4"])
    settings = settings_from(args)
    assert (settings.model_name, settings.mode, settings.request_rate_range) == ("m", "request_rate", (5.0, 10.0))
    assert settings.shape == {"INPUT": (3, 4)}


def test_progress_is_plain_lines_when_the_output_is_not_a_terminal(examples_server: EmbeddedServer) -> None:
    done = _run("-u", examples_server.grpc_url, *ENSEMBLE, *FAST)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout  # no live display, no colours
    windows = re.findall(
        r"^  concurrency (\d) window (\d): .* infer/s, .*; (settling \d/3|not stable yet|stable)$",
        done.stdout,
        re.MULTILINE,
    )
    assert {(load, index) for load, index, _ in windows} >= {("1", "1"), ("1", "2"), ("1", "3"), ("2", "1")}
    assert windows[0][2] == "settling 1/3"
    rows = re.findall(r"^ +([12]) +[\d.]+ .* yes$", done.stdout, re.MULTILINE)
    assert rows == ["1", "2"]
    assert "Diagnosis: " in done.stdout


def test_quiet_prints_the_summary_only(examples_server: EmbeddedServer) -> None:
    done = _run("-u", examples_server.grpc_url, *ENSEMBLE, *FAST, "-q")
    assert done.returncode == 0, done.stderr
    assert " window " not in done.stdout and "Profiling" not in done.stdout
    assert re.findall(r"^ +([12]) +[\d.]+ .* yes$", done.stdout, re.MULTILINE) == ["1", "2"]
    assert "Diagnosis: " in done.stdout
