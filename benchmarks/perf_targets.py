"""Issue 5's targets: loadgen against the real perf_analyzer 2.51 on one embedded server, A B A B.

1. Closed loop, identity model, concurrency 16: throughput ratio and client CPU per request.
2. Open loop: the highest request rate each sustains with under 1 % of requests delayed by more than 1 ms.
3. Latency fidelity: the example ensemble at concurrency 1, p50 and p99 within 5 %.
4. Memory: loadgen's peak RSS at concurrency 1,024 with the sample JPEG, under 200 MB.

    python benchmarks/perf_targets.py [--pairs 3] [--interval-ms 3000]

Client CPU is the whole client process's user+system time over the requests the server counted during that run
(so both include their start-up); absolute numbers on a shared 2-core machine are noise, ratios from the same run
are the result. The last line is `throughput ratio loadgen/perf_analyzer: X.XX`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from common import SAMPLE_JPEG, example_server, perf_analyzer_path, write_input_data

IDENTITY = "identity_uint8"
ENSEMBLE = "ensemble_python_resnet50"
RATES = (250, 500, 1000, 2000, 4000)
DELAYED_LIMIT = 0.01
_DELAYED = re.compile(r"([\d.]+)% of the requests were delayed")


@dataclass(frozen=True)
class Run:
    """One client run: what it reported and what it cost."""

    throughput: float
    p50_us: float
    p99_us: float
    cpu_us_per_request: float
    delayed_share: float
    peak_rss_mb: float


def _served(url: str, model: str, protocol: str = "grpc") -> int:
    """Inferences the server has counted for a model so far, asked over the protocol `url` speaks."""
    if protocol == "http":
        http_client = httpclient.InferenceServerClient(url)
        try:
            stats = http_client.get_inference_statistics(model)["model_stats"]
            return sum(int(s["inference_count"]) for s in stats)
        finally:
            http_client.close()
    client = grpcclient.InferenceServerClient(url)
    try:
        return sum(s.inference_count for s in client.get_inference_statistics(model).model_stats)
    finally:
        client.close()


def _child(command: list[str]) -> tuple[str, float, float]:
    """Run a client; its output, CPU seconds (user + system) and peak RSS in MB, measured by the kernel."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 2):
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{output}")
    return output, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _shared_flags(url: str, model: str, protocol: str, load: list[str], interval_ms: int) -> list[str]:
    """The flags both clients take, with the same meaning (loadgen uses perf_analyzer's names)."""
    return ["-m", model, "-u", url, "-i", protocol, *load, "-p", str(interval_ms), "-s", "25"]


def perf_analyzer(
    url: str, model: str, load: list[str], interval_ms: int, extra: list[str], protocol: str = "grpc"
) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "pa.csv"
        before = _served(url, model, protocol)
        output, cpu, rss = _child(
            [perf_analyzer_path(), *_shared_flags(url, model, protocol, load, interval_ms), "-f", str(report), *extra]
        )
        served = _served(url, model, protocol) - before
        if not report.exists():  # perf_analyzer writes no report when it found no stable measurement
            print(f"  perf_analyzer {' '.join(load)}: no stable measurement", flush=True)
            return Run(float("nan"), float("nan"), float("nan"), float("nan"), 1.0, rss)
        row = next(csv.DictReader(report.open()))
    delayed = _DELAYED.search(output)
    return Run(
        throughput=float(row["Inferences/Second"]),
        p50_us=float(row["p50 latency"]),
        p99_us=float(row["p99 latency"]),
        cpu_us_per_request=cpu * 1e6 / served if served else float("nan"),
        delayed_share=float(delayed[1]) / 100 if delayed else 0.0,
        peak_rss_mb=rss,
    )


def loadgen(url: str, model: str, load: list[str], interval_ms: int, extra: list[str], protocol: str = "grpc") -> Run:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "lg.json"
        before = _served(url, model, protocol)
        _, cpu, rss = _child(
            [
                sys.executable,
                "-m",
                "loadgen",
                *_shared_flags(url, model, protocol, load, interval_ms),
                "--json",
                str(report),
                *extra,
            ]
        )
        served = _served(url, model, protocol) - before
        level = json.loads(report.read_text())["levels"][-1]
    return Run(
        throughput=level["throughput"],
        p50_us=level["latency_us"]["p50"],
        p99_us=level["latency_us"]["p99"],
        cpu_us_per_request=cpu * 1e6 / served if served else float("nan"),
        delayed_share=level.get("delayed_share", 0.0),
        peak_rss_mb=rss,
    )


Client = Callable[..., Run]
CLIENTS: dict[str, Client] = {"perf_analyzer": perf_analyzer, "loadgen": loadgen}


def alternate(pairs: int, measure: Callable[[Client], Run]) -> dict[str, list[Run]]:
    """A B A B ...: both clients measured in turns, so drift on the machine hits both alike."""
    runs: dict[str, list[Run]] = {name: [] for name in CLIENTS}
    for _ in range(pairs):
        for name, client in CLIENTS.items():
            runs[name].append(measure(client))
            print(f"  {name}: {runs[name][-1]}", flush=True)
    return runs


def highest_rate(client: Client, url: str, interval_ms: int, image: list[str]) -> float:
    """The highest rate of the ladder sent with under 1 % of requests delayed by more than 1 ms."""
    best = 0.0
    for rate in RATES:
        run = client(url, IDENTITY, ["--request-rate-range", str(rate)], interval_ms, ["-r", "6", *image])
        if run.delayed_share >= DELAYED_LIMIT:
            break
        best = float(rate)
    return best


def median_of(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=3000)
    args = parser.parse_args()
    rows: list[tuple[str, float, float, str]] = []

    def row(what: str, pa: float, lg: float, met: bool) -> None:
        rows.append((what, pa, lg, "met" if met else "MISSED"))

    with example_server() as server:
        url = server.grpc_url
        closed = alternate(args.pairs, lambda c: c(url, IDENTITY, ["--concurrency-range", "16"], args.interval_ms, []))
        pa_tp, lg_tp = median_of(closed["perf_analyzer"], "throughput"), median_of(closed["loadgen"], "throughput")
        pa_cpu = median_of(closed["perf_analyzer"], "cpu_us_per_request")
        lg_cpu = median_of(closed["loadgen"], "cpu_us_per_request")
        row("1. closed loop c=16 infer/s", pa_tp, lg_tp, lg_tp >= pa_tp)
        row("1. client CPU us/request", pa_cpu, lg_cpu, lg_cpu <= pa_cpu)

        rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(args.pairs):  # A B A B, as for the other targets
            for name, client in CLIENTS.items():
                rates[name].append(highest_rate(client, url, 2000, []))
                print(f"  {name}: highest rate with <1% late {rates[name][-1]:g}/s", flush=True)
        pa_rate, lg_rate = statistics.median(rates["perf_analyzer"]), statistics.median(rates["loadgen"])
        row("2. highest rate with <1% late", pa_rate, lg_rate, lg_rate >= pa_rate)

        image = ["--input-data", str(SAMPLE_JPEG)]
        with tempfile.TemporaryDirectory() as folder:
            # perf_analyzer cannot send a file's raw bytes: it gets the same JPEG through its JSON input format
            size = SAMPLE_JPEG.stat().st_size
            pa_image = [
                "--input-data",
                str(write_input_data(Path(folder), SAMPLE_JPEG.read_bytes())),
                "--shape",
                f"INPUT:{size}",
            ]
            fidelity = alternate(
                args.pairs,
                lambda c: c(
                    url, ENSEMBLE, ["--concurrency-range", "1"], args.interval_ms, image if c is loadgen else pa_image
                ),
            )
        for field in ("p50_us", "p99_us"):
            pa, lg = median_of(fidelity["perf_analyzer"], field), median_of(fidelity["loadgen"], field)
            row(f"3. ensemble c=1 {field}", pa, lg, abs(lg / pa - 1) <= 0.05)

        memory = loadgen(
            url, ENSEMBLE, ["--concurrency-range", "1024"], 2000, ["-r", "3", "--request-count", "3000", *image]
        )
        row("4. loadgen peak RSS MB at c=1024", float("nan"), memory.peak_rss_mb, memory.peak_rss_mb < 200)

    print(f"{'target':40} {'perf_analyzer':>14} {'loadgen':>10} {'ratio':>7}  result")
    for what, pa, lg, result in rows:
        ratio = lg / pa if pa == pa and pa else float("nan")
        print(f"{what:40} {pa:14.1f} {lg:10.1f} {ratio:7.2f}  {result}")
    print(f"throughput ratio loadgen/perf_analyzer: {lg_tp / pa_tp:.2f}")


if __name__ == "__main__":
    main()
