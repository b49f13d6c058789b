"""What many tests share: where things are, quick run settings, the real servers' launcher, and reading the
server's own statistics (what it saw, never what loadgen says it sent)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from hdrh.histogram import HdrHistogram
from tritonclient.grpc import model_config_pb2

from loadgen.levels import Level
from loadgen.measurement import Window, new_histogram
from loadgen.plan import LevelRule, Load
from loadgen.results import LevelResult, ProfileResult
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "model_repository"
TEST_MODELS = Path(__file__).resolve().parent / "model_repository"
SAMPLE_JPEG = ROOT / "examples" / "sample.jpg"
LLM_EXAMPLES = ROOT / "examples" / "llm_repository"
SHIPPED_TOKENIZER = ROOT / "loadgen" / "data" / "tokenizer.json"

# Tests check behaviour, never timings: short windows, and a stability bound no noisy machine can miss.
QUICK = {"measurement_interval": 300, "stability_percentage": 1000, "max_trials": 4}
FAST = ["-p", "300", "-s", "1000", "-r", "4"]
# both protocols over both transports
BOTH = pytest.mark.parametrize(
    ("protocol", "transport"), [(p, t) for p in ("grpc", "http") for t in ("raw", "library")]
)

# "abc" has 3 characters where the bad validation data says 4: the mismatch says where and what
MISMATCH = (
    "validation: LENGTHS differs from validation_data: element 0 is 3, validation_data 4 (1 of 1 elements differ)"
)

RUNNING: list[EmbeddedServer] = []
"""The servers the tests run now, whose logs a failing test's report shows."""


def serve(repository: Path, tmp: Path, **options: object) -> Iterator[EmbeddedServer]:
    """A real tritonserver on free ports for as long as the generator is open; always stopped."""
    server = EmbeddedServer(repository, log_path=tmp / "tritonserver.log", **options)  # type: ignore[arg-type]
    with server:
        RUNNING.append(server)
        try:
            yield server
        finally:
            RUNNING.remove(server)


def llm_repository(tmp: Path, *, llm: Path | None = None, **changes: object) -> Path:
    """A copy of the example LLM pipeline (examples/llm_repository) in `tmp`, with its configs changed: a key
    "MODEL.NAME" sets that config parameter (`"postprocessing.delay_ms": 3`, `"tensorrt_llm.token_ms": 2`), and
    "MODEL.instances" the model's instance_group count. A parameter the model does not have is an error. `llm`: a
    model folder whose files replace (or join) the example's `tensorrt_llm`'s."""
    repository = tmp / "llm_repository"
    shutil.copytree(LLM_EXAMPLES, repository, ignore=shutil.ignore_patterns("__pycache__"))
    if llm is not None:
        shutil.copytree(
            llm, repository / "tensorrt_llm", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )
    for key, value in changes.items():
        model, _, name = key.partition(".")
        path = repository / model / "config.pbtxt"
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        if name == "instances":
            config.instance_group[0].count = int(value)  # type: ignore[call-overload]
        elif name in config.parameters:
            config.parameters[name].string_value = str(value)
        else:
            raise ValueError(f"{model} has no parameter {name!r} (it has {', '.join(config.parameters) or 'none'})")
        path.write_text(text_format.MessageToString(config))
    return repository


def only(*models: str) -> dict[str, object]:
    """Server options that load these models of a repository and no other (an ensemble's steps named too): the
    whole test repository starts a Python stub per model, several times slower to come up."""
    return {"explicit_model_control": True, "load_models": models}


def successes(server: EmbeddedServer, model: str) -> int:
    """The requests the server has completed successfully for a model so far (read over gRPC)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sum(s.inference_stats.success.count for s in client.get_inference_statistics(model).model_stats)
    finally:
        client.close()


def registered_regions(server: EmbeddedServer) -> list[str]:
    """The names of the system shared-memory regions the server has registered."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sorted(client.get_system_shared_memory_status().regions)
    finally:
        client.close()


def run_cli(*args: object, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m loadgen ARGS` in a process of its own, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], status: int) -> str:
    """The error a run ended with, checked to be one line, no traceback, with `status`."""
    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "loadgen: error:"))]
    assert len(lines) == 1, done.stderr
    return lines[0]


def real_perf_analyzer() -> str:
    """The real perf_analyzer 2.51, installed once into a cache (benchmarks/get_perf_analyzer.sh); the test is
    skipped, with the reason, where it cannot be installed."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.common import PerfAnalyzerError, perf_analyzer_path

        try:
            return perf_analyzer_path()
        except PerfAnalyzerError as error:
            pytest.skip(f"the real perf_analyzer 2.51 cannot be installed here: {error}")
    finally:
        sys.path.remove(str(ROOT))


@contextmanager
def serve_process(command: list[str], **popen: object) -> Iterator[subprocess.Popen[str]]:
    """`loadgen serve` (or any server command) in a process of its own, killed if the test leaves it running."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


STOP_S = 2.0  # issue 24: Ctrl-C stops a run within this long, whatever its requests wait for


def interrupt_when(command: list[str], ready: Callable[[], bool]) -> None:
    """Run a loadgen `command` until `ready()`, then SIGINT: it exits 130 within STOP_S of the signal, without a
    traceback (its start-up comes before `ready` and is not counted)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not ready() and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=STOP_S)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


def stop_served(process: subprocess.Popen[str], sig: signal.Signals) -> str:
    """Stop `loadgen serve` with a signal: it must say so, exit 0 and leave no work files behind; the rest of its
    output (read from the stream, not the pipe: a readline before may have buffered lines past its own)."""
    assert process.stdout is not None and process.stderr is not None
    process.send_signal(sig)
    with process.stdout, process.stderr:  # pytest's timeout bounds a server that never stops
        out, err = process.stdout.read(), process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 0, err
    assert "Triton stopped" in out
    logs = [line.split()[2] for line in out.splitlines() if line.startswith("Server log: ")]
    assert logs and not any(Path(log).parent.exists() for log in logs), out  # its folder is gone
    return out


RULE = LevelRule(batch_size=1, percentile=None, stability_percentage=10, latency_threshold_ms=None, single=False)
SECOND = 1_000_000_000


def histogram_of(values: np.ndarray) -> HdrHistogram:
    """A latency histogram (us) of these values."""
    histogram = new_histogram()
    for value in values:
        histogram.record_value(int(value))
    return histogram


def level_of(windows: list[np.ndarray], concurrency: int = 1, rule: LevelRule = RULE) -> LevelResult:
    """A closed-loop level from windows of latencies (us), one second each: its requests per second are their
    counts."""
    level = Level(Load(concurrency=concurrency), rule, None)
    for index, latencies in enumerate(windows):
        level.add(Window(index * SECOND, (index + 1) * SECOND, histogram_of(latencies)), {})
    return level.result()


def result_of(*levels: LevelResult) -> ProfileResult:
    """A closed-loop run of these levels, with default settings."""
    return ProfileResult("m", "localhost:8001", "concurrency", levels, (), Settings().to_dict())
