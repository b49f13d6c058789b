"""The "LLM" with real compute (TensorRT-LLM's `tensorrt_llm`, decoupled): a tiny decoder-only transformer in torch,
randomly initialised from a seed, that streams request_output_len tokens, one per response.

Each request is a prefill over its input_ids (the whole prompt through every layer at once, keeping each layer's
keys and values), then one decoding step per token that attends to that cache. Its time to the first token thus
grows with the prompt's length, as a real model's does. The vocabulary is the shipped tokenizer's; each token is
sampled (with a generator seeded by the prompt's ids) from the ids that decode and re-encode alone one for one
(vocabulary.py, the example's), so the text re-encodes to as many tokens as were streamed.

One generation thread serves the requests in arrival order on one torch thread: execute() only queues them, so the
backend stays responsive, and Triton's statistics for this model cover that alone, not the generation. A real
engine batches the requests in flight; this one generates one request at a time. A client that cancels gets no more
tokens. Needs torch (the slow tests install it).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer
from torch import nn
from torch.nn import functional
from vocabulary import streamable_ids

# loadgen's shipped tokenizer, found without importing loadgen (whose import of ssl fails in the backend's stub)
TOKENIZER = Path(find_spec("loadgen").origin).parent / "data" / "tokenizer.json"
STOP_TIMEOUT_S = 5.0  # how long finalize() waits for the request being generated


class Block(nn.Module):
    """One pre-norm transformer layer: causal self-attention over the cache and the new positions, then an MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (positions, width) -> the same, and this layer's keys and values up to these positions."""
        positions, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(positions, 3, self.heads, width // self.heads).unbind(1)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, positions, head width)
        if cache is not None:
            k, v = torch.cat((cache[0], k), dim=1), torch.cat((cache[1], v), dim=1)
        # a prefill is causal; a decoding step's one position sees every cached one
        attended = functional.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.projection(attended.transpose(0, 1).reshape(positions, width))
        return x + self.mlp(self.mlp_norm(x)), (k, v)


class Decoder(nn.Module):
    """Token and position embeddings, the layers, and an output head (the token embeddings, tied) over the ids
    the model may emit."""

    def __init__(self, vocabulary: int, width: int, heads: int, layers: int, max_positions: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(max_positions, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(
        self, ids: torch.Tensor, start: int, caches: list[tuple[torch.Tensor, torch.Tensor]] | None, emit: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The logits over `emit` (ids) after the last of `ids` (at positions from `start`), and the new caches."""
        x = self.tokens(ids) + self.positions(torch.arange(start, start + len(ids)))
        new_caches = []
        for index, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[index])
            new_caches.append(cache)
        last = self.norm(x[-1])
        return self.tokens.weight[emit] @ last / math.sqrt(last.shape[0]), new_caches


@dataclass(frozen=True)
class Request:
    """One request to generate for: where its responses go, its prompt and how many tokens it asked for."""

    sender: Any
    prompt: np.ndarray
    count: int


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})

        def number(name: str) -> int:
            return int(parameters[name]["string_value"])

        torch.set_num_threads(1)  # the server's other steps and the client share the machine's cores
        tokenizer = Tokenizer.from_file(str(TOKENIZER))
        self.emit = torch.tensor(streamable_ids(tokenizer))
        self.max_positions = number("max_positions")
        torch.manual_seed(number("seed"))
        self.decoder = Decoder(
            tokenizer.get_vocab_size(), number("width"), number("heads"), number("layers"), self.max_positions
        ).eval()
        self.requests: queue.Queue[Request | None] = queue.Queue()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self.serve, daemon=True)
        self.worker.start()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            prompt = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
            length = int(pb_utils.get_input_tensor_by_name(request, "input_lengths").as_numpy().reshape(-1)[0])
            count = int(pb_utils.get_input_tensor_by_name(request, "request_output_len").as_numpy().reshape(-1)[0])
            self.requests.put(Request(request.get_response_sender(), prompt[:length], count))
        return None

    def serve(self) -> None:
        """The generation thread: one request after another until finalize()."""
        while (request := self.requests.get()) is not None:
            if self.stopping.is_set():
                request.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            try:
                self.generate(request)
            except Exception as error:  # the stream ends with the error, never silently
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}"))
                request.sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                request.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @torch.inference_mode()
    def generate(self, request: Request) -> None:
        """One request's stream: the prefill, then a token per decoding step, each sent as it is sampled."""
        length = len(request.prompt)
        if not 0 < length <= self.max_positions - request.count:
            raise ValueError(
                f"a prompt of {length} tokens and {request.count} to generate do not fit the model's "
                f"{self.max_positions} positions (or the prompt is empty)"
            )
        draw = torch.Generator().manual_seed(int(request.prompt.sum()))
        ids, caches, start = torch.from_numpy(request.prompt.astype(np.int64)), None, 0
        for _ in range(request.count):
            if self.stopping.is_set() or request.sender.is_cancelled():
                break
            logits, caches = self.decoder(ids, start, caches, self.emit)
            start += len(ids)
            token = self.emit[torch.multinomial(torch.softmax(logits, dim=0), 1, generator=draw)]
            request.sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("output_ids", token.int().numpy())]))
            ids = token

    def finalize(self) -> None:
        self.stopping.set()
        self.requests.put(None)
        self.worker.join(timeout=STOP_TIMEOUT_S)
