"""Result files: JSON (written and read back), and perf_analyzer's CSV latency report; written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import dacite

from loadgen.errors import LoadgenError
from loadgen.results import ProfileResult
from loadgen.server_stats import ServerFigures


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write a file so that it is either the old one or the complete new one, never half-written."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    data = content.encode() if isinstance(content, str) else content
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the result as JSON."""
    write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")


def load_result(path: str | os.PathLike[str]) -> ProfileResult:
    """Reopen a run saved with `--json` (or `write_json`) as the result it was."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return ProfileResult.from_dict(document)
    except (OSError, ValueError, dacite.DaciteError) as error:
        raise LoadgenError(f"cannot read a loadgen result from {path}: {error}") from None


_CSV_SERVER = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv")
_CSV_PERCENTILES = ("p50 latency", "p90 latency", "p95 latency", "p99 latency")


def _client_columns(mode: str) -> tuple[str, ...]:
    first = "Concurrency" if mode == "concurrency" else "Request Rate"
    return (first, "Inferences/Second", "Client Send", "Network+Server Send/Recv")


def _server_cells(server: ServerFigures | None) -> list[float]:
    if server is None:
        return [0, 0, 0, 0]
    return [
        round(v) for v in (server.queue_us, server.compute_input_us, server.compute_infer_us, server.compute_output_us)
    ]


def _csv_text(header: tuple[str, ...], rows: Sequence[Sequence[float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(result: ProfileResult, path: str | os.PathLike[str]) -> list[Path]:
    """perf_analyzer's latency report: one row per level, plus `<model>_v<version>.<name>` per composing model.

    loadgen serialises requests before the run and does not decode responses, so Client Send and Client Recv
    are 0; Network+Server Send/Recv is the client's average latency minus the server's queue and compute time.
    The composing models' files sit beside the main file (perf_analyzer puts them in the working directory).
    """
    target = Path(path)
    header = _client_columns(result.mode)
    rows: list[list[float]] = []
    per_model: dict[str, list[list[float]]] = {}
    for level in result.levels:
        server = _server_cells(level.server)
        network = max(round(level.latency_us.avg) - sum(server), 0)
        lat = level.latency_us
        rows.append(
            [level.load, round(level.throughput, 2), 0, network, *server, 0, lat.p50, lat.p90, lat.p95, lat.p99]
        )
        if level.server is None:
            continue
        for depth, step in level.server.walk():
            if depth:
                rate = round(step.inference_count / level.duration_s, 2) if level.duration_s else 0.0
                per_model.setdefault(f"{step.model}_v{step.version}", []).append(
                    [level.load, rate, 0, 0, *_server_cells(step), 0]
                )
    write_atomic(target, _csv_text(header + _CSV_SERVER + _CSV_PERCENTILES, rows))
    written = [target]
    for name, model_rows in per_model.items():
        composing = target.with_name(f"{name}.{target.name}")
        write_atomic(composing, _csv_text(header + _CSV_SERVER, model_rows))
        written.append(composing)
    return written
