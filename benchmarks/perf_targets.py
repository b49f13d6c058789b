"""Issue 17's targets: loadgen (both transports) against the real perf_analyzer 2.51 on one embedded server, A B A B.

1. Closed loop, identity model, concurrency 16, over gRPC and over HTTP: throughput ratio loadgen/perf_analyzer
   (target >= 1.2) and client CPU per request (target <= 0.6x perf_analyzer's); beside them, the client's share of
   the box's CPU at saturation and the requests one client core sends per second (1e6 / CPU us per request).
2. Open loop: the highest request rate each sustains with under 1 % of requests more than 1 ms late (target 1.5x);
   the same with the server's processes held to one core (`taskset`), the clients free to use both. Both clients are
   judged by one rule on what they did: each writes every request's send time (`--profile-export-file`), and a send
   is late by how far it left after its place on the constant-rate schedule (`late_share`). perf_analyzer's own
   "N% of the requests were delayed" counts only requests its thread found overdue before it slept, never how late
   the sleep itself woke (its SleepIfNecessary), so it is printed beside the measured share, not used. The ladder
   measures every client `--pairs` times in turns at each rate and goes by the median share late there.
3. The example ensemble at concurrency 1: client CPU per request <= perf_analyzer's, p50 and p99 within 5 %.
4. Memory: loadgen's peak RSS at concurrency 1,024 with the sample JPEG, under 200 MB.

    python benchmarks/perf_targets.py [--pairs 3] [--interval-ms 3000] [--transports raw,library] [--targets 1,2,3,4]
    python benchmarks/perf_targets.py --targets 2,3 --transports raw   # issue 28's: open loop, ensemble CPU

Client CPU is the whole client process's user+system time over the requests the server counted during that run
(so both include their start-up); the steady figure is the same ratio while requests flowed (the client's CPU and the
server's count sampled every 0.25 s, from one second after the count began to rise to its last rise); the box's CPU is /proc/stat's busy time over the same run. Absolute numbers on a
shared 2-core machine are noise; ratios from the same run are the result. The last lines are
`throughput ratio loadgen/perf_analyzer over PROTOCOL: X.XX` for the default transport.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
from common import SAMPLE_JPEG, example_server, perf_analyzer_path, write_input_data

from loadgen.results import LateCause, LateSends

IDENTITY = "identity_uint8"
ENSEMBLE = "ensemble_python_resnet50"
SAMPLE_S = 0.25  # how often a run's client CPU and the server's count are sampled
RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
DELAYED_LIMIT = 0.01
LATE_NS = 1_000_000  # a send more than this after its scheduled time is late
LADDER_STABILITY = "100"  # the ladder measures the schedule, not stability: no rung ends for an unsettled latency
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
    box_share: float = float("nan")  # the client's CPU over the whole box's busy CPU during the run
    steady_cpu_us_per_request: float = float("nan")  # while requests flowed, start-up left out
    late: str = ""  # loadgen: the requests over 1 ms late by cause (`LateSends.describe`)
    late_share: float = float("nan")  # measured from the sends in the profile export (`late_share`), both clients

    def describe_lateness(self) -> str:
        """The measured share late, with the client's own count beside it."""
        return f"{self.late_share:.1%} late (its own count: {self.delayed_share:.1%}) {self.late}".rstrip()

    @property
    def requests_per_core(self) -> float:
        """Requests one core of client CPU sends per second."""
        return 1e6 / self.cpu_us_per_request


def _counter(url: str, model: str, protocol: str = "grpc") -> Callable[[], int]:
    """A function that returns the inferences the server has counted for a model so far, asked over `protocol`."""
    if protocol == "http":  # plain urllib: tritonclient's HTTP client cannot be used from the sampling thread

        def served_http() -> int:
            with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats", timeout=10) as response:
                stats = json.load(response)["model_stats"]
            return sum(int(s["inference_count"]) for s in stats)

        return served_http
    client = grpcclient.InferenceServerClient(url)
    return lambda: sum(s.inference_count for s in client.get_inference_statistics(model).model_stats)


def late_share(sends_ns: Sequence[int], rate: float) -> float:
    """The share of a constant-rate schedule's sends that left over LATE_NS after their place on it.

    The k-th send in time order belongs at origin + k / rate; no client sends early, so the origin is where the send
    that left earliest relative to its place was on time (a client late by the same amount throughout is not charged).
    """
    if not sends_ns:
        return float("nan")
    period = 1e9 / rate
    ordered = sorted(sends_ns)
    offsets = [sent - k * period for k, sent in enumerate(ordered)]
    origin = min(offsets)
    return sum(offset - origin > LATE_NS for offset in offsets) / len(offsets)


def _export_sends(path: Path) -> list[int]:
    """Every request's send time (ns) in a profile export's last experiment (perf_analyzer's format; loadgen's too)."""
    if not path.exists():
        return []
    experiments = json.loads(path.read_text())["experiments"]
    return [request["timestamp"] for request in experiments[-1]["requests"]] if experiments else []


def _box_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, /proc/stat), so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cost:
    """What a client run cost: its output, CPU, the requests the server counted, memory and share of the box."""

    output: str
    cpu_s: float
    served: int
    peak_rss_mb: float
    box_share: float
    steady_cpu_us_per_request: float  # while requests flowed: start-up and the end left out (see _steady)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.served if self.served else float("nan")


def _steady(samples: list[tuple[float, int]]) -> float:
    """CPU us per request between the first sample after the server's count began to rise (plus one second) and
    the last sample at which it still rose: the client's cost while it sends, without start-up or shutdown."""
    counts = [count for _, count in samples]
    rising = [i for i in range(1, len(counts)) if counts[i] > counts[i - 1]]
    if len(rising) < 2:
        return float("nan")
    first = min(rising[0] + round(1 / SAMPLE_S), rising[-1])
    last = rising[-1] - 1
    if last <= first or counts[last] == counts[first]:
        return float("nan")
    return (samples[last][0] - samples[first][0]) * 1e6 / (counts[last] - counts[first])


def _child(command: list[str], served: Callable[[], int]) -> Cost:
    """Run a client, sampling its CPU and the server's count every SAMPLE_S; the whole run's cost and the
    steady one, peak RSS (measured by the kernel) and its share of the box's busy CPU meanwhile."""
    before = served()
    box = _box_busy_s()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int]] = []
    finished = threading.Event()

    def sample() -> None:
        while not finished.wait(SAMPLE_S):
            try:
                samples.append((_process_cpu_s(process.pid), served()))
            except (OSError, ValueError, IndexError):  # the process ended meanwhile
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    finished.set()
    sampler.join()
    busy = _box_busy_s() - box
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 2):
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{output}")
    cpu = usage.ru_utime + usage.ru_stime
    return Cost(
        output=output,
        cpu_s=cpu,
        served=served() - before,
        peak_rss_mb=usage.ru_maxrss / 1024,
        box_share=cpu / busy if busy else float("nan"),
        steady_cpu_us_per_request=_steady(samples),
    )


def _shared_flags(url: str, model: str, protocol: str, load: list[str], interval_ms: int) -> list[str]:
    """The flags both clients take, with the same meaning (loadgen uses perf_analyzer's names); `load` may set -s."""
    stability = [] if "-s" in load else ["-s", "25"]
    return ["-m", model, "-u", url, "-i", protocol, *load, "-p", str(interval_ms), *stability]


def _rate(load: list[str]) -> float | None:
    """The constant request rate a load asks for, if it is one."""
    flag = "--request-rate-range"
    return float(load[load.index(flag) + 1]) if flag in load else None


def perf_analyzer(
    url: str, model: str, load: list[str], interval_ms: int, extra: list[str], protocol: str = "grpc"
) -> Run:
    rate = _rate(load)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "pa.csv"
        export = Path(folder) / "pa_export.json"
        sends = ["--profile-export-file", str(export)] if rate else []
        cost = _child(
            [
                perf_analyzer_path(),
                *_shared_flags(url, model, protocol, load, interval_ms),
                "-f",
                str(report),
                *sends,
                *extra,
            ],
            _counter(url, model, protocol),
        )
        if not report.exists():  # perf_analyzer writes no report when it found no stable measurement
            print(f"  perf_analyzer {' '.join(load)}: no stable measurement", flush=True)
            nan = float("nan")
            return Run(nan, nan, nan, nan, 1.0, cost.peak_rss_mb, cost.box_share, nan, late_share=1.0)
        row = next(csv.DictReader(report.open()))
        measured = late_share(_export_sends(export), rate) if rate else float("nan")
    delayed = _DELAYED.search(cost.output)
    return Run(
        throughput=float(row["Inferences/Second"]),
        p50_us=float(row["p50 latency"]),
        p99_us=float(row["p99 latency"]),
        cpu_us_per_request=cost.cpu_us_per_request,
        delayed_share=float(delayed[1]) / 100 if delayed else 0.0,
        peak_rss_mb=cost.peak_rss_mb,
        box_share=cost.box_share,
        steady_cpu_us_per_request=cost.steady_cpu_us_per_request,
        late_share=measured,
    )


def loadgen(
    url: str,
    model: str,
    load: list[str],
    interval_ms: int,
    extra: list[str],
    protocol: str = "grpc",
    transport: str = "raw",
) -> Run:
    rate = _rate(load)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "lg.json"
        export = Path(folder) / "lg_export.json"
        sends = ["--profile-export-file", str(export)] if rate else []
        cost = _child(
            [
                sys.executable,
                "-m",
                "loadgen",
                *_shared_flags(url, model, protocol, load, interval_ms),
                "--transport",
                transport,
                "--json",
                str(report),
                *sends,
                *extra,
            ],
            _counter(url, model, protocol),
        )
        level = json.loads(report.read_text())["levels"][-1]
        measured = late_share(_export_sends(export), rate) if rate else float("nan")
    late = level.get("late_sends")
    return Run(
        throughput=level["throughput"],
        p50_us=level["latency_us"]["p50"],
        p99_us=level["latency_us"]["p99"],
        cpu_us_per_request=cost.cpu_us_per_request,
        delayed_share=level.get("delayed_share", 0.0),
        peak_rss_mb=cost.peak_rss_mb,
        box_share=cost.box_share,
        steady_cpu_us_per_request=cost.steady_cpu_us_per_request,
        late=LateSends(**{cause: LateCause(**figures) for cause, figures in late.items()}).describe() if late else "",
        late_share=measured,
    )


Client = Callable[..., Run]
PERF_ANALYZER = "perf_analyzer"


def clients(transports: Sequence[str]) -> dict[str, Client]:
    """perf_analyzer, then loadgen over each transport (`loadgen raw`, `loadgen library`)."""
    return {PERF_ANALYZER: perf_analyzer} | {
        f"loadgen {transport}": functools.partial(loadgen, transport=transport) for transport in transports
    }


def alternate(
    pairs: int, measure: Callable[[Client], Run], players: dict[str, Client], quiet: bool = False
) -> dict[str, list[Run]]:
    """A B A B ...: the clients measured in turns, so drift on the machine hits all alike."""
    runs: dict[str, list[Run]] = {name: [] for name in players}
    for _ in range(pairs):
        for name, client in players.items():
            runs[name].append(measure(client))
            if not quiet:
                print(f"  {name}: {runs[name][-1]}", flush=True)
    return runs


def open_loop_ladders(players: dict[str, Client], url: str, pairs: int) -> dict[str, float]:
    """Each client's highest on-time rate: the ladder climbs one rate at a time, every client measured `pairs` times
    at it in turns (A B A B ...); a client holds a rate when the median of its shares late there (`late_share`, from
    its own export) is under 1 %, and leaves the ladder at the first rate it does not hold. A single run late on a
    busy moment moves a median of three, not the result."""
    best = dict.fromkeys(players, 0.0)
    climbing = dict(players)
    for rate in RATES:
        if not climbing:
            break
        load = ["--request-rate-range", str(rate), "-s", LADDER_STABILITY]
        runs = alternate(pairs, lambda c, load=load: c(url, IDENTITY, load, 2000, ["-r", "6"]), climbing, quiet=True)
        for name, found in runs.items():
            share = statistics.median(run.late_share for run in found)
            shown = "; ".join(run.describe_lateness() for run in found)
            print(f"    {name} at {rate}/s: median {share:.1%} late ({shown})", flush=True)
            if share < DELAYED_LIMIT:
                best[name] = float(rate)
            else:
                del climbing[name]
    return best


def hold_to_cores(group: int, cores: str) -> None:
    """Pin every thread of every process in a process group (the server and its model stubs) to `cores`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:  # state, ppid, pgrp
                continue
        except (OSError, IndexError):
            continue
        subprocess.run(["taskset", "-a", "-p", "-c", cores, entry.name], check=False, stdout=subprocess.DEVNULL)


def median_of(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--transports", default="raw,library", help="loadgen's transports to run, comma-separated")
    parser.add_argument("--targets", default="1,2,3,4", help="which targets to measure, comma-separated")
    args = parser.parse_args()
    transports = [name.strip() for name in args.transports.split(",") if name.strip()]
    targets = {name.strip() for name in args.targets.split(",")}
    players = clients(transports)
    rows: list[tuple[str, str, float, float, str]] = []

    def row(what: str, name: str, pa: float, lg: float, met: bool | None) -> None:
        rows.append((what, name, pa, lg, "" if met is None else "met" if met else "MISSED"))

    def compare(what: str, runs: dict[str, list[Run]], field: str, met: Callable[[float, float], bool] | None) -> None:
        pa = median_of(runs[PERF_ANALYZER], field)
        for name in players:
            if name != PERF_ANALYZER:
                lg = median_of(runs[name], field)
                row(what, name, pa, lg, None if met is None else met(pa, lg))

    ratios: dict[str, float] = {}
    with example_server() as server:
        if "1" in targets:
            for protocol in ("grpc", "http"):
                url = server.url(protocol)
                closed = alternate(
                    args.pairs,
                    lambda c, url=url, protocol=protocol: c(
                        url, IDENTITY, ["--concurrency-range", "16"], args.interval_ms, [], protocol=protocol
                    ),
                    players,
                )
                compare(f"1. {protocol} c=16 infer/s", closed, "throughput", lambda pa, lg: lg >= 1.2 * pa)
                compare(
                    f"1. {protocol} client CPU us/request", closed, "cpu_us_per_request", lambda pa, lg: lg <= 0.6 * pa
                )
                compare(f"1. {protocol} steady client CPU us/request", closed, "steady_cpu_us_per_request", None)
                compare(f"1. {protocol} client share of box CPU", closed, "box_share", None)
                compare(f"1. {protocol} requests/s per client core", closed, "requests_per_core", None)
                default = f"loadgen {transports[0]}"
                ratios[protocol] = median_of(closed[default], "throughput") / median_of(
                    closed[PERF_ANALYZER], "throughput"
                )

        url = server.grpc_url
        image = ["--input-data", str(SAMPLE_JPEG)]
        if "2" in targets:
            group = server.process_group
            assert group is not None
            everywhere = f"0-{(os.cpu_count() or 1) - 1}"
            for cores, what in ((everywhere, ""), ("0", ", server on 1 core")):
                hold_to_cores(group, cores)
                found = open_loop_ladders(players, url, args.pairs)
                for name in players:
                    if name != PERF_ANALYZER:
                        pa_rate, lg_rate = found[PERF_ANALYZER], found[name]
                        met = None if what else lg_rate > 0 and lg_rate >= 1.5 * pa_rate
                        row(f"2. highest rate with <1% late{what}", name, pa_rate, lg_rate, met)
            hold_to_cores(group, everywhere)

        if "3" in targets:
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
                        url,
                        ENSEMBLE,
                        ["--concurrency-range", "1"],
                        args.interval_ms,
                        pa_image if c is perf_analyzer else image,
                    ),
                    players,
                )
            compare("3. ensemble c=1 client CPU us/request", fidelity, "cpu_us_per_request", lambda pa, lg: lg <= pa)
            compare("3. ensemble c=1 steady client CPU us/request", fidelity, "steady_cpu_us_per_request", None)
            for field in ("p50_us", "p99_us"):
                compare(f"3. ensemble c=1 {field}", fidelity, field, lambda pa, lg: abs(lg / pa - 1) <= 0.05)

        if "4" in targets:
            for transport in transports:
                memory = loadgen(
                    url,
                    ENSEMBLE,
                    ["--concurrency-range", "1024"],
                    2000,
                    ["-r", "3", "--request-count", "3000", *image],
                    transport=transport,
                )
                row(
                    "4. peak RSS MB at c=1024",
                    f"loadgen {transport}",
                    float("nan"),
                    memory.peak_rss_mb,
                    memory.peak_rss_mb < 200,
                )

    print(f"{'target':42} {'client':16} {'perf_analyzer':>14} {'loadgen':>10} {'ratio':>7}  result")
    for what, name, pa, lg, result in rows:
        ratio = lg / pa if pa == pa and pa else float("nan")
        print(f"{what:42} {name:16} {pa:14.1f} {lg:10.2f} {ratio:7.2f}  {result}")
    for protocol, ratio in ratios.items():
        print(f"throughput ratio loadgen/perf_analyzer over {protocol}: {ratio:.2f}")


if __name__ == "__main__":
    main()
