"""Workloads of generative models on the example LLM pipeline (examples/llm_repository) served by a real tritonserver,
and on the FAKE OpenAI-compatible server: shared-prefix prompts, multi-turn sessions, requests cancelled on purpose."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.fake_openai import FakeOpenAI
from tests.helpers import FAST, QUICK, SHIPPED_TOKENIZER, llm_repository, run_cli, serve, successes

pytestmark = pytest.mark.server

PREFILL_MS, TOKEN_MS = 20, 5  # the example's tensorrt_llm parameters
OSL = 12
RUN = {"isl": 100, "osl": OSL, "num_prompts": 10, "streaming": True, **QUICK}
# a cancelled request is cancelled after its first token and well before its last (prefill 20 ms + 100 input tokens
# x 0.1 ms, then 11 more tokens 5 ms apart): never as its final response goes (tritonserver 2.51, server#7368)
CANCEL_AFTER_S = 0.04


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    tmp = tmp_path_factory.mktemp("llm-workloads")
    yield from serve(llm_repository(tmp / "repository"), tmp)


@pytest.mark.parametrize(("protocol", "endpoint_type"), [("grpc", None), ("http", "generate")])
def test_cancelled_requests_are_counted_apart_and_the_server_stays_up(
    llm_server: EmbeddedServer, protocol: str, endpoint_type: str | None
) -> None:
    url = llm_server.grpc_url if protocol == "grpc" else llm_server.http_url
    result = loadgen.profile_sync(
        url, "ensemble", protocol=protocol, endpoint_type=endpoint_type, concurrency=2,
        request_cancellation_rate=50, request_cancellation_delay=CANCEL_AFTER_S, **RUN,
    )  # fmt: skip
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0  # a cancellation is no failure
    assert tokens.cancelled > 0 and level.request_count > 0
    # cancelled requests are in no figure: every request counted has its whole answer
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == OSL
    assert tokens.time_to_first_token_us.min >= PREFILL_MS * 1000 * 0.95
    before = successes(llm_server, "ensemble")
    again = loadgen.profile_sync(url, "ensemble", protocol=protocol, endpoint_type=endpoint_type, concurrency=1, **RUN)
    assert again.levels[-1].error_count == 0 and successes(llm_server, "ensemble") > before  # still serving


def test_cancellation_in_the_json_and_the_console(llm_server: EmbeddedServer, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = run_cli(
        "-u", llm_server.grpc_url, "-m", "ensemble", "--streaming", "--isl", "100", "--osl", OSL,
        "--concurrency-range", "2", "--request-cancellation-rate", "30", "--request-cancellation-delay", CANCEL_AFTER_S,
        "--json", out, *FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cancelled on purpose" in done.stdout
    level = json.loads(out.read_text())["levels"][0]
    assert level["tokens"]["cancelled"] > 0 and level["error_count"] == 0


def test_cancellation_options_are_checked() -> None:
    for args, message in (
        (["--request-cancellation-rate", "101"], "must be between 0 and 100"),
        (["--isl", "10", "--request-cancellation-delay", "1"], "needs --request-cancellation-rate"),
        (["--request-cancellation-rate", "10"], "cancels generative requests"),
    ):
        done = run_cli("-m", "ensemble", *args)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_sessions_resend_the_conversation_on_the_pipeline(llm_server: EmbeddedServer) -> None:
    result = loadgen.profile_sync(
        llm_server.grpc_url, "ensemble", concurrency=2, conversation_turn_mean=3, conversation_turn_delay_mean=10,
        conversation_num=4, prefix_prompt_pool_size=2, prefix_prompt_length=20, **RUN,
    )  # fmt: skip
    level = result.levels[-1]
    tokens = level.tokens
    assert tokens is not None and level.error_count == 0
    assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == OSL
    # a third turn carries two prompts and two answers before its own: about 3 x 100 + 2 x 12 tokens
    assert tokens.input_tokens_per_request.max >= 3 * RUN["isl"] * 0.9
    # the model's prefill grows with the input it was given: 20 ms + 0.1 ms a token, at least 250 tokens
    assert tokens.time_to_first_token_us.max >= (PREFILL_MS * 1000 + 100 * 250) * 0.95


@pytest.mark.parametrize("endpoint_type", ["chat", "completions"])
def test_sessions_on_an_openai_server(openai_server: FakeOpenAI, endpoint_type: str) -> None:
    think_ms, ttft_ms, token_ms, isl, osl = 30, 20, 5, 40, 8  # ttft and token: the openai_server fixture's
    result = loadgen.profile_sync(
        openai_server.url, "fake", endpoint_type=endpoint_type, streaming=True, concurrency=1, isl=isl, osl=osl,
        num_prompts=5, tokenizer=str(SHIPPED_TOKENIZER), conversation_turn_mean=3, conversation_turn_delay_mean=think_ms,
        **QUICK,
    )  # fmt: skip
    assert result.levels[-1].error_count == 0
    first = openai_server.emissions[:3]  # one slot: the first session's three turns, in order
    assert [emission.completion_tokens for emission in first] == [osl] * 3
    for earlier, later in itertools.pairwise(first):
        # the history resent: the earlier prompt and its answer come before the new prompt
        assert later.prompt_tokens >= earlier.prompt_tokens + osl + isl * 0.8
        # the earlier answer took what the server was told, then the think time passed
        assert later.arrival_ns - earlier.arrival_ns >= (ttft_ms + (osl - 1) * token_ms + think_ms) * 1e6 * 0.95


def test_session_options_are_checked() -> None:
    done = run_cli("-m", "ensemble", "--isl", "10", "--session-turns-mean", "3", "--request-rate-range", "5")
    assert done.returncode != 0 and "closed loop" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def explicit_slow_detokenizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """postprocessing takes 4 ms per token on its one instance, served in explicit model control (tune reloads it)."""
    tmp = tmp_path_factory.mktemp("llm-tune")
    repository = llm_repository(tmp / "repository", **{"postprocessing.delay_ms": 4})
    yield from serve(repository, tmp, explicit_model_control=True)


def test_tune_for_goodput_adds_the_detokenizers_instance(explicit_slow_detokenizer: EmbeddedServer) -> None:
    # 4 streams of a token every 5 ms ask 800 tokens/s of a detokenizer that serves 250 at 4 ms a token: each gap
    # waits in its queue (about 16 ms), over the 12 ms objective; a second instance halves the wait
    profile = loadgen.Settings(
        url=explicit_slow_detokenizer.grpc_url, model_name="ensemble", concurrency_range=4, isl=100, osl=OSL,
        num_prompts=10, streaming=True, goodput=["inter_token_latency:12"], measurement_interval=700,
        stability_percentage=50,
    )  # fmt: skip
    result = loadgen.run(loadgen.tune(loadgen.TuneSettings(profile, max_trials=2)))
    first = result.trials[0]
    assert first.change == "postprocessing: instance_group count 1 -> 2" and first.kept, first.reason
    assert result.final.throughput > result.initial.throughput  # goodput, good requests per second
    assert "postprocessing" in result.config_changes
