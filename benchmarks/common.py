"""Shared helpers for the benchmarks: the real perf_analyzer, the embedded example server, and output parsing."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import loadgen

BENCHMARKS = Path(__file__).resolve().parent
EXAMPLES = BENCHMARKS.parent / "examples"
MODEL_REPOSITORY = EXAMPLES / "model_repository"
SAMPLE_JPEG = EXAMPLES / "sample.jpg"


UNSTABLE_STATUS = 2
"""perf_analyzer's exit status when no measurement was stable within its windows."""


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer (or its installer) failed, or printed something the parser does not understand."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # perf_analyzer's exit status, when it ran and failed


def _installed(script: str) -> str:
    """Run one of the `get_*.sh` installers (into a cache outside the project's virtualenv) and return the path it
    prints last. Its progress goes on to stderr as it comes; a failure raises with its last line."""
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    with subprocess.Popen(
        ["bash", str(BENCHMARKS / script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        errors = []
        for line in process.stderr:  # the installers print one line on stdout, at the end: no deadlock
            sys.stderr.write(line)
            errors.append(line.strip())
        lines = process.stdout.read().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise PerfAnalyzerError(f"{script} failed with status {process.returncode}: {errors[-1] if errors else ''}")
    return lines[-1]


def console_script(name: str) -> Path:
    """One of loadgen's console scripts (`loadgen`, `perf-analyzer`) where pip put it for this Python's environment,
    else on PATH; a missing one is an install older than the script, not a reason to skip."""
    script = Path(sys.executable).with_name(name)
    found = script if script.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{script} is missing: reinstall loadgen (pip install -e .) for its console scripts")
    return Path(found)


@functools.cache
def perf_analyzer_path() -> str:
    """The perf_analyzer 2.51 wrapper, installed once into a cache by `get_perf_analyzer.sh`."""
    return _installed("get_perf_analyzer.sh")


@functools.cache
def model_analyzer_path() -> str:
    """Model Analyzer's `model-analyzer` command, installed once into a virtualenv of its own in a cache by
    `get_model_analyzer.sh` (its tritonclient, grpcio and protobuf must not replace the project's)."""
    return _installed("get_model_analyzer.sh")


@functools.cache
def aiperf_path() -> str:
    """NVIDIA AIPerf's `aiperf` command, installed once into a virtualenv of its own in a cache by `get_aiperf.sh`."""
    return _installed("get_aiperf.sh")


def example_server() -> loadgen.EmbeddedServer:
    """The embedded Triton on `examples/model_repository`; use it as a context manager (`with example_server() as s`)."""
    return loadgen.EmbeddedServer(MODEL_REPOSITORY)


def write_input_data(directory: Path, image: bytes, input_name: str = "INPUT") -> Path:
    """perf_analyzer's input-data JSON for the seed's ensemble: the image as base64 with its explicit shape."""
    path = directory / "input_data.json"
    document = {"data": [{input_name: {"b64": base64.b64encode(image).decode("ascii"), "shape": [len(image)]}}]}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_perf_analyzer(args: list[str]) -> str:
    """Run perf_analyzer with `args` and return its stdout; raise with its whole output on a non-zero exit."""
    process = subprocess.run(
        [perf_analyzer_path(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if process.returncode != 0:
        raise PerfAnalyzerError(
            f"perf_analyzer {' '.join(args)} exited with status {process.returncode}:\n{process.stdout}",
            process.returncode,
        )
    return process.stdout


@dataclass(frozen=True)
class ModelStats:
    """One model in perf_analyzer's "Server:" block; times are per-request averages in usec.

    Attribute names match `loadgen.server.statistics.ServerFigures`, so the two can be compared field by field.
    """

    model: str
    version: str
    inference_count: int
    execution_count: int
    request_count: int  # "Successful request count"
    request_us: int
    overhead_us: int
    queue_us: int
    compute_input_us: int
    compute_infer_us: int
    compute_output_us: int
    composing: tuple[ModelStats, ...] = ()


@dataclass(frozen=True)
class PerfAnalyzerLevel:
    """One concurrency level of perf_analyzer's console output: client figures and the server block."""

    concurrency: int
    throughput: float
    avg_latency_us: int
    p99_latency_us: int
    server: ModelStats


_COUNTS = {
    "Inference count": "inference_count",
    "Execution count": "execution_count",
    "Successful request count": "request_count",
}
_LATENCY = re.compile(r"Avg request latency: (\d+) usec \((.*)\)")
_LATENCY_PART = re.compile(r"(overhead|queue|compute|compute input|compute infer|compute output) (\d+) usec")
_COMPOSING = re.compile(r"(\S+), version: (\S*)")
_BREAKDOWN = ("compute input", "compute infer", "compute output")


def _latency_parts(text: str) -> dict[str, int]:
    """`overhead 3 usec + queue 160 usec + compute 81 usec` -> {"overhead": 3, "queue": 160, "compute": 81}."""
    parts: dict[str, int] = {}
    for part in text.split(" + "):
        match = _LATENCY_PART.fullmatch(part.strip())
        if match is None:
            raise PerfAnalyzerError(f"unexpected part {part!r} in perf_analyzer's request latency ({text})")
        parts[match[1]] = int(match[2])
    return parts


def _model_stats(model: str, version: str, fields: dict[str, int], composing: tuple[ModelStats, ...]) -> ModelStats:
    """Build one model's stats; an ensemble's line gives one compute figure, so its parts are its steps' sums."""
    if all(name in fields for name in _BREAKDOWN):
        compute = [fields[name] for name in _BREAKDOWN]
    elif composing:
        compute = [
            sum(step.compute_input_us for step in composing),
            sum(step.compute_infer_us for step in composing),
            sum(step.compute_output_us for step in composing),
        ]
    else:
        raise PerfAnalyzerError(f"no compute input/infer/output for {model} in perf_analyzer's server block")
    missing = [name for name in (*_COUNTS.values(), "request", "overhead", "queue") if name not in fields]
    if missing:
        raise PerfAnalyzerError(f"perf_analyzer's server block lacks {', '.join(missing)} for {model}")
    return ModelStats(
        model=model,
        version=version,
        inference_count=fields["inference_count"],
        execution_count=fields["execution_count"],
        request_count=fields["request_count"],
        request_us=fields["request"],
        overhead_us=fields["overhead"],
        queue_us=fields["queue"],
        compute_input_us=compute[0],
        compute_infer_us=compute[1],
        compute_output_us=compute[2],
        composing=composing,
    )


def parse_server_block(block: str, model: str) -> ModelStats:
    """Parse the lines after "Server:" of one level: `model`'s figures and, below, each composing model's.

    The model's own latency line is "(overhead + queue + compute)" for an ensemble and the full
    "(overhead + queue + compute input + compute infer + compute output)" otherwise; both are accepted.
    """
    entries: list[tuple[str, str, dict[str, int]]] = [(model, "", {})]
    for line in block.splitlines():
        text = line.strip()
        name, _, value = text.partition(": ")
        if name in _COUNTS:
            entries[-1][2][_COUNTS[name]] = int(value)
        elif latency := _LATENCY.fullmatch(text):
            entries[-1][2]["request"] = int(latency[1])
            entries[-1][2].update(_latency_parts(latency[2]))
        elif composing := _COMPOSING.fullmatch(text):
            entries.append((composing[1], composing[2], {}))
    steps = tuple(_model_stats(*entry, ()) for entry in entries[1:])
    return _model_stats(*entries[0], steps)


_LEVEL = re.compile(r"^Request concurrency: (\d+)$", re.MULTILINE)
_THROUGHPUT = re.compile(r"^\s*Throughput: ([\d.]+) infer/sec$", re.MULTILINE)
_AVG_LATENCY = re.compile(r"^\s*Avg latency: (\d+) usec", re.MULTILINE)
_P99_LATENCY = re.compile(r"^\s*p99 latency: (\d+) usec$", re.MULTILINE)


def _search(pattern: re.Pattern[str], text: str, what: str) -> str:
    match = pattern.search(text)
    if match is None:
        raise PerfAnalyzerError(f"no {what} in perf_analyzer's output:\n{text}")
    return match[1]


def parse_levels(output: str, model: str) -> list[PerfAnalyzerLevel]:
    """Every "Request concurrency: N" level of perf_analyzer's console output, in order."""
    starts = list(_LEVEL.finditer(output))
    levels = []
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        section = output[match.end() : following.start() if following else len(output)]
        client, server_label, server = section.partition("\n  Server:")
        if not server_label:
            raise PerfAnalyzerError(f"no server block for concurrency {match[1]} in perf_analyzer's output:\n{output}")
        levels.append(
            PerfAnalyzerLevel(
                concurrency=int(match[1]),
                throughput=float(_search(_THROUGHPUT, client, "throughput")),
                avg_latency_us=int(_search(_AVG_LATENCY, client, "average latency")),
                p99_latency_us=int(_search(_P99_LATENCY, client, "p99 latency")),
                server=parse_server_block(server, model),
            )
        )
    if not levels:
        raise PerfAnalyzerError(f"no measured level in perf_analyzer's output:\n{output}")
    return levels
