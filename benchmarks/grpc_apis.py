"""Which gRPC API sends fastest from Python: grpc.aio with 1 or 4 channels, or the callback/future API.

Each variant keeps 16 pre-serialised requests to the identity model in flight for a few seconds on the embedded
server, in turns (A B C A B C ...), and reports requests per second and the client's CPU time per request.

    python benchmarks/grpc_apis.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import threading
import time
from collections.abc import Callable

import grpc
import uvloop
from common import example_server
from tritonclient.grpc import service_pb2

METHOD = "/inference.GRPCInferenceService/ModelInfer"
CONCURRENCY = 16


def _payload() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="identity_uint8")
    request.inputs.add(name="INPUT0", datatype="UINT8", shape=[1, 16])
    request.raw_input_contents.append(bytes(16))
    return request.SerializeToString()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def aio(url: str, seconds: float, channels: int) -> int:
    """grpc.aio unary calls on uvloop, the workers spread over `channels` channels."""

    async def run() -> int:
        opened = [grpc.aio.insecure_channel(url) for _ in range(channels)]
        calls = [channel.unary_unary(METHOD) for channel in opened]
        payload, done, stop = _payload(), 0, time.perf_counter() + seconds

        async def worker(slot: int) -> None:
            nonlocal done
            call = calls[slot % channels]
            while time.perf_counter() < stop:
                await call(payload)
                done += 1

        await asyncio.gather(*(worker(slot) for slot in range(CONCURRENCY)))
        for channel in opened:
            await channel.close()
        return done

    return uvloop.run(run())


def futures(url: str, seconds: float) -> int:
    """The synchronous stack's futures: each completion callback sends the slot's next request."""
    channel = grpc.insecure_channel(url)
    call = channel.unary_unary(METHOD)
    payload, stop = _payload(), time.perf_counter() + seconds
    lock, finished, counts = threading.Lock(), threading.Semaphore(0), [0]

    def send(_: object = None) -> None:
        if time.perf_counter() >= stop:
            finished.release()
            return
        with lock:
            counts[0] += 1
        call.future(payload).add_done_callback(send)

    for _ in range(CONCURRENCY):
        send()
    for _ in range(CONCURRENCY):
        finished.acquire()
    channel.close()
    return counts[0] - CONCURRENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants: dict[str, Callable[[str, float], int]] = {
        "aio, 1 channel": lambda url, s: aio(url, s, 1),
        "aio, 4 channels": lambda url, s: aio(url, s, 4),
        "callback/future API": futures,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    with example_server() as server:
        for _ in range(args.rounds):
            for name, variant in variants.items():
                cpu, started = _cpu(), time.perf_counter()
                done = variant(server.grpc_url, args.seconds)
                elapsed = time.perf_counter() - started
                rates[name].append(done / elapsed)
                cpus[name].append((_cpu() - cpu) * 1e6 / max(done, 1))
    print(f"{'variant':24} {'req/s':>8} {'client CPU us/req':>18}   (medians of {args.rounds} rounds)")
    for name in variants:
        print(f"{name:24} {statistics.median(rates[name]):8.0f} {statistics.median(cpus[name]):18.0f}")


if __name__ == "__main__":
    main()
