"""Token-stream runs against an OpenAI-compatible server: the FAKE one of tests/fake_openai.py (no real one runs
offline on this CPU), which streams the tokens of loadgen's own tokenizer at set times and misbehaves on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loadgen
from loadgen.errors import ModelRejectedError, RunFailed
from tests.fake_openai import MISBEHAVIOURS, FakeOpenAI
from tests.helpers import QUICK, SHIPPED_TOKENIZER, run_cli

TTFT_MS, TOKEN_MS = 20, 5  # the openai_server fixture's
RUN = {"isl": 40, "osl": 8, "num_prompts": 5, "tokenizer": str(SHIPPED_TOKENIZER), **QUICK}


@pytest.mark.parametrize(("endpoint", "streaming"), [("chat", True), ("chat", False), ("completions", True)])
def test_counts_and_times_match_what_the_server_was_told(
    openai_server: FakeOpenAI, endpoint: str, streaming: bool
) -> None:
    result = loadgen.profile_sync(
        openai_server.url, "fake", endpoint_type=endpoint, streaming=streaming, concurrency=2, **RUN
    )
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0
    assert tokens.token_count_source == "server"  # usage
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == RUN["osl"]
    assert tokens.token_counts is not None and tokens.token_counts.server == tokens.token_counts.tokenizer
    assert tokens.input_tokens_per_request.avg == pytest.approx(RUN["isl"], rel=0.1)
    assert tokens.time_to_first_token_us.min >= TTFT_MS * 1000 * 0.95
    if streaming:
        assert tokens.inter_token_latency_us.p50 >= TOKEN_MS * 1000 * 0.95
    else:  # one event: the whole answer, when its last token would have come
        assert tokens.time_to_first_token_us.min >= (TTFT_MS + (RUN["osl"] - 1) * TOKEN_MS) * 1000 * 0.95
    assert level.server is None and level.bottleneck is None  # no Triton statistics behind it


def test_the_api_key_and_extra_inputs_are_sent(tokenizer_file: Path) -> None:
    from tests.fake_openai import fake_openai

    with fake_openai(tokenizer_file, ttft_ms=1, token_ms=1, api_key="secret") as fake:
        refused = run_cli("-u", fake.url, "-m", "fake", "--endpoint-type", "chat", "--isl", "10", "-p", "300")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        result = loadgen.profile_sync(
            fake.url, "fake", endpoint_type="chat", api_key="secret", extra_inputs=["temperature:0.5"], concurrency=1,
            **RUN,
        )  # fmt: skip
        assert result.levels[-1].error_count == 0


@pytest.mark.parametrize("model", MISBEHAVIOURS)
def test_each_misbehaviour_is_a_counted_failure_with_its_message(openai_server: FakeOpenAI, model: str) -> None:
    try:
        result = loadgen.profile_sync(
            openai_server.url, model, endpoint_type="chat", streaming=True, concurrency=1, request_timeout=500, **RUN
        )  # fmt: skip
    except RunFailed as failed:
        result = failed.result
    except ModelRejectedError as rejected:  # the first answer already failed: said as the model's rejection
        assert "\n" not in str(rejected)
        return
    errors = {text: count for level in result.levels for text, count in level.errors.items()}
    assert errors, f"{model}: no failure counted"
    assert all("\n" not in text and len(text) < 1000 for text in errors)


def test_perf_analyzer_service_kind_openai(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    data = tmp_path / "input.json"
    body = {"messages": [{"role": "user", "content": "the sea"}], "model": "fake", "stream": True, "max_tokens": 6}
    data.write_text(json.dumps({"data": [{"payload": [body]}]}))
    done = run_cli(
        "perf-analyzer", "-m", "fake", "--service-kind", "openai", "--endpoint", "v1/chat/completions",
        "-i", "http", "-u", openai_server.url, "--input-data", str(data), "--streaming", "-p", "300", "-s", "1000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Throughput:" in done.stdout and "Traceback" not in done.stderr


def test_embeddings_count_their_input_and_no_output(openai_server: FakeOpenAI) -> None:
    result = loadgen.profile_sync(openai_server.url, "fake", endpoint_type="embeddings", concurrency=2, **RUN)
    tokens = result.levels[-1].tokens
    assert tokens is not None and result.levels[-1].error_count == 0
    assert tokens.output_tokens_per_request.max == 0 and tokens.token_count_source == "server"
    assert tokens.input_tokens_per_request.avg == pytest.approx(RUN["isl"], rel=0.1)  # the server's usage
