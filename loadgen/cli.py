"""The command line: parses perf_analyzer-style flags into `Settings` and hands them to the library."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from loadgen import profile_sync
from loadgen.errors import EXIT_BAD_OPTION, EXIT_SUCCESS, EXIT_UNSTABLE, LoadgenError, OptionError
from loadgen.reports import ConsoleProgress, make_console, write_csv, write_json
from loadgen.server import EmbeddedServer
from loadgen.settings import ALIASES, DEFAULT_URL, Settings, parse_shape


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with perf_analyzer's status 3."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_OPTION, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _aliases(field: str) -> list[str]:
    """The short flags of a settings field, from the aliases the library accepts too."""
    return [f"--{alias.replace('_', '-')}" for alias, name in ALIASES.items() if name == field]


def profile_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen",
        description="Profile a model on a Triton server: latency and throughput per load level "
        "(`loadgen serve --help` for the embedded server).",
    )
    parser.add_argument(
        "-m",
        "--model-name",
        *_aliases("model_name"),
        help="model to profile (default: the server's only ensemble or model)",
    )
    parser.add_argument("-x", "--model-version", default="", help="model version (default: the server's choice)")
    parser.add_argument("-u", "--url", default=DEFAULT_URL, help=f"Triton gRPC endpoint (default {DEFAULT_URL})")
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
        "--binary-search", action="store_true", help="bisect the range for the highest load under --latency-threshold"
    )
    parser.add_argument(
        "--input-data",
        default="random",
        help="'random', 'zero', a file sent as raw bytes, a directory of files, or perf_analyzer's JSON format",
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:D1[,D2...]",
        help="shape of an input (repeatable)",
    )
    parser.add_argument("-b", "--batch-size", type=_int, default=1, help="batch size of each request (default 1)")
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
    options["shape"] = dict(parse_shape(text) for text in args.shape)
    return Settings(**options)


def _profile(argv: Sequence[str], console: Console) -> int:
    args = profile_parser().parse_args(argv)
    settings = settings_from(args)
    if args.html or args.plot:
        from loadgen.reports import html, plot  # the `report` extra: checked before the sweep, not after it
    with ConsoleProgress(console, verbose=args.verbose, quiet=args.quiet) as progress:
        result = profile_sync(settings=settings, progress=progress)
        progress.finished(result)
    if args.json:
        write_json(result, args.json)
    if args.latency_report_file:
        write_csv(result, args.latency_report_file)
    if args.html:
        html.write_html(result, args.html)
    if args.plot:
        plot.write_png(result, args.plot)
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
        return _profile(argv, console)
    except LoadgenError as error:
        errors.print(f"error: {error}", markup=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


__all__ = ["OptionError", "main", "profile_parser", "serve_parser", "settings_from"]
