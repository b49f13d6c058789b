"""The tokenizer step (TensorRT-LLM's `preprocessing`): text_input -> input_ids, input_lengths, request_output_len.

It tokenizes with the byte-level BPE that ships with loadgen (loadgen/data/tokenizer.json), so no download is
needed. A real TensorRT-LLM pipeline loads the served model's own Hugging Face tokenizer here and also turns
bad_words and stop_words into the word lists tensorrt_llm takes, while exclude_input_in_output, min_length,
ignore_eos and stream go to tensorrt_llm itself. This pipeline's "LLM" always streams exactly max_tokens new
tokens, so those optional inputs are accepted and left unused.
"""

from __future__ import annotations

import json
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

# loadgen's shipped tokenizer, found without importing loadgen (whose import of ssl fails in the backend's stub)
TOKENIZER = Path(find_spec("loadgen").origin).parent / "data" / "tokenizer.json"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(parameters.get("delay_ms", {}).get("string_value", "0")) / 1000
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER))

    def tokenize(self, request: Any) -> list[Any]:
        """The three tensors tensorrt_llm takes, for one request; a bad input raises ValueError."""
        text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
        max_tokens = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1)[0])
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
        try:
            ids = self.tokenizer.encode(text.decode() if isinstance(text, bytes) else str(text)).ids
        except UnicodeDecodeError as error:
            raise ValueError(f"text_input is not UTF-8 text ({error.reason} at byte {error.start})") from None
        return [
            pb_utils.Tensor("input_ids", np.array(ids, dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.array([len(ids)], dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.array([max_tokens], dtype=np.int32)),
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                responses.append(pb_utils.InferenceResponse(self.tokenize(request)))
            except ValueError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
        return responses
