"""Client CPU per inference call of each transport and protocol, in one process, without start-up or measurement.

The identity model with N requests in flight on the embedded example server; each path sends the same pre-encoded
request. Reports CPU us per request (the process's user+system time, so grpcio's poller thread counts) and what one
client core could send at that cost (1e6 / CPU us). Paths run in turns, `--rounds` times; medians.

    python benchmarks/transport_cpu.py [--requests 4000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop
from common import example_server

from loadgen.settings import Settings
from loadgen.transport import ConnectionOptions, RequestLayout, Tensor, connect

PATHS = [(protocol, transport) for protocol in ("grpc", "http") for transport in ("raw", "library")]
WARMUP = 50  # requests per slot before measuring


async def probe(url: str, protocol: str, transport: str, requests: int, concurrency: int) -> float:
    """CPU us per request of `requests` identity calls, `concurrency` in flight."""
    connection = connect(ConnectionOptions.from_settings(Settings(url=url, protocol=protocol, transport=transport)))
    try:
        model = await connection.model_info("identity_uint8")
        payload = connection.wire.encode(model, (Tensor("INPUT0", "UINT8", (1, 16), bytes(16)),), RequestLayout())

        async def slot(count: int) -> None:
            for _ in range(count):
                await connection.infer(payload)

        await asyncio.gather(*(slot(WARMUP) for _ in range(concurrency)))
        started = time.process_time()
        await asyncio.gather(*(slot(requests // concurrency) for _ in range(concurrency)))
        return (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    costs: dict[tuple[str, str], list[float]] = {path: [] for path in PATHS}
    with example_server() as server:
        for _ in range(args.rounds):
            for protocol, transport in PATHS:
                cost = uvloop.run(probe(server.url(protocol), protocol, transport, args.requests, args.concurrency))
                costs[protocol, transport].append(cost)
                print(f"  {protocol} {transport}: {cost:.1f} us CPU/request", flush=True)
    print(f"{'protocol':8} {'transport':9} {'CPU us/req':>10} {'req/s/core':>11}")
    for (protocol, transport), measured in costs.items():
        cost = statistics.median(measured)
        print(f"{protocol:8} {transport:9} {cost:10.1f} {1e6 / cost:11.0f}")


if __name__ == "__main__":
    main()
