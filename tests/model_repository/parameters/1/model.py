"""Test model: PARAMETERS holds the request's parameters as JSON with sorted keys (what the server received)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            received = json.dumps(json.loads(request.parameters()), sort_keys=True)
            tensor = pb_utils.Tensor("PARAMETERS", np.array([received.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([tensor]))
        return responses
