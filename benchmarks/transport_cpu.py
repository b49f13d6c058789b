"""Client CPU per inference call of each transport and protocol, in one process, without start-up or measurement.

The identity model with N requests in flight on the embedded example server; each path sends the same pre-encoded
request. Reports CPU us per request (the process's user+system time, so grpcio's poller thread counts) and what one
client core could send at that cost (1e6 / CPU us). Paths run in turns, `--rounds` times; medians.

`--large` sends instead requests of 16, 64 and 256 MiB (`--sizes`) over gRPC and HTTP through both transports each
(`--protocols`) to an echo model (`fast_step` of tests/model_repository, on an embedded server of its own), one at a time, `--calls` each
after one uncounted call (connections open, the server's buffers grow): it counts the calls whose response came
back whole and the same, and reports the wall time and client CPU per call and the CPU per MiB moved (the request
and its response).

`--in-memory` measures the raw gRPC client alone: unary calls answered by an in-memory HTTP/2 peer (the frames
Triton sends for the identity model), no socket, no server, no event loop turns; the least of `--rounds` rounds. It
tells the HTTP/2 code's own cost apart from a busy machine's noise.

    python benchmarks/transport_cpu.py [--requests 4000] [--concurrency 16] [--rounds 3]
    python benchmarks/transport_cpu.py --large [--sizes 16,64,256] [--calls 3] [--protocols grpc,http]
    python benchmarks/transport_cpu.py --in-memory [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterable
from typing import NamedTuple

import uvloop
from common import BENCHMARKS, example_server
from tritonclient.grpc import service_pb2

import loadgen
from loadgen.settings import Settings
from loadgen.transport import ConnectionOptions, RequestLayout, Tensor, connect, http2
from loadgen.transport.grpc_http2 import grpc_message
from loadgen.transport.h2_frames import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    MAX_WINDOW,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    frame,
    prepare,
    request_block,
    settings_frame,
    window_update,
)
from loadgen.transport.raw_grpc import UnaryCall

PATHS = [(protocol, transport) for protocol in ("grpc", "http") for transport in ("raw", "library")]
WARMUP = 50  # requests per slot before measuring
ECHO_REPOSITORY = BENCHMARKS.parent / "tests" / "model_repository"
ECHO_MODEL = "fast_step"  # returns its UINT8 input, of any length, as its output


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


class Sink:
    """A transport that takes what is written and drops it."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, pieces: Iterable[bytes | memoryview]) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def _literals(headers: list[tuple[str, str]]) -> bytes:
    """A header block as Triton's gRPC server sends it: literals without indexing."""
    return b"".join(b"\0" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode() for n, v in headers)


def _identity_messages() -> tuple[bytes, bytes]:
    """The identity model's request and response messages, serialised."""
    request = service_pb2.ModelInferRequest(model_name="identity_uint8", raw_input_contents=[bytes(16)])
    request.inputs.add(name="INPUT0", datatype="UINT8", shape=[1, 16])
    response = service_pb2.ModelInferResponse(model_name="identity_uint8", model_version="1")
    response.outputs.add(name="OUTPUT0", datatype="UINT8", shape=[1, 16])
    response.raw_output_contents.append(bytes(16))
    return request.SerializeToString(), response.SerializeToString()


async def in_memory(calls: int, rounds: int) -> float:
    """CPU us per unary call of the raw gRPC client against an in-memory peer: the least of `rounds`."""
    connection = http2.Connection(lambda code, message: RuntimeError(message), "memory")
    connection.connection_made(Sink())  # type: ignore[arg-type]
    grown = settings_frame([(SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)]) + window_update(0, MAX_WINDOW - 65_535)
    connection.data_received(grown + frame(SETTINGS, ACK, 0))
    block = request_block([(":method", "POST"), (":path", "/inference.GRPCInferenceService/ModelInfer")])
    payload, response = _identity_messages()
    request = prepare(block, grpc_message(payload))
    head = _literals([(":status", "200"), ("content-type", "application/grpc")])
    tail = frame(HEADERS, END_HEADERS | END_STREAM, 0, _literals([("grpc-status", "0"), ("grpc-message", "")]))
    body = frame(DATA, 0, 0, grpc_message(response))
    loop = asyncio.get_running_loop()
    stream_id, best = 1, float("inf")
    for _ in range(rounds):
        replies = []
        for sid in range(stream_id, stream_id + 2 * calls, 2):
            prefix = b"\x20" if sid == 1 else b""  # the first block sets the HPACK table to 0, as Triton's does
            parts = (frame(HEADERS, END_HEADERS, sid, prefix + head), body, tail)
            replies.append(b"".join(part[:5] + sid.to_bytes(4, "big") + part[9:] for part in parts))
        stream_id += 2 * calls
        started = time.process_time()
        for reply in replies:
            call = UnaryCall(RuntimeError, loop.create_future())
            connection.start(call, request)
            connection.data_received(reply)
            connection.drain()
            call.future.result()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


class Large(NamedTuple):
    """What `--large` measured of one transport and size."""

    whole: int  # calls whose response came back whole and the same
    wall_s: float  # per call
    cpu_s: float  # per call


async def large(url: str, protocol: str, transport: str, mib: int, calls: int) -> Large:
    """`calls` echo calls of `mib` MiB, one at a time (the payload encoded once, before)."""
    settings = Settings(url=url, protocol=protocol, transport=transport)
    connection = connect(ConnectionOptions.from_settings(settings))
    try:
        model = await connection.model_info(ECHO_MODEL)
        data = bytes(range(256)) * (mib << 12)
        payload = connection.wire.encode(model, (Tensor("INPUT0", "UINT8", (len(data),), data),), RequestLayout())
        await connection.infer(payload)  # uncounted: the connections open, the server's buffers grow to the size
        whole = 0
        wall = cpu = 0.0
        for _ in range(calls):
            started, busy = time.perf_counter(), time.process_time()
            response = await connection.infer(payload)
            wall += time.perf_counter() - started
            cpu += time.process_time() - busy
            whole += connection.wire.decode_response(response)[1]["OUTPUT0"].content == data
        return Large(whole, wall / calls, cpu / calls)
    finally:
        await connection.close()


def main_large(sizes: list[int], calls: int, protocols: list[str]) -> None:
    """The `--large` table: each size through each transport of each protocol."""
    rows = []
    with loadgen.EmbeddedServer(ECHO_REPOSITORY) as server:
        for mib in sizes:
            for protocol in protocols:
                for transport in ("raw", "library"):
                    measured = uvloop.run(large(server.url(protocol), protocol, transport, mib, calls))
                    rows.append((protocol, transport, mib, measured))
                    print(f"  {protocol} {transport} {mib} MiB: {measured}", flush=True)
    print(f"{'protocol':8} {'transport':9} {'MiB':>4} {'whole':>6} {'wall s':>7} {'CPU s':>7} {'CPU ms/MiB':>11}")
    for protocol, transport, mib, measured in rows:
        per_mib = measured.cpu_s * 1000 / (2 * mib)  # the request and its response
        print(
            f"{protocol:8} {transport:9} {mib:4} {measured.whole:>3}/{calls:<2} {measured.wall_s:7.2f} "
            f"{measured.cpu_s:7.2f} {per_mib:11.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="16, 64 and 256 MiB requests instead")
    parser.add_argument("--sizes", default="16,64,256", help="--large: the sizes in MiB")
    parser.add_argument("--calls", type=int, default=3, help="--large: calls of each size on each transport")
    parser.add_argument("--protocols", default="grpc,http", help="--large: the protocols, each through both transports")
    parser.add_argument("--in-memory", action="store_true", help="the raw gRPC client alone, against a peer in memory")
    args = parser.parse_args()
    if args.large:
        return main_large([int(size) for size in args.sizes.split(",")], args.calls, args.protocols.split(","))
    if args.in_memory:
        cost = uvloop.run(in_memory(args.requests, args.rounds))
        return print(f"raw gRPC client, in memory: {cost:.2f} us CPU/call ({1e6 / cost:,.0f} calls/s/core)")
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
    return None


if __name__ == "__main__":
    main()
