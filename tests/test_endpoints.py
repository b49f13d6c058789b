"""Token endpoints on the raw HTTP/1.1 transport: Triton's generate_stream against the real server's decoupled
`text_streamer` (max_tokens responses token_ms apart), and the OpenAI endpoints against the FAKE OpenAI-compatible
server of tests/fake_openai.py, which also misbehaves on request; every misbehaviour is a counted failure with the
server's message, never a traceback or a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from loadgen.errors import OptionError
from loadgen.server import EmbeddedServer
from loadgen.transport.endpoints import EndpointSpec, EventReader, TokenEndpoint, token_endpoint
from loadgen.transport.errors import PermissionDenied, Rejected, RequestFailed, TimedOut
from loadgen.transport.options import ConnectionOptions
from loadgen.transport.tokens import Prompt, TokenReply
from tests.fake_openai import FakeOpenAI, fake_openai

TOKEN_MS = 20  # text_streamer's time between responses (its config)
T = TypeVar("T")


def _run(endpoint: TokenEndpoint, work: Callable[[TokenEndpoint], Awaitable[T]]) -> T:
    async def run() -> T:
        try:
            return await work(endpoint)
        finally:
            await endpoint.close()

    return asyncio.run(run())


def _timed(endpoint: TokenEndpoint, prompt: Prompt, streams: int = 1) -> list[tuple[int, TokenReply]]:
    """`streams` calls at once; each reply with the time its request was about to be sent."""
    payload = endpoint.encode(prompt)

    async def one(endpoint: TokenEndpoint) -> tuple[int, TokenReply]:
        start = time.perf_counter_ns()
        return start, await endpoint.call(payload)

    async def many(endpoint: TokenEndpoint) -> list[tuple[int, TokenReply]]:
        return list(await asyncio.gather(*(one(endpoint) for _ in range(streams))))

    return _run(endpoint, many)


def _failure(endpoint: TokenEndpoint, prompt: Prompt) -> RequestFailed:
    async def fail(endpoint: TokenEndpoint) -> RequestFailed:
        with pytest.raises(RequestFailed) as error:
            await endpoint.call(endpoint.encode(prompt))
        return error.value

    return _run(endpoint, fail)


def _generate(server: EmbeddedServer, streaming: bool = True, **options: float) -> TokenEndpoint:
    spec = EndpointSpec("generate", "text_streamer", streaming=streaming)
    return token_endpoint(spec, ConnectionOptions(server.http_url, "http", **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("tokens", [1, 5, 40])
def test_generate_stream_gives_one_event_per_response_no_earlier_than_the_model_sends_it(
    test_server: EmbeddedServer, tokens: int
) -> None:
    for start, reply in _timed(_generate(test_server), Prompt("hello", 1, tokens), streams=3):
        assert reply.texts == [f"token{i} " for i in range(tokens)]
        assert reply.output_tokens == tokens  # one output_ids element per response
        assert reply.input_tokens is None
        # response i leaves the model (i + 1) x token_ms after the request reached it: a lower bound only
        for index, at in enumerate(reply.events):
            assert at - start >= (index + 1) * TOKEN_MS * 1_000_000
        assert reply.events == sorted(reply.events)


def test_generate_failures_carry_tritons_message(test_server: EmbeddedServer) -> None:
    one_response = _failure(_generate(test_server, streaming=False), Prompt("hello", 1, 3))
    assert isinstance(one_response, Rejected) and "exactly 1 response" in str(one_response)
    missing = _failure(_generate(test_server), Prompt("hello", 1, None))  # no max_tokens: a required input
    assert isinstance(missing, Rejected) and str(missing).startswith("Triton at ")
    assert "HTTP 400" in str(missing) and "max_tokens" in str(missing) and "\n" not in str(missing)
    endless = _failure(_generate(test_server, request_timeout_s=0.2), Prompt("hello", 1, 1000))
    assert isinstance(endless, TimedOut)
    # the stall guard counts a stream from its last bytes: 30 tokens 20 ms apart outlive a 0.2 s guard
    [(_, alive)] = _timed(_generate(test_server, stall_timeout_s=0.2), Prompt("hello", 1, 30), streams=1)
    assert len(alive.events) == 30


# --- OpenAI-compatible endpoints, on the FAKE server -----------------------------------------------------------


def _on_fake(fake: FakeOpenAI, spec: EndpointSpec, prompt: Prompt, **options: float) -> TokenReply | RequestFailed:
    """One call to the fake server: its reply, or the failure it raised."""
    endpoint = token_endpoint(spec, ConnectionOptions(fake.url.removeprefix("http://"), "http", **options))  # type: ignore[arg-type]

    async def call(endpoint: TokenEndpoint) -> TokenReply | RequestFailed:
        try:
            return await endpoint.call(endpoint.encode(prompt))
        except RequestFailed as error:
            return error

    return _run(endpoint, call)


@pytest.mark.parametrize("kind", ["chat", "completions"])
@pytest.mark.parametrize("streaming", [True, False])
def test_openai_endpoints_give_the_text_and_the_servers_counts(
    openai_server: FakeOpenAI, kind: str, streaming: bool
) -> None:
    reply = _on_fake(openai_server, EndpointSpec(kind, "fake", streaming), Prompt("hello there", 2, 6))  # type: ignore[arg-type]
    assert isinstance(reply, TokenReply)
    (emission,) = openai_server.emissions
    assert len(reply.events) == len(reply.texts) == (6 if streaming else 1)  # not the usage chunk
    assert (reply.output_tokens, reply.input_tokens) == (6, emission.prompt_tokens)
    assert len(openai_server.encode("".join(reply.texts))) == 6
    # each event came off the socket no earlier than the fake wrote it (one clock: CLOCK_MONOTONIC)
    assert all(at >= written for at, written in zip(reply.events, emission.chunk_ns, strict=False))
    embeddings = _on_fake(openai_server, EndpointSpec("embeddings", "fake"), Prompt("hello there", 2))
    assert isinstance(embeddings, TokenReply) and len(embeddings.events) == 1
    assert (embeddings.input_tokens, embeddings.output_tokens) == (
        openai_server.emissions[-1].prompt_tokens,
        0,
    )  # vectors, no tokens


@pytest.mark.parametrize(
    ("model", "kind", "message"),
    [
        ("fake-429", Rejected, "HTTP 429: fake: rate limit reached, retry later."),
        ("fake-500", Rejected, "HTTP 500: fake: the server had an error while processing your request."),
        ("fake-cut", RequestFailed, "cut the stream after 2 events"),
        ("fake-no-done", RequestFailed, "ended the stream without data: [DONE] (after 4 events)"),
        ("fake-malformed", RequestFailed, 'sent an event that is no JSON object: {"id": "fake", "choices": ['),
        ("fake-error-event", Rejected, "sent an error: fake: the server had an error"),
        ("fake-huge-line", RequestFailed, "an event-stream line over 1048576 bytes (loadgen's limit)"),
        ("fake-not-sse", RequestFailed, "Content-Type text/html, not text/event-stream: <html><body>"),
        ("fake-trickle", TimedOut, "timeout: no answer within 500 ms"),
        ("fake-endless", TimedOut, "timeout: no answer within 500 ms"),
    ],
)
def test_each_misbehaviour_of_an_openai_server_is_a_counted_failure(
    openai_server: FakeOpenAI, model: str, kind: type[RequestFailed], message: str
) -> None:
    failure = _on_fake(openai_server, EndpointSpec("chat", model), Prompt("hello", 1, 3), request_timeout_s=0.5)
    assert type(failure) is kind and message in str(failure), repr(failure)
    assert "\n" not in str(failure) and len(str(failure)) < 500


def test_a_refused_api_key_is_a_permission_failure(tokenizer_file: Path) -> None:
    with fake_openai(tokenizer_file, ttft_ms=1, token_ms=1, api_key="secret") as fake:
        refused = _on_fake(fake, EndpointSpec("chat", "fake", api_key="wrong"), Prompt("hello", 1, 2))
        assert isinstance(refused, PermissionDenied) and "HTTP 401: Incorrect API key provided." in str(refused)
        assert isinstance(
            _on_fake(fake, EndpointSpec("chat", "fake", api_key="secret"), Prompt("hi", 1, 2)), TokenReply
        )


def test_neither_a_role_nor_a_usage_chunk_is_a_content_event() -> None:
    endpoint = token_endpoint(EndpointSpec("chat", "m"), ConnectionOptions("localhost:1", "http"))
    reader = EventReader(endpoint)
    assert reader.begin(200, b"text/event-stream")
    chunks = [{"delta": {"role": "assistant"}}, {"delta": {"content": "a"}}, {"delta": {"content": None}}]
    for at, chunk in enumerate(chunks):
        reader.piece(b"data: " + json.dumps({"choices": [chunk]}).encode() + b"\n\n", at)
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    reader.piece(b"data: " + json.dumps(usage).encode() + b"\r\n\r\ndata: [DONE]\r\n\r\n", 9)
    reply = endpoint._streamed(reader)
    assert (reply.events, reply.texts, reply.input_tokens, reply.output_tokens) == ([1], ["a"], 3, 1)


def test_the_request_is_built_once_with_its_headers_and_extra_inputs() -> None:
    options = ConnectionOptions("example.com:8000", "http", headers=(("X-Team", "a"),))
    spec = EndpointSpec("chat", "m", extra_inputs={"ignore_eos": True, "max_tokens": 9}, api_key="KEY")
    head, body = token_endpoint(spec, options).encode(Prompt("hi", 1, 4)).split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert {"Host: example.com:8000", "X-Team: a", "Authorization: Bearer KEY", f"Content-Length: {len(body)}"} <= set(
        lines
    )
    assert json.loads(body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 9,  # --extra-inputs win
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    template = EndpointSpec("template", "m", path="v1/custom", template='{"q": {{ text|tojson }}, "n": {{max_tokens}}}')
    assert token_endpoint(template, options).encode(Prompt('say "hi"', 1)).endswith(b'{"q":"say \\"hi\\"","n":null}')
    for bad in ('{"q": {{text}}', '["{{text}}"]', '{"q": 1}'):
        with pytest.raises(OptionError):
            token_endpoint(EndpointSpec("template", "m", path="x", template=bad), options)


@pytest.mark.parametrize("streaming", [True, False])
def test_a_template_reads_the_field_it_names_streamed_or_not(openai_server: FakeOpenAI, streaming: bool) -> None:
    template = '{"model": "fake", "prompt": {{text}}, "max_tokens": {{max_tokens}}, "stream": %s}'
    spec = EndpointSpec(
        "template",
        "fake",
        path="v1/completions",
        template=template % json.dumps(streaming),
        response_field="choices.0.text",
    )
    reply = _on_fake(openai_server, spec, Prompt("hello", 1, 4))
    assert isinstance(reply, TokenReply) and len(reply.events) == (4 if streaming else 1)
    assert len(openai_server.encode("".join(reply.texts))) == 4
