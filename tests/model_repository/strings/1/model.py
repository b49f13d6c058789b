"""Test model: ECHO returns the TEXT strings, LENGTHS their lengths in bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            lengths = np.array([len(s) for s in text.reshape(-1)], dtype=np.int32).reshape(text.shape)
            outputs = [pb_utils.Tensor("ECHO", text.astype(np.object_)), pb_utils.Tensor("LENGTHS", lengths)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
