"""Workloads of generative models on the example LLM pipeline (examples/llm_repository) served by a real tritonserver,
and on the FAKE OpenAI-compatible server: shared-prefix prompts, multi-turn sessions, requests cancelled on purpose."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadgen
from loadgen.server import EmbeddedServer
from tests.helpers import FAST, QUICK, llm_repository, run_cli, serve, successes

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
