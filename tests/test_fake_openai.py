"""The FAKE OpenAI-compatible server itself (tests/fake_openai.py): exact token counts, usage, the times it says it
wrote each chunk (lower bounds only), and each misbehaviour doing what it says."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tokenizers import Tokenizer

from tests.fake_openai import CUT_AFTER, HUGE_LINE, MISBEHAVIOURS, TRICKLE_S, FakeOpenAI, fake_openai
from tests.helpers import ROOT, serve_process

MS = 1_000_000
PROMPT = "How many tokens does this prompt have?"
CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]})
COMPLETIONS = ("/v1/completions", {"prompt": PROMPT})
BOTH = pytest.mark.parametrize(("path", "body"), [CHAT, COMPLETIONS], ids=["chat", "completions"])


@contextmanager
def post(url: str, path: str, body: dict, headers: dict[str, str] | None = None) -> Iterator[http.client.HTTPResponse]:
    """The fake's response to one request, its connection closed after."""
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        yield connection.getresponse()
    finally:
        connection.close()


def events(body: bytes) -> list[str]:
    """The data of each server-sent event in a body (each `data: ...` followed by a blank line)."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-200:]
    blocks = text.split("\n\n")[:-1]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [block.removeprefix("data: ") for block in blocks]


def output(path: str, chunks: list[dict]) -> list[str]:
    """The text of each token chunk of a stream."""
    return [c["choices"][0]["delta" if "chat" in path else "text"] for c in chunks if c["choices"]]


def count(tokenizer_file: Path, text: str) -> int:
    return len(Tokenizer.from_file(str(tokenizer_file)).encode(text, add_special_tokens=False).ids)


def error_of(response: http.client.HTTPResponse) -> dict:
    """OpenAI's error body, checked to be one."""
    assert response.getheader("Content-Type") == "application/json"
    error = json.loads(response.read())["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"], error
    return error


@BOTH
def test_a_stream_has_exactly_max_tokens_tokens_and_usage_at_the_end(
    openai_server: FakeOpenAI, tokenizer_file: Path, path: str, body: dict
) -> None:
    request = body | {"model": "fake", "max_tokens": 7, "stream": True, "stream_options": {"include_usage": True}}
    with post(openai_server.url, path, request) as response:
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.getheader("Transfer-Encoding") == "chunked"
        data = events(response.read())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert [len(c["choices"]) for c in chunks] == [1] * 7 + [0]  # one token a chunk, then usage alone
    tokens = output(path, chunks)
    if "chat" in path:
        assert tokens[0]["role"] == "assistant"
        tokens = [delta["content"] for delta in tokens]
    assert all(count(tokenizer_file, token) == 1 for token in tokens)
    assert count(tokenizer_file, "".join(tokens)) == 7
    prompt_tokens = count(tokenizer_file, PROMPT)
    assert chunks[-1]["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 7,
        "total_tokens": 7 + prompt_tokens,
    }
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 6 + ["length"]
    (emission,) = openai_server.emissions
    assert (emission.path, emission.model, emission.stream, emission.prompt_tokens) == (
        path,
        "fake",
        True,
        prompt_tokens,
    )
    assert emission.response_id == chunks[0]["id"]
    assert len(emission.chunk_ns) == 9  # the tokens, usage, [DONE]
    assert emission.chunk_ns[0] - emission.arrival_ns >= 20 * MS
    assert all(later - earlier >= 5 * MS for earlier, later in pairwise(emission.chunk_ns[:7]))


def test_a_stream_without_include_usage_has_no_usage(openai_server: FakeOpenAI) -> None:
    path, body = COMPLETIONS
    with post(openai_server.url, path, body | {"model": "fake", "max_tokens": 3, "stream": True}) as response:
        data = events(response.read())
    assert data[-1] == "[DONE]"
    assert [len(json.loads(item)["choices"]) for item in data[:-1]] == [1, 1, 1]
    assert all("usage" not in json.loads(item) for item in data[:-1])


@BOTH
def test_a_non_streaming_answer_comes_when_its_last_token_would(tokenizer_file: Path, path: str, body: dict) -> None:
    with fake_openai(tokenizer_file, ttft_ms=10, token_ms=3, ttft_us_per_input_token=2000) as fake:
        limit = "max_completion_tokens" if "chat" in path else "max_tokens"
        with post(fake.url, path, body | {"model": "fake", limit: 5}) as response:
            assert response.status == 200
            assert response.getheader("Content-Type") == "application/json"
            document = json.loads(response.read())
    choice = document["choices"][0]
    text = choice["message"]["content"] if "chat" in path else choice["text"]
    prompt_tokens = count(tokenizer_file, PROMPT)
    assert count(tokenizer_file, text) == 5
    assert document["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 5,
        "total_tokens": 5 + prompt_tokens,
    }
    (emission,) = fake.emissions
    assert emission.chunk_ns[0] - emission.arrival_ns >= (10 + 2 * prompt_tokens + 3 * 4) * MS


def test_the_first_token_waits_longer_for_a_longer_prompt(tokenizer_file: Path) -> None:
    path, _ = COMPLETIONS
    with fake_openai(tokenizer_file, ttft_ms=1, token_ms=1, ttft_us_per_input_token=1000) as fake:
        for prompt in ("short", PROMPT * 20):
            with post(fake.url, path, {"model": "fake", "prompt": prompt, "max_tokens": 2, "stream": True}) as response:
                events(response.read())
    for emission in fake.emissions:
        assert emission.chunk_ns[0] - emission.arrival_ns >= (1 + emission.prompt_tokens) * MS
    assert fake.emissions[1].prompt_tokens > 20 * fake.emissions[0].prompt_tokens


def test_embeddings_of_a_text_and_of_a_list(openai_server: FakeOpenAI, tokenizer_file: Path) -> None:
    for texts in (PROMPT, [PROMPT, "two"]):
        with post(openai_server.url, "/v1/embeddings", {"model": "fake", "input": texts}) as response:
            document = json.loads(response.read())
        texts = [texts] if isinstance(texts, str) else texts
        assert [item["index"] for item in document["data"]] == list(range(len(texts)))
        assert all(isinstance(value, float) for item in document["data"] for value in item["embedding"])
        tokens = sum(count(tokenizer_file, text) for text in texts)
        assert document["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_models_emissions_over_http_and_bad_requests(openai_server: FakeOpenAI) -> None:
    where = urlsplit(openai_server.url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    try:
        connection.request("GET", "/v1/models")
        assert [model["id"] for model in json.loads(connection.getresponse().read())["data"]] == [
            "fake",
            *MISBEHAVIOURS,
        ]
    finally:
        connection.close()
    for body in ({"model": "fake", "prompt": 3}, {"model": "fake", "prompt": "a", "max_tokens": 0}, [1]):
        with post(openai_server.url, "/v1/completions", body) as response:  # type: ignore[arg-type]
            assert response.status == 400
            assert error_of(response)["type"] == "invalid_request_error"
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    try:
        connection.request("GET", "/fake/emissions")
        emitted = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert [item["status"] for item in emitted] == [400, 400, 400]
    assert [item["arrival_ns"] for item in emitted] == [e.arrival_ns for e in openai_server.emissions]


def test_an_api_key_is_checked_when_set(tokenizer_file: Path) -> None:
    path, body = COMPLETIONS
    with fake_openai(tokenizer_file, api_key="secret") as fake:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with post(fake.url, path, body | {"model": "fake"}, headers) as response:
                assert response.status == 401
                assert error_of(response)["code"] == "invalid_api_key"
        with post(fake.url, path, body | {"model": "fake"}, {"Authorization": "Bearer secret"}) as response:
            assert response.status == 200


@pytest.mark.parametrize("status", [429, 500])
def test_errors_have_openai_bodies(openai_server: FakeOpenAI, status: int) -> None:
    path, body = CHAT
    with post(openai_server.url, path, body | {"model": f"fake-{status}", "stream": True}) as response:
        assert response.status == status
        assert error_of(response)["type"] == {429: "rate_limit_error", 500: "server_error"}[status]


def test_malformed_sends_broken_json(openai_server: FakeOpenAI) -> None:
    path, body = CHAT
    with post(openai_server.url, path, body | {"model": "fake-malformed", "stream": True}) as response:
        data = events(response.read())
    json.loads(data[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[1])
    with (
        post(openai_server.url, path, body | {"model": "fake-malformed"}) as response,
        pytest.raises(json.JSONDecodeError),
    ):
        json.loads(response.read())


def test_cut_closes_the_connection_mid_answer(openai_server: FakeOpenAI) -> None:
    path, body = COMPLETIONS
    with post(openai_server.url, path, body | {"model": "fake-cut", "stream": True}) as response:
        assert [response.readline().startswith(b"data: ") for _ in range(2 * CUT_AFTER)] == [True, False] * CUT_AFTER
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    with (
        post(openai_server.url, path, body | {"model": "fake-cut"}) as response,
        pytest.raises(http.client.IncompleteRead),
    ):
        response.read()


def test_no_done_ends_the_stream_cleanly_without_it(openai_server: FakeOpenAI) -> None:
    path, body = CHAT
    request = body | {
        "model": "fake-no-done",
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with post(openai_server.url, path, request) as response:
        data = events(response.read())
    assert "[DONE]" not in data
    assert json.loads(data[-1])["usage"]["completion_tokens"] == 4


def test_error_event_fails_the_stream_mid_way(openai_server: FakeOpenAI) -> None:
    path, body = CHAT
    with post(openai_server.url, path, body | {"model": "fake-error-event", "stream": True}) as response:
        data = events(response.read())
    assert all(json.loads(item)["choices"] for item in data[:CUT_AFTER])
    assert json.loads(data[CUT_AFTER])["error"]["type"] == "server_error"
    assert data[CUT_AFTER + 1 :] == ["[DONE]"]


def test_endless_streams_until_the_client_goes(openai_server: FakeOpenAI) -> None:
    path, body = CHAT
    with post(openai_server.url, path, body | {"model": "fake-endless", "max_tokens": 2}) as response:
        assert response.getheader("Content-Type") == "text/event-stream"
        lines = [response.readline() for _ in range(60)]  # far past max_tokens
    assert all(json.loads(line.removeprefix(b"data: "))["choices"] for line in lines[::2])
    (emission,) = openai_server.emissions
    deadline = time.monotonic() + 60
    while not emission.client_gone:  # the fake notices at its next write
        assert time.monotonic() < deadline, "the fake kept writing to a client that went"
        time.sleep(0.01)
    assert emission.chunk_ns[0] - emission.arrival_ns >= 20 * MS
    assert all(later - earlier >= 5 * MS for earlier, later in pairwise(emission.chunk_ns))


def test_huge_line_is_one_line_without_a_newline(openai_server: FakeOpenAI) -> None:
    path, body = COMPLETIONS
    with post(openai_server.url, path, body | {"model": "fake-huge-line", "stream": True}) as response:
        data = response.read()
    assert len(data) == len("data: ") + HUGE_LINE
    assert data.startswith(b"data: ")
    assert b"\n" not in data


def test_trickle_sends_a_byte_at_a_time(openai_server: FakeOpenAI) -> None:
    path, body = COMPLETIONS
    with post(openai_server.url, path, body | {"model": "fake-trickle", "stream": True}) as response:
        assert response.read(6) == b"data: "
    (emission,) = openai_server.emissions
    assert len(emission.chunk_ns) >= 6
    gaps = [later - earlier for earlier, later in pairwise(emission.chunk_ns)]
    assert all(gap >= TRICKLE_S * 1e9 for gap in gaps)


def test_not_sse_answers_an_html_page(openai_server: FakeOpenAI) -> None:
    path, body = CHAT
    with post(openai_server.url, path, body | {"model": "fake-not-sse", "stream": True}) as response:
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/html"
        assert response.read().startswith(b"<html>")


def test_runs_as_a_process(tokenizer_file: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.fake_openai", "--port", "0", "--tokenizer", str(tokenizer_file)]
    with serve_process(command, cwd=ROOT) as process:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("fake OpenAI-compatible server ready on http://127.0.0.1:")
        path, body = COMPLETIONS
        with post(ready.split()[-1], path, body | {"model": "fake", "max_tokens": 3}) as response:
            assert json.loads(response.read())["usage"]["completion_tokens"] == 3
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert not err, err
    missing = [sys.executable, "-m", "tests.fake_openai", "--tokenizer", str(tmp_path / "none.json")]
    done = subprocess.run(missing, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("python -m tests.fake_openai: error: --tokenizer "), done.stderr
