"""The command line: parses perf_analyzer-style flags into `Settings` and hands them to the library."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from loadgen._blas_env import single_threaded_blas
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
from loadgen.options import Variant, add_options, at_least, check_fields, number, option, whole
from loadgen.outputs import check_directory, check_file, write_file
from loadgen.reports.perf_analyzer import (
    EXIT_NO_REQUESTS,
    MAX_THREADS_WARNING,
    PERF_ANALYZER_VERSION,
    PerfAnalyzerReport,
    Ranges,
    perf_analyzer_ranges,
)
from loadgen.settings import GROUPS, Outputs, Settings, Shards
from loadgen.values import CONFIDENCE, check_confidence, is_open_range

# The rest is imported where it is used: `loadgen --help`, `--version` and a bad option need none of tritonclient,
# grpc, numpy, aiohttp or the reports' modules.
if TYPE_CHECKING:
    from rich.console import Console

    from loadgen.reports.files import ReportFile
    from loadgen.results import ProfileResult
    from loadgen.sweep import Progress


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
}
SEQUENCE_ID_WARNING = (
    "WARNING: using an invalid start sequence id. Perf Analyzer will use default value if it is measuring on "
    "sequence model."
)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what stops `loadgen serve`
SERVE_POLL_S = 0.2  # how often `loadgen serve` looks for a signal and for a server that exited
EXPORT_LIMIT = 1_000_000  # requests recorded for --profile-export-file unless --record-requests says otherwise
SERVICE_KINDS = ("triton", "tfserving", "torchserve", "triton_c_api", "openai")


def version() -> str:
    """loadgen's version, as installed."""
    import importlib.metadata

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


@dataclass(frozen=True)
class Command:
    """The command line's own options around the settings: the version, perf_analyzer's shorthands and kinds."""

    version: bool = option(False, "print the version and exit", action=_Version, perf_analyzer=True)
    service_kind: str = option(
        "triton",
        "triton, or openai (an OpenAI-compatible server at --endpoint; the others are refused)",
        choices=SERVICE_KINDS,
    )
    deprecated_concurrency: int | None = option(
        help="perf_analyzer's deprecated concurrency (= --concurrency-range N)", short=("-t",), long=False, hidden=True
    )
    deprecated_max_concurrency: int | None = option(
        help="perf_analyzer's deprecated maximum concurrency (with -d: --concurrency-range T:C)",
        short=("-c",),
        long=False,
        hidden=True,
    )
    deprecated_dynamic: bool = option(
        False,
        "perf_analyzer's deprecated dynamic concurrency (a sweep from -t up to -c, or until -l)",
        short=("-d",),
        long=False,
        hidden=True,
    )
    zero_data: bool = option(False, "zeros as input data (= --input-data zero)", short=("-z",), long=False)
    data_directory: str | None = option(help="a directory of input files (= --input-data DIR)", metavar="DIR")
    serial_sequences: bool = option(
        False,
        "at most one request of a sequence in flight: always so in loadgen (a sequence's requests must reach the "
        "model in order)",
    )


@dataclass(frozen=True)
class Reports:
    """Where a run's result goes (files), and how much the console says while it runs."""

    json: str | None = option(help="write the result as JSON", metavar="FILE", perf_analyzer=False)
    latency_report_file: str | None = option(
        help="perf_analyzer's CSV latency report (+ one per step)", short=("-f",), metavar="FILE"
    )
    profile_export_file: str | None = option(
        help="perf_analyzer's JSON export of every request: timestamps, inputs and outputs", metavar="FILE"
    )
    html: str | None = option(
        help="a self-contained HTML report: table, plots, verdict, settings (needs matplotlib)",
        metavar="FILE",
        perf_analyzer=False,
    )
    plot: str | None = option(
        help="the p99 latency vs throughput curve as a PNG (needs matplotlib)", metavar="FILE.png", perf_analyzer=False
    )
    verbose: int = option(
        0, "print every measurement window (-v -v: the same)", short=("-v",), action="count", exclusive="console"
    )
    quiet: bool = option(
        False,
        "no progress while the sweep runs; the summary at the end",
        short=("-q",),
        exclusive="console",
        perf_analyzer=False,
    )


@dataclass(frozen=True)
class Cluster:
    """One shard per worker of a Ray cluster."""

    ray_address: str | None = option(
        help="run one shard per worker on a Ray cluster (`ray` extra)", metavar="auto|HOST:PORT", perf_analyzer=False
    )
    workers_per_node: int = option(1, "Ray workers per node (default 1)", checks=(at_least(1),), perf_analyzer=False)


def _command_line() -> tuple[tuple[str, type], ...]:
    """Every group of options in the order of --help: the command's own, then the settings' groups, each followed by
    the command line's options of the same stage (its output files, its Ray cluster) under the same title."""
    groups: list[tuple[str, type]] = [("command (and perf_analyzer's shorthands)", Command)]
    for title, group in GROUPS:
        groups.append((title, group))
        groups += [(title, extra) for extra in {Outputs: (Reports,), Shards: (Cluster,)}.get(group, ())]
    return tuple(groups)


COMMAND_LINE = _command_line()
# `loadgen tune`: the settings it measures with, and its defaults that differ on purpose (each with why).
TUNE_OPTIONS = (
    "model_name",
    "model_mix",
    "url",
    "protocol",
    "input_data",
    "shape",
    "batch_size",
    "concurrency_range",
    "request_rate_range",
    "measurement_interval",
    "stability_percentage",
    "metrics_url",
    "metrics_interval",
    "streaming",
    "endpoint_type",
    "isl",
    "isl_stddev",
    "osl",
    "osl_stddev",
    "num_prompts",
    "input_file",
    "tokenizer",
    "goodput",
)
TUNE_CONCURRENCY = "8"  # tune's load without --concurrency, --request-rate or a mix: one level with room to batch
TUNE = Variant(
    defaults={"measurement_interval": 2000},
    helps={
        "measurement_interval": "window length (default 2000 in tune: every trial measures again, so shorter)",
        "concurrency_range": f"closed-loop load to tune at (default {TUNE_CONCURRENCY}; a mix's comes with --model-mix)",
        "request_rate_range": "open-loop load to tune at, requests per second",
    },
)
MERGE_OPTIONS = ("json", "latency_report_file", "html", "plot")


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
    add_options(parser, COMMAND_LINE, Variant(perf_analyzer=perf_analyzer))
    refused = parser.add_argument_group("perf_analyzer options loadgen refuses (each says why)")
    for option_flag in REFUSED:
        refused.add_argument(option_flag, action=_Refused, nargs="?", help=argparse.SUPPRESS)
    return parser


def tune_parser() -> argparse.ArgumentParser:
    from loadgen.tune import TUNE_FIELDS, TuneSettings

    parser = _Parser(
        prog="loadgen tune",
        description="Move the bottleneck: change the slow step's config on a live server (explicit model-control "
        "mode), re-measure, keep what helps.",
    )
    add_options(parser, [("profile settings", Settings)], TUNE, only=TUNE_OPTIONS)
    add_options(
        parser, [("tuning", TuneSettings), ("output files", Reports)], TUNE, only=(*TUNE_FIELDS, "json", "html")
    )
    return parser


def compare_parser() -> argparse.ArgumentParser:
    from loadgen.comparison import METRICS

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
        type=number,
        default=CONFIDENCE,
        metavar="C",
        help=f"of the significance tests: a change is significant when chance alone would give it with at most "
        f"1 - C probability (default {CONFIDENCE})",
    )
    return parser


def merge_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loadgen merge", description="Merge the window logs of a run's shards into one result.")
    parser.add_argument("logs", nargs="+", metavar="LOG", help="the shards' logs (DIR/*.jsonl)")
    add_options(parser, [("", Reports)], Variant(), only=MERGE_OPTIONS)
    return parser


def serve_parser() -> argparse.ArgumentParser:
    from loadgen.server.launcher import LOOPBACK

    parser = _Parser(prog="loadgen serve", description="Run the embedded Triton server until Ctrl-C.")
    parser.add_argument("--model-repository", required=True, type=Path)
    parser.add_argument("--grpc-port", type=whole, default=8001, help="gRPC (default 8001; 0: a free port)")
    parser.add_argument("--http-port", type=whole, default=8000, help="HTTP (default 8000; 0: a free port)")
    parser.add_argument(
        "--metrics-port",
        type=whole,
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


def openai_endpoint_type(path: str | None) -> str:
    """perf_analyzer's `--service-kind openai --endpoint PATH` as loadgen's endpoint type."""
    if not path:
        raise OptionError("--service-kind openai needs --endpoint, e.g. v1/chat/completions")
    for suffix, kind in (("chat/completions", "chat"), ("completions", "completions"), ("embeddings", "embeddings")):
        if path.rstrip("/").endswith(suffix):
            return kind
    return "template"


def settings_from(args: argparse.Namespace, names: Iterable[str] = Settings.__dataclass_fields__) -> Settings:
    """The library settings a parsed command line stands for (`loadgen`, `loadgen perf-analyzer`, `loadgen tune`):
    every `Settings` field of `names` it has is a flag; perf_analyzer's deprecated and shorthand flags (-t, -c, -d, -z,
    --data-directory) are turned into the ones they stand for."""
    kind = getattr(args, "service_kind", "triton")
    if kind not in ("triton", "openai"):
        raise OptionError(
            f"--service-kind {kind}: loadgen drives Triton over HTTP or gRPC (triton) and OpenAI-compatible servers "
            "(openai); tfserving, torchserve and triton_c_api are not built"
        )
    options = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if kind == "openai":  # perf_analyzer's spelling: the endpoint's path names its type
        options["endpoint_type"] = openai_endpoint_type(getattr(args, "endpoint", None))
    if getattr(args, "ray_address", None):  # the cluster's workers are the shards; the driver's settings: the whole
        options["hdr_log"] = None
    if hasattr(args, "deprecated_concurrency"):
        options["concurrency_range"] = _concurrency(args)
    if options.get("perf_analyzer_rules"):
        given = Ranges(_concurrency(args), args.request_rate_range)  # an open END: capped once the model is known
        options["concurrency_range"], options["request_rate_range"] = given.swept(args.binary_search)
    options["input_data"] = _sources(args) or "random"
    if getattr(args, "profile_export_file", None) and not args.record_requests:
        options["record_requests"] = EXPORT_LIMIT
    return Settings(**options)


def _sources(args: argparse.Namespace) -> list[str]:
    """--input-data, with what --data-directory and -z stand for."""
    sources = list(args.input_data or [])
    if getattr(args, "data_directory", None):
        sources.append(args.data_directory)
    if getattr(args, "zero_data", False):
        if sources:
            raise OptionError("-z (zero input data) cannot be combined with --input-data or --data-directory")
        sources = ["zero"]
    return sources


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
    from loadgen.reports.files import report_files

    export = getattr(args, "profile_export_file", None)  # `loadgen merge` has no requests to export
    if perf_analyzer and export and os.path.lexists(export):
        raise OptionError(f"--profile-export-file {export}: already exists (it is not overwritten)")
    if export and getattr(args, "ray_address", None):
        raise OptionError("--profile-export-file records requests in this process: not with --ray-address")
    return report_files(args.json, args.latency_report_file, args.html, args.plot, export, perf_analyzer)


def _write(result: ProfileResult, files: list[ReportFile], errors: Console) -> bool:
    """Write every output file from one result (a finished, partial or merged run); False when one failed."""
    from loadgen.reports.files import write_reports

    failures = write_reports(result, files)
    for failure in failures:
        errors.print(f"error: {failure}", soft_wrap=True)
    return not failures


async def _profile_until_signalled(
    settings: Settings, progress: Progress, say: Callable[[str], None]
) -> tuple[ProfileResult, int | None]:
    """Run the profile; the first SIGINT/SIGTERM stops it gracefully, a second one exits at once."""
    import asyncio

    from loadgen.sweep import profile

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
    from loadgen import run
    from loadgen.reports import ConsoleProgress
    from loadgen.results import ProfileResult

    if settings.hdr_log:
        check_directory(settings.hdr_log, "--hdr-log")
    if args.ray_address:
        from loadgen.shards.ray_cluster import profile_on_ray

        check_fields(args, Cluster)
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
    from loadgen import run
    from loadgen.reports import TuneReport
    from loadgen.tune import TUNE_FIELDS, TuneSettings, tune

    args = tune_parser().parse_args(argv)
    if args.concurrency_range is None and args.request_rate_range is None and args.model_mix is None:
        args.concurrency_range = TUNE_CONCURRENCY
    tuning = {name: getattr(args, name) for name in TUNE_FIELDS}
    settings = TuneSettings(settings_from(args, TUNE_OPTIONS), **tuning)
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
    from loadgen.reports import ConsoleProgress
    from loadgen.shards.merge import merge_logs

    args = merge_parser().parse_args(argv)
    files = _report_files(args)
    result = merge_logs(args.logs)
    ConsoleProgress(console).replay(result)
    return _exit_status(result, _write(result, files, errors))


def _read(path: str) -> ProfileResult:
    """A result file for `loadgen compare`; one that cannot be read is a bad argument."""
    from loadgen.results import load_result

    try:
        return load_result(path)
    except LoadgenError as error:
        raise OptionError(str(error)) from None


def _compare(argv: Sequence[str], console: Console) -> int:
    from loadgen.comparison import compare, parse_gate
    from loadgen.reports.console import print_comparison

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
    from loadgen.server import EmbeddedServer

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
    # Once the server is up, a signal is only recorded: a handler that takes a lock (threading.Event.set does)
    # deadlocks when the signal lands while the main thread holds that lock, and the server then never stops.
    signals: list[int] = []

    def record(signum: int, _frame: object) -> None:
        signals.append(signum)

    def interrupt_start(signum: int, _frame: object) -> None:
        """While the server starts (a model may load for minutes): stop now; `start` removes what it began."""
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, record)  # a second Ctrl-C does not cut that clean-up short
        raise KeyboardInterrupt

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, interrupt_start)
    console.print(f"Starting tritonserver with {args.model_repository} ...")
    with server:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, record)
        console.print(f"Triton ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}")
        console.print(f"Server log: {server.log_path} (removed when Triton stops); Ctrl-C stops it.")
        while not signals:
            if not server.running:
                raise LoadgenError(f"tritonserver exited: {server.log_tail(5)}")
            time.sleep(SERVE_POLL_S)
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
    from loadgen.reports.console import make_console

    single_threaded_blas()
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
    from loadgen.reports.console import make_console

    single_threaded_blas()
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
