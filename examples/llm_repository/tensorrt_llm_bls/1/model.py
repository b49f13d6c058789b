"""The pipeline as one decoupled Python model (TensorRT-LLM's `tensorrt_llm_bls`), with BLS calls.

Each request gets a thread: it calls preprocessing, streams tensorrt_llm (`exec(decoupled=True)`), calls
postprocessing on each token and sends text_output with that token's output_ids, then the final flag. Triton's
statistics count one execution of this model per request, and the steps' executions under their own names.

TensorRT-LLM's own BLS model also handles beams, draft-model speculative decoding and many sampling inputs, and
can skip the per-token postprocessing call by decoding in process; this one keeps the three calls of the ensemble.
"""

from __future__ import annotations

import threading
from typing import Any

import triton_python_backend_utils as pb_utils

INPUTS = (
    "text_input",
    "max_tokens",
    "bad_words",
    "stop_words",
    "exclude_input_in_output",
    "min_length",
    "ignore_eos",
    "stream",
)
STOP_TIMEOUT_S = 5.0  # how long finalize() waits for the streams under way


def call(model: str, inputs: list[Any], outputs: list[str]) -> list[Any]:
    """One BLS call to a non-decoupled step: its output tensors, in the order asked; its error raised."""
    response = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs).exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return [pb_utils.get_output_tensor_by_name(response, name) for name in outputs]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.streams: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            given = (pb_utils.get_input_tensor_by_name(request, name) for name in INPUTS)
            inputs = [tensor for tensor in given if tensor is not None]  # optional inputs that were sent
            stream = threading.Thread(target=self.generate, args=(request.get_response_sender(), inputs))
            with self.lock:
                self.streams.add(stream)
            stream.start()
        return None

    def generate(self, sender: Any, inputs: list[Any]) -> None:
        """One request's stream through the three steps; the final flag is always sent."""
        try:
            tokens = call("preprocessing", inputs, ["input_ids", "input_lengths", "request_output_len"])
            generation = pb_utils.InferenceRequest(
                model_name="tensorrt_llm", inputs=tokens, requested_output_names=["output_ids"]
            ).exec(decoupled=True)
            for response in generation:
                if response.has_error():
                    raise pb_utils.TritonModelException(f"tensorrt_llm: {response.error().message()}")
                output_ids = pb_utils.get_output_tensor_by_name(response, "output_ids")
                # the last response carries the final flag alone; after a cancel, the rest of the stream is read
                # and dropped (this Python backend cannot cancel a BLS stream)
                if output_ids is None or sender.is_cancelled():
                    continue
                [text_output] = call("postprocessing", [output_ids], ["text_output"])
                sender.send(pb_utils.InferenceResponse([text_output, output_ids]))
        except Exception as error:  # the stream ends with the error, never silently
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        else:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.lock:
                self.streams.discard(threading.current_thread())

    def finalize(self) -> None:
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.join(timeout=STOP_TIMEOUT_S)
