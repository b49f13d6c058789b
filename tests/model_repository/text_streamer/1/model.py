"""Test model (decoupled): for a request with max_tokens = n, sends n responses `token_ms` (a config parameter)
apart, response i carrying the text "token{i} " and the id i, from a thread of its own; then the final flag."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.token_s = float(parameters["token_ms"]["string_value"]) / 1000

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1)[0])
            threading.Thread(target=self._stream, args=(request.get_response_sender(), count), daemon=True).start()
        return None

    def _stream(self, sender: Any, count: int) -> None:
        for index in range(count):
            time.sleep(self.token_s)
            text = np.array([f"token{index} ".encode()], dtype=np.object_)
            ids = np.array([index], dtype=np.int32)
            sender.send(
                pb_utils.InferenceResponse([pb_utils.Tensor("text_output", text), pb_utils.Tensor("output_ids", ids)])
            )
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
