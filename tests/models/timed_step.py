"""Test model: echoes INPUT0 after sleeping `sleep_ms` and burning `burn_ms` of CPU (config parameters), so its
compute time, and whether it needs a core, are known."""

from __future__ import annotations

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils


def _parameter(parameters: dict[str, Any], name: str) -> float:
    return float(parameters.get(name, {}).get("string_value", "0")) / 1000


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.sleep_s = _parameter(parameters, "sleep_ms")
        self.burn_s = _parameter(parameters, "burn_ms")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if self.burn_s:  # busy: the step holds a core for this long (longer when the cores are shared)
                end = time.thread_time() + self.burn_s
                while time.thread_time() < end:
                    pass
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
