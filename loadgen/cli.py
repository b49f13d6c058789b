"""The command line: parses perf_analyzer-style flags into `Settings` and hands them to the library."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from loadgen import profile, run
from loadgen.comparison import METRICS, compare, parse_gate
from loadgen.confidence import CONFIDENCE, check_confidence
from loadgen.errors import (
    EXIT_BAD_OPTION,
    EXIT_OTHER,
    EXIT_REGRESSION,
    EXIT_SUCCESS,
    EXIT_UNSTABLE,
    LoadgenError,
    OptionError,
    RunFailed,
)
from loadgen.outputs import check_directory, check_file, write_file
from loadgen.reports import ConsoleProgress, TuneReport, make_console
from loadgen.reports.console import print_comparison
from loadgen.reports.files import ReportFile, report_files, write_reports
from loadgen.reports.perf_analyzer import (
    EXIT_NO_REQUESTS,
    MAX_THREADS_WARNING,
    PERF_ANALYZER_VERSION,
    PerfAnalyzerReport,
    Ranges,
    perf_analyzer_ranges,
)
from loadgen.results import ProfileResult, load_result
from loadgen.server import EmbeddedServer
from loadgen.server.launcher import LOOPBACK
from loadgen.settings import (
    ALIASES,
    COMPRESSION_ALGORITHMS,
    DEFAULT_URLS,
    KEY_TYPES,
    MAX_RESPONSE_BYTES,
    MEASUREMENT_MODES,
    OUTPUT_SHARED_MEMORY_SIZE,
    PROTOCOLS,
    SHARED_MEMORY,
    STRING_LENGTH,
    TENSOR_FORMATS,
    TRACE_LEVELS,
    TRANSPORTS,
    Settings,
    is_open_range,
    parse_header,
    parse_input_range,
    parse_request_parameter,
    parse_shape,
    worker_count,
)
from loadgen.shards.merge import merge_logs
from loadgen.sweep import Progress
from loadgen.tune import MAX_CONCURRENCY, TuneSettings, tune


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with a status of its own (3: a bad option; perf_analyzer's
    99 under `loadgen perf-analyzer`). loadgen's flags are spelled out (`--proto` is not taken for `--protocol`);
    perf_analyzer's getopt takes any unique prefix, and so does its mode here."""

    def __init__(self, error_status: int = EXIT_BAD_OPTION, abbreviations: bool = False, **options: Any) -> None:
        super().__init__(allow_abbrev=abbreviations, **options)
        self.error_status = error_status

    def error(self, message: str) -> NoReturn:
        usage = self.format_help() if self.prog == "perf_analyzer" else ""  # perf_analyzer prints its usage too
        self.exit(self.error_status, f"{self.prog}: error: {message}\n{usage}")


class _Help(argparse.Action):
    """perf_analyzer's --help: the usage on stderr, and its status 99."""

    def __init__(self, option_strings: Sequence[str], dest: str, **options: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **options)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option: str | None = None,
    ) -> None:
        parser.exit(EXIT_OTHER, parser.format_help())


class _Refused(argparse.Action):
    """A perf_analyzer option loadgen does not take: parsing it stops with the reason."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option: str | None = None,
    ) -> None:
        parser.error(f"{option}: {REFUSED[str(option)]}")


# perf_analyzer's options that loadgen refuses, each with why (the parity test checks every option of perf_analyzer
# is either taken or listed here)
REFUSED = {
    "--enable-mpi": "loadgen does not use MPI: profile several models at once with --model-mix, or split one load "
    "over processes and machines with --shard / --ray-address",
    "--model-signature-name": "a TensorFlow Serving option; loadgen drives Triton only (--service-kind triton)",
    "--triton-server-directory": "an option of the triton_c_api service kind (Triton in-process), which loadgen does "
    "not build: it talks to a running server over HTTP or gRPC",
    "--model-repository": "an option of the triton_c_api service kind (Triton in-process), which loadgen does not "
    "build: it talks to a running server over HTTP or gRPC (`loadgen serve --model-repository` starts one)",
    "--endpoint": "an option of the openai service kind, which loadgen does not build (it drives Triton only)",
}
SEQUENCE_ID_WARNING = (
    "WARNING: using an invalid start sequence id. Perf Analyzer will use default value if it is measuring on "
    "sequence model."
)
EXPORT_LIMIT = 1_000_000  # requests recorded for --profile-export-file unless --record-requests says otherwise
SERVICE_KINDS = ("triton", "tfserving", "torchserve", "triton_c_api", "openai")


def version() -> str:
    """loadgen's version, as installed."""
    try:
        return importlib.metadata.version("loadgen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **options: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **options)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option: str | None = None,
    ) -> None:
        if parser.prog == "perf_analyzer":  # as perf_analyzer prints it, to stderr, for tools that parse it
            print(f"Perf Analyzer Version {PERF_ANALYZER_VERSION} (loadgen {version()})", file=sys.stderr)
        else:
            print(f"loadgen {version()} (perf_analyzer {PERF_ANALYZER_VERSION} options)")
        parser.exit(EXIT_SUCCESS)


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


def _connection_flags(parser: argparse.ArgumentParser, protocol: str = "grpc") -> None:
    parser.add_argument(
        "-u",
        "--url",
        default="",
        metavar="HOST:PORT",
        help=f"Triton endpoint (default {DEFAULT_URLS['grpc']} for gRPC, {DEFAULT_URLS['http']} for HTTP; "
        "https://HOST:PORT for HTTPS)",
    )
    parser.add_argument(
        "-i",
        "--protocol",
        type=str.lower,
        choices=PROTOCOLS,
        default=protocol,
        help=f"talk to Triton over grpc or http (default {protocol})",
    )


def profile_parser(perf_analyzer: bool = False) -> argparse.ArgumentParser:
    """The profiling command line; with `perf_analyzer`, perf_analyzer's own: its defaults (HTTP, no metrics, -m
    required), unique-prefix abbreviations and exit status 99 for a bad option."""
    if perf_analyzer:
        parser = _Parser(
            EXIT_OTHER,
            abbreviations=True,
            add_help=False,
            prog="perf_analyzer",
            description="perf_analyzer's command line, its defaults, console report, files and exit codes, over "
            "loadgen.",
        )
    else:
        parser = _Parser(
            prog="loadgen",
            description="Profile a model on a Triton server: latency and throughput per load level "
            "(`loadgen serve --help` for the embedded server, `loadgen tune --help` to move the bottleneck, "
            "`loadgen perf-analyzer --help` for perf_analyzer's own defaults and output).",
        )
    if perf_analyzer:
        parser.add_argument("-h", "--help", action=_Help, help="print this usage on stderr and exit (status 99)")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument(
        "-m",
        "--model-name",
        *_aliases("model_name"),
        required=perf_analyzer,
        help="model to profile" + ("" if perf_analyzer else " (default: the server's only ensemble or model)"),
    )
    parser.add_argument("-x", "--model-version", default="", help="model version (default: the server's choice)")
    parser.add_argument(
        "--model-mix",
        metavar="A:N,B:N",
        help="several models at once: each one's share of --request-rate-range's requests, or (closed loop) its "
        "concurrency; give a model its own data, shapes or BLS models as MODEL=... in --input-data, --shape and "
        "--bls-composing-models",
    )
    parser.add_argument(
        "--solo-baseline",
        action="store_true",
        help="with --model-mix: first measure each model alone at its load, to see what the mix costs it",
    )
    _connection_flags(parser, "http" if perf_analyzer else "grpc")
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="raw",
        help="inference calls over loadgen's own HTTP/1.1 and HTTP/2 (raw, default) or over grpcio / aiohttp (library)",
    )
    parser.add_argument(
        "--service-kind",
        choices=SERVICE_KINDS,
        default="triton",
        help="triton (the only kind loadgen drives; the others are refused)",
    )
    load = parser.add_argument_group("load (one mode)")
    load.add_argument(
        "--concurrency-range",
        *_aliases("concurrency_range"),
        metavar="START[:END[:STEP]]",
        help="closed loop: requests kept in flight, one level per step (the default mode, at 1); END 0: on until -l",
    )
    load.add_argument(
        "--request-rate-range",
        *_aliases("request_rate_range"),
        metavar="START[:END[:STEP]]",
        help="open loop: requests per second, sent on schedule whether or not earlier ones returned; END 0: on "
        "until -l",
    )
    load.add_argument(
        "--request-distribution", choices=("constant", "poisson"), default="constant", help="gaps of the rate schedule"
    )
    load.add_argument("--request-intervals", metavar="FILE", help="open loop: one gap in microseconds per line, looped")
    load.add_argument(
        "--periodic-concurrency-range",
        metavar="START:END[:STEP]",
        help="streams: START requests in flight, STEP more each time every one has --request-period responses, up "
        "to END (needs --streaming and --profile-export-file)",
    )
    load.add_argument(
        "--request-period", type=_int, default=10, help="responses per request between steps (default 10)"
    )
    load.add_argument(
        "--fixed-schedule",
        action="store_true",
        help='send each entry of the --input-data JSON once, at its "timestamp" (ms after the start)',
    )
    load.add_argument("-t", dest="deprecated_concurrency", type=_int, help=argparse.SUPPRESS)
    load.add_argument("-c", dest="deprecated_max_concurrency", type=_int, help=argparse.SUPPRESS)
    load.add_argument("-d", dest="deprecated_dynamic", action="store_true", help=argparse.SUPPRESS)
    load.add_argument(
        "--max-in-flight", type=_int, default=1024, help="open loop safety limit on requests in flight (default 1024)"
    )
    calls = load.add_mutually_exclusive_group()
    calls.add_argument(
        "-a",
        "--async",
        "--asynchronous",
        dest="asynchronous",
        action="store_true",
        help="asynchronous calls (loadgen's only kind: every slot is a coroutine; accepted for perf_analyzer)",
    )
    calls.add_argument(
        "--sync",
        action="store_true",
        help="open loop: at most --max-threads requests in flight, as perf_analyzer's synchronous threads (late "
        "requests wait and count as delayed); a closed loop is unchanged (each slot already waits for its answer)",
    )
    load.add_argument(
        "--max-threads",
        type=_int,
        metavar="N",
        help="perf_analyzer's thread count: here the open loop's in-flight cap with --sync (default 4); otherwise "
        "no effect (loadgen's slots are coroutines, not threads)",
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
    parser.add_argument("--data-directory", metavar="DIR", help="a directory of input files (= --input-data DIR)")
    parser.add_argument("-z", dest="zero_data", action="store_true", help="zeros as input data (= --input-data zero)")
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
    parser.add_argument(
        "--request-parameter",
        action="append",
        default=[],
        metavar="NAME:VALUE:TYPE",
        help="a parameter sent with every request, TYPE bool, int or string (repeatable)",
    )
    sequences = parser.add_argument_group("sequence (stateful) models")
    sequences.add_argument(
        "--sequence-length",
        type=_int,
        help="requests per sequence, varied (default: each JSON stream whole, from its first step; other data 20)",
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
    sequences.add_argument(
        "--serial-sequences",
        action="store_true",
        help="at most one request of a sequence in flight: always so in loadgen (a sequence's requests must reach "
        "the model in order)",
    )
    parser.add_argument(
        "--bls-composing-models",
        action="append",
        default=[],
        metavar="A[:VERSION],B",
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
        help="region size per output and request of the batch, for outputs whose size the metadata does not fix "
        "(times --batch-size; default 102400)",
    )
    parser.add_argument(
        "--input-tensor-format",
        type=str.lower,
        choices=TENSOR_FORMATS,
        default="binary",
        help="HTTP: inputs as binary data (default) or JSON",
    )
    parser.add_argument(
        "--output-tensor-format",
        type=str.lower,
        choices=TENSOR_FORMATS,
        default="binary",
        help="HTTP: outputs asked for as binary data (default) or JSON",
    )
    parser.add_argument(
        "--grpc-compression-algorithm",
        choices=COMPRESSION_ALGORITHMS,
        default="none",
        help="gRPC: compress requests (none, gzip, deflate)",
    )
    measurement = parser.add_argument_group("measurement")
    measurement.add_argument(
        "-p",
        "--measurement-interval",
        type=_int,
        default=5000,
        metavar="MS",
        help="window length (default 5000)",
    )
    measurement.add_argument(
        "-s",
        "--stability-percentage",
        type=_float,
        default=10.0,
        help="allowed spread of 3 windows (default 10)",
    )
    measurement.add_argument("-r", "--max-trials", type=_int, default=10, help="windows per level at most (default 10)")
    measurement.add_argument(
        "--measurement-mode",
        choices=MEASUREMENT_MODES,
        default="time_windows",
        help="time_windows (default), or count_windows: at least --measurement-request-count requests and at least "
        "a second per window",
    )
    measurement.add_argument(
        "--measurement-request-count", type=_int, default=50, help="requests per window in count_windows (default 50)"
    )
    measurement.add_argument(
        "--request-count", type=_int, default=0, help="measure one window of exactly N requests, no stability check"
    )
    measurement.add_argument(
        "--warmup-request-count", type=_int, default=0, help="requests sent and discarded before measuring"
    )
    measurement.add_argument(
        "--percentile", type=_int, metavar="P", help="stabilise on (and report) the P-th percentile latency"
    )
    measurement.add_argument(
        "--confidence",
        type=_float,
        default=CONFIDENCE,
        metavar="C",
        help="of each level's bounds: an interval on throughput from the windows, an upper bound on each percentile "
        f"from its sample count, or how many samples it lacks (default {CONFIDENCE})",
    )
    measurement.add_argument(
        "-l",
        "--latency-threshold",
        type=_float,
        metavar="MS",
        help="stop the sweep at the first level over it (0: no limit)",
    )
    measurement.add_argument(
        "--perf-analyzer-rules",
        action="store_true",
        default=perf_analyzer,
        help="measure as perf_analyzer does (`loadgen perf-analyzer` always does): latency from the actual send, not "
        "from an open loop's schedule; time windows of 1.2 x -p; a --request-count window of whole seconds; with "
        "asynchronous calls, a level whose throughput settled is stable after its last window",
    )
    files = parser.add_argument_group("output files")
    files.add_argument("--json", metavar="FILE", help="write the result as JSON")
    files.add_argument(
        "-f", "--latency-report-file", metavar="FILE", help="perf_analyzer's CSV latency report (+ one per step)"
    )
    files.add_argument(
        "--verbose-csv", action="store_true", help="-f adds perf_analyzer's verbose columns and the GPU metrics"
    )
    files.add_argument(
        "--profile-export-file",
        metavar="FILE",
        help="perf_analyzer's JSON export of every request: timestamps, inputs and outputs",
    )
    files.add_argument(
        "--record-requests",
        type=_int,
        default=0,
        metavar="N",
        help=f"requests recorded for --profile-export-file at most (default {EXPORT_LIMIT} with it); each costs its "
        "timestamps and outputs in memory",
    )
    files.add_argument(
        "--html",
        metavar="FILE",
        help="a self-contained HTML report: table, plots, verdict, settings (needs matplotlib)",
    )
    files.add_argument(
        "--plot", metavar="FILE.png", help="the p99 latency vs throughput curve as a PNG (needs matplotlib)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "-v", "--verbose", action="count", default=0, help="print every measurement window (-v -v: the same)"
    )
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no progress while the sweep runs; the summary at the end"
    )
    metrics = parser.add_argument_group("server metrics (Triton's Prometheus endpoint)")
    metrics.add_argument(
        "--collect-metrics",
        action=argparse.BooleanOptionalAction,
        default=not perf_analyzer,
        help="scrape the server's metrics during every window: host CPU and memory, GPUs, pending requests "
        + (
            "(default off, as in perf_analyzer)"
            if perf_analyzer
            else "(default: on when the endpoint answers; --no-collect-metrics turns it off)"
        ),
    )
    metrics.add_argument("--metrics-url", metavar="URL", help="default: the server's host, port 8002, /metrics")
    metrics.add_argument(
        "--metrics-interval", type=_int, default=1000, metavar="MS", help="between scrapes (default 1000)"
    )
    trace = parser.add_argument_group("server tracing (set for the run, restored after it)")
    trace.add_argument(
        "--trace-level",
        action="append",
        default=[],
        type=str.upper,
        choices=TRACE_LEVELS,
        help="OFF, TIMESTAMPS or TENSORS (repeatable)",
    )
    trace.add_argument("--trace-rate", type=_int, metavar="N", help="trace one request in N")
    trace.add_argument("--trace-count", type=_int, metavar="N", help="requests traced at most (-1: no limit)")
    trace.add_argument("--log-frequency", type=_int, metavar="N", help="write the trace file every N traces")
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
        "--max-response-bytes",
        type=_int,
        default=MAX_RESPONSE_BYTES,
        metavar="N",
        help="a gRPC response message larger than this fails, before it is all read on the raw transport "
        f"(default {MAX_RESPONSE_BYTES}, gRPC's limit)",
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
        "--ssl-https-verify-peer", type=_int, default=1, choices=(0, 1), help="HTTPS: check the server's certificate"
    )
    security.add_argument(
        "--ssl-https-verify-host",
        type=_int,
        default=2,
        choices=(0, 1, 2),
        help="HTTPS: check that the certificate names the host (0: no; 1, 2: yes)",
    )
    security.add_argument("--ssl-https-ca-certificates-file", metavar="FILE", help="HTTPS: CA certificates")
    security.add_argument("--ssl-https-client-certificate-file", metavar="FILE", help="HTTPS: client certificate")
    security.add_argument(
        "--ssl-https-client-certificate-type", choices=KEY_TYPES, default="PEM", help="PEM (default) or DER"
    )
    security.add_argument("--ssl-https-private-key-file", metavar="FILE", help="HTTPS: client private key")
    security.add_argument("--ssl-https-private-key-type", choices=KEY_TYPES, default="PEM", help="PEM (default) or DER")
    security.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="gRPC metadata or HTTP header sent with every call (repeatable); values never appear in outputs",
    )
    refused = parser.add_argument_group("perf_analyzer options loadgen refuses (each says why)")
    for option in REFUSED:
        refused.add_argument(option, action=_Refused, nargs="?", help=argparse.SUPPRESS)
    return parser


def tune_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen tune",
        description="Move the bottleneck: change the slow step's config on a live server (explicit model-control "
        "mode), re-measure, keep what helps.",
    )
    parser.add_argument("-m", "--model-name", help="model to tune (default: the server's only ensemble or model)")
    parser.add_argument(
        "--model-mix",
        metavar="A:N,B:N",
        help="tune several models under one load, as for profiling: each one's concurrency (closed loop), or its "
        "share of --request-rate",
    )
    _connection_flags(parser)
    parser.add_argument(
        "--input-data", action="append", help="as for profiling (repeatable; MODEL=... for one model of a mix)"
    )
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:D1[,D2...]")
    parser.add_argument("-b", "--batch-size", type=_int, default=1)
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", type=_int, help="closed-loop load to tune at (default 8; a mix's comes with --model-mix)"
    )
    load.add_argument("--request-rate", type=_float, help="open-loop load to tune at, requests per second")
    parser.add_argument(
        "--latency-budget-ms",
        metavar="MS|A:MS,B:MS",
        help="goal: the highest throughput whose p99 stays at or under this (the load is searched too); a mix: "
        "each model's own budget (A:50,B:200), or one for every model",
    )
    parser.add_argument(
        "--max-concurrency",
        type=_int,
        default=MAX_CONCURRENCY,
        help=f"the offered load (a mix's total concurrency) is raised up to this when it bounds throughput (default "
        f"{MAX_CONCURRENCY})",
    )
    parser.add_argument("--metrics-url", metavar="URL", help="the server's metrics (default: its host, port 8002)")
    parser.add_argument(
        "--metrics-interval", type=_int, default=1000, metavar="MS", help="between scrapes (default 1000)"
    )
    parser.add_argument("--max-trials", type=_int, default=8, help="configuration changes tried at most (default 8)")
    parser.add_argument("--write-config", metavar="DIR", help="write each improved config.pbtxt under DIR/<model>/")
    parser.add_argument("--keep", action="store_true", help="leave the improved configs loaded on the server")
    parser.add_argument("-p", "--measurement-interval", type=_int, default=2000, metavar="MS")
    parser.add_argument("-s", "--stability-percentage", type=_float, default=10.0)
    parser.add_argument("--json", metavar="FILE", help="write the trial history as JSON")
    parser.add_argument("--html", metavar="FILE", help="an HTML report of the trials (needs matplotlib)")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen compare",
        description="Compare two runs' --json results load by load: each metric's change, and whether it is "
        "significant; with --fail-if, a regression gate (exit status 1 when a threshold is crossed significantly).",
    )
    parser.add_argument("base", metavar="BASE.json", help="the reference run")
    parser.add_argument("new", metavar="NEW.json", help="the run to check against it")
    parser.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="EXPR",
        help=f"METRIC>+N%% or METRIC<-N%% (e.g. 'p99>+5%%', 'throughput<-3%%'; repeatable), METRIC one of "
        f"{', '.join(METRICS)}: exit 1 when a load changed beyond it and the change is significant",
    )
    parser.add_argument(
        "--confidence",
        type=_float,
        default=CONFIDENCE,
        metavar="C",
        help=f"of the significance tests: a change is significant when chance alone would give it with at most "
        f"1 - C probability (default {CONFIDENCE})",
    )
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
    parser.add_argument("--grpc-port", type=_int, default=8001, help="gRPC (default 8001; 0: a free port)")
    parser.add_argument("--http-port", type=_int, default=8000, help="HTTP (default 8000; 0: a free port)")
    parser.add_argument(
        "--metrics-port",
        type=_int,
        default=8002,
        help="Prometheus metrics (default 8002; 0: a free port); loadgen finds a local server's on its own",
    )
    parser.add_argument(
        "--host",
        default=LOOPBACK,
        help=f"the address every port listens on (default {LOOPBACK}: this machine only; 0.0.0.0 opens the "
        "model-control API to anyone who reaches this machine)",
    )
    parser.add_argument(
        "--trace-file",
        type=Path,
        metavar="PATH",
        help="where the server writes request traces (lets runs set --trace-level and the like)",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit"),
        default="none",
        help="explicit: load every model at start, and allow loading and unloading at run time",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The library settings a parsed command line stands for: every `Settings` field is a flag; perf_analyzer's
    deprecated and shorthand flags (-t, -c, -d, -z, --data-directory) are turned into the ones they stand for."""
    if args.service_kind != "triton":
        raise OptionError(
            f"--service-kind {args.service_kind}: loadgen drives Triton over HTTP or gRPC (triton); "
            "tfserving, torchserve, triton_c_api and openai are not built"
        )
    options = {name: getattr(args, name) for name in Settings.__dataclass_fields__}
    if args.ray_address:  # the cluster's workers are the shards; the driver's settings describe the whole load
        options["hdr_log"] = None
    options["concurrency_range"] = _concurrency(args)
    if args.perf_analyzer_rules:
        given = Ranges(_concurrency(args), args.request_rate_range)  # an open END: capped once the model is known
        options["concurrency_range"], options["request_rate_range"] = given.swept(args.binary_search)
    sources = list(args.input_data or [])
    if args.data_directory:
        sources.append(args.data_directory)
    if args.zero_data:
        if sources:
            raise OptionError("-z (zero input data) cannot be combined with --input-data or --data-directory")
        sources = ["zero"]
    options["input_data"] = sources or "random"
    options["shape"] = dict(parse_shape(text) for text in args.shape)
    options["input_range"] = dict(parse_input_range(text) for text in args.input_range)
    options["header"] = dict(parse_header(text) for text in args.header)
    options["request_parameter"] = dict(parse_request_parameter(text) for text in args.request_parameter)
    options["bls_composing_models"] = ",".join(args.bls_composing_models)
    if args.profile_export_file and not args.record_requests:
        options["record_requests"] = EXPORT_LIMIT
    return Settings(**options)


def _check_as_perf_analyzer(parser: argparse.ArgumentParser, args: argparse.Namespace, errors: Console) -> None:
    """perf_analyzer's checks of its options that loadgen's own mode does not make (its command_line_parser's
    VerifyOptions): each ends the run with its message and the usage, status 99. A start of 0 in
    --sequence-id-range is its 1, with its warning."""
    (start, end), (rate_start, rate_end) = _ranges(args).ends()
    rates = args.request_rate_range is not None
    if args.binary_search and (end < start or rate_end < rate_start):
        parser.error("The end of the range can not be less than start of the range for binary search mode.")
    if args.request_count and not rates and args.request_intervals is None:
        if args.request_count < start:
            parser.error("--request-count can not be less than concurrency")
        if start < end:
            parser.error("--request-count not supported with multiple concurrency values in one run")
    if args.request_count and rates:
        if args.request_count < int(rate_start):
            parser.error("--request-count can not be less than request rate")
        if rate_start < rate_end:
            parser.error("--request-count not supported with multiple request rate values in one run")
    if args.request_parameter and args.protocol.lower() != "grpc":
        parser.error("The --request-parameter option is currently only supported by gRPC protocol.")
    for flag, given in (
        ("--metrics-url", args.metrics_url is not None),
        ("--metrics-interval", args.metrics_interval != 1000),
    ):
        if given and not args.collect_metrics:
            parser.error(f"Must specify --collect-metrics when using the {flag} option.")
    if args.sequence_id_range is not None and args.sequence_id_range.split(":")[0].strip() == "0":
        errors.print(SEQUENCE_ID_WARNING, soft_wrap=True)
        args.sequence_id_range = "1" + args.sequence_id_range.strip()[1:]


def _ranges(args: argparse.Namespace) -> Ranges:
    """The load ranges as perf_analyzer reads them (see `perf_analyzer_ranges`)."""
    synchronous = not (args.asynchronous or args.streaming)
    return perf_analyzer_ranges(_concurrency(args), args.request_rate_range, synchronous, args.max_threads)


def _concurrency(args: argparse.Namespace) -> str | None:
    """--concurrency-range, or what perf_analyzer's deprecated -t N (requests in flight), -d (search from -t up to
    -c) and -c N stand for."""
    deprecated = args.deprecated_concurrency is not None or args.deprecated_max_concurrency is not None
    if not deprecated and not args.deprecated_dynamic:
        return args.concurrency_range
    for flag, given in (
        ("--concurrency-range", args.concurrency_range),
        ("--request-rate-range", args.request_rate_range),
        ("--request-intervals", args.request_intervals),
    ):
        if given is not None:
            raise OptionError(f"-t, -c and -d (deprecated) cannot be combined with {flag}")
    start = 1 if args.deprecated_concurrency is None else args.deprecated_concurrency
    if not args.deprecated_dynamic:
        return str(start)
    return f"{start}:{args.deprecated_max_concurrency or 0}"


def _report_files(args: argparse.Namespace, perf_analyzer: bool = False) -> list[ReportFile]:
    """The output files the command line asks for, checked writable before anything runs."""
    if args.html or args.plot:
        from loadgen.reports import html, plot  # noqa: F401  (the `report` extra: checked before the sweep)
    export = getattr(args, "profile_export_file", None)  # `loadgen merge` has no requests to export
    if perf_analyzer and export and os.path.lexists(export):
        raise OptionError(f"--profile-export-file {export}: already exists (it is not overwritten)")
    if export and getattr(args, "ray_address", None):
        raise OptionError("--profile-export-file records requests in this process: not with --ray-address")
    return report_files(args.json, args.latency_report_file, args.html, args.plot, export, perf_analyzer)


def _write(result: ProfileResult, files: list[ReportFile], errors: Console) -> bool:
    """Write every output file from one result (a finished, partial or merged run); False when one failed."""
    failures = write_reports(result, files)
    for failure in failures:
        errors.print(f"error: {failure}", soft_wrap=True)
    return not failures


async def _profile_until_signalled(
    settings: Settings, progress: Progress, say: Callable[[str], None]
) -> tuple[ProfileResult, int | None]:
    """Run the profile; the first SIGINT/SIGTERM stops it gracefully, a second one exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        say("stopping: writing what was measured (again to exit at once)")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        result = await profile(settings=settings, progress=progress, stop=stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return result, received[0] if received else None


def _exit_status(result: ProfileResult, written: bool, signum: int | None = None) -> int:
    """loadgen's exit status for a finished run: 2 when a level never settled, 99 when an output failed."""
    if signum is not None:
        return 128 + signum
    if not written or result.status in ("failed", "incomplete"):
        return EXIT_OTHER
    return EXIT_SUCCESS if result.stable else EXIT_UNSTABLE


def _profile(argv: Sequence[str], console: Console, errors: Console, perf_analyzer: bool = False) -> int:
    parser = profile_parser(perf_analyzer)
    args = parser.parse_args(argv)
    if perf_analyzer:
        _check_as_perf_analyzer(parser, args, errors)
    settings = settings_from(args)
    files = _report_files(args, perf_analyzer)
    if settings.hdr_log:
        check_directory(settings.hdr_log, "--hdr-log")
    if args.ray_address:
        from loadgen.shards.ray_cluster import profile_on_ray

        replay = ConsoleProgress(console, verbose=True, quiet=args.quiet)
        result = profile_on_ray(settings, args.ray_address, args.workers_per_node, replay)
        replay.replay(result)
        return _exit_status(result, _write(result, files, errors))
    report = None
    if perf_analyzer:
        ranges = _ranges(args)
        if ranges.concurrency != _concurrency(args) and is_open_range(_concurrency(args)):
            errors.print(MAX_THREADS_WARNING, soft_wrap=True)
        report = PerfAnalyzerReport(settings, args.asynchronous, bool(args.verbose), ranges=ranges)
    progress = report or ConsoleProgress(console, verbose=bool(args.verbose), quiet=args.quiet)
    with progress if isinstance(progress, ConsoleProgress) else contextlib.nullcontext():
        try:
            result, signum = run(_profile_until_signalled(settings, progress, lambda text: errors.print(text)))
        except RunFailed as failure:
            assert isinstance(failure.result, ProfileResult)
            _write(failure.result, files, errors)
            raise
        if report is None:
            progress.finished(result)
        else:
            status = report.finished(result)
            files = perf_analyzer_files(files, status)
    written = _write(result, files, errors)
    if report is None or signum is not None or not written:
        status = _exit_status(result, written, signum)
    if signum is not None:  # stopped: what was measured is written; exit now, not after the interpreter's cleanup
        _exit_at_once(status)  # (a large input file, abandoned mid-load, would hold it up for seconds)
    return status


def perf_analyzer_files(files: list[ReportFile], status: int) -> list[ReportFile]:
    """The files perf_analyzer writes for a run that exits with `status`: none of its own (CSV, profile export) when
    its profiling failed (2 or 3: it throws before it writes them)."""
    failed = status in (EXIT_UNSTABLE, EXIT_NO_REQUESTS)
    return [file for file in files if not (failed and file.flag in ("-f", "--profile-export-file"))]


def _exit_at_once(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _tune(argv: Sequence[str], console: Console, errors: Console) -> int:
    args = tune_parser().parse_args(argv)
    profile_settings = Settings(
        model_name=args.model_name,
        model_mix=args.model_mix,
        url=args.url,
        protocol=args.protocol,
        input_data=args.input_data or "random",
        shape=dict(parse_shape(text) for text in args.shape),
        batch_size=args.batch_size,
        concurrency_range=args.concurrency if args.request_rate or args.model_mix else (args.concurrency or 8),
        request_rate_range=args.request_rate,
        measurement_interval=args.measurement_interval,
        stability_percentage=args.stability_percentage,
        metrics_url=args.metrics_url,
        metrics_interval=args.metrics_interval,
    )
    settings = TuneSettings(
        profile_settings, args.latency_budget_ms, args.max_trials, args.keep, args.write_config, args.max_concurrency
    )
    if args.html:
        from loadgen.reports import html  # noqa: F401  (the `report` extra: checked before tuning, not after it)
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path:
            check_file(path, flag)
    if args.write_config:
        check_directory(args.write_config, "--write-config")
    report = TuneReport(console)
    result = run(tune(settings, report.progress))
    report.finished(result, restored=not args.keep)
    written = True
    for flag, path, write in (
        ("--json", args.json, lambda path: write_file(path, json.dumps(result.to_dict(), indent=2) + "\n")),
        ("--html", args.html, result.save_html),
    ):
        try:
            if path:
                write(path)
        except OSError as error:
            errors.print(f"error: {flag} {path}: not written: {error.strerror or error}")
            written = False
    return EXIT_SUCCESS if written else EXIT_OTHER


def _merge(argv: Sequence[str], console: Console, errors: Console) -> int:
    args = merge_parser().parse_args(argv)
    files = _report_files(args)
    result = merge_logs(args.logs)
    ConsoleProgress(console).replay(result)
    return _exit_status(result, _write(result, files, errors))


def _read(path: str) -> ProfileResult:
    """A result file for `loadgen compare`; one that cannot be read is a bad argument."""
    try:
        return load_result(path)
    except LoadgenError as error:
        raise OptionError(str(error)) from None


def _compare(argv: Sequence[str], console: Console) -> int:
    args = compare_parser().parse_args(argv)
    confidence = check_confidence(args.confidence)
    gates = [parse_gate(text) for text in args.fail_if]
    before, after = _read(args.base), _read(args.new)
    try:
        comparison = compare(before, after, confidence)
    except OptionError:
        raise
    except LoadgenError as error:  # a histogram in a file that does not decode
        raise OptionError(f"{args.base} or {args.new}: {error}") from None
    if not comparison.levels:
        loads = [", ".join(f"{level.load:g}" for level in run.levels) or "none" for run in (before, after)]
        raise OptionError(f"no load in both runs: {args.base} measured {loads[0]}, {args.new} {loads[1]}")
    print_comparison(console, comparison, gates)
    return EXIT_REGRESSION if any(comparison.crossed(gate) for gate in gates) else EXIT_SUCCESS


def _serve(argv: Sequence[str], console: Console, errors: Console) -> int:
    args = serve_parser().parse_args(argv)
    server = EmbeddedServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        explicit_model_control=args.model_control_mode == "explicit",
        host=args.host,
        extra_args=("--trace-config", f"triton,file={args.trace_file.resolve()}") if args.trace_file else (),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"Starting tritonserver with {args.model_repository} ...")
    with server:
        console.print(f"Triton ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}")
        console.print(f"Server log: {server.log_path} (removed when Triton stops); Ctrl-C stops it.")
        while not stop.wait(0.5):
            if not server.running:
                raise LoadgenError(f"tritonserver exited: {server.log_tail(5)}")
    console.print("Triton stopped.")
    return EXIT_SUCCESS


def _check_text(argv: Sequence[str]) -> None:
    """Every argument is text that UTF-8 can carry: bytes the terminal's encoding could not decode (Python keeps
    them as lone surrogates) are a one-line error here, not a traceback where the value is first sent."""
    for argument in argv:
        try:
            argument.encode()
        except UnicodeEncodeError:
            try:  # the bytes as they were typed
                shown = repr(argument.encode("utf-8", "surrogateescape"))[2:-1]
            except UnicodeEncodeError:
                shown = argument.encode("utf-8", "backslashreplace").decode()
            raise OptionError(f"{shown}: not valid UTF-8 text (check the shell's quoting and encoding)") from None


def perf_analyzer(argv: Sequence[str] | None = None) -> int:
    """perf_analyzer's command line over loadgen (`loadgen perf-analyzer`, the `perf-analyzer` command): its
    defaults, console report, CSV and exit codes (99 for every error but perf_analyzer's 2 and 3)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = make_console()
    errors = make_console(stderr=True)
    try:
        _check_text(argv)
        return _profile(argv, console, errors, perf_analyzer=True)
    except LoadgenError as error:
        errors.print(f"error: {error}", soft_wrap=True)
        return EXIT_OTHER
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m loadgen`; returns perf_analyzer's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = make_console()
    errors = make_console(stderr=True)
    try:
        _check_text(argv)
        if argv[:1] == ["serve"]:
            return _serve(argv[1:], console, errors)
        if argv[:1] == ["tune"]:
            return _tune(argv[1:], console, errors)
        if argv[:1] == ["merge"]:
            return _merge(argv[1:], console, errors)
        if argv[:1] == ["compare"]:
            return _compare(argv[1:], console)
        if argv[:1] == ["perf-analyzer"]:
            return perf_analyzer(argv[1:])
        return _profile(argv, console, errors)
    except LoadgenError as error:
        errors.print(f"error: {error}", soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


__all__ = [
    "compare_parser",
    "main",
    "merge_parser",
    "perf_analyzer",
    "profile_parser",
    "serve_parser",
    "settings_from",
    "tune_parser",
]
