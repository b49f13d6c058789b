"""Identity model: returns INPUT0 (UINT8 [batch, 16]) unchanged as OUTPUT0.

Does no work at all, so a benchmark against it measures client and server
overhead, not model time.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
