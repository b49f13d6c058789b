"""Token endpoints over loadgen's own HTTP/1.1: Triton's generate extension (`generate`, and `generate_stream` in
server-sent events), OpenAI-compatible `chat`, `completions` and `embeddings`, and a JSON `template` for anything
else. Each prompt is encoded once, before the run, into the whole request (line, headers, JSON body); a call sends
it and returns the answer as a TokenReply: the time each event that carried output came off the socket (stamped in
the transport before any parsing), its text, and the server's token counts where it gave them. Every way a server
can fail (an error status or an error event, a body that is no event stream or no JSON, a stream cut before its
end, a line past the limit) is a counted failure with the server's message, one line.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from loadgen.errors import OptionError
from loadgen.settings import Settings
from loadgen.transport.common import CONTROL_TIMEOUT_S, ClientTimes
from loadgen.transport.errors import (
    PermissionDenied,
    Rejected,
    RequestFailed,
    Unreachable,
    clipped,
    timed_out,
)
from loadgen.transport.http1 import ConnectionClosed, Http1Pool, MalformedResponse, Reply
from loadgen.transport.http_connection import error_message, error_text
from loadgen.transport.options import ConnectionOptions
from loadgen.transport.raw_http import header_lines
from loadgen.transport.sse import SseParser, SseTooLarge
from loadgen.transport.tokens import Prompt, TokenReply, Turn, conversation_text

EndpointType = Literal["generate", "chat", "completions", "embeddings", "template"]
ENDPOINT_TYPES: tuple[str, ...] = get_args(EndpointType)
EVENT_STREAM = b"text/event-stream"
DONE = "[DONE]"  # OpenAI's last event
_PLACEHOLDER = re.compile(r"\{\{\s*(text|max_tokens|model)\s*(?:\|\s*tojson\s*)?\}\}")


@dataclass(frozen=True)
class EndpointSpec:
    """What a token endpoint sends and where: its type, the model, streamed or not, `--extra-inputs` merged into
    every body, an API key (sent as `Authorization: Bearer`), and the path when not the type's own."""

    endpoint_type: EndpointType
    model: str
    streaming: bool = True
    extra_inputs: Mapping[str, object] = field(default_factory=dict)
    api_key: str | None = None
    path: str | None = None  # e.g. perf_analyzer's --endpoint v1/chat/completions
    template: str | None = None  # `template`: the JSON body, {{text}}, {{max_tokens}} and {{model}} as JSON values
    response_field: str | None = None  # `template`: where a response (or a stream's event) holds the text


class EventReader:
    """A response body taken as server-sent events (a BodySink): each event, stamped with the time of the read that
    completed it, is read into the reply as it comes (the parsing spread over the stream, not all at its end). A
    body that is not an event stream (or answers an error) is left whole."""

    __slots__ = ("content_type", "done", "endpoint", "events", "parser", "reply", "taken")

    def __init__(self, endpoint: TokenEndpoint) -> None:
        self.endpoint = endpoint
        self.parser = SseParser()
        self.reply = TokenReply()
        self.events = 0  # events read, [DONE] included
        self.done = False  # OpenAI's last event came
        self.content_type = b""
        self.taken = False

    def begin(self, status: int, content_type: bytes) -> bool:
        self.content_type = content_type
        self.taken = status == 200 and content_type[: len(EVENT_STREAM)].lower() == EVENT_STREAM
        return self.taken

    def piece(self, data: bytes, ns: int) -> None:
        """A piece of the body: its complete events read now (a failure they carry fails the request)."""
        try:
            events = self.parser.feed(data)
        except SseTooLarge as error:
            raise MalformedResponse(f"{error} (loadgen's limit)") from None
        endpoint = self.endpoint
        for event in events:
            self.events += 1
            if self.done:
                continue
            if event.data == DONE:
                self.done = True
                continue
            endpoint.read(endpoint.json_object(event.data, "an event"), self.reply, ns, True)


class TokenEndpoint(ABC):
    """One token endpoint on keep-alive HTTP/1.1 connections: `encode` a prompt once, `call` with it."""

    server = "the server"  # how messages name the peer
    needs_done = False  # a stream ends with `data: [DONE]`: one without it was cut
    json_for_stream = False  # a JSON answer to a streaming request is whole, not wrong

    def __init__(self, spec: EndpointSpec, options: ConnectionOptions) -> None:
        self.spec = spec
        self.url = options.url
        self.streams = self.reads_events(spec)
        parts = urllib.parse.urlsplit(f"//{options.url}")
        if parts.hostname is None or parts.port is None:
            raise OptionError(f"-u {options.url}: give the server as HOST:PORT")
        self.times = ClientTimes()  # what sending and receiving cost, summed
        self._pool = Http1Pool(
            parts.hostname,
            parts.port,
            CONTROL_TIMEOUT_S,
            options.https.context() if options.https is not None else None,
            self.times,
            options.max_response_bytes,
            options.stall_timeout_s,
        )
        self._timeout_s = options.request_timeout_s  # each request's whole stream, timed precisely
        self._waits_s = options.request_timeout_s or options.stall_timeout_s or 0.0  # the timeout it failed by
        fields = {
            "Host": options.url,
            "Accept-Encoding": "identity",
            "Accept": "text/event-stream" if spec.streaming else "application/json",
            "Content-Type": "application/json",
            **dict(options.headers),
        }
        if spec.api_key is not None:
            fields["Authorization"] = f"Bearer {spec.api_key}"
        path = "/" + (spec.path or self.path()).lstrip("/")
        self._head = f"POST {path} HTTP/1.1\r\n{header_lines(fields)}"

    def reads_events(self, spec: EndpointSpec) -> bool:
        """Whether answers are read as event streams."""
        return spec.streaming

    @abstractmethod
    def path(self) -> str:
        """The endpoint's path on the server."""

    @abstractmethod
    def body(self, prompt: Prompt) -> dict[str, Any]:
        """The request's JSON body for a prompt, before `--extra-inputs` are merged in."""

    @abstractmethod
    def read(self, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        """Add what one answer (a stream's event, or the whole response) carried to the reply."""

    def encode(self, prompt: Prompt) -> bytes:
        """The whole request for a prompt, as it goes on the wire (a prompt's own body as it is)."""
        body = dict(prompt.body) if prompt.body is not None else self.body(prompt)
        return self._message({**body, **self.spec.extra_inputs})

    def encode_turn(self, history: Sequence[Turn], prompt: Prompt) -> bytes:
        """A session's next turn: the conversation so far and the new prompt, as one text."""
        return self.encode(Prompt(conversation_text(history, prompt), prompt.input_tokens, prompt.output_tokens))

    def _message(self, body: dict[str, Any]) -> bytes:
        data = json.dumps(body, separators=(",", ":")).encode()
        return f"{self._head}Content-Length: {len(data)}\r\n\r\n".encode() + data

    async def call(self, payload: bytes) -> TokenReply:
        """Send an encoded request; its answer as it streamed. Raises a RequestFailed for every failure."""
        reader = EventReader(self) if self.streams else None
        try:
            answer = await self._pool.request(payload, self._timeout_s, reader)
        except TimeoutError:
            raise timed_out(self._waits_s) from None
        except ConnectionClosed as error:
            if reader is not None and reader.events:
                raise RequestFailed(
                    f"{self.server} at {self.url} cut the stream after {reader.events} events: {error}"
                ) from None
            raise Unreachable(f"cannot reach {self.server} at {self.url}: {error}") from None
        except OSError as error:
            raise Unreachable(f"cannot reach {self.server} at {self.url}: {error}") from None
        except MalformedResponse as error:
            raise RequestFailed(f"{self.server} at {self.url} sent {error}") from None
        if answer.status != 200:
            message = error_message(answer.body)
            described = f"HTTP {answer.status}: {message}" if message else f"HTTP {answer.status}"
            if answer.status in (401, 403):
                raise PermissionDenied(f"{self.server} at {self.url} refused the request: {described}")
            raise Rejected(f"{self.server} at {self.url}: {described}")
        if reader is None or (not reader.taken and self.json_for_stream):
            return self._whole(answer)
        if not reader.taken:
            kind = reader.content_type.decode(errors="replace") or "none"
            raise RequestFailed(
                f"{self.server} at {self.url} answered a stream with Content-Type {clipped(kind)}, not "
                f"text/event-stream: {clipped(bytes(answer.body).decode(errors='replace'))}"
            )
        return self._streamed(reader)

    def _streamed(self, reader: EventReader) -> TokenReply:
        """The reply a whole stream's events made, once it ended as the endpoint's streams end."""
        if not reader.done and reader.parser.pending:
            raise RequestFailed(f"{self.server} at {self.url} ended the stream in the middle of an event")
        if self.needs_done and not reader.done:
            raise RequestFailed(
                f"{self.server} at {self.url} ended the stream without data: {DONE} (after {reader.events} events)"
            )
        return reader.reply

    def _whole(self, answer: Reply) -> TokenReply:
        """The reply from a whole JSON response: one event, when its last bytes came."""
        reply = TokenReply()
        self.read(self.json_object(answer.body, "a response"), reply, answer.last_ns, False)
        return reply

    def json_object(self, data: str | bytes, what: str) -> dict[str, Any]:
        """One answer's JSON object; an error it carries (Triton's and OpenAI's `error`) fails the request."""
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            text = data if isinstance(data, str) else bytes(data).decode(errors="replace")
            raise RequestFailed(f"{self.server} at {self.url} sent {what} that is no JSON object: {clipped(text)}")
        if value.get("error") is not None:
            raise Rejected(f"{self.server} at {self.url} sent an error: {error_text(value['error'])}")
        return value

    def malformed(self, what: str) -> RequestFailed:
        """A failure for an answer that lacks what the endpoint reads."""
        return RequestFailed(f"{self.server} at {self.url} sent {what}")

    async def close(self) -> None:
        """Close the connections; requests in flight fail."""
        self._pool.close()


class Generate(TokenEndpoint):
    """Triton's generate extension: `generate` answers once, `generate_stream` streams its responses as events
    and ends with the body (no `[DONE]`); the server counts tokens when its answers carry `output_ids`."""

    server = "Triton"

    def path(self) -> str:
        name = urllib.parse.quote(self.spec.model, safe="")
        return f"v2/models/{name}/generate_stream" if self.streams else f"v2/models/{name}/generate"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        if prompt.output_tokens is None:
            return {"text_input": prompt.text}
        return {"text_input": prompt.text, "max_tokens": prompt.output_tokens}

    def read(self, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        ids = answer.get("output_ids")
        if isinstance(ids, list) and ids and isinstance(ids[0], list):  # [beams][tokens]: the first beam's
            ids = ids[0]
        count = len(ids) if isinstance(ids, list) else 1 if type(ids) is int else None
        if count is not None:
            reply.output_tokens = (reply.output_tokens or 0) + count
        text = _text(answer.get("text_output"))
        if text or count or not streamed:
            reply.events.append(ns)
            reply.texts.append(text)


class Chat(TokenEndpoint):
    """OpenAI's chat completions: the prompt as one user message; text in `choices[0].delta.content` (streamed)
    or `choices[0].message.content`; a stream asks for the final `usage` chunk and ends with `[DONE]`."""

    needs_done = True
    part = "message"  # where a whole answer's text is, under choices[0]

    def path(self) -> str:
        return "v1/chat/completions"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return self._openai({"messages": [{"role": "user", "content": prompt.text}]}, prompt)

    def encode_turn(self, history: Sequence[Turn], prompt: Prompt) -> bytes:
        """A session's next turn as messages: each turn so far as the user's and the assistant's, then the new."""
        messages = [
            {"role": role, "content": text}
            for turn in history
            for role, text in zip(("user", "assistant"), turn, strict=True)
        ]
        messages.append({"role": "user", "content": prompt.text})
        return self._message({**self._openai({"messages": messages}, prompt), **self.spec.extra_inputs})

    def _openai(self, body: dict[str, Any], prompt: Prompt) -> dict[str, Any]:
        body = {"model": self.spec.model, **body, "stream": self.streams}
        if prompt.output_tokens is not None:
            body["max_tokens"] = prompt.output_tokens
        if self.streams:
            body["stream_options"] = {"include_usage": True}
        return body

    def read(self, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        _usage(answer, reply)
        choices = answer.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            if not streamed:
                raise self.malformed("a response without choices")
            return  # the usage chunk
        text = self.text(choice, streamed)
        if text or not streamed:
            reply.events.append(ns)
            reply.texts.append(text)

    def text(self, choice: dict[str, Any], streamed: bool) -> str:
        """The text of a choice."""
        part = choice.get("delta" if streamed else "message")
        return _text(part.get("content")) if isinstance(part, dict) else ""


class Completions(Chat):
    """OpenAI's completions: the prompt as `prompt`, text in `choices[0].text`."""

    def path(self) -> str:
        return "v1/completions"

    encode_turn = TokenEndpoint.encode_turn  # the conversation as one text

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return self._openai({"prompt": prompt.text}, prompt)

    def text(self, choice: dict[str, Any], streamed: bool) -> str:
        return _text(choice.get("text"))


class Embeddings(TokenEndpoint):
    """OpenAI's embeddings: never streamed; one event; the input's tokens from `usage`."""

    def reads_events(self, spec: EndpointSpec) -> bool:
        return False

    def path(self) -> str:
        return "v1/embeddings"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {"model": self.spec.model, "input": [prompt.text]}

    def read(self, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        if not isinstance(answer.get("data"), list):
            raise self.malformed("a response without data")
        _usage(answer, reply)
        reply.output_tokens = 0  # vectors, not tokens: a request's figures are its latency and input tokens
        reply.events.append(ns)
        reply.texts.append("")


class Template(TokenEndpoint):
    """Any JSON endpoint: the body from a template whose placeholders (`{{text}}`, `{{max_tokens}}`, `{{model}}`,
    Jinja's `{{ text|tojson }}` alike) become JSON values, the text read from `response_field` (dot-separated keys
    and list indexes, e.g. `choices.0.text`), or the first of the usual fields; streamed when the answer is an
    event stream."""

    json_for_stream = True
    FIELDS = ("text_output", "choices.0.delta.content", "choices.0.text", "choices.0.message.content", "text")

    def __init__(self, spec: EndpointSpec, options: ConnectionOptions) -> None:
        if spec.path is None:
            raise OptionError("--endpoint-type template needs the endpoint's path (--endpoint)")
        if spec.template is None or not any(match[1] == "text" for match in _PLACEHOLDER.finditer(spec.template)):
            raise OptionError("--endpoint-type template needs a payload template with a {{text}} placeholder")
        super().__init__(spec, options)
        self._template = spec.template
        fields = (spec.response_field,) if spec.response_field else self.FIELDS
        self._fields = tuple(tuple(path.split(".")) for path in fields)
        self.encode(Prompt("x", 1, 1))  # a template that is no JSON object fails now, not at the first request

    def reads_events(self, spec: EndpointSpec) -> bool:
        return True

    def path(self) -> str:
        return cast(str, self.spec.path)

    def body(self, prompt: Prompt) -> dict[str, Any]:
        values = {"text": prompt.text, "max_tokens": prompt.output_tokens, "model": self.spec.model}
        filled = _PLACEHOLDER.sub(lambda match: json.dumps(values[match[1]]), self._template)
        try:
            body = json.loads(filled)
        except ValueError as error:
            raise OptionError(f"the payload template is no JSON once filled in: {error}") from None
        if not isinstance(body, dict):
            raise OptionError("the payload template is no JSON object")
        return body

    def read(self, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        _usage(answer, reply)
        for keys in self._fields:
            value = _field(answer, keys)
            if value is not None:
                text = _text(value)
                if text or not streamed:
                    reply.events.append(ns)
                    reply.texts.append(text)
                return
        if not streamed:
            raise self.malformed(f"a response without {' or '.join('.'.join(keys) for keys in self._fields)}")


ENDPOINTS: dict[str, type[TokenEndpoint]] = {
    "generate": Generate,
    "chat": Chat,
    "completions": Completions,
    "embeddings": Embeddings,
    "template": Template,
}


def token_endpoint(spec: EndpointSpec, options: ConnectionOptions) -> TokenEndpoint:
    """The endpoint a spec names, on connections as the options say."""
    return ENDPOINTS[spec.endpoint_type](spec, options)


def endpoint_for(model: str, settings: Settings, options: ConnectionOptions) -> TokenEndpoint:
    """The HTTP token endpoint the settings name (--endpoint-type generate or an OpenAI-compatible one) for a
    model, streamed with --streaming."""
    spec = EndpointSpec(
        cast(EndpointType, settings.endpoint_type),
        model,
        settings.streaming,
        settings.extra_inputs,
        settings.api_key,
        settings.endpoint,
        settings.payload_template,
        settings.response_field,
    )
    return token_endpoint(spec, options)


def _text(value: object) -> str:
    """A text field's value as text (a list of strings, as a BYTES tensor of several elements, joined)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "".join(str(item) for item in value)
    return value if isinstance(value, str) else str(value)


def _field(value: object, keys: tuple[str, ...]) -> object:
    """The value at a path of keys and list indexes, or None."""
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _usage(answer: dict[str, Any], reply: TokenReply) -> None:
    """The server's token counts, from OpenAI's `usage`."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        if type(usage.get("completion_tokens")) is int:
            reply.output_tokens = usage["completion_tokens"]
        if type(usage.get("prompt_tokens")) is int:
            reply.input_tokens = usage["prompt_tokens"]
