"""Token endpoints on the raw HTTP/1.1 transport: Triton's generate_stream against the real server's decoupled
`text_streamer` (max_tokens responses token_ms apart), and the OpenAI endpoints against a FAKE OpenAI-compatible
server below (aiohttp), which also misbehaves on request; every misbehaviour is a counted failure with the
server's message, never a traceback or a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from aiohttp import web

from loadgen.errors import OptionError
from loadgen.server import EmbeddedServer
from loadgen.transport.endpoints import EndpointSpec, TokenEndpoint, token_endpoint
from loadgen.transport.errors import PermissionDenied, Rejected, RequestFailed, TimedOut
from loadgen.transport.options import ConnectionOptions
from loadgen.transport.tokens import Prompt, TokenReply

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
    stalled = _failure(_generate(test_server, stall_timeout_s=0.2), Prompt("hello", 1, 1000))  # checked coarsely
    assert isinstance(stalled, TimedOut)


# --- a FAKE OpenAI-compatible server -------------------------------------------------------------------------------

FAKE_TOKEN_MS = 5
FAKE_INPUT_TOKENS = 7


def _chunk(text: str | None, chat: bool, usage: dict[str, int] | None = None) -> bytes:
    if text is None:  # the usage chunk
        choices = []
    elif chat:
        choices = [{"index": 0, "delta": {"content": text} if text else {"role": "assistant"}}]
    else:
        choices = [{"index": 0, "text": text}]
    return b"data: " + json.dumps({"choices": choices, "usage": usage}).encode() + b"\n\n"


async def _fake_openai(request: web.Request) -> web.StreamResponse:
    """OpenAI's chat, completions and embeddings; the model name picks a misbehaviour."""
    body = await request.json()
    model = body["model"]
    if model in ("429", "500"):
        message = {"error": {"message": f"fake {model} refusal", "type": "x", "code": int(model)}}
        return web.json_response(message, status=int(model))
    if model == "401":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    if request.path == "/v1/embeddings":
        usage = {"prompt_tokens": FAKE_INPUT_TOKENS, "total_tokens": FAKE_INPUT_TOKENS}
        return web.json_response({"data": [{"embedding": [0.5, 0.25], "index": 0}], "usage": usage})
    chat = request.path == "/v1/chat/completions"
    tokens = body["max_tokens"]
    texts = [f"tok{i} " for i in range(tokens)]
    usage = {"prompt_tokens": FAKE_INPUT_TOKENS, "completion_tokens": tokens}
    if not body["stream"]:
        choice = {"message": {"role": "assistant", "content": "".join(texts)}} if chat else {"text": "".join(texts)}
        return web.json_response({"choices": [choice], "usage": usage})
    if model == "json_for_stream":
        return web.json_response({"choices": []})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if chat:
        await response.write(_chunk("", chat))  # the role-only first chunk
    for index, text in enumerate(texts):
        await asyncio.sleep(FAKE_TOKEN_MS / 1000)
        await response.write(_chunk(text, chat))
        if model == "cut" and index == 1:
            assert request.transport is not None
            request.transport.close()
            return response
        if model == "malformed" and index == 1:
            await response.write(b"data: {not json\n\n")
        if model == "error_event" and index == 1:
            await response.write(b'data: {"error": {"message": "fake failure mid-stream"}}\n\n')
        if model == "endless_line" and index == 1:
            await response.write(b"data: " + b"x" * (2 << 20))
    if model == "trickle":
        while True:
            await asyncio.sleep(0.02)
            await response.write(b": still here\n")
    if body.get("stream_options", {}).get("include_usage"):
        await response.write(_chunk(None, chat, usage))
    if model != "no_done":
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@asynccontextmanager
async def fake_openai() -> AsyncIterator[str]:
    """The fake server on a free port, as HOST:PORT."""
    app = web.Application()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, _fake_openai)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _openai(
    kind: str, model: str, prompt: Prompt, streaming: bool = True, **options: float
) -> TokenReply | RequestFailed:
    """One call to the fake server: its reply, or the failure it raised."""

    async def run() -> TokenReply | RequestFailed:
        async with fake_openai() as url:
            spec = EndpointSpec(kind, model, streaming=streaming, api_key="KEY")  # type: ignore[arg-type]
            endpoint = token_endpoint(spec, ConnectionOptions(url, "http", **options))  # type: ignore[arg-type]
            try:
                return await endpoint.call(endpoint.encode(prompt))
            except RequestFailed as error:
                return error
            finally:
                await endpoint.close()

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["chat", "completions"])
@pytest.mark.parametrize("streaming", [True, False])
def test_openai_endpoints_give_the_text_and_the_servers_counts(kind: str, streaming: bool) -> None:
    reply = _openai(kind, "ok", Prompt("hello", 2, 6), streaming)
    assert isinstance(reply, TokenReply)
    texts = [f"tok{i} " for i in range(6)]
    assert reply.texts == (texts if streaming else ["".join(texts)])  # neither the role nor the usage chunk
    assert len(reply.events) == len(reply.texts)
    assert (reply.output_tokens, reply.input_tokens) == (6, FAKE_INPUT_TOKENS)
    embeddings = _openai("embeddings", "ok", Prompt("hello", 2))
    assert isinstance(embeddings, TokenReply) and len(embeddings.events) == 1
    assert (embeddings.input_tokens, embeddings.output_tokens) == (FAKE_INPUT_TOKENS, None)


@pytest.mark.parametrize(
    ("model", "kind", "message"),
    [
        ("429", Rejected, "HTTP 429: fake 429 refusal"),
        ("500", Rejected, "HTTP 500: fake 500 refusal"),
        ("401", PermissionDenied, "HTTP 401: bad key"),
        ("cut", RequestFailed, "cut the stream after 3 events"),
        ("no_done", RequestFailed, "ended the stream without data: [DONE]"),
        ("malformed", RequestFailed, "sent an event that is no JSON object: {not json"),
        ("error_event", Rejected, "sent an error: fake failure mid-stream"),
        ("endless_line", RequestFailed, "an event-stream line over 1048576 bytes (loadgen's limit)"),
        ("json_for_stream", RequestFailed, "Content-Type application/json; charset=utf-8, not text/event-stream"),
        ("trickle", TimedOut, "timeout: no answer within 500 ms"),
    ],
)
def test_each_misbehaviour_of_an_openai_server_is_a_counted_failure(
    model: str, kind: type[RequestFailed], message: str
) -> None:
    failure = _openai("chat", model, Prompt("hello", 2, 3), request_timeout_s=0.5)
    assert type(failure) is kind and message in str(failure), repr(failure)
    assert "\n" not in str(failure) and len(str(failure)) < 500


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
def test_a_template_reads_the_field_it_names_streamed_or_not(streaming: bool) -> None:
    async def run() -> TokenReply:
        async with fake_openai() as url:
            template = '{"model": "ok", "prompt": {{text}}, "max_tokens": {{max_tokens}}, "stream": %s}'
            spec = EndpointSpec(
                "template",
                "ok",
                path="v1/completions",
                template=template % json.dumps(streaming),
                response_field="choices.0.text",
            )
            endpoint = token_endpoint(spec, ConnectionOptions(url, "http"))
            try:
                return await endpoint.call(endpoint.encode(Prompt("hello", 1, 4)))
            finally:
                await endpoint.close()

    reply = asyncio.run(run())
    texts = [f"tok{i} " for i in range(4)]
    assert reply.texts == (texts if streaming else ["".join(texts)])
