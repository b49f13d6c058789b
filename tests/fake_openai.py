"""A FAKE OpenAI-compatible server (aiohttp), for the token-stream tests: no real one runs offline on this CPU.

It serves `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and `GET /v1/models` with OpenAI's bodies,
and checks `Authorization: Bearer KEY` when started with a key. Prompts are counted with a `tokenizers` file (without
special tokens); the answer is exactly `max_tokens` tokens (default 16), each a vocabulary entry that decodes to a
space and ASCII letters, so that the text re-encodes to exactly that many. A stream sends one token per SSE chunk,
the first `ttft_ms` (+ `ttft_us_per_input_token` x prompt tokens) after the request arrived, then one every
`token_ms`; the last token's chunk has `finish_reason: "length"`, then comes a `usage` chunk with empty `choices`
(when `stream_options.include_usage`) and `data: [DONE]`. A non-streaming answer comes when its last token would.

It records what it emitted (`FakeOpenAI.emissions`, `GET /fake/emissions`): per request, its arrival, the `id` its
answer carries (so that a client's record of a reply finds the emission) and the instant just before each piece was
written (SSE chunk, or whole body), in `time.monotonic_ns`: CLOCK_MONOTONIC, one clock for every process on the
machine (on Linux the client's `time.perf_counter_ns` reads the same clock).

It misbehaves on request, by the request's `model`:
- `fake-malformed`: the second chunk is a `data:` line of broken JSON (not streaming: the body is half a JSON);
- `fake-cut`: the connection closes after `CUT_AFTER` chunks, no terminating chunk (not streaming: after half the
  body its Content-Length announced);
- `fake-429`, `fake-500`: HTTP 429 / 500 with OpenAI's JSON error body, at once;
- `fake-no-done`: the stream ends cleanly after its last chunk, without `data: [DONE]`;
- `fake-error-event`: after `CUT_AFTER` chunks, an event `data: {"error": {...}}` (a failure mid-stream, as vLLM
  sends it), then `data: [DONE]` (not streaming: a normal answer);
- `fake-endless`: token chunks every `token_ms` until the client goes (streaming or not);
- `fake-huge-line`: one `data:` line of `HUGE_LINE` bytes without a newline, then the body ends (streaming or not);
- `fake-trickle`: the normal answer, one byte every `TRICKLE_S`;
- `fake-not-sse`: HTTP 200 with an HTML page (`text/html`), streaming or not.
Any other model answers normally.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiohttp import web
from tokenizers import Tokenizer

MISBEHAVIOURS = (
    "fake-malformed",
    "fake-cut",
    "fake-429",
    "fake-500",
    "fake-no-done",
    "fake-error-event",
    "fake-endless",
    "fake-huge-line",
    "fake-trickle",
    "fake-not-sse",
)
CUT_AFTER = 2  # chunks before fake-cut closes the connection
HUGE_LINE = 10 << 20
TRICKLE_S = 0.1
MALFORMED = b'data: {"id": "fake", "choices": [{"delta": {"content": \n\n'
NOT_SSE = b"<html><body><h1>fake: not an event stream</h1></body></html>"
ERRORS = {  # status: message, type, code
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    429: ("fake: rate limit reached, retry later.", "rate_limit_error", "rate_limit_exceeded"),
    500: ("fake: the server had an error while processing your request.", "server_error", None),
}
Piece = tuple[float, bytes]  # seconds after the previous write (the first: after arrival), bytes


@dataclass
class Emission:
    """One request as the fake answered it; instants in time.monotonic_ns. In a normal stream the first
    `completion_tokens` entries of `chunk_ns` are the tokens' chunks."""

    path: str
    model: str
    stream: bool
    arrival_ns: int
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunk_ns: list[int] = field(default_factory=list)
    client_gone: bool = False
    response_id: str = ""  # the `id` of a completion's answer (every chunk of a stream carries it)


class BadRequest(Exception):
    """A request body the fake cannot answer (HTTP 400)."""


def error_body(message: str, kind: str, code: object) -> bytes:
    """OpenAI's error body."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def sse(document: object) -> bytes:
    """One server-sent event as OpenAI and vLLM write it."""
    return b"data: " + json.dumps(document).encode() + b"\n\n"


class FakeOpenAI:
    """The fake's behaviour and what it emitted; `app()` serves it."""

    def __init__(
        self,
        tokenizer: Path,
        ttft_ms: float = 20,
        token_ms: float = 5,
        ttft_us_per_input_token: float = 0,
        api_key: str | None = None,
    ) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.ttft_s, self.token_s, self.per_input_s = ttft_ms / 1e3, token_ms / 1e3, ttft_us_per_input_token / 1e6
        self.api_key = api_key
        self.emissions: list[Emission] = []
        self.url = ""
        self.ids = itertools.count(1)
        self.words = [
            word
            for word in map(self.tokenizer.decode, ([i] for i in range(self.tokenizer.get_vocab_size())))
            if re.fullmatch(" [A-Za-z]+", word) and len(self.encode(word)) == 1
        ]
        if not self.words or len(self.encode("".join(self.words))) != len(self.words):
            raise ValueError(f"{tokenizer}: no tokens that decode to a space and letters and re-encode one by one")

    def encode(self, text: str) -> list[int]:
        """The token ids of a text, without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/v1/completions", self.generate)
        app.router.add_post("/v1/embeddings", self.generate)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/fake/emissions", self.emitted)
        return app

    async def models(self, request: web.Request) -> web.Response:
        names = ["fake", *MISBEHAVIOURS]
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    async def emitted(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(emission) for emission in list(self.emissions)])

    async def generate(self, request: web.Request) -> web.StreamResponse:
        emission = Emission(request.path, "", False, time.monotonic_ns())
        self.emissions.append(emission)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return await self.fail(request, emission, 401)
        try:
            try:
                body = await request.json()
            except ValueError as error:
                raise BadRequest(f"the body is not JSON: {error}") from None
            if not isinstance(body, dict):
                raise BadRequest("the body is not a JSON object")
            emission.model, emission.stream = str(body.get("model", "")), body.get("stream") is True
            pieces = self.answer(request.path, body, emission)
        except BadRequest as error:
            return await self.fail(request, emission, 400, str(error))
        return await self.misbehave(request, emission, pieces)

    def answer(self, path: str, body: dict, emission: Emission) -> Iterable[Piece]:
        """The normal answer's pieces (fake-endless's: endless)."""
        if path.endswith("embeddings"):
            return self.embeddings(body, emission)
        chat = path.endswith("chat/completions")
        emission.prompt_tokens = len(self.encode(self.prompt(body, chat)))
        n = body.get("max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens", 16)
        if type(n) is not int or n < 1:
            raise BadRequest("`max_tokens` must be a positive integer")
        emission.completion_tokens = n
        head = {"id": f"fake-{next(self.ids)}", "created": int(time.time()), "model": emission.model}
        emission.response_id = head["id"]
        first = self.ttft_s + self.per_input_s * emission.prompt_tokens
        words = itertools.cycle(self.words)
        if emission.model == "fake-endless":
            emission.stream = True
            return ((self.token_s if i else first, self.chunk(chat, head, i, w, False)) for i, w in enumerate(words))
        text = list(itertools.islice(words, n))
        usage = {"prompt_tokens": emission.prompt_tokens, "completion_tokens": n}
        usage["total_tokens"] = n + emission.prompt_tokens
        if not emission.stream:
            choice: dict = {"index": 0, "text": "".join(text)}
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": "".join(text)}}
            choice |= {"finish_reason": "length", "logprobs": None}
            document = head | {"object": "chat.completion" if chat else "text_completion", "choices": [choice]}
            return [(first + self.token_s * (n - 1), json.dumps(document | {"usage": usage}).encode())]
        pieces = [(self.token_s if i else first, self.chunk(chat, head, i, w, i == n - 1)) for i, w in enumerate(text)]
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            kind = "chat.completion.chunk" if chat else "text_completion"
            pieces.append((0.0, sse(head | {"object": kind, "choices": [], "usage": usage})))
        return [*pieces, (0.0, b"data: [DONE]\n\n")]

    def embeddings(self, body: dict, emission: Emission) -> list[Piece]:
        """A few numbers per input text, after the first token's time."""
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("`input` must be a text or a list of texts")
        ids = [self.encode(text) for text in texts]
        emission.prompt_tokens = sum(map(len, ids))
        data = [
            {"object": "embedding", "index": i, "embedding": [sum(t) * (j + 1) % 997 / 997 for j in range(8)]}
            for i, t in enumerate(ids)
        ]
        usage = {"prompt_tokens": emission.prompt_tokens, "total_tokens": emission.prompt_tokens}
        document = {"object": "list", "model": emission.model, "data": data, "usage": usage}
        return [(self.ttft_s + self.per_input_s * emission.prompt_tokens, json.dumps(document).encode())]

    @staticmethod
    def chunk(chat: bool, head: dict, index: int, word: str, last: bool) -> bytes:
        """The SSE chunk of one token (the first chat chunk carries the role)."""
        if chat:
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
            choice: dict = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": word}
        choice |= {"finish_reason": "length" if last else None, "logprobs": None}
        return sse(head | {"object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]})

    @staticmethod
    def prompt(body: dict, chat: bool) -> str:
        """The text a prompt's tokens are counted on: the prompt, or the messages' contents one after another."""
        if not chat:
            if not isinstance(body.get("prompt"), str):
                raise BadRequest("`prompt` must be a text")
            return body["prompt"]
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list")
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadRequest("each message must have a text `content`")
        return "".join(m["content"] for m in messages)

    async def fail(
        self, request: web.Request, emission: Emission, status: int, message: str = ""
    ) -> web.StreamResponse:
        """OpenAI's JSON error, at once."""
        default, kind, code = ERRORS.get(status, ("", "invalid_request_error", None))
        emission.status = status
        body = error_body(message or default, kind, code)
        return await self.send(request, emission, [(0.0, body)], "application/json", len(body))

    async def misbehave(self, request: web.Request, emission: Emission, pieces: Iterable[Piece]) -> web.StreamResponse:
        """The answer, as the request's model asks it to go wrong (or not)."""
        model = emission.model
        if model in ("fake-429", "fake-500"):
            return await self.fail(request, emission, int(model[-3:]))
        if model == "fake-not-sse":
            return await self.send(request, emission, [(0.0, NOT_SSE)], "text/html", len(NOT_SSE))
        if model == "fake-huge-line":
            return await self.send(request, emission, [(0.0, b"data: " + b"a" * HUGE_LINE)], "text/event-stream")
        length = None
        if emission.stream and isinstance(pieces, list):  # every stream but the endless one
            if model == "fake-malformed":
                pieces[1] = (pieces[1][0], MALFORMED)
            elif model == "fake-no-done":
                pieces = pieces[:-1]
            elif model == "fake-cut":
                pieces = pieces[:CUT_AFTER]
            elif model == "fake-error-event":
                event = b"data: " + error_body(ERRORS[500][0], ERRORS[500][1], None) + b"\n\n"
                pieces = [*pieces[:CUT_AFTER], (self.token_s, event), pieces[-1]]
        elif isinstance(pieces, list):
            ((delay, body),) = pieces
            length = len(body)
            if model in ("fake-malformed", "fake-cut"):
                pieces = [(delay, body[: length // 2])]
                length = length if model == "fake-cut" else length // 2
        if model == "fake-trickle":
            data = b"".join(piece for _, piece in pieces)
            pieces = [(TRICKLE_S, data[i : i + 1]) for i in range(len(data))]
        content_type = "text/event-stream" if emission.stream else "application/json"
        return await self.send(request, emission, pieces, content_type, length, cut=model == "fake-cut")

    async def send(
        self,
        request: web.Request,
        emission: Emission,
        pieces: Iterable[Piece],
        content_type: str,
        length: int | None = None,
        cut: bool = False,
    ) -> web.StreamResponse:
        """Write the pieces at their times (chunked without a length), recording each write; `cut`: close the
        connection after the last."""
        response = web.StreamResponse(status=emission.status, headers={"Content-Type": content_type})
        if length is None:
            response.enable_chunked_encoding()
        else:
            response.content_length = length
        await response.prepare(request)
        last = emission.arrival_ns
        try:
            for delay, data in pieces:
                while (wait := last + int(delay * 1e9) - time.monotonic_ns()) > 0:
                    await asyncio.sleep(wait / 1e9)
                last = time.monotonic_ns()
                emission.chunk_ns.append(last)
                await response.write(data)
            if cut:
                assert request.transport is not None
                request.transport.close()
            else:
                await response.write_eof()
        except ConnectionResetError:  # the client went
            emission.client_gone = True
        return response


async def start(fake: FakeOpenAI, port: int = 0) -> web.AppRunner:
    """Serve the fake on 127.0.0.1:`port` (0: a free one) and set its `url`."""
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.1, access_log=None)  # endless answers: stop at once
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@contextmanager
def fake_openai(tokenizer: Path, **settings: object) -> Iterator[FakeOpenAI]:
    """Serve the fake on a free local port from its own thread's event loop until the block ends; yields it (with
    its `url`). `settings` are FakeOpenAI's."""
    fake = FakeOpenAI(tokenizer, **settings)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(start(fake), loop).result(10)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def serve(fake: FakeOpenAI, port: int) -> None:
    """Serve until interrupted, after one ready line."""
    runner = await start(fake, port)
    print(f"fake OpenAI-compatible server ready on {fake.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port (the ready line says which)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="a tokenizer.json")
    parser.add_argument("--ttft-ms", type=float, default=20)
    parser.add_argument("--ttft-us-per-input-token", type=float, default=0)
    parser.add_argument("--token-ms", type=float, default=5)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    try:
        fake = FakeOpenAI(args.tokenizer, args.ttft_ms, args.token_ms, args.ttft_us_per_input_token, args.api_key)
    except Exception as error:  # a missing or unreadable tokenizer file: one line
        parser.error(f"--tokenizer {args.tokenizer}: {error}".splitlines()[0])
    try:
        asyncio.run(serve(fake, args.port))
    except OSError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
