"""Test model: keeps a running sum per correlation ID, from the request flagged START to the one flagged END.

A request of a sequence that was never started fails, so a client that gets the flags wrong sees errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request: Any, name: str) -> int:
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.sums: dict[int, int] = {}

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            corrid = _scalar(request, "CORRID")
            if _scalar(request, "START"):
                self.sums[corrid] = 0
            if corrid not in self.sums:
                error = pb_utils.TritonError(f"sequence {corrid} was not started")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            self.sums[corrid] += _scalar(request, "VALUE")
            total = np.array([self.sums[corrid]], dtype=np.int32)
            if _scalar(request, "END"):
                del self.sums[corrid]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", total)]))
        return responses
