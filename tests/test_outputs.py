"""Output files: checked before anything runs, written atomically over regular files and through to devices,
pipes and what a symlink points at; one that fails to write does not cost the others."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loadgen.cli import main
from loadgen.errors import OptionError
from loadgen.outputs import check_directory, check_file, write_file
from loadgen.server import EmbeddedServer
from tests.helpers import FAST, one_line_error, run_cli

IDENTITY = ["-m", "identity_uint8", "--shape", "INPUT0:16"]
NOWHERE = "127.0.0.1:9"  # nothing listens there: a run that got past the checks would fail to connect


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing" / "r.json", "no such directory"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: Path("/proc/loadgen-result.json"), "cannot write in /proc"),
    ],
    ids=["missing-directory", "a-directory", "read-only-place"],
)
def test_an_unwritable_output_is_refused_before_anything_runs(
    tmp_path: Path, make: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(OptionError, match=message):
        check_file(path, "--json")
    for flag in ("--json", "-f", "--html", "--plot"):
        assert main(["-u", NOWHERE, *IDENTITY, flag, str(path)]) == 3
        line = capsys.readouterr().err.strip()
        assert f"{flag} {path}" in line and message in line  # refused before connecting: no "cannot reach"


def test_an_unwritable_log_directory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OptionError, match="is not a directory"):
        check_directory(blocker / "logs", "--hdr-log")
    check_directory(tmp_path / "new" / "logs", "--hdr-log")  # made when the run starts
    line = one_line_error(run_cli("-u", NOWHERE, *IDENTITY, "--hdr-log", blocker), status=3)
    assert "--hdr-log" in line and "not a directory" in line


def test_a_regular_file_is_replaced_whole_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    write_file(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_a_symlink_stays_a_symlink_and_its_target_gets_the_content(tmp_path: Path) -> None:
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    write_file(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_pipe_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_file(fifo, "through the pipe")
    reader.join(5)
    assert received == [b"through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_full_device_fails_the_write_and_keeps_its_node() -> None:
    with pytest.raises(OSError, match="No space left"):
        write_file("/dev/full", "x" * 10)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dev_stdout_gets_the_json_on_stdout(examples_server: EmbeddedServer) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "-u",
            examples_server.grpc_url,
            *IDENTITY,
            *FAST,
            "-q",
            "--json",
            "/dev/stdout",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert document["model"] == "identity_uint8" and document["levels"]
    assert stat.S_ISCHR(os.stat("/dev/stdout").st_mode) or os.path.islink("/dev/stdout")


def test_an_output_that_fails_at_the_end_is_named_and_the_others_are_written(
    examples_server: EmbeddedServer, tmp_path: Path
) -> None:
    out, csv = tmp_path / "r.json", tmp_path / "r.csv"
    done = run_cli("-u", examples_server.grpc_url, *IDENTITY, *FAST, "--json", "/dev/full", "-f", csv, "--plot", out)
    assert done.returncode == 99, done.stderr
    assert "--json /dev/full: not written: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    assert csv.read_text().startswith("Concurrency,") and out.read_bytes().startswith(b"\x89PNG")
