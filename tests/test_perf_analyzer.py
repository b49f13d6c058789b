"""loadgen as a drop-in perf_analyzer: every option of perf_analyzer 2.51 taken or refused with a reason, its
deprecated forms, its console report, CSV and exit codes, and the server settings it changes for a run."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from loadgen.cli import REFUSED, profile_parser, settings_from
from loadgen.errors import OptionError
from loadgen.plan import plan
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings
from tests.helpers import FAST, real_perf_analyzer
from tests.perf_analyzer_options import answers, read_options, readme_table, table

# a value each option takes, where "1" would not do
SAMPLES = {
    "--shape": "INPUT0:4",
    "--input-data": "zero",
    "--data-directory": ".",
    "--shared-memory": "none",
    "--measurement-mode": "count_windows",
    "--request-distribution": "poisson",
    "--sequence-id-range": "1:100",
    "--service-kind": "triton",
    "--concurrency-range": "1:2",
    "--request-rate-range": "10:20:10",
    "--periodic-concurrency-range": "1:2",
    "--request-intervals": __file__,
    "--ssl-https-client-certificate-type": "PEM",
    "--ssl-https-private-key-type": "PEM",
    "--input-tensor-format": "json",
    "--output-tensor-format": "json",
    "--grpc-compression-algorithm": "gzip",
    "--trace-level": "TIMESTAMPS",
    "--metrics-url": "localhost:8002/metrics",
    "--bls-composing-models": "a:1,b",
    "--request-parameter": "max_tokens:8:int",
    "--profile-export-file": "export.json",
    "-u": "localhost:8001",
    "-i": "grpc",
    "-H": "name: value",
    "-f": "out.csv",
    "-m": "model",
    "-x": "1",
}


def _pa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", "perf-analyzer", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_every_perf_analyzer_option_is_taken_or_refused_with_a_reason() -> None:
    options = read_options()
    assert len(options) == 81 and {"--streaming", "--warmup-request-count", "-f", "-H"} <= {o.flag for o in options}
    missing = [flag for flag, answer in answers().items() if answer == "missing"]
    assert missing == []
    parser = profile_parser(perf_analyzer=True)
    for option in options:
        if option.flag == "--version":
            continue  # prints and exits 0 (tested below)
        argv = ["-m", "model", option.flag] + ([SAMPLES.get(option.flag, "1")] if option.takes_value else [])
        if option.flag in REFUSED:
            with pytest.raises(SystemExit) as stopped:
                parser.parse_args(argv)
            assert stopped.value.code == 99, option.flag
        else:
            parser.parse_args(argv)  # taken: no exit


def test_a_refused_option_says_why_in_one_line() -> None:
    """The reason in one line, then the usage (perf_analyzer prints its usage after a bad option)."""
    done = _pa("-m", "model", "--enable-mpi")
    assert done.returncode == 99
    first, usage = done.stderr.split("\n", 1)
    assert first == f"perf_analyzer: error: --enable-mpi: {REFUSED['--enable-mpi']}"
    assert usage.startswith("usage: perf_analyzer ")


def test_the_readme_holds_the_current_parity_table() -> None:
    assert readme_table() == table(), "regenerate it: python -m tests.perf_analyzer_options --table"


def test_perf_analyzer_mode_has_its_defaults_and_abbreviations() -> None:
    settings = settings_from(profile_parser(perf_analyzer=True).parse_args(["-m", "m", "--concurrency", "2"]))
    assert (settings.protocol, settings.url, settings.collect_metrics) == ("http", "localhost:8000", False)
    assert settings.concurrency_range == (2,)
    with pytest.raises(SystemExit) as stopped:  # ambiguous, as in getopt
        profile_parser(perf_analyzer=True).parse_args(["-m", "m", "--measurement", "5"])
    assert stopped.value.code == 99
    with pytest.raises(SystemExit) as stopped:  # -m is required, as in perf_analyzer
        profile_parser(perf_analyzer=True).parse_args([])
    assert stopped.value.code == 99
    with pytest.raises(SystemExit) as stopped:  # loadgen's own command line spells flags out
        profile_parser().parse_args(["--measurement-int", "5"])
    assert stopped.value.code == 3


def test_version_in_both_modes() -> None:
    done = _pa("--version")
    assert done.returncode == 0 and re.fullmatch(r"Perf Analyzer Version 2\.51\.0 \(loadgen \S+\)\n", done.stderr)
    done = subprocess.run([sys.executable, "-m", "loadgen", "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("loadgen ")


def _settings(*argv: str, perf_analyzer: bool = False) -> Settings:
    return settings_from(profile_parser(perf_analyzer).parse_args(["-m", "m", *argv]))


def test_deprecated_concurrency_options() -> None:
    assert _settings("-t", "3").concurrency_range == (3,)
    assert _settings("-t", "2", "-d", "-c", "4").concurrency_range == (2, 3, 4)
    assert _settings("-d", "-l", "5").concurrency_range == "1:0"  # no -c: on until the latency threshold
    with pytest.raises(OptionError, match="-l"):
        _settings("-d")
    with pytest.raises(OptionError, match="cannot be combined with --concurrency-range"):
        _settings("-t", "2", "--concurrency-range", "4")


def test_input_shorthands() -> None:
    assert _settings("-z").input_data == "zero"
    assert _settings("--data-directory", "inputs").input_data == "inputs"
    with pytest.raises(OptionError, match="-z"):
        _settings("-z", "--input-data", "random")


def test_service_kinds_other_than_triton_and_openai_are_refused_by_name() -> None:
    with pytest.raises(OptionError, match="tfserving, torchserve and triton_c_api are not built"):
        _settings("--service-kind", "tfserving")
    with pytest.raises(OptionError, match="--service-kind openai needs --endpoint"):
        _settings("--service-kind", "openai")
    assert _settings("--service-kind", "openai", "--endpoint", "v1/completions").endpoint_type == "completions"


def test_latency_threshold_zero_and_open_ranges() -> None:
    assert _settings("-l", "0").latency_threshold is None
    run = plan(_settings("--concurrency-range", "2:0:2", "-l", "10"))
    assert [load.concurrency for load in run.loads[:3]] == [2, 4, 6] and len(run.loads) > 100
    with pytest.raises(OptionError, match="--latency-threshold"):
        _settings("--request-rate-range", "10:0:10")
    with pytest.raises(OptionError, match="needs a range with an END"):
        _settings("--concurrency-range", "1:0", "-l", "5", "--binary-search")


def test_sync_caps_the_open_loop_at_the_threads() -> None:
    assert plan(_settings("--request-rate-range", "100", "--sync")).max_in_flight == 4
    assert plan(_settings("--request-rate-range", "100", "--sync", "--max-threads", "2")).max_in_flight == 2
    assert plan(_settings("--request-rate-range", "100", "-a")).max_in_flight == 1024
    with pytest.raises(SystemExit):
        profile_parser().parse_args(["--sync", "--async"])
    with pytest.raises(OptionError, match="--sync"):
        _settings("--sync", "--streaming")


def test_request_parameters_are_typed() -> None:
    settings = _settings("--request-parameter", "max_tokens:8:int", "--request-parameter", "stream:true:bool")
    assert settings.request_parameter == {"max_tokens": 8, "stream": True}
    with pytest.raises(OptionError, match="NAME:VALUE:TYPE"):
        _settings("--request-parameter", "max_tokens:8")
    with pytest.raises(OptionError, match="not a whole number"):
        _settings("--request-parameter", "max_tokens:eight:int")


def _trace(server: EmbeddedServer) -> dict[str, list[str]]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        settings = client.get_trace_settings(as_json=True)["settings"]
        return {key: value.get("value", []) for key, value in settings.items()}
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_trace_settings_hold_for_the_run_and_are_restored(test_server: EmbeddedServer, protocol: str) -> None:
    import loadgen

    before = _trace(test_server)
    seen: list[dict[str, list[str]]] = []

    class Watch:
        def started(self, run: object) -> None:
            seen.append(_trace(test_server))

        def window(self, *args: object) -> None: ...

        def level(self, *args: object) -> None: ...

    loadgen.profile_sync(
        test_server.url(protocol),
        "fast_step",
        protocol=protocol,
        shape={"INPUT0": [4]},
        trace_level=["TIMESTAMPS"],
        trace_rate=5,
        trace_count=100,
        log_frequency=10,
        measurement_interval=200,
        stability_percentage=1000,
        max_trials=3,
        progress=Watch(),
    )
    assert seen[0]["trace_level"] == ["TIMESTAMPS"]
    assert (seen[0]["trace_rate"], seen[0]["trace_count"], seen[0]["log_frequency"]) == (["5"], ["100"], ["10"])
    assert _trace(test_server) == before


def test_trace_settings_on_a_server_without_a_trace_file(examples_server: EmbeddedServer) -> None:
    done = _pa("-m", "identity_uint8", "-u", examples_server.http_url, "--trace-level", "TIMESTAMPS", *FAST)
    assert done.returncode == 99
    assert "the server has no trace file" in done.stderr and "Traceback" not in done.stderr


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


VERBOSE_METRICS_HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait,Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,"
    "Total GPU Memory"
)  # perf_analyzer 2.51's header for --verbose-csv --collect-metrics


def test_perf_analyzer_mode_end_to_end(test_server: EmbeddedServer, tmp_path: Path) -> None:
    report = tmp_path / "fast.csv"
    done = _pa(
        "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "--concurrency-range", "1:2",
        *FAST, "-f", str(report), "--verbose-csv", "--collect-metrics",
        "--metrics-url", f"http://{test_server.metrics_url}/metrics",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("*** Measurement Settings ***\n  Batch size: 1\n  Service Kind: TRITON\n")
    assert '  Using "time_windows" mode for stabilization\n' in out
    assert "  Concurrency limit: 2 concurrent requests\n  Using synchronous calls for inference\n\n" in out
    for level in ("1", "2"):
        block = out.split(f"Request concurrency: {level}\n")[1]
        assert re.match(
            r"  Client: \n    Request count: \d+\n    Throughput: [\d.]+ infer/sec\n    Avg latency: \d+ usec "
            r"\(standard deviation \d+ usec\)\n    p50 latency: \d+ usec\n    p90 latency: \d+ usec\n    p95 latency: "
            r"\d+ usec\n    p99 latency: \d+ usec\n    Avg HTTP time: \d+ usec \(send/recv \d+ usec \+ response wait "
            r"\d+ usec\)\n  Server: \n    Inference count: \d+\n    Execution count: \d+\n    Successful request "
            r"count: \d+\n    Avg request latency: \d+ usec \(overhead \d+ usec \+ queue \d+ usec \+ compute input \d+ "
            r"usec \+ compute infer \d+ usec \+ compute output \d+ usec\)\n\n  Server Prometheus Metrics: \n",
            block,
        ), block
    summary = out.split("Inferences/Second vs. Client Average Batch Latency\n")[1].splitlines()
    assert [line.split(",")[0] for line in summary] == ["Concurrency: 1", "Concurrency: 2"]
    assert report.read_text().splitlines()[0] == VERBOSE_METRICS_HEADER
    rows = _csv(report)
    assert sorted(row["Concurrency"] for row in rows) == ["1", "2"]
    throughputs = [float(row["Inferences/Second"]) for row in rows]
    assert throughputs == sorted(throughputs)  # perf_analyzer's row order: by throughput
    for row in rows:
        assert int(row["Avg latency"]) == int(row["request/response"]) + int(row["response wait"])
        assert row["Avg GPU Utilization"] == ""  # no GPU here: perf_analyzer leaves the cells empty


def test_perf_analyzer_mode_ensemble_blocks_and_composing_files(test_server: EmbeddedServer, tmp_path: Path) -> None:
    report = tmp_path / "nested.csv"
    done = _pa(
        "-m", "pipeline_nested", "-u", test_server.http_url, "--shape", "INPUT0:4", *FAST, "-f", str(report)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"    Avg request latency: \d+ usec \(overhead \d+ usec \+ queue \d+ usec \+ compute \d+ usec\)\n\n"
        r"  Composing models: \n  fast_step, version: 1\n      Inference count: \d+\n",
        done.stdout,
    ), done.stdout
    assert "\n    Composing models: \n    fast_step, version: 1\n        Inference count: " in done.stdout
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["fast_step_v1.nested.csv", "nested.csv", "pipeline_slow_tail_v1.nested.csv"]
    step = _csv(tmp_path / "fast_step_v1.nested.csv")
    assert list(step[0]) == [
        "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
        "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
    ]  # fmt: skip
    # fast_step runs twice per request of the pipeline: its row says so
    top = float(_csv(report)[0]["Inferences/Second"])
    assert float(step[0]["Inferences/Second"]) == pytest.approx(2 * top, rel=0.05)


def test_no_valid_request_in_a_window_is_perf_analyzers_status_3(test_server: EmbeddedServer) -> None:
    # 20 ms per request, 1 ms windows: most windows see no request complete
    done = _pa("-m", "sleeper", "-u", test_server.http_url, "--shape", "INPUT0:4", "-p", "1", "-r", "3")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Please use a larger time window" in done.stderr  # what Model Analyzer looks for to retry


def test_a_first_level_that_never_settles_is_status_2(test_server: EmbeddedServer) -> None:
    done = _pa(
        "-m", "fast_step", "-u", test_server.http_url, "--shape", "INPUT0:4", "-p", "200", "-s", "0.0001", "-r", "3"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Failed to obtain stable measurement" in done.stderr  # Model Analyzer's other retry string


def test_errors_are_status_99_in_one_line(test_server: EmbeddedServer) -> None:
    done = _pa("-m", "no_such_model", "-u", test_server.http_url)
    assert done.returncode == 99
    assert len(done.stderr.strip().splitlines()) == 1 and "no_such_model" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fast_step", "pipeline_nested"])
def test_the_csv_column_for_column_beside_perf_analyzers_own(
    test_server: EmbeddedServer, tmp_path: Path, model: str
) -> None:
    """The same run with the real perf_analyzer 2.51 and with loadgen's: the same files, the same header, the same
    rows (one per level, in the order of throughput), every cell of the same kind."""
    binary = real_perf_analyzer()
    args = [
        "-m", model, "-u", test_server.http_url, "--shape", "INPUT0:4", "--concurrency-range", "1:2",
        "-p", "500", "-s", "1000", "-r", "4", "--verbose-csv",
    ]  # fmt: skip
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    done = subprocess.run(
        [binary, *args, "-f", "report.csv"], cwd=theirs, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mine = subprocess.run(
        [sys.executable, "-m", "loadgen", "perf-analyzer", *args, "-f", "report.csv"],
        cwd=ours,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert mine.returncode == 0, mine.stdout + mine.stderr
    assert sorted(path.name for path in ours.iterdir()) == sorted(path.name for path in theirs.iterdir())
    for name in (path.name for path in theirs.iterdir()):
        expected, got = (theirs / name).read_text().splitlines(), (ours / name).read_text().splitlines()
        assert got[0] == expected[0], name  # the header, exactly
        assert len(got) == len(expected), name
        rows = [line.split(",") for line in got[1:]]
        assert sorted(row[0] for row in rows) == sorted(line.split(",")[0] for line in expected[1:])
        for row, reference in zip(rows, (line.split(",") for line in expected[1:]), strict=True):
            for cell, theirs_cell in zip(row, reference, strict=True):  # integers where perf_analyzer writes them
                assert cell.lstrip("-").isdigit() == theirs_cell.lstrip("-").isdigit() or "." in cell + theirs_cell
        throughputs = [float(row[1]) for row in rows]
        assert throughputs == sorted(throughputs)
