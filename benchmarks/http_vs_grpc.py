"""loadgen and the real perf_analyzer 2.51 over both protocols, on one embedded server, A B A B.

Closed loop on the identity model at one concurrency: each client's throughput and client CPU per request over gRPC
and over HTTP. Absolute numbers on a shared 2-core machine are noise; the ratios from one run are the result.

    python benchmarks/http_vs_grpc.py [--pairs 3] [--interval-ms 3000] [--concurrency 8]
"""

from __future__ import annotations

import argparse

from common import example_server
from perf_targets import CLIENTS, IDENTITY, Run, median_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    load = ["--concurrency-range", str(args.concurrency)]
    runs: dict[tuple[str, str], list[Run]] = {}
    with example_server() as server:
        for _ in range(args.pairs):  # every client and protocol in turn, so drift on the machine hits all alike
            for protocol in ("grpc", "http"):
                url = server.url(protocol)
                for name, client in CLIENTS.items():
                    run = client(url, IDENTITY, load, args.interval_ms, [], protocol=protocol)
                    runs.setdefault((name, protocol), []).append(run)
                    print(f"  {name} {protocol}: {run}", flush=True)
    print(f"{'client':14} {'protocol':8} {'infer/s':>9} {'CPU us/req':>11}")
    for (name, protocol), measured in runs.items():
        throughput, cpu = median_of(measured, "throughput"), median_of(measured, "cpu_us_per_request")
        print(f"{name:14} {protocol:8} {throughput:9.1f} {cpu:11.1f}")
    for protocol in ("grpc", "http"):
        ratio = median_of(runs["loadgen", protocol], "throughput") / median_of(
            runs["perf_analyzer", protocol], "throughput"
        )
        print(f"throughput ratio loadgen/perf_analyzer over {protocol}: {ratio:.2f}")


if __name__ == "__main__":
    main()
