"""The detokenizer step (TensorRT-LLM's `postprocessing`): the output_ids of one streamed response -> text_output.

In a streaming pipeline it runs once per token, so its queue and compute land in every gap between tokens. A real
TensorRT-LLM pipeline takes [beams, length] ids with sequence_length (and log probabilities) here, and decodes
with the served model's tokenizer; this one decodes the ids it gets with loadgen's shipped tokenizer.
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

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            ids = pb_utils.get_input_tensor_by_name(request, "output_ids").as_numpy().reshape(-1)
            text = self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
            output = pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([output]))
        return responses
