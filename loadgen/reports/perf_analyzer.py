"""perf_analyzer's console report, line for line: the settings block, one Client/Server block per stable level, the
summary, and the messages tools look for (Model Analyzer retries on two of them). `loadgen perf-analyzer` prints it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from loadgen.errors import EXIT_OTHER, EXIT_SUCCESS, EXIT_UNSTABLE
from loadgen.plan import DEFAULT_MAX_THREADS, LevelRule, Load

if TYPE_CHECKING:
    from loadgen.measurement import WindowSummary
    from loadgen.results import LevelResult, ProfileResult, RunDescription
    from loadgen.server.statistics import ServerFigures
    from loadgen.settings import Settings

PERF_ANALYZER_VERSION = "2.51.0"  # the perf_analyzer release whose options, files and messages loadgen follows
EXIT_NO_REQUESTS = 3  # perf_analyzer's OPTION_ERROR, which it returns for a window without a valid request
NO_REQUESTS = "No valid requests recorded within time interval. Please use a larger time window."
UNSTABLE = "Failed to obtain stable measurement."
PERCENTILES = (50, 90, 95, 99)
WARMUP_CONCURRENCY_WARNING = (
    "WARNING: The number of concurrent requests exceeds the warmup request count. Adjusting warmup concurrency to "
    "match the warmup request count."
)
MAX_THREADS_WARNING = "WARNING: The maximum attainable concurrency will be limited by max_threads specification."


@dataclass(frozen=True)
class Ranges:
    """The load ranges as perf_analyzer holds them (`perf_analyzer_ranges`): what its settings block prints."""

    concurrency: str | None = None
    rate: str | None = None

    def ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """START and END of the concurrency range and of the rate range; an END not given is perf_analyzer's 1."""
        return _start_end(self.concurrency), _start_end(self.rate)

    def swept(self, binary: bool) -> tuple[str | None, str | None]:
        """The ranges its sweep runs: an END below START is START alone (a do-while loop), but for a binary search,
        which refuses it."""
        return _forward(self.concurrency, binary), _forward(self.rate, binary)


def _start_end(text: str | None) -> tuple[float, float]:
    parts = (text or "1").split(":")
    return float(parts[0]), float(parts[1]) if len(parts) > 1 else 1.0


def _forward(text: str | None, binary: bool) -> str | None:
    if text is None or binary:
        return text
    start, end = _start_end(text)
    return text.split(":")[0] if 0 < end < start and ":" in text else text


def perf_analyzer_ranges(
    concurrency: str | None, rate: str | None, synchronous: bool, max_threads: int | None
) -> Ranges:
    """--concurrency-range and --request-rate-range as perf_analyzer holds them: with synchronous calls a
    concurrency END of 0 is its threads, --max-threads or 16 (perf_analyzer.cc); texts that are not numbers are
    left for Settings to refuse."""
    parts = concurrency.split(":") if concurrency is not None else []
    try:
        open_end = synchronous and len(parts) > 1 and float(parts[1]) == 0
    except ValueError:
        return Ranges(concurrency, rate)
    if open_end:
        concurrency = ":".join([parts[0], str(max_threads or DEFAULT_MAX_THREADS), *parts[2:]])
    return Ranges(concurrency, rate)


def number(value: float) -> str:
    """A double as C++'s `ostream <<` prints it by default: six significant digits, no trailing zeros."""
    return f"{value:g}"


class PerfAnalyzerReport:
    """Receives the sweep's progress and prints it as perf_analyzer 2.51 does (stdout; warnings on stderr)."""

    def __init__(
        self,
        settings: Settings,
        asynchronous: bool = False,
        verbose: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        ranges: Ranges | None = None,
    ) -> None:
        self.settings = settings
        self.ranges = ranges or Ranges()
        self.asked_async = asynchronous  # -a
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.rule: LevelRule | None = None
        self._announced: Load | None = None
        self.reported: list[LevelResult] = []  # stable levels under the threshold: the summary's and the CSV's rows
        self.decoupled = False
        self.sequence = False  # a sequence model: its Client block counts sequences
        self.fixed = False  # perf_analyzer's cout turned to fixed, two decimals, by its delayed-requests warning

    def _number(self, value: float) -> str:
        """A double as perf_analyzer prints it: `number`, or with two decimals once its warning set `std::fixed`."""
        return f"{value:.2f}" if self.fixed else number(value)

    def _print(self, text: str = "", err: bool = False) -> None:
        print(text, file=self.err if err else self.out, flush=True)

    def note(self, text: str) -> None:
        self._print(text, err=True)

    def started(self, run: RunDescription) -> None:
        """The "*** Measurement Settings ***" block."""
        settings, windows = self.settings, run.windows
        self.rule = run.rule
        self.decoupled = run.decoupled
        self.sequence = run.sequence
        if run.streams:  # JSON data, as perf_analyzer's data loader says it read it
            steps = f" with {run.streams[0]} step/steps" if len(run.streams) == 1 else ""
            self._print(f" Successfully read data for {len(run.streams)} stream/streams{steps}.")
        lines = ["*** Measurement Settings ***", f"  Batch size: {settings.batch_size}", "  Service Kind: TRITON"]
        if settings.warmup_request_count:
            plural = "s" if settings.warmup_request_count > 1 else ""
            lines.append(f"  Sending {settings.warmup_request_count} warmup request{plural}")
        if windows.single:
            plural = "s" if (windows.count or 0) > 1 else ""
            lines.append(f"  Sending {windows.count} benchmark request{plural}")
        else:
            mode = "count_windows" if windows.count is not None else "time_windows"
            lines.append(f'  Using "{mode}" mode for stabilization')
            metric = "throughput" if self.asynchronous(run) else "latency and throughput"
            average = f"p{run.rule.percentile}" if run.rule.percentile else "average "
            lines.append(f"  Stabilizing using {average}{metric}")
            if windows.count is not None:
                lines.append(f"  Minimum number of samples in each window: {windows.count}")
            else:
                lines.append(f"  Measurement window: {windows.interval_ms} msec")
        lines += self._limits(run)
        if run.mode == "request_rate":
            distribution = "poisson" if settings.request_distribution == "poisson" else "uniform"
            lines.append(f"  Using {distribution} distribution on request generation")
        if settings.binary_search:
            lines.append("  Using Binary Search algorithm")
        lines.append(f"  Using {'asynchronous' if self.asynchronous(run) else 'synchronous'} calls for inference")
        if run.decoupled:
            lines.append("  Detected decoupled model, using the first response for measuring latency")
        self._print("\n".join(lines) + "\n")

    def asynchronous(self, run: RunDescription) -> bool:
        """perf_analyzer's API choice: asynchronous when asked (-a), for streams and for sequence models."""
        return self.settings.streaming or run.sequence or self.asked_async

    def _limits(self, run: RunDescription) -> list[str]:
        """perf_analyzer's limit lines: for a range whose END is not 1, the latency limit, then the range's limit
        unless its END is 0 (open)."""
        limit = f"  Latency limit: {number(run.rule.latency_threshold_ms or 0)} msec"
        (start, end), (rate_start, rate_end) = self.ranges.ends()
        lines = []
        if end != 1:
            lines += [limit] + ([f"  Concurrency limit: {int(max(start, end))} concurrent requests"] if end else [])
        if rate_end != 1:
            lines += [limit] + (
                [f"  Request Rate limit: {number(max(rate_start, rate_end))} requests per seconds"] if rate_end else []
            )
        return lines

    def _announce(self, load: Load) -> None:
        """The level's first line, as perf_analyzer's load managers print it: a concurrency level after its warm-up's
        own line (at most the warm-up's count); a rate; nothing for --request-intervals."""
        if self._announced == load:
            return
        self._announced = load
        warmup = self.settings.warmup_request_count
        if load.concurrency is not None:
            if warmup and load.concurrency > warmup:
                self._print(WARMUP_CONCURRENCY_WARNING, err=True)
            if warmup:
                self._print(f"Request concurrency: {min(load.concurrency, warmup)}")
            self._print(f"Request concurrency: {load.concurrency}")
        elif self.settings.mode != "request_intervals":
            self._print(f"Request Rate: {self._number(load.rate or 0)} inference requests per seconds")

    def window(self, load: Load, index: int, summary: WindowSummary, stable: bool) -> None:
        """`Request concurrency: N` as a level starts; with -v, one "Pass" line per window."""
        self._announce(load)
        if not self.verbose:
            return
        if summary.request_count == 0:
            self._print(f"  Pass [{index}] cb::Error: {NO_REQUESTS}")
        elif self.rule is not None and self.rule.percentile:
            self._print(
                f"  Pass [{index}] throughput: {self._number(summary.throughput)} infer/sec. p{self.rule.percentile} "
                f"latency: {int(summary.latency_us)} usec"
            )
        else:
            self._print(
                f"  Pass [{index}] throughput: {self._number(summary.throughput)} infer/sec. Avg latency: "
                f"{int(summary.avg_latency_us)} usec (std {int(summary.stddev_us)} usec). "
            )

    def level(self, level: LevelResult) -> None:
        """The level's Client and Server blocks when it is stable and under -l; else the message perf_analyzer
        prints on stderr."""
        self._announce(Load(level.concurrency, level.request_rate))
        assert self.rule is not None
        if not level.complete or saw_no_request(level):  # the latter ends the run with its error (exit_status)
            return
        if self.rule.over_threshold(level):
            self._print(
                f"Measured latency went over the set limit of {number(self.rule.latency_threshold_ms or 0)} msec. ",
                err=True,
            )
            return
        if not level.stable:
            if level.concurrency is not None:
                fix = (
                    "--measurement-request-count"
                    if self.settings.measurement_mode == "count_windows"
                    else ("--measurement-interval")
                )
                self._print(
                    f"Failed to obtain stable measurement within {level.windows} measurement windows for concurrency "
                    f"{level.concurrency}. Please try to increase the {fix}.",
                    err=True,
                )
            else:
                self._print(UNSTABLE, err=True)
            return
        self.reported.append(level)
        lines = self._client(level) + self._server(level)
        self._print("\n".join(lines) + ("\n" if lines[-1] else ""))
        if self.settings.collect_metrics:
            self._print("\n".join(self._metrics(level)))

    def _client(self, level: LevelResult) -> list[str]:
        lat = level.latency_us
        lines = ["  Client: ", f"    Request count: {level.request_count}"]
        if level.send_rate is not None and (level.delayed_share or 0) > 0.01:
            self.fixed = True  # and it stays so for every later figure of the run
            lines.append(f"    Avg send request rate: {level.send_rate:.2f} infer/sec")
            lines.append(
                "    [WARNING] Perf Analyzer was not able to keep up with the desired request rate. "
                f"{(level.delayed_share or 0) * 100:.2f}% of the requests were delayed. "
            )
        if self.sequence:
            count, rate = level.sequence_count or 0, level.sequence_rate or 0.0
            lines.append(f"    Sequence count: {count} ({self._number(rate)} seq/sec)")
        lines.append(f"    Throughput: {self._number(level.throughput)} infer/sec")
        if self.decoupled and level.response_throughput is not None:
            lines.append(f"    Response Throughput: {self._number(level.response_throughput)} infer/sec")
        if self.verbose:
            lines.append(f"    Avg client overhead: {level.loop_busy_share * 100:.2f}%")
        if level.percentile is None:
            lines.append(f"    Avg latency: {int(lat.avg)} usec (standard deviation {int(lat.stddev)} usec)")
        for percentile, value in percentiles(level):
            lines.append(f"    p{percentile} latency: {value} usec")
        if self.decoupled:
            lines.append("    ")
        else:
            lines.append(self._library_time(level))
        return lines

    def _library_time(self, level: LevelResult) -> str:
        """The "Avg gRPC time" or "Avg HTTP time" line; with -v, its send and receive apart, as perf_analyzer does."""
        average = int(level.latency_us.avg)
        send, receive = int(level.client_send_us), int(level.client_recv_us)
        wait = max(average - send - receive, 0)
        grpc = self.settings.protocol == "grpc"
        line = f"    Avg {'gRPC' if grpc else 'HTTP'} time: {average} usec ("
        if self.verbose:
            out, back = ("marshal", "unmarshal") if grpc else ("send", "receive")
            return line + f"{out} {send} usec + response wait {wait} usec + {back} {receive} usec)"
        both = "(un)marshal request/response" if grpc else "send/recv"
        return line + f"{both} {send + receive} usec + response wait {wait} usec)"

    def _server(self, level: LevelResult) -> list[str]:
        if level.server is None:
            return []
        lines = ["  Server: ", *_server_lines(level.server, 0)]
        if level.server.composing:
            lines += _composing(level.server, 1)
        return lines

    def _metrics(self, level: LevelResult) -> list[str]:
        gpus = level.metrics.gpus if level.metrics is not None else ()
        lines = ["  Server Prometheus Metrics: "]
        for title, values in (
            ("Avg GPU Utilization", [(g.uuid, g.utilization_avg, 100, "%") for g in gpus]),
            ("Avg GPU Power Usage", [(g.uuid, g.power_avg_w, 1, " watts") for g in gpus]),
            ("Max GPU Memory Usage", [(g.uuid, g.memory_used_max_bytes, 1, " bytes") for g in gpus]),
            ("Total GPU Memory", [(g.uuid, g.memory_total_bytes, 1, " bytes") for g in gpus]),
        ):
            lines.append(f"    {title}:")
            lines += [
                f"      {uuid} : {self._number(value * scale)}{unit}"
                for uuid, value, scale, unit in values
                if value is not None
            ]
        return lines

    def finished(self, result: ProfileResult) -> int:
        """The summary of the reported levels, and perf_analyzer's exit status for the run."""
        if self.reported and not ended_without_requests(result):
            rule = self.rule
            latency = f"p{rule.percentile}" if rule and rule.percentile else "Average"
            self._print(f"Inferences/Second vs. Client {latency} Batch Latency")
            for level in self.reported:
                value = level.percentile_us if level.percentile_us is not None else int(level.latency_us.avg)
                load = (
                    f"Concurrency: {level.concurrency}"
                    if level.concurrency is not None
                    else (f"Request Rate: {self._number(level.request_rate or 0)}")
                )
                self._print(f"{load}, throughput: {self._number(level.throughput)} infer/sec, latency {value} usec")
        return self.exit_status(result)

    def exit_status(self, result: ProfileResult) -> int:
        """0; 3 and "Please use a larger time window" when a level's last windows saw no request; 2 when the first
        level of a search (not --request-intervals) never settled; 99 when the run failed."""
        if result.status == "failed":
            return EXIT_OTHER
        if ended_without_requests(result):
            self._print(NO_REQUESTS + "\n", err=True)
            return EXIT_NO_REQUESTS
        last = result.levels[-1] if result.levels else None
        searched = self.settings.mode != "request_intervals"  # its intervals are no search: no stability error
        if searched and last is not None and len(result.levels) == 1 and not last.stable and last.complete:
            self._print(UNSTABLE + "\n", err=True)
            return EXIT_UNSTABLE
        return EXIT_SUCCESS


def saw_no_request(level: LevelResult) -> bool:
    """perf_analyzer's error for a level: one of the windows its stability is judged on recorded no request."""
    from loadgen.measurement import STABILITY_WINDOWS  # (numpy: not for `loadgen --version`)

    return any(window.request_count == 0 for window in level.trend[-STABILITY_WINDOWS:])


def ended_without_requests(result: ProfileResult) -> bool:
    """perf_analyzer's error ending: the sweep's last level saw no request (`saw_no_request`). perf_analyzer then
    exits 3 after NO_REQUESTS, in place of that level's "not stable" message, the summary and the -f CSV (the levels
    before it were printed as they settled)."""
    return bool(result.levels) and saw_no_request(result.levels[-1])


def percentiles(level: LevelResult) -> list[tuple[int, int]]:
    """perf_analyzer's percentile lines and columns: 50, 90, 95, 99 and --percentile, in order."""
    lat = level.latency_us
    values = dict(zip(PERCENTILES, (lat.p50, lat.p90, lat.p95, lat.p99), strict=True))
    if level.percentile is not None and level.percentile_us is not None:
        values[level.percentile] = level.percentile_us
    return sorted(values.items())


def _server_lines(server: ServerFigures, depth: int) -> list[str]:
    indent = "    " + "  " * depth
    if server.request_count == 0:
        return [f"{indent}Request count: 0"]
    lines = [
        f"{indent}Inference count: {server.inference_count}",
        f"{indent}Execution count: {server.execution_count}",
        f"{indent}Successful request count: {server.request_count}",
    ]
    overhead = server.overhead_us
    if server.composing:  # an ensemble or a BLS model: its steps' queues and compute, the rest is its overhead
        queue = sum(step.queue_us for step in server.composing)
        compute = sum(step.compute_us for step in server.composing)
        overhead = max(server.request_us - queue - compute, 0.0)
        detail = f"queue {int(queue)} usec + compute {int(compute)} usec"
    else:
        detail = (
            f"queue {int(server.queue_us)} usec + compute input {int(server.compute_input_us)} usec + compute infer "
            f"{int(server.compute_infer_us)} usec + compute output {int(server.compute_output_us)} usec"
        )
    lines.append(
        f"{indent}Avg request latency: {int(server.request_us)} usec (overhead {int(overhead)} usec + {detail})"
    )
    return lines


def _composing(server: ServerFigures, depth: int) -> list[str]:
    """The "Composing models:" blocks, nested as deep as the ensemble."""
    indent = "  " * depth
    lines = ["", f"{indent}Composing models: "]
    for step in sorted(server.composing, key=lambda step: (step.model, step.version)):
        lines.append(f"{indent}{step.model}, version: {step.version}")
        lines += _server_lines(step, depth)
        lines.append("")
        if step.composing:
            lines += _composing(step, depth + 1)[1:]
    return lines
