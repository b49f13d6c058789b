"""The example LLM pipeline (examples/llm_repository) against what it was told to do: every request streams
max_tokens tokens, one per response, over gRPC and over HTTP's generate_stream, as the ensemble and as the BLS model;
the text re-encodes to those tokens; the detokenizer runs once per token; no token comes before the prefill time.
And, without a server, the shipped tokenizer and the tokens the "LLM" streams."""

from __future__ import annotations

import http.client
import importlib.util
import json
import queue
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer

from loadgen.server import EmbeddedServer
from tests.helpers import LLM_EXAMPLES, ROOT, llm_repository, serve

TOKENIZER = ROOT / "loadgen" / "data" / "tokenizer.json"
MODELS = pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
PREFILL_MS, PREFILL_US_PER_TOKEN, TOKEN_MS = 30, 500, 4
SETTINGS = {
    "tensorrt_llm.prefill_ms": PREFILL_MS,
    "tensorrt_llm.prefill_us_per_token": PREFILL_US_PER_TOKEN,
    "tensorrt_llm.token_ms": TOKEN_MS,
    "tensorrt_llm.instances": 2,
    "preprocessing.delay_ms": 1,
    "postprocessing.delay_ms": 1,
}
# prompts of different lengths, each with its max_tokens
PROMPTS = [("Hello", 1), ("The quick brown fox jumps over the lazy dog.", 7), ("def f(x): return x * 2\n" * 20, 24)]


def _load(path: Path) -> ModuleType:
    """A Python file of the examples, imported by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER))


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The example pipeline with set prefill and token times, two LLM instances, a tokenizer and a detokenizer that
    sleep 1 ms per execution."""
    tmp = tmp_path_factory.mktemp("llm-server")
    yield from serve(llm_repository(tmp, **SETTINGS), tmp)


def test_the_shipped_tokenizer_is_what_the_script_trains(tokenizer: Tokenizer) -> None:
    trained = json.loads(_load(ROOT / "examples" / "train_tokenizer.py").train().to_str())
    shipped = json.loads(TOKENIZER.read_text())
    assert trained["model"] == shipped["model"]  # the same vocabulary and merges: the training is deterministic
    assert 2048 <= tokenizer.get_vocab_size() <= 4096


def test_the_streamed_tokens_re_encode_to_as_many_tokens(tokenizer: Tokenizer) -> None:
    vocabulary = _load(LLM_EXAMPLES / "tensorrt_llm" / "1" / "vocabulary.py").streamable_ids(tokenizer)
    assert len(vocabulary) > 1000  # enough words for varied text
    streamed = [*vocabulary, *random.Random(0).choices(vocabulary, k=5000)]  # each once, then any order and repeats
    text = "".join(tokenizer.decode([token]) for token in streamed)  # as a client joins the streamed texts
    assert tokenizer.encode(text).ids == streamed


def test_the_helper_changes_the_served_configs(llm_server: EmbeddedServer) -> None:
    client = grpcclient.InferenceServerClient(llm_server.grpc_url)
    try:
        config = client.get_model_config("tensorrt_llm").config
    finally:
        client.close()
    assert config.instance_group[0].count == 2
    assert config.parameters["token_ms"].string_value == str(TOKEN_MS)


def test_the_helper_refuses_a_parameter_the_model_lacks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="postprocessing has no parameter 'delay' \\(it has delay_ms\\)"):
        llm_repository(tmp_path, **{"postprocessing.delay": 1})


@dataclass
class Stream:
    """What a client saw of one request: when it was sent, and each token-carrying response's time, ids and text."""

    sent: float
    times: list[float]
    ids: list[list[int]]
    texts: list[str]


def _executions(server: EmbeddedServer, model: str) -> int:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return sum(stats.execution_count for stats in client.get_inference_statistics(model).model_stats)
    finally:
        client.close()


def _check(streams: list[Stream], tokenizer: Tokenizer, server: EmbeddedServer, executions_before: int) -> None:
    """Each stream against its prompt and max_tokens, and the detokenizer's executions against the tokens."""
    for stream, (prompt, max_tokens) in zip(streams, PROMPTS, strict=True):
        assert len(stream.times) == max_tokens  # one token per response
        ids = [token for response in stream.ids for token in response]
        assert len(ids) == max_tokens
        assert tokenizer.encode("".join(stream.texts)).ids == ids  # re-encoded: as many tokens, the same ones
        prefill_s = (PREFILL_MS + PREFILL_US_PER_TOKEN * len(tokenizer.encode(prompt).ids) / 1000) / 1000
        assert stream.times[0] - stream.sent >= prefill_s  # lower bounds only: what the model was told to wait
        assert stream.times[-1] - stream.sent >= prefill_s + (max_tokens - 1) * TOKEN_MS / 1000
    total = sum(max_tokens for _, max_tokens in PROMPTS)
    deadline = time.monotonic() + 10  # the server counts an execution just after its response is on its way
    while _executions(server, "postprocessing") - executions_before < total and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _executions(server, "postprocessing") - executions_before == total  # once per token


@MODELS
def test_grpc_streams_one_token_per_response(llm_server: EmbeddedServer, tokenizer: Tokenizer, model: str) -> None:
    before = _executions(llm_server, "postprocessing")
    responses: queue.Queue[tuple[float, grpcclient.InferResult | None, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(llm_server.grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((time.monotonic(), result, error)))
    streams = []
    try:
        for index, (prompt, max_tokens) in enumerate(PROMPTS):
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
            count = grpcclient.InferInput("max_tokens", [1], "INT32")
            count.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
            streams.append(Stream(time.monotonic(), [], [], []))
            client.async_stream_infer(model, [text, count], request_id=str(index), enable_empty_final_response=True)
        finished: set[int] = set()
        while len(finished) < len(PROMPTS):
            at, result, error = responses.get(timeout=30)
            assert error is None and result is not None, error
            response = result.get_response()
            index = int(response.id)
            assert index not in finished  # nothing after the final response
            if response.outputs:  # an ensemble may carry the last token on the final response
                streams[index].times.append(at)
                streams[index].ids.append(result.as_numpy("output_ids").tolist())
                streams[index].texts.append(result.as_numpy("text_output")[0].decode())
            if response.parameters["triton_final_response"].bool_param:
                finished.add(index)
    finally:
        client.stop_stream()
        client.close()
    _check(streams, tokenizer, llm_server, before)


def _generate_stream(server: EmbeddedServer, model: str, body: dict[str, object]) -> tuple[int, Stream]:
    """POST generate_stream; the status and the stream of server-sent events, each stamped when its line is read."""
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        stream = Stream(time.monotonic(), [], [], [])
        connection.request("POST", f"/v2/models/{model}/generate_stream", json.dumps(body))
        response = connection.getresponse()
        for line in response:
            if line.startswith(b"data: "):
                stream.times.append(time.monotonic())
                event = json.loads(line[len(b"data: ") :])
                if "error" in event:
                    stream.texts.append(event["error"])
                    continue
                ids = event["output_ids"]  # a single id comes as a number, several as a list
                stream.ids.append(ids if isinstance(ids, list) else [ids])
                stream.texts.append(event["text_output"])
        return response.status, stream
    finally:
        connection.close()


@MODELS
def test_http_generate_stream_sends_one_event_per_token(
    llm_server: EmbeddedServer, tokenizer: Tokenizer, model: str
) -> None:
    before = _executions(llm_server, "postprocessing")
    streams = []
    for prompt, max_tokens in PROMPTS:
        status, stream = _generate_stream(llm_server, model, {"text_input": prompt, "max_tokens": max_tokens})
        assert status == 200, stream.texts
        streams.append(stream)
    _check(streams, tokenizer, llm_server, before)


@MODELS
def test_optional_inputs_are_taken_and_bad_input_is_one_error(llm_server: EmbeddedServer, model: str) -> None:
    optional = {"stream": True, "min_length": 3, "ignore_eos": True, "exclude_input_in_output": True}
    words = {"bad_words": ["spam"], "stop_words": ["eggs"]}
    status, stream = _generate_stream(llm_server, model, {"text_input": "hi", "max_tokens": 3, **optional, **words})
    assert status == 200 and len(stream.ids) == 3, stream.texts
    status, stream = _generate_stream(llm_server, model, {"text_input": "hi", "max_tokens": 0})
    assert status == 400
    [error] = stream.texts
    assert error.endswith("max_tokens must be at least 1, not 0")
