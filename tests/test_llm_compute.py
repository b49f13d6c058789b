"""Token streams from real compute: the example LLM pipeline with its sleeping `tensorrt_llm` swapped for a tiny
randomly initialised decoder in torch (tests/llm_compute), served by a real tritonserver. Its time to the first
token is a prefill over the prompt, so it grows with the prompt's length as a real model's does; nothing here
sleeps a set time. torch is installed (into this environment, once) by the `torch_installed` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import loadgen
from loadgen.results import LevelResult
from loadgen.server import EmbeddedServer
from tests.helpers import llm_repository, serve

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(900)]  # the first run installs torch

COMPUTE_LLM = Path(__file__).resolve().parent / "llm_compute" / "tensorrt_llm"
SHORT, LONG, OSL = 40, 1600, 8  # prompt tokens, tokens asked of each answer
# one window of a few requests, one at a time, after one discarded (torch's first call is slower)
RUN = {"osl": OSL, "streaming": True, "concurrency": 1, "request_count": 4, "warmup_request_count": 1}
# the pipeline is quiet (one request in flight): the first token is the decoder's, never a tokenizer step's
GENERATION = ("tensorrt_llm bounds the first token", "the generator's own time bounds the first token")


@pytest.fixture(scope="module")
def compute_server(torch_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    tmp = tmp_path_factory.mktemp("llm-compute")
    yield from serve(llm_repository(tmp / "repository", llm=COMPUTE_LLM), tmp)


def _level(server: EmbeddedServer, isl: int) -> LevelResult:
    return loadgen.profile_sync(server.grpc_url, "ensemble", isl=isl, num_prompts=RUN["request_count"], **RUN).levels[
        -1
    ]


def test_the_first_token_grows_with_the_prompt(compute_server: EmbeddedServer) -> None:
    short, long = _level(compute_server, SHORT), _level(compute_server, LONG)
    for level, isl in ((short, SHORT), (long, LONG)):
        tokens, breakdown = level.tokens, level.token_breakdown
        assert tokens is not None and breakdown is not None
        assert level.error_count == 0 and level.request_count == RUN["request_count"]
        assert tokens.token_count_source == "server"  # the ensemble answers with output_ids
        assert tokens.output_tokens_per_request.min == tokens.output_tokens_per_request.max == OSL
        assert tokens.input_tokens_per_request.avg == pytest.approx(isl, rel=0.1)
        assert breakdown.first_token.startswith(GENERATION), breakdown.first_token
    assert long.tokens is not None and short.tokens is not None
    assert long.tokens.time_to_first_token_us.p50 > short.tokens.time_to_first_token_us.p50
