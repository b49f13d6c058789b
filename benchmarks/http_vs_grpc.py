"""loadgen (both transports) and the real perf_analyzer 2.51 over both protocols, on one embedded server, A B A B.

Closed loop on the identity model at one concurrency: each client's throughput, client CPU per request and share of
the box's CPU over gRPC and over HTTP. Absolute numbers on a shared 2-core machine are noise; the ratios from one
run are the result.

    python benchmarks/http_vs_grpc.py [--pairs 3] [--interval-ms 3000] [--concurrency 8] [--transports raw,library]
"""

from __future__ import annotations

import argparse

from common import example_server
from perf_targets import IDENTITY, PERF_ANALYZER, Run, clients, median_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--transports", default="raw,library", help="loadgen's transports to run, comma-separated")
    args = parser.parse_args()
    players = clients([name.strip() for name in args.transports.split(",") if name.strip()])
    load = ["--concurrency-range", str(args.concurrency)]
    runs: dict[tuple[str, str], list[Run]] = {}
    with example_server() as server:
        for _ in range(args.pairs):  # every client and protocol in turn, so drift on the machine hits all alike
            for protocol in ("grpc", "http"):
                url = server.url(protocol)
                for name, client in players.items():
                    run = client(url, IDENTITY, load, args.interval_ms, [], protocol=protocol)
                    runs.setdefault((name, protocol), []).append(run)
                    print(f"  {name} {protocol}: {run}", flush=True)
    print(f"{'client':16} {'protocol':8} {'infer/s':>9} {'CPU us/req':>11} {'box share':>10} {'req/s/core':>11}")
    for (name, protocol), measured in runs.items():
        throughput, cpu = median_of(measured, "throughput"), median_of(measured, "cpu_us_per_request")
        share, per_core = median_of(measured, "box_share"), median_of(measured, "requests_per_core")
        print(f"{name:16} {protocol:8} {throughput:9.1f} {cpu:11.1f} {share:10.2f} {per_core:11.0f}")
    for protocol in ("grpc", "http"):
        pa = median_of(runs[PERF_ANALYZER, protocol], "throughput")
        for name in players:
            if name != PERF_ANALYZER:
                ratio = median_of(runs[name, protocol], "throughput") / pa
                print(f"throughput ratio {name}/perf_analyzer over {protocol}: {ratio:.2f}")


if __name__ == "__main__":
    main()
