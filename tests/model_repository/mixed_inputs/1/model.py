"""Test model: looks TOKENS up in a 100-row table (an index out of range fails the request) and sums the rest."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

TABLE = np.arange(100, dtype=np.float32)


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
            if tokens.min() < 0 or tokens.max() >= len(TABLE):
                error = pb_utils.TritonError(
                    f"TOKENS out of range [0, {len(TABLE) - 1}]: {tokens.min()}..{tokens.max()}"
                )
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            total = sum(
                pb_utils.get_input_tensor_by_name(request, name).as_numpy().astype(np.float32).sum(axis=1)
                for name in ("DENSE", "HALF", "MASK", "PIXELS")
            )
            outputs = [
                pb_utils.Tensor("EMBEDDED", TABLE[tokens]),
                pb_utils.Tensor("TOTAL", total.reshape(-1, 1).astype(np.float32)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
