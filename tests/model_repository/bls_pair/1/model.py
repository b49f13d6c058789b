"""Test model (BLS): sends its input through fast_step, then slow_step, with pb_utils.InferenceRequest."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            for model in ("fast_step", "slow_step"):
                step = pb_utils.InferenceRequest(
                    model_name=model,
                    requested_output_names=["OUTPUT0"],
                    inputs=[pb_utils.Tensor("INPUT0", tensor.as_numpy())],
                ).exec()
                if step.has_error():
                    raise pb_utils.TritonModelException(f"{model}: {step.error().message()}")
                tensor = pb_utils.get_output_tensor_by_name(step, "OUTPUT0")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", tensor.as_numpy())]))
        return responses
