"""Test model: counts the requests of each sequence; a request that both starts and ends a sequence is an error."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request: Any, name: str) -> int:
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.counts: dict[int, int] = {}

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            corrid, start, end = (_scalar(request, name) for name in ("CORRID", "START", "END"))
            if start and end:
                error = pb_utils.TritonError(f"sequence {corrid}: a sequence needs at least two requests")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            if start:
                self.counts[corrid] = 0
            if corrid not in self.counts:
                error = pb_utils.TritonError(f"sequence {corrid} was not started")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            self.counts[corrid] += 1
            count = np.array([self.counts[corrid]], dtype=np.int32)
            if end:
                del self.counts[corrid]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", count)]))
        return responses
