"""The command line: parses perf_analyzer-style flags into `Settings` and hands them to the library."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from loadgen import profile, run
from loadgen.errors import EXIT_BAD_OPTION, EXIT_OTHER, EXIT_SUCCESS, EXIT_UNSTABLE, LoadgenError, RunFailed
from loadgen.merge import merge_logs
from loadgen.reports import ConsoleProgress, TuneReport, make_console, write_atomic, write_csv, write_json
from loadgen.results import ProfileResult
from loadgen.server import EmbeddedServer
from loadgen.settings import (
    ALIASES,
    DEFAULT_URLS,
    OUTPUT_SHARED_MEMORY_SIZE,
    PROTOCOLS,
    SHARED_MEMORY,
    STRING_LENGTH,
    TRANSPORTS,
    Settings,
    parse_header,
    parse_input_range,
    parse_shape,
)
from loadgen.tune import TuneSettings, tune
from loadgen.workers import worker_count


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with perf_analyzer's status 3."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_OPTION, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _workers(text: str) -> int:
    try:
        return worker_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _aliases(field: str) -> list[str]:
    """The short flags of a settings field, from the aliases the library accepts too."""
    return [f"--{alias.replace('_', '-')}" for alias, name in ALIASES.items() if name == field]


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-u",
        "--url",
        default="",
        metavar="HOST:PORT",
        help=f"Triton endpoint (default {DEFAULT_URLS['grpc']} for gRPC, {DEFAULT_URLS['http']} for HTTP)",
    )
    parser.add_argument(
        "-i", "--protocol", choices=PROTOCOLS, default="grpc", help="talk to Triton over grpc (default) or http"
    )


def profile_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen",
        description="Profile a model on a Triton server: latency and throughput per load level "
        "(`loadgen serve --help` for the embedded server, `loadgen tune --help` to move the bottleneck).",
    )
    parser.add_argument(
        "-m",
        "--model-name",
        *_aliases("model_name"),
        help="model to profile (default: the server's only ensemble or model)",
    )
    parser.add_argument("-x", "--model-version", default="", help="model version (default: the server's choice)")
    _connection_flags(parser)
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="raw",
        help="inference calls over loadgen's own HTTP/1.1 and HTTP/2 (raw, default) or over grpcio / aiohttp (library)",
    )
    load = parser.add_argument_group("load (one mode)")
    load.add_argument(
        "--concurrency-range",
        *_aliases("concurrency_range"),
        metavar="START[:END[:STEP]]",
        help="closed loop: requests kept in flight, one level per step (the default mode, at 1)",
    )
    load.add_argument(
        "--request-rate-range",
        *_aliases("request_rate_range"),
        metavar="START[:END[:STEP]]",
        help="open loop: requests per second, sent on schedule whether or not earlier ones returned",
    )
    load.add_argument(
        "--request-distribution", choices=("constant", "poisson"), default="constant", help="gaps of the rate schedule"
    )
    load.add_argument("--request-intervals", metavar="FILE", help="open loop: one gap in microseconds per line, looped")
    load.add_argument(
        "--max-in-flight", type=_int, default=1024, help="open loop safety limit on requests in flight (default 1024)"
    )
    load.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="processes that generate the load, each with its own event loop (default 1; auto: one per core)",
    )
    load.add_argument(
        "--binary-search", action="store_true", help="bisect the range for the highest load under --latency-threshold"
    )
    parser.add_argument(
        "--input-data",
        action="append",
        help="'random' (default), 'zero', a file sent as raw bytes, a directory of files, or perf_analyzer's JSON "
        "format (repeatable for several JSON files)",
    )
    parser.add_argument(
        "--input-range",
        action="append",
        default=[],
        metavar="[NAME:]MIN:MAX",
        help="bounds of random numbers for one input, or every numeric input (e.g. indices into an embedding table)",
    )
    parser.add_argument("--string-data", help="the string every generated BYTES element holds")
    parser.add_argument(
        "--string-length", type=_int, default=STRING_LENGTH, help="length of random strings (default 128)"
    )
    parser.add_argument(
        "--output", action="append", default=[], metavar="NAME", help="request only this output (repeatable)"
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:D1[,D2...]",
        help="shape of an input (repeatable)",
    )
    sequences = parser.add_argument_group("sequence (stateful) models")
    sequences.add_argument(
        "--sequence-length",
        type=_int,
        default=20,
        help="requests per sequence (default 20; JSON streams set their own)",
    )
    sequences.add_argument(
        "--sequence-length-variation",
        type=_float,
        default=20.0,
        metavar="PERCENT",
        help="sequence lengths vary at random by up to this (default 20)",
    )
    sequences.add_argument(
        "--sequence-id-range", metavar="START[:END]", help="correlation IDs to use (default from 1, no end)"
    )
    sequences.add_argument(
        "--num-of-sequences", type=_int, default=4, help="open loop: sequences in flight at once (default 4)"
    )
    parser.add_argument(
        "--bls-composing-models",
        default="",
        metavar="A,B",
        help="models a BLS model calls: their statistics join the breakdown and the bottleneck analysis",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="send over gRPC streams (decoupled models): latency to the first and the last response",
    )
    parser.add_argument("-b", "--batch-size", type=_int, default=1, help="batch size of each request (default 1)")
    parser.add_argument(
        "--shared-memory",
        choices=SHARED_MEMORY,
        default="none",
        help="system: inputs and outputs go through shared-memory regions registered with a local server",
    )
    parser.add_argument(
        "--output-shared-memory-size",
        type=_int,
        default=OUTPUT_SHARED_MEMORY_SIZE,
        metavar="BYTES",
        help="region size per output whose size the metadata does not fix (default 102400)",
    )
    parser.add_argument(
        "-p",
        "--measurement-interval",
        type=_int,
        default=5000,
        metavar="MS",
        help="window length (default 5000)",
    )
    parser.add_argument(
        "-s",
        "--stability-percentage",
        type=_float,
        default=10.0,
        help="allowed spread of 3 windows (default 10)",
    )
    parser.add_argument("-r", "--max-trials", type=_int, default=10, help="windows per level at most (default 10)")
    parser.add_argument(
        "--measurement-mode", choices=("time_windows", "count_windows"), default="time_windows", help="how windows end"
    )
    parser.add_argument(
        "--measurement-request-count", type=_int, default=50, help="requests per window in count_windows (default 50)"
    )
    parser.add_argument(
        "--request-count", type=_int, default=0, help="measure one window of exactly N requests, no stability check"
    )
    parser.add_argument(
        "--warmup-request-count", type=_int, default=0, help="requests sent and discarded before measuring"
    )
    parser.add_argument(
        "--percentile", type=_int, metavar="P", help="stabilise on (and report) the P-th percentile latency"
    )
    parser.add_argument(
        "-l", "--latency-threshold", type=_float, metavar="MS", help="stop the sweep at the first level over it"
    )
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON")
    parser.add_argument(
        "-f", "--latency-report-file", metavar="FILE", help="perf_analyzer's CSV latency report (+ one per step)"
    )
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="a self-contained HTML report: table, plots, verdict, settings (needs matplotlib)",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="the p99 latency vs throughput curve as a PNG (needs matplotlib)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-v", "--verbose", action="store_true", help="print every measurement window")
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no progress while the sweep runs; the summary at the end"
    )
    shards = parser.add_argument_group("shards (one load over several processes or machines)")
    shards.add_argument("--shard", metavar="i/K", help="run part i of a load split K ways (needs --hdr-log)")
    shards.add_argument("--start-at", type=_float, metavar="UNIX_TS", help="start at this UNIX time (align shards)")
    shards.add_argument("--hdr-log", metavar="DIR", help="log every window to DIR for `loadgen merge DIR/*`")
    shards.add_argument(
        "--ray-address", metavar="auto|HOST:PORT", help="run one shard per worker on a Ray cluster (`ray` extra)"
    )
    shards.add_argument("--workers-per-node", type=_int, default=1, help="Ray workers per node (default 1)")
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--request-timeout", type=_float, metavar="MS", help="a request without an answer by then counts as a timeout"
    )
    faults.add_argument(
        "--max-error-rate",
        type=_float,
        default=0.1,
        metavar="SHARE",
        help="stop the sweep when a window's share of failed requests exceeds this (default 0.1)",
    )
    security = parser.add_argument_group("security")
    security.add_argument("--ssl-grpc-use-ssl", action="store_true", help="TLS for the gRPC connection")
    security.add_argument("--ssl-grpc-root-certifications-file", metavar="FILE", help="CA certificates (PEM)")
    security.add_argument("--ssl-grpc-private-key-file", metavar="FILE", help="client private key (PEM)")
    security.add_argument("--ssl-grpc-certificate-chain-file", metavar="FILE", help="client certificate chain (PEM)")
    security.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="gRPC metadata or HTTP header sent with every call (repeatable); values never appear in outputs",
    )
    return parser


def tune_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen tune",
        description="Move the bottleneck: change the slow step's config on a live server (explicit model-control "
        "mode), re-measure, keep what helps.",
    )
    parser.add_argument("-m", "--model-name", help="model to tune (default: the server's only ensemble or model)")
    _connection_flags(parser)
    parser.add_argument("--input-data", default="random", help="as for profiling")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:D1[,D2...]")
    parser.add_argument("-b", "--batch-size", type=_int, default=1)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_int, help="closed-loop load to tune at (default 8)")
    load.add_argument("--request-rate", type=_float, help="open-loop load to tune at, requests per second")
    parser.add_argument("--latency-budget-ms", type=_float, help="goal: p99 latency at or under this")
    parser.add_argument("--max-trials", type=_int, default=8, help="configuration changes tried at most (default 8)")
    parser.add_argument("--write-config", metavar="DIR", help="write each improved config.pbtxt under DIR/<model>/")
    parser.add_argument("--keep", action="store_true", help="leave the improved configs loaded on the server")
    parser.add_argument("-p", "--measurement-interval", type=_int, default=2000, metavar="MS")
    parser.add_argument("-s", "--stability-percentage", type=_float, default=10.0)
    parser.add_argument("--json", metavar="FILE", help="write the trial history as JSON")
    parser.add_argument("--html", metavar="FILE", help="an HTML report of the trials (needs matplotlib)")
    return parser


def merge_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loadgen merge", description="Merge the window logs of a run's shards into one result.")
    parser.add_argument("logs", nargs="+", metavar="LOG", help="the shards' logs (DIR/*.jsonl)")
    parser.add_argument("--json", metavar="FILE", help="write the merged result as JSON")
    parser.add_argument("-f", "--latency-report-file", metavar="FILE", help="perf_analyzer's CSV latency report")
    parser.add_argument("--html", metavar="FILE", help="a self-contained HTML report (needs matplotlib)")
    parser.add_argument("--plot", metavar="FILE.png", help="the latency-throughput curve as a PNG")
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loadgen serve", description="Run the embedded Triton server until Ctrl-C.")
    parser.add_argument("--model-repository", required=True, type=Path)
    parser.add_argument("--grpc-port", type=_int, default=8001)
    parser.add_argument("--http-port", type=_int, default=8000)
    parser.add_argument("--metrics-port", type=_int, default=8002)
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit"),
        default="none",
        help="explicit: load every model at start, and allow loading and unloading at run time",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The library settings a parsed command line stands for: every `Settings` field is a flag."""
    options = {name: getattr(args, name) for name in Settings.__dataclass_fields__}
    if args.ray_address:  # the cluster's workers are the shards; the driver's settings describe the whole load
        options["hdr_log"] = None
    options["input_data"] = args.input_data or "random"
    options["shape"] = dict(parse_shape(text) for text in args.shape)
    options["input_range"] = dict(parse_input_range(text) for text in args.input_range)
    options["header"] = dict(parse_header(text) for text in args.header)
    return Settings(**options)


def _write_outputs(result: ProfileResult, args: argparse.Namespace) -> None:
    """Every output file the command line asked for, from one result (a finished, partial or merged run)."""
    if args.json:
        write_json(result, args.json)
    if args.latency_report_file:
        write_csv(result, args.latency_report_file)
    if args.html:
        from loadgen.reports import html

        html.write_html(result, args.html)
    if args.plot:
        from loadgen.reports import plot

        plot.write_png(result, args.plot)


async def _profile_until_signalled(settings: Settings, progress: ConsoleProgress) -> tuple[ProfileResult, int | None]:
    """Run the profile; the first SIGINT/SIGTERM stops it gracefully, a second one exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        progress.console.print("stopping: writing what was measured (again to exit at once)", style="yellow")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        result = await profile(settings=settings, progress=progress, stop=stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return result, received[0] if received else None


def _profile(argv: Sequence[str], console: Console) -> int:
    args = profile_parser().parse_args(argv)
    settings = settings_from(args)
    if args.html or args.plot:
        from loadgen.reports import html, plot  # noqa: F401  (the `report` extra: checked before the sweep)
    if args.ray_address:
        from loadgen.ray_cluster import profile_on_ray

        progress = ConsoleProgress(console, verbose=True, quiet=args.quiet)
        result = profile_on_ray(settings, args.ray_address, args.workers_per_node, progress)
        progress.replay(result)
        _write_outputs(result, args)
        return EXIT_SUCCESS if result.status == "complete" and result.stable else EXIT_UNSTABLE
    with ConsoleProgress(console, verbose=args.verbose, quiet=args.quiet) as progress:
        try:
            result, signum = run(_profile_until_signalled(settings, progress))
        except RunFailed as failure:
            assert isinstance(failure.result, ProfileResult)
            _write_outputs(failure.result, args)
            raise
        progress.finished(result)
    _write_outputs(result, args)
    if signum is not None:
        return 128 + signum
    return EXIT_SUCCESS if result.stable else EXIT_UNSTABLE


def _tune(argv: Sequence[str], console: Console) -> int:
    args = tune_parser().parse_args(argv)
    profile_settings = Settings(
        model_name=args.model_name,
        url=args.url,
        protocol=args.protocol,
        input_data=args.input_data,
        shape=dict(parse_shape(text) for text in args.shape),
        batch_size=args.batch_size,
        concurrency_range=None if args.request_rate else (args.concurrency or 8),
        request_rate_range=args.request_rate,
        measurement_interval=args.measurement_interval,
        stability_percentage=args.stability_percentage,
    )
    settings = TuneSettings(profile_settings, args.latency_budget_ms, args.max_trials, args.keep, args.write_config)
    if args.html:
        from loadgen.reports import html  # noqa: F401  (the `report` extra: checked before tuning, not after it)
    report = TuneReport(console)
    result = run(tune(settings, report.progress))
    report.finished(result, restored=not args.keep)
    if args.json:
        write_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
    if args.html:
        result.save_html(args.html)
    return EXIT_SUCCESS


def _merge(argv: Sequence[str], console: Console) -> int:
    args = merge_parser().parse_args(argv)
    result = merge_logs(args.logs)
    ConsoleProgress(console).replay(result)
    _write_outputs(result, args)
    if result.status != "complete":
        return EXIT_OTHER
    return EXIT_SUCCESS if result.stable else EXIT_UNSTABLE


def _serve(argv: Sequence[str], console: Console) -> int:
    args = serve_parser().parse_args(argv)
    server = EmbeddedServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        explicit_model_control=args.model_control_mode == "explicit",
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"Starting tritonserver with {args.model_repository} ...")
    with server:
        console.print(f"Triton ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}")
        console.print(f"Server log: {server.log_path}; Ctrl-C stops it.")
        while not stop.wait(0.5):
            if not server.running:
                raise LoadgenError(f"tritonserver exited: {server.log_tail(5)}")
    console.print("Triton stopped.")
    return EXIT_SUCCESS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m loadgen`; returns perf_analyzer's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = make_console()
    errors = make_console(stderr=True)
    try:
        if argv[:1] == ["serve"]:
            return _serve(argv[1:], console)
        if argv[:1] == ["tune"]:
            return _tune(argv[1:], console)
        if argv[:1] == ["merge"]:
            return _merge(argv[1:], console)
        return _profile(argv, console)
    except LoadgenError as error:
        errors.print(f"error: {error}", markup=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


__all__ = ["main", "merge_parser", "profile_parser", "serve_parser", "settings_from", "tune_parser"]
