"""Test model: echoes INPUT0 after sleeping `step_ms` (a config parameter) times the requests since it was last idle
for a second, so that its latency grows without bound while its throughput follows the request rate."""

from __future__ import annotations

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils

IDLE_S = 1.0  # a gap this long starts the ramp again (a new run)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.step_s = float(parameters.get("step_ms", {}).get("string_value", "0")) / 1000
        self.count = 0
        self.last = 0.0

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            now = time.monotonic()
            self.count = 0 if now - self.last > IDLE_S else self.count + 1
            time.sleep(self.count * self.step_s)
            self.last = time.monotonic()
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
