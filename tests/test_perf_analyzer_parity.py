"""Issue 27: the real perf_analyzer 2.51 and `loadgen perf-analyzer` with the same arguments on the same server, item
by item: what each compares is named in its test (exit code, console lines, CSV, export, counts). Never timings."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgen.cli import profile_parser, settings_from
from loadgen.server import EmbeddedServer
from tests.helpers import real_perf_analyzer, successes

# a level settles at once on a noisy machine: windows agree within 1000 %
QUICK = ["-p", "300", "-s", "1000", "-r", "6"]  # 3 windows settle it; 6 ride out a disturbed one
NOT_SETTLING = "Warning: Request latency is not stabilizing. Please try lowering the request rate."


@dataclass(frozen=True)
class Ran:
    """One command's exit status and output, and the folder it ran in (where its files are)."""

    status: int
    out: str
    err: str
    folder: Path

    def lines(self, start: str) -> list[str]:
        """The stdout lines that start with `start` (indentation kept)."""
        return [line for line in self.out.splitlines() if line.startswith(start)]


def _run(command: list[str], folder: Path, timeout_s: float) -> Ran:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout_s, check=False)
    return Ran(done.returncode, done.stdout, done.stderr, folder)


def both(tmp: Path, *args: object, timeout_s: float = 180) -> tuple[Ran, Ran]:
    """perf_analyzer's run and loadgen's, each in a folder of its own (their -f and export files land there)."""
    argv = [str(arg) for arg in args]
    theirs = _run([real_perf_analyzer(), *argv], tmp / "theirs", timeout_s)
    ours = _run([sys.executable, "-m", "loadgen", "perf-analyzer", *argv], tmp / "ours", timeout_s)
    return theirs, ours


def _accumulating_stream(tmp: Path) -> Path:
    """One JSON stream of three steps with the accumulator's running sums as validation data."""
    path = tmp / "stream.json"
    data = {
        "data": [[{"VALUE": [1]}, {"VALUE": [2]}, {"VALUE": [3]}]],
        "validation_data": [[{"SUM": [1]}, {"SUM": [3]}, {"SUM": [6]}]],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("length", [[], ["--sequence-length", "3"]], ids=["whole-stream", "sequence-length"])
def test_1_a_single_json_stream_is_every_sequence_from_its_first_step(
    test_server: EmbeddedServer, tmp_path: Path, length: list[str]
) -> None:
    """Every sequence starts at the stream's first step (the stream whole, or --sequence-length steps of it, varied
    by 20 % of 3 steps: none): the running sums match the validation data; both exit 0 with a Client block."""
    data = _accumulating_stream(tmp_path)
    theirs, ours = both(
        tmp_path, "-m", "accumulator", "-u", test_server.http_url, "--input-data", data, *length, *QUICK
    )
    assert theirs.status == 0, theirs.out + theirs.err
    assert ours.status == theirs.status, ours.out + ours.err
    assert ours.lines("  Client:") == theirs.lines("  Client:") == ["  Client: "]


def test_2_an_asynchronous_level_whose_throughput_settled_is_stable(
    test_server: EmbeddedServer, tmp_path: Path
) -> None:
    """`ramping` gets 2 ms slower with every request: at a low rate with -a, the latency never settles while the
    throughput follows the rate; after the last window both take the level on its throughput, warn, report it and
    exit 0."""
    theirs, ours = both(
        tmp_path, "-m", "ramping", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-rate-range", "20",
        "-a", "-p", "300", "-s", "50", "-r", "3",
    )  # fmt: skip
    for ran in (theirs, ours):
        assert ran.status == 0, ran.out + ran.err
        assert NOT_SETTLING in ran.err
        summary = [line for line in shaped(ran.lines("Request Rate: ")) if "throughput" in line]  # N.NN once delayed
        assert summary == ["Request Rate: N, throughput: N infer/sec, latency N usec"]
    assert ours.lines("  Client:") == theirs.lines("  Client:")


def test_5_an_open_loop_measures_latency_from_the_actual_send(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """A rate twice the capacity of `sleeper` through perf_analyzer's one synchronous thread: requests wait for it,
    so a latency from the schedule would grow window after window; from the actual send it settles. Both warn that
    they could not keep up, print every later figure with two decimals, and exit 0."""
    theirs, ours = both(
        tmp_path, "-m", "sleeper", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-rate-range", "100",
        "--max-threads", "1", "-p", "300", "-s", "100", "-r", "3",
    )  # fmt: skip
    for ran in (theirs, ours):
        assert ran.status == 0, ran.out + ran.err
        assert ran.lines("    [WARNING] Perf Analyzer was not able to keep up with the desired request rate. ")
        assert re.fullmatch(r"    Throughput: \d+\.\d\d infer/sec", ran.lines("    Throughput:")[0])
        assert ran.lines("Request Rate: 100.00, throughput: ")


def _windows_ms(ran: Ran) -> list[float]:
    """The lengths of the windows in a run's profile export, in ms."""
    experiments = json.loads((ran.folder / "export.json").read_text())["experiments"]
    bounds = [bound for experiment in experiments for bound in experiment["window_boundaries"]]
    return [(end - start) / 1e6 for start, end in itertools.pairwise(bounds)]


def test_6_a_time_window_lasts_1_2_measurement_intervals(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """perf_analyzer sleeps 1.2 x -p per time window (inference_profiler.cc): in both exports, no window is
    shorter."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "-p", "250", "-s", "1000",
        "-r", "3", "--profile-export-file", "export.json",
    )  # fmt: skip
    for ran in (theirs, ours):
        assert ran.status == 0, ran.out + ran.err
        lengths = _windows_ms(ran)
        assert len(lengths) == 3 and min(lengths) >= 300, lengths


def test_7_a_request_count_window_lasts_whole_seconds(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """perf_analyzer looks once a second whether the --request-count requests are done: 300 fast requests take a
    window of at least a second, so both report at most 300 infer/sec, and count all 300."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-count", "300",
        "--concurrency-range", "4",
    )  # fmt: skip
    for ran in (theirs, ours):
        assert ran.status == 0, ran.out + ran.err
        assert ran.lines("    Request count: ") == ["    Request count: 300"]
        throughput = float(ran.lines("    Throughput: ")[0].split()[1])
        assert throughput <= 300, ran.out


@pytest.mark.parametrize(("size", "status"), [(32, 0), (16, 99)])
def test_3_an_output_region_is_its_size_times_the_batch(
    test_server: EmbeddedServer, tmp_path: Path, size: int, status: int
) -> None:
    """EMBEDDED (FP32, dims [-1]) of 8 tokens is 32 bytes a request, 128 for -b 4: perf_analyzer allocates
    --output-shared-memory-size x the batch per output, so 32 runs and 16 fails in both, 16 with the hint to raise
    it."""
    theirs, ours = both(
        tmp_path, "-m", "mixed_inputs", "-u", test_server.http_url, "-b", "4", "-z", "--shape", "TOKENS:8",
        "--shared-memory", "system", "--output-shared-memory-size", size, *QUICK,
    )  # fmt: skip
    assert (theirs.status, ours.status) == (status, status), theirs.err + ours.out + ours.err
    if status:
        assert "should be at least 128 bytes" in theirs.err and "should be at least 128 bytes" in ours.err
        assert "raise --output-shared-memory-size" in ours.err and "real data" not in ours.err


def _settings_block(ran: Ran) -> list[str]:
    """The lines of the "*** Measurement Settings ***" block."""
    return ran.out.split("\n\n")[0].splitlines()


def test_4_an_open_concurrency_range_stops_at_the_threads(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """With synchronous calls, an END of 0 is perf_analyzer's 16 threads: the same limit lines, its warning, and the
    same levels (1 and 9: 17 is past the limit)."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--concurrency-range",
        "1:0:8", "-l", "10000", "-p", "200", "-s", "1000", "-r", "3",
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert _settings_block(ours) == _settings_block(theirs)
    assert "  Concurrency limit: 16 concurrent requests" in _settings_block(ours)
    for ran in (theirs, ours):
        assert ran.lines("Request concurrency: ") == ["Request concurrency: 1", "Request concurrency: 9"]
        assert "WARNING: The maximum attainable concurrency will be limited by max_threads specification." in ran.err


def test_4_an_open_rate_range_prints_no_rate_limit(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """An open rate range: the latency limit alone in the settings block; the first level of `ramping` (2 ms more
    per request, so several ms on average) is over 1 ms, which ends the sweep with perf_analyzer's message and no
    summary, status 0 (a model no other test floods: perf_analyzer does not wait for a busy one)."""
    theirs, ours = both(
        tmp_path, "-m", "ramping", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-rate-range",
        "20:0:20", "-l", "1", "-a", *QUICK,
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert _settings_block(ours) == _settings_block(theirs)
    assert "  Latency limit: 1 msec" in _settings_block(ours)
    assert not [line for line in ours.out.splitlines() if "Request Rate limit" in line]
    for ran in (theirs, ours):
        assert "Measured latency went over the set limit of 1 msec." in ran.err
        assert ran.lines("Request Rate: ") == ["Request Rate: 20 inference requests per seconds"]


def shaped(lines: list[str]) -> list[str]:
    """Lines with every number as N: what is compared where the figures differ run to run."""
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in lines]


def test_8_a_sequence_models_json_data_and_sequence_count(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """The data loader's line before the settings, and the Client block's sequence count."""
    data = _accumulating_stream(tmp_path)
    theirs, ours = both(tmp_path, "-m", "accumulator", "-u", test_server.http_url, "--input-data", data, *QUICK)
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    read = " Successfully read data for 1 stream/streams with 3 step/steps."
    assert ours.out.splitlines()[0] == theirs.out.splitlines()[0] == read
    assert shaped(ours.lines("    Sequence count: ")) == shaped(theirs.lines("    Sequence count: "))
    assert shaped(ours.lines("    Sequence count: ")) == ["    Sequence count: N (N seq/sec)"]


def test_8_a_warm_up_and_verbose_grpc_lines(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """`Request concurrency: 1` for the warm-up, then for the level; -v over gRPC splits marshal and unmarshal."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.grpc_url, "-i", "grpc", "--shape", "INPUT0:4",
        "--warmup-request-count", "2", "-v", *QUICK,
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert (
        ours.lines("Request concurrency: ") == theirs.lines("Request concurrency: ") == ["Request concurrency: 1"] * 2
    )
    grpc = ["    Avg gRPC time: N usec (marshal N usec + response wait N usec + unmarshal N usec)"]
    assert shaped(ours.lines("    Avg gRPC time: ")) == shaped(theirs.lines("    Avg gRPC time: ")) == grpc
    assert shaped(ours.lines("  Pass [")) == shaped(theirs.lines("  Pass ["))


def test_8_request_intervals_have_no_request_rate_header(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """--request-intervals: no "Request Rate:" line before the level; the summary names the rate."""
    intervals = tmp_path / "intervals.txt"
    intervals.write_text("2000\n3000\n")
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-intervals",
        intervals, *QUICK,
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    for ran in (theirs, ours):
        assert not ran.lines("Request Rate: ") or all(", throughput: " in line for line in ran.lines("Request Rate: "))
        assert "inference requests per seconds" not in ran.out
    assert shaped(ours.lines("Request Rate: ")) == shaped(theirs.lines("Request Rate: "))


def _first_request(ran: Ran) -> dict[str, Any]:
    return json.loads((ran.folder / "export.json").read_text())["experiments"][0]["requests"][0]  # type: ignore[no-any-return]


def test_10_an_unstable_first_level_writes_no_files(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """Status 2 (windows that never agree within 0.0001 %): neither writes its CSV or profile export."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "-p", "200", "-s", "0.0001",
        "-r", "3", "-f", "report.csv", "--profile-export-file", "export.json",
    )  # fmt: skip
    assert (theirs.status, ours.status) == (2, 2), theirs.err + ours.err
    assert list(theirs.folder.iterdir()) == list(ours.folder.iterdir()) == []


def test_10_unstable_request_intervals_exit_0(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """--request-intervals is no search: a level that never settles says so and the run exits 0."""
    intervals = tmp_path / "intervals.txt"
    intervals.write_text("2000\n3000\n")
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-intervals",
        intervals, "-p", "200", "-s", "0.0001", "-r", "3",
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert "Failed to obtain stable measurement." in theirs.err and "Failed to obtain stable measurement." in ours.err


def test_10_a_batchs_export_records_one_element(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """-b 2 on a model of FP32 [4]: request_inputs hold one element (4 values), the outputs the batch (8)."""
    theirs, ours = both(
        tmp_path, "-m", "batched_double", "-u", test_server.http_url, "-b", "2", *QUICK,
        "--profile-export-file", "export.json",
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    for ran in (theirs, ours):
        request = _first_request(ran)
        assert len(request["request_inputs"]["INPUT0"]) == 4
        assert len(request["response_outputs"][0]["OUTPUT0"]) == 8


@pytest.mark.parametrize("warmup", [0, 100])
def test_11_a_request_counts_server_block_holds_all_of_it(
    test_server: EmbeddedServer, tmp_path: Path, warmup: int
) -> None:
    """--request-count 300 (after a warm-up of its own, if any): the Server block counts the 300 requests, as the
    server's own statistics do (its count grows by them and the warm-up's); perf_analyzer measures the same 300."""
    args = [
        "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--request-count", "300",
        "--concurrency-range", "4", "--warmup-request-count", str(warmup),
    ]  # fmt: skip
    theirs = _run([real_perf_analyzer(), *args], tmp_path / "theirs", 180)
    before = successes(test_server, "fast_step")
    ours = _run([sys.executable, "-m", "loadgen", "perf-analyzer", *args], tmp_path / "ours", 180)
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert successes(test_server, "fast_step") - before == 300 + warmup
    assert theirs.lines("    Request count: ") == ours.lines("    Request count: ") == ["    Request count: 300"]
    assert ours.lines("    Successful request count: ") == ["    Successful request count: 300"]


REFUSED_BY_BOTH = {  # perf_analyzer's command_line_parser checks (and its data loader's), each refused with 99
    "not-json": ["--input-data", "{not_json}"],
    "binary-without-end": ["--concurrency-range", "4", "--binary-search", "-l", "10"],
    "binary-rate-without-end": ["--request-rate-range", "20", "--binary-search", "-l", "10"],
    "count-below-concurrency": ["--concurrency-range", "2", "--request-count", "1"],
    "count-over-levels": ["--concurrency-range", "1:2", "--request-count", "10"],
    "count-below-rate": ["--request-rate-range", "50", "--request-count", "10"],
    "parameter-over-http": ["--request-parameter", "max_tokens:8:int"],
    "metrics-url-alone": ["--metrics-url", "localhost:8002/metrics"],
    "metrics-interval-alone": ["--metrics-interval", "500"],
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_BOTH))
def test_9_options_perf_analyzer_refuses(test_server: EmbeddedServer, tmp_path: Path, case: str) -> None:
    """Each ends both with 99 before measuring; a parse error comes with the usage."""
    not_json = tmp_path / "data.txt"
    not_json.write_text("not JSON\n")
    args = [arg.format(not_json=not_json) for arg in REFUSED_BY_BOTH[case]]
    theirs, ours = both(tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", *args, *QUICK)
    assert (theirs.status, ours.status) == (99, 99), theirs.err + ours.out + ours.err
    assert "Request concurrency" not in ours.out + theirs.out
    if case != "not-json":
        assert "usage: perf_analyzer" in ours.err.lower() and "usage: " in theirs.err.lower()


def test_9_a_reversed_range_and_a_start_id_of_0_run(test_server: EmbeddedServer, tmp_path: Path) -> None:
    """--concurrency-range 4:2 is the one level 4; a --sequence-id-range from 0 starts at 1, with a warning."""
    theirs, ours = both(
        tmp_path, "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--concurrency-range", "4:2",
        "--sequence-id-range", "0:5", *QUICK,
    )  # fmt: skip
    assert (theirs.status, ours.status) == (0, 0), theirs.err + ours.err
    assert ours.lines("Request concurrency: ") == theirs.lines("Request concurrency: ") == ["Request concurrency: 4"]
    assert (
        "WARNING: using an invalid start sequence id." in theirs.err and "WARNING: using an invalid start" in ours.err
    )


def test_9_help_is_the_usage_on_stderr_with_99(tmp_path: Path) -> None:
    theirs, ours = both(tmp_path, "--help")
    assert (theirs.status, ours.status) == (99, 99)
    assert theirs.out == ours.out == ""
    assert "Usage:" in theirs.err and ours.err.startswith("usage: perf_analyzer ")


def test_9_a_sequence_model_refuses_an_open_range_with_asynchronous_calls(
    test_server: EmbeddedServer, tmp_path: Path
) -> None:
    """A sequence model's calls are asynchronous by default: an END of 0 is refused once the model is known."""
    theirs, ours = both(
        tmp_path, "-m", "accumulator", "-u", test_server.http_url, "--concurrency-range", "1:0", "-l", "10"
    )
    assert (theirs.status, ours.status) == (99, 99), theirs.err + ours.err
    message = "The 'end' concurrency can not be 0 for sequence models when using asynchronous API."
    assert message in theirs.err and message in ours.err


def test_bls_composing_models_as_model_analyzer_passes_them() -> None:
    """Model Analyzer's `--bls-composing-models=A,B`: two models, not one named "A,B"; the flag repeats too."""
    parser = profile_parser(perf_analyzer=True)
    args = parser.parse_args(["-m", "bls", "--bls-composing-models=fast_step,slow_step", "--bls-composing-models", "c"])
    assert settings_from(args).bls_composing_models == ("fast_step", "slow_step", "c")
