"""The "LLM" (TensorRT-LLM's `tensorrt_llm`, decoupled): streams request_output_len tokens, one per response.

Each request gets a thread: it sleeps a prefill time (prefill_ms + prefill_us_per_token per input token), sends
its first token, then one token every token_ms on a fixed schedule (a late token does not delay the next ones),
then the final flag. Requests are independent, whatever the instance count. The tokens are words of the shipped
tokenizer's vocabulary (vocabulary.py), drawn from a generator seeded by the prompt's ids: the same prompt streams
the same text. A client that cancels gets no more tokens.

A real TensorRT-LLM engine batches the requests of all its slots in flight on a GPU: its prefill and per-token
times grow with the batch, and it stops at an end-of-sequence token unless min_length/ignore_eos say otherwise.
Triton's statistics for a decoupled model cover execute() alone (here: starting the thread), not the generation.
"""

from __future__ import annotations

import json
import random
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer
from vocabulary import streamable_ids

# loadgen's shipped tokenizer, found without importing loadgen (whose import of ssl fails in the backend's stub)
TOKENIZER = Path(find_spec("loadgen").origin).parent / "data" / "tokenizer.json"
STOP_TIMEOUT_S = 5.0  # how long finalize() waits for streams it has told to end


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})

        def seconds(name: str, default: str, scale: float) -> float:
            return float(parameters.get(name, {}).get("string_value", default)) / scale

        self.prefill_s = seconds("prefill_ms", "20", 1e3)
        self.prefill_s_per_token = seconds("prefill_us_per_token", "100", 1e6)
        self.token_s = seconds("token_ms", "5", 1e3)
        self.vocabulary = streamable_ids(Tokenizer.from_file(str(TOKENIZER)))
        self.stopping = threading.Event()
        self.streams: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            prompt = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
            length = int(pb_utils.get_input_tensor_by_name(request, "input_lengths").as_numpy().reshape(-1)[0])
            count = int(pb_utils.get_input_tensor_by_name(request, "request_output_len").as_numpy().reshape(-1)[0])
            first = time.monotonic() + self.prefill_s + self.prefill_s_per_token * length  # the first token's time
            stream = threading.Thread(target=self.generate, args=(request.get_response_sender(), prompt, first, count))
            with self.lock:
                self.streams.add(stream)
            stream.start()
        return None

    def generate(self, sender: Any, prompt: np.ndarray, first: float, count: int) -> None:
        """One request's stream: count responses of one token each, the first at `first` (monotonic seconds), then
        the final flag (always sent)."""
        try:
            draw = random.Random(int(prompt.sum()))
            for index in range(count):
                if self.stopping.wait(max(0.0, first + index * self.token_s - time.monotonic())):
                    break  # the model is being unloaded
                if sender.is_cancelled():
                    break
                token = np.array([draw.choice(self.vocabulary)], dtype=np.int32)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("output_ids", token)]))
        except Exception as error:  # the stream ends with the error, never silently
            error_response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}"))
            sender.send(error_response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.lock:
                self.streams.discard(threading.current_thread())

    def finalize(self) -> None:
        self.stopping.set()
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.join(timeout=STOP_TIMEOUT_S)
