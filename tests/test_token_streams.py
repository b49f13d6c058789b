"""Token streams end to end on the example LLM pipeline (examples/llm_repository) served by a real tritonserver:
the figures against what the models were told to do, and the breakdown naming the step a slow variant slows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import loadgen
from loadgen.reports.files import TOKEN_COLUMNS
from loadgen.server import EmbeddedServer
from tests.helpers import QUICK, llm_repository, run_cli, serve

pytestmark = pytest.mark.server

PREFILL_MS, PER_INPUT_TOKEN_US, TOKEN_MS = 20, 100, 5  # the example's tensorrt_llm parameters
RUN = {"isl": 100, "osl": 12, "num_prompts": 10, "streaming": True, **QUICK}


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    tmp = tmp_path_factory.mktemp("llm")
    yield from serve(llm_repository(tmp / "repository"), tmp)


@pytest.fixture(scope="module")
def slow_detokenizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """postprocessing takes 4 ms per token on its one instance: at concurrency 4 its queue grows."""
    tmp = tmp_path_factory.mktemp("llm-slow-detokenizer")
    yield from serve(llm_repository(tmp / "repository", **{"postprocessing.delay_ms": 4}), tmp)


@pytest.fixture(scope="module")
def slow_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """preprocessing takes 60 ms per request on its one instance: a queue in front of the model."""
    tmp = tmp_path_factory.mktemp("llm-slow-tokenizer")
    yield from serve(llm_repository(tmp / "repository", **{"preprocessing.delay_ms": 60}), tmp)


def test_figures_match_what_the_pipeline_was_told(llm_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(llm_server.grpc_url, "ensemble", concurrency=2, **RUN)
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0
    assert tokens.token_count_source == "server"  # the ensemble answers with output_ids
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == RUN["osl"]
    assert tokens.input_tokens_per_request.avg == pytest.approx(RUN["isl"], rel=0.1)
    # lower bounds only: the model sleeps at least this long
    assert tokens.time_to_first_token_us.min >= (PREFILL_MS * 1000 + PER_INPUT_TOKEN_US * 90) * 0.95
    # a request whose tokens arrive bunched (a busy detokenizer lets them through together) has shorter gaps: the
    # median request's are the model's pace or more
    assert tokens.inter_token_latency_us.p50 >= TOKEN_MS * 1000 * 0.95
    assert tokens.time_to_second_token_us.min >= tokens.time_to_first_token_us.min
    assert tokens.output_token_throughput == pytest.approx(tokens.request_throughput * RUN["osl"], rel=0.02)
    assert tokens.goodput is None
    # the detokenizer runs once per token: its executions per request are the output tokens
    breakdown = level.token_breakdown
    assert breakdown is not None
    steps = {step.model: step for step in breakdown.steps}
    assert steps["postprocessing"].lands_in == "every gap"
    assert steps["postprocessing"].executions_per_request == pytest.approx(RUN["osl"], rel=0.15)
    assert steps["preprocessing"].lands_in == "first token"
    assert steps["tensorrt_llm"].executions_per_request == pytest.approx(1, rel=0.15)
    # without an export, a sample of each level's requests is kept (for the plots), every event of each
    sample = result.experiments[-1].tokens
    assert 0 < len(sample) <= level.request_count
    assert all(len(record.response_timestamps) == record.output_tokens == RUN["osl"] for record in sample)


def test_the_json_and_the_console(llm_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    completed = run_cli(
        "-u", llm_server.grpc_url, "-m", "ensemble", "--streaming", "--isl", "50", "--osl", "6",
        "--concurrency-range", "1", "-p", "300", "-s", "1000", "-r", "4",
        "--goodput", "time_to_first_token:10000", "--goodput", "inter_token_latency:1000",
        "--tokenizer", str(Path(loadgen.__file__).parent / "data"), "--json", str(out),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "tokens: first token avg" in completed.stdout
    level = json.loads(out.read_text())["levels"][0]
    tokens = level["tokens"]
    for key in (
        "time_to_first_token_us",
        "time_to_second_token_us",
        "inter_token_latency_us",
        "inter_event_gap_us",
        "request_latency_us",
        "output_tokens_per_request",
        "input_tokens_per_request",
    ):
        assert set(tokens[key]) == {"min", "avg", "stddev", "p50", "p90", "p95", "p99", "max"}
    assert tokens["token_count_source"] == "server"
    assert tokens["goodput"] == pytest.approx(tokens["request_throughput"], rel=0.01)  # generous objectives
    assert tokens["token_counts"]["server"] == tokens["token_counts"]["tokenizer"]  # the server's tokens re-encode


def test_open_loop_times_the_first_token_from_the_schedule(llm_server: EmbeddedServer) -> None:
    """One request in flight at most (about 10 requests/s here), asked for 40/s: requests queue in the client, so
    the first token from the scheduled time grows with that queue while the first token from the send does not."""
    run = {**RUN, "measurement_interval": 1000}
    result = loadgen.profile_sync(llm_server.grpc_url, "ensemble", request_rate=40, max_in_flight=1, **run)
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and tokens.time_to_first_token_from_schedule_us is not None
    assert level.in_flight_limit_hits  # the queue is the client's
    assert tokens.time_to_first_token_from_schedule_us.avg > 3 * tokens.time_to_first_token_us.avg
    assert tokens.time_to_first_token_from_schedule_us.max > tokens.time_to_first_token_us.max


def test_a_slow_detokenizer_is_named_for_the_gaps(slow_detokenizer: EmbeddedServer) -> None:
    result = loadgen.profile_sync(slow_detokenizer.grpc_url, "ensemble", concurrency=4, **RUN)
    breakdown = result.levels[-1].token_breakdown
    assert breakdown is not None
    assert breakdown.gaps.startswith("postprocessing bounds the gaps")
    assert "add an instance" in breakdown.gaps


def test_a_slow_tokenizer_is_named_for_the_first_token(slow_tokenizer: EmbeddedServer) -> None:
    result = loadgen.profile_sync(slow_tokenizer.grpc_url, "ensemble", concurrency=3, **RUN)
    breakdown = result.levels[-1].token_breakdown
    assert breakdown is not None
    assert breakdown.first_token.startswith("preprocessing bounds the first token")
    assert not breakdown.gaps.startswith("preprocessing")


def test_a_model_without_text_input_is_one_line(llm_server: EmbeddedServer) -> None:
    completed = run_cli("-u", llm_server.grpc_url, "-m", "postprocessing", "--isl", "10", "--concurrency-range", "1")
    assert completed.returncode != 0
    assert "has no text_input input" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_generate_stream_over_http_measures_the_same_pipeline(llm_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        llm_server.http_url, "ensemble", protocol="http", endpoint_type="generate", concurrency=2, **RUN
    )
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0
    assert tokens.token_count_source == "server"  # each event carries its output_ids
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == RUN["osl"]
    assert tokens.time_to_first_token_us.min >= (PREFILL_MS * 1000 + PER_INPUT_TOKEN_US * 90) * 0.95
    assert tokens.inter_token_latency_us.p50 >= TOKEN_MS * 1000 * 0.95
    assert level.token_breakdown is not None


def test_generate_needs_http() -> None:
    completed = run_cli("-m", "ensemble", "--endpoint-type", "generate", "--isl", "10")
    assert completed.returncode != 0 and "give -i http" in completed.stderr


@dataclass(frozen=True)
class Outputs:
    """One CLI run of two levels that wrote every output file, and where they are."""

    folder: Path
    result: dict[str, Any]

    def read(self, name: str) -> str:
        return (self.folder / name).read_text()


OUTPUT_OSL = 6


@pytest.fixture(scope="module")
def outputs(llm_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    folder = tmp_path_factory.mktemp("token-outputs")
    completed = run_cli(
        "-u", llm_server.grpc_url, "-m", "ensemble", "--streaming", "--isl", "40", "--isl-stddev", "10",
        "--osl", str(OUTPUT_OSL), "--concurrency-range", "1:2", "-p", "300", "-s", "1000", "-r", "4",
        "--profile-export-file", str(folder / "profile_export.json"), "--json", str(folder / "run.json"),
        "-f", str(folder / "run.csv"), "--html", str(folder / "run.html"),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return Outputs(folder, json.loads((folder / "run.json").read_text()))


def test_the_export_has_every_measured_request_with_each_event(outputs: Outputs) -> None:
    export = json.loads(outputs.read("profile_export.json"))
    levels = outputs.result["levels"]
    assert [e["experiment"] for e in export["experiments"]] == [{"mode": "concurrency", "value": c} for c in (1, 2)]
    for experiment, level in zip(export["experiments"], levels, strict=True):
        requests = experiment["requests"]
        assert len(requests) == level["request_count"]  # one record per request the level's windows counted
        boundaries = experiment["window_boundaries"]
        for request in requests:
            times = request["response_timestamps"]
            assert len(times) == len(request["response_outputs"]) == request["output_tokens"] == OUTPUT_OSL
            assert request["timestamp"] < times[0] and times == sorted(times)
            assert boundaries[0] <= times[-1] <= boundaries[-1]
            assert request["request_inputs"]["max_tokens"] == OUTPUT_OSL
            assert request["request_inputs"]["text_input"] and all(
                "text_output" in o for o in request["response_outputs"]
            )
        inputs = [request["input_tokens"] for request in requests]
        assert sum(inputs) / len(inputs) == pytest.approx(level["tokens"]["input_tokens_per_request"]["avg"], rel=0.01)


def _sections(text: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """AIPerf's CSV: its record metrics by name (each stat by name), then its metrics of one value."""
    first, second = text.split("\n\n")
    records = {row["Metric"]: row for row in csv.DictReader(first.splitlines())}
    values = {row["Metric"]: row["Value"] for row in csv.DictReader(second.splitlines())}
    return records, values


def test_the_aiperf_files_agree_with_the_json(outputs: Outputs) -> None:
    for name, level in (
        ("profile_export_aiperf", outputs.result["levels"][-1]),  # the sweep's last level
        *((f"profile_export_concurrency{lv['concurrency']}_aiperf", lv) for lv in outputs.result["levels"]),
    ):
        tokens = level["tokens"]
        summary = json.loads(outputs.read(f"{name}.json"))
        ttft = summary["time_to_first_token"]
        assert ttft["unit"] == "ms"
        assert set(ttft) == {"unit", "avg", "min", "max", "std", *(f"p{p}" for p in (1, 5, 10, 25, 50, 75, 90, 95, 99))}
        assert ttft["avg"] == pytest.approx(tokens["time_to_first_token_us"]["avg"] / 1000)
        assert ttft["p99"] == pytest.approx(tokens["time_to_first_token_us"]["p99"] / 1000)
        assert ttft["min"] <= ttft["p1"] <= ttft["p25"] <= ttft["p50"] <= ttft["p75"] <= ttft["max"]
        assert summary["inter_token_latency"]["p50"] == pytest.approx(tokens["inter_token_latency_us"]["p50"] / 1000)
        assert summary["request_latency"]["max"] == pytest.approx(tokens["request_latency_us"]["max"] / 1000)
        assert summary["output_sequence_length"]["avg"] == OUTPUT_OSL
        assert summary["input_sequence_length"]["avg"] == pytest.approx(tokens["input_tokens_per_request"]["avg"])
        assert summary["request_throughput"] == {
            "unit": "requests/sec",
            "avg": pytest.approx(tokens["request_throughput"]),
        }
        assert summary["output_token_throughput"]["avg"] == pytest.approx(tokens["output_token_throughput"])
        assert summary["request_count"]["avg"] == level["request_count"]
        assert summary["goodput"] is None  # no --goodput
        assert summary["input_config"]["loadgen"] == {"concurrency": level["concurrency"]}
        records, values = _sections(outputs.read(f"{name}.csv"))
        row = records["Time to First Token (ms)"]
        assert list(row) == [
            "Metric",
            "avg",
            "min",
            "max",
            *(f"p{p}" for p in (1, 5, 10, 25, 50, 75, 90, 95, 99)),
            "std",
        ]
        assert float(row["avg"]) == pytest.approx(ttft["avg"], abs=0.005)
        assert float(records["Output Sequence Length (tokens)"]["p50"]) == OUTPUT_OSL
        assert "Output Token Throughput Per User (tokens/sec/user)" in records
        assert float(values["Request Throughput (requests/sec)"]) == pytest.approx(
            tokens["request_throughput"], abs=0.005
        )
        assert float(values["Request Count"]) == level["request_count"]
        assert "Goodput (requests/sec)" not in values


def test_the_html_has_the_token_plots(outputs: Outputs) -> None:
    page = outputs.read("run.html")
    assert "<h2>Token streams</h2>" in page and "the requests recorded for the profile export" in page
    for description in ("time to first token against input length", "inter-token gap at each token position"):
        assert description in page
    assert page.count("data:image/png;base64,") >= 6  # the run's three plots, and the token run's three


def test_the_csv_has_the_token_columns(outputs: Outputs) -> None:
    rows = list(csv.DictReader(outputs.read("run.csv").splitlines()))
    assert len(rows) == 2 and set(TOKEN_COLUMNS) <= set(rows[0])
    by_concurrency = {int(row["Concurrency"]): row for row in rows}
    for level in outputs.result["levels"]:
        row, tokens = by_concurrency[level["concurrency"]], level["tokens"]
        assert float(row["Output Tokens Per Request"]) == OUTPUT_OSL
        assert int(row["Time To First Token p99"]) == tokens["time_to_first_token_us"]["p99"]
        assert row["Token Count Source"] == "server" and row["Goodput"] == ""


def test_the_bls_variant_is_broken_down_by_the_models_it_calls(llm_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        llm_server.grpc_url,
        "tensorrt_llm_bls",
        concurrency=2,
        bls_composing_models="preprocessing,tensorrt_llm,postprocessing",
        **RUN,
    )
    level = result.levels[-1]
    assert level.tokens is not None and level.error_count == 0
    assert level.tokens.output_tokens_per_request.max == RUN["osl"]
    assert level.token_breakdown is not None
    lands = {step.model: step.lands_in for step in level.token_breakdown.steps}
    assert lands == {"preprocessing": "first token", "tensorrt_llm": "first token", "postprocessing": "every gap"}


def test_worker_processes_merge_token_figures_exactly(llm_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(llm_server.grpc_url, "ensemble", concurrency=4, workers=2, **RUN)
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == RUN["osl"]
    assert tokens.output_token_throughput == pytest.approx(tokens.request_throughput * RUN["osl"], rel=0.02)


def test_a_trace_is_replayed_on_its_timestamps(llm_server: EmbeddedServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    entries = [
        {"timestamp": 100 * index, "input_length": 60, "output_length": 4, "hash_ids": [index % 2]}
        for index in range(12)
    ]
    trace.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    result = loadgen.profile_sync(
        llm_server.grpc_url,
        "ensemble",
        streaming=True,
        input_file=str(trace),
        fixed_schedule=True,
        measurement_interval=300,
    )
    level = result.levels[-1]
    assert level.tokens is not None and level.error_count == 0
    assert level.tokens.output_tokens_per_request.max == 4
    assert level.request_rate == pytest.approx(10, rel=0.01)  # 12 entries over 1.1 s
