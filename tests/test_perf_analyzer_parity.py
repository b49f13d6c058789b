"""Issue 27: the real perf_analyzer 2.51 and `loadgen perf-analyzer` with the same arguments on the same server, item
by item: what each compares is named in its test (exit code, console lines, CSV, export, counts). Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadgen.server import EmbeddedServer
from tests.helpers import real_perf_analyzer

# a level settles at once on a noisy machine: windows agree within 1000 %
QUICK = ["-p", "300", "-s", "1000", "-r", "3"]


@dataclass(frozen=True)
class Ran:
    """One command's exit status and output, and the folder it ran in (where its files are)."""

    status: int
    out: str
    err: str
    folder: Path

    def lines(self, start: str) -> list[str]:
        """The stdout lines that start with `start` (indentation kept)."""
        return [line for line in self.out.splitlines() if line.startswith(start)]


def _run(command: list[str], folder: Path, timeout_s: float) -> Ran:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout_s, check=False)
    return Ran(done.returncode, done.stdout, done.stderr, folder)


def both(tmp: Path, *args: object, timeout_s: float = 180) -> tuple[Ran, Ran]:
    """perf_analyzer's run and loadgen's, each in a folder of its own (their -f and export files land there)."""
    argv = [str(arg) for arg in args]
    theirs = _run([real_perf_analyzer(), *argv], tmp / "theirs", timeout_s)
    ours = _run([sys.executable, "-m", "loadgen", "perf-analyzer", *argv], tmp / "ours", timeout_s)
    return theirs, ours


def _accumulating_stream(tmp: Path) -> Path:
    """One JSON stream of three steps with the accumulator's running sums as validation data."""
    path = tmp / "stream.json"
    data = {
        "data": [[{"VALUE": [1]}, {"VALUE": [2]}, {"VALUE": [3]}]],
        "validation_data": [[{"SUM": [1]}, {"SUM": [3]}, {"SUM": [6]}]],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("length", [[], ["--sequence-length", "3"]], ids=["whole-stream", "sequence-length"])
def test_1_a_single_json_stream_is_every_sequence_from_its_first_step(
    test_server: EmbeddedServer, tmp_path: Path, length: list[str]
) -> None:
    """Every sequence starts at the stream's first step (the stream whole, or --sequence-length steps of it, varied
    by 20 % of 3 steps: none): the running sums match the validation data; both exit 0 with a Client block."""
    data = _accumulating_stream(tmp_path)
    theirs, ours = both(
        tmp_path, "-m", "accumulator", "-u", test_server.http_url, "--input-data", data, *length, *QUICK
    )
    assert theirs.status == 0, theirs.out + theirs.err
    assert ours.status == theirs.status, ours.out + ours.err
    assert ours.lines("  Client:") == theirs.lines("  Client:") == ["  Client: "]
