"""Server-side breakdown of the example ensemble: the real perf_analyzer 2.51 against loadgen, on one server.

Starts the embedded Triton once and runs, alternating, perf_analyzer and loadgen at one concurrency with the
sample JPEG (A B A B ...). Prints, per model (the ensemble and each step), the median over the runs of each
figure of perf_analyzer's "Server:" block for both tools and their ratio, then the client-side figures.

    python benchmarks/server_breakdown.py [--concurrency N] [--interval-ms MS] [--pairs P]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from common import (
    SAMPLE_JPEG,
    UNSTABLE_STATUS,
    ModelStats,
    PerfAnalyzerError,
    PerfAnalyzerLevel,
    example_server,
    parse_levels,
    perf_analyzer_path,
    run_perf_analyzer,
    write_input_data,
)

import loadgen
from loadgen.server.statistics import ServerFigures

MODEL = "ensemble_python_resnet50"
INPUT = "INPUT"
ATTEMPTS = 3  # runs of one tool that may end without a stable measurement before the benchmark gives up
# (label, attribute of both ModelStats and ServerFigures)
SERVER_ROWS = (
    ("requests", "request_count"),
    ("inferences", "inference_count"),
    ("queue us", "queue_us"),
    ("compute input us", "compute_input_us"),
    ("compute infer us", "compute_infer_us"),
    ("compute output us", "compute_output_us"),
    ("overhead us", "overhead_us"),
    ("request latency us", "request_us"),
)


def measure_perf_analyzer(args: list[str]) -> PerfAnalyzerLevel:
    """One perf_analyzer run; a run without a stable measurement is repeated, up to `ATTEMPTS` runs."""
    for _ in range(ATTEMPTS - 1):
        try:
            return parse_levels(run_perf_analyzer(args), MODEL)[0]
        except PerfAnalyzerError as error:
            if error.status != UNSTABLE_STATUS:
                raise
            print("  perf_analyzer found no stable measurement; running it again", flush=True)
    return parse_levels(run_perf_analyzer(args), MODEL)[0]


def measure_loadgen(url: str, concurrency: int, interval_ms: int) -> loadgen.LevelResult:
    """One loadgen run; a run without a stable measurement is repeated, up to `ATTEMPTS` runs."""
    for attempt in range(1, ATTEMPTS + 1):
        result = loadgen.profile_sync(
            url=url,
            model_name=MODEL,
            concurrency_range=concurrency,
            input_data=str(SAMPLE_JPEG),
            measurement_interval=interval_ms,
        )
        level = result.levels[0]
        if level.server is None:
            raise RuntimeError("loadgen returned no server statistics")
        if level.stable:
            return level
        if attempt < ATTEMPTS:
            print("  loadgen found no stable measurement; running it again", flush=True)
    raise RuntimeError(f"loadgen found no stable measurement in {ATTEMPTS} runs")


def run_pairs(
    url: str, data: Path, image_size: int, concurrency: int, interval_ms: int, pairs: int
) -> tuple[list[PerfAnalyzerLevel], list[loadgen.LevelResult]]:
    """perf_analyzer then loadgen, `pairs` times, against the server at `url`."""
    pa_args = [
        *("-m", MODEL, "-u", url, "-i", "grpc", "--concurrency-range", str(concurrency)),
        *("-p", str(interval_ms), "--input-data", str(data), "--shape", f"{INPUT}:{image_size}"),
    ]
    pa_runs: list[PerfAnalyzerLevel] = []
    lg_runs: list[loadgen.LevelResult] = []
    for pair in range(1, pairs + 1):
        pa = measure_perf_analyzer(pa_args)
        pa_runs.append(pa)
        print(
            f"pair {pair} perf_analyzer: {pa.throughput:.1f} infer/s, client avg {pa.avg_latency_us} us, "
            f"server request {pa.server.request_us} us",
            flush=True,
        )
        lg = measure_loadgen(url, concurrency, interval_ms)
        lg_runs.append(lg)
        assert lg.server is not None
        print(
            f"pair {pair} loadgen:       {lg.throughput:.1f} infer/s, client avg {lg.latency_us.avg:.0f} us, "
            f"server request {lg.server.request_us:.0f} us",
            flush=True,
        )
    return pa_runs, lg_runs


def _ratio(pa: float, lg: float) -> str:
    return f"{lg / pa:.2f}" if pa else "-"


def _row(model: str, label: str, pa: Sequence[float], lg: Sequence[float], digits: int = 0) -> str:
    """One figure: the median of each tool's runs and their ratio."""
    pa_median, lg_median = statistics.median(pa), statistics.median(lg)
    return f"{model:<26}{label:<20}{pa_median:>14.{digits}f}{lg_median:>14.{digits}f}{_ratio(pa_median, lg_median):>12}"


Stats = TypeVar("Stats", ModelStats, ServerFigures)


def _pick(server: Stats, model: str) -> Stats:
    """The figures of `model`: the ensemble itself or one of its steps."""
    return server if server.model == model else next(step for step in server.composing if step.model == model)


def breakdown_table(pa_runs: list[PerfAnalyzerLevel], lg_runs: list[loadgen.LevelResult]) -> list[str]:
    """The side-by-side lines: server figures per model, client figures, and the ensemble's request time ratio."""
    pa_servers = [run.server for run in pa_runs]
    lg_servers = [run.server for run in lg_runs if run.server is not None]
    # perf_analyzer lists the composing models by name, loadgen in step order: show them in step order.
    models = [MODEL, *(step.model for step in lg_servers[0].composing)]
    lines = [f"{'model':<26}{'figure':<20}{'perf_analyzer':>14}{'loadgen':>14}{'lg/pa':>12}"]
    for model in models:
        for label, attribute in SERVER_ROWS:
            pa = [getattr(_pick(server, model), attribute) for server in pa_servers]
            lg = [getattr(_pick(server, model), attribute) for server in lg_servers]
            lines.append(_row(model, label, pa, lg))
    lines += [
        _row("client", "throughput infer/s", [r.throughput for r in pa_runs], [r.throughput for r in lg_runs], 1),
        _row("client", "avg latency us", [r.avg_latency_us for r in pa_runs], [r.latency_us.avg for r in lg_runs]),
        _row("client", "p99 latency us", [r.p99_latency_us for r in pa_runs], [r.latency_us.p99 for r in lg_runs]),
    ]
    pa_request = statistics.median(server.request_us for server in pa_servers)
    lg_request = statistics.median(server.request_us for server in lg_servers)
    lines.append(f"server request time ratio loadgen/perf_analyzer: {_ratio(pa_request, lg_request)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    parser.add_argument("--interval-ms", type=int, default=3000, help="measurement window in ms (default 3000)")
    parser.add_argument("--pairs", type=int, default=2, help="perf_analyzer/loadgen run pairs (default 2)")
    args = parser.parse_args(argv)
    print(f"perf_analyzer: {perf_analyzer_path()}", flush=True)
    image = SAMPLE_JPEG.read_bytes()
    with tempfile.TemporaryDirectory(prefix="server-breakdown-") as tmp, example_server() as server:
        print(f"Triton ready at {server.grpc_url}; {MODEL}, concurrency {args.concurrency}, {args.interval_ms} ms")
        data = write_input_data(Path(tmp), image)
        pa_runs, lg_runs = run_pairs(server.grpc_url, data, len(image), args.concurrency, args.interval_ms, args.pairs)
    print(f"\nMedians over {args.pairs} runs each, concurrency {args.concurrency}, {args.interval_ms} ms windows")
    print("(counts cover each tool's last 3 windows; perf_analyzer's windows last 1.2 x the interval, loadgen's 1 x)")
    print("\n".join(breakdown_table(pa_runs, lg_runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
