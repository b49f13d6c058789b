"""Test model (BLS): sends its input through wide_step with pb_utils.InferenceRequest, one request at a time."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            called = pb_utils.InferenceRequest(
                model_name="wide_step", requested_output_names=["OUTPUT0"], inputs=[tensor]
            ).exec()
            if called.has_error():
                raise pb_utils.TritonModelException(f"wide_step: {called.error().message()}")
            output = pb_utils.get_output_tensor_by_name(called, "OUTPUT0")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", output.as_numpy())]))
        return responses
