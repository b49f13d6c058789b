"""Test model: echoes INPUT0 after sleeping `sleep_ms` (a config parameter), so its capacity is known."""

from __future__ import annotations

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.sleep_s = float(parameters.get("sleep_ms", {}).get("string_value", "0")) / 1000

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            if self.sleep_s:
                time.sleep(self.sleep_s)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
