"""Workloads of generative models beyond one prompt per request: a share of requests cancelled on purpose
(`--request-cancellation-rate`), and multi-turn sessions whose turns resend the conversation so far."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from loadgen.inputs import request_layout
from loadgen.prompts import triton_sample
from loadgen.settings import Settings
from loadgen.transport import ModelInfo, Payload, Wire
from loadgen.transport.errors import Cancelled
from loadgen.transport.tokens import Prompt, TokenCall, TokenReply, Turn, conversation_text


class Cancelling:
    """A token call of which --request-cancellation-rate percent of the requests (drawn at random, seeded) are
    cancelled --request-cancellation-delay seconds after they were sent: the task is cancelled, which cancels a gRPC
    stream's call or closes an HTTP connection. A request that completes before its delay is an ordinary one."""

    def __init__(self, call: TokenCall, settings: Settings, shard: int) -> None:
        self._call = call
        self._share = settings.request_cancellation_rate / 100
        self._delay_s = settings.request_cancellation_delay
        self._draw = random.Random(f"{settings.random_seed}/{shard}").random  # each shard draws its own

    async def __call__(self, payload: Payload) -> TokenReply:
        if self._draw() >= self._share:
            return await self._call(payload)
        task = asyncio.ensure_future(self._call(payload))  # it starts sending before the delay is counted
        done, _ = await asyncio.wait((task,), timeout=self._delay_s)
        if done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # the stream cancelled, the connection closed
        raise Cancelled


TurnEncoder = Callable[[Sequence[Turn], Prompt], Payload]
"""Encodes a session's next turn: the conversation so far and the new prompt."""


def triton_turns(wire: Wire, model: ModelInfo, settings: Settings) -> TurnEncoder:
    """A Triton LLM pipeline's turns: the conversation as one text in its prompt tensor, as the settings lay a
    request out."""
    layout = request_layout(settings)

    def encode(history: Sequence[Turn], prompt: Prompt) -> Payload:
        text = conversation_text(history, prompt)
        return wire.encode(model, triton_sample(model, Prompt(text, 0, prompt.output_tokens), settings), layout)

    return encode
