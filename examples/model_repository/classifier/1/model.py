"""Classifier step of the ensemble: a small numpy STAND-IN for ResNet-50.

This is NOT ResNet-50. A real ResNet-50 is far too slow on a 2-core CPU-only
machine, so this model only keeps ResNet-50's tensor interface: FP32 [3, 224, 224]
in, FP32 [1000] class probabilities out. It average-pools the image to 3x7x7,
applies one dense layer with fixed-seed random weights and a softmax. Its scores
are meaningless; it exists so that the ensemble has the same shape of pipeline
and so that preprocessing (image decoding) is the slow step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

NUM_CLASSES = 1000
POOL = 7  # 224 / 7 = 32-pixel pooling windows, like ResNet-50's final 7x7 feature map
SEED = 50


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        rng = np.random.default_rng(SEED)
        features = 3 * POOL * POOL
        self.weights = rng.normal(0.0, 1.0 / np.sqrt(features), (features, NUM_CLASSES)).astype(np.float32)
        self.bias = np.zeros(NUM_CLASSES, dtype=np.float32)

    def classify(self, image: np.ndarray) -> np.ndarray:
        window = image.shape[1] // POOL
        pooled = image.reshape(3, POOL, window, POOL, window).mean(axis=(2, 4))
        logits = pooled.reshape(-1) @ self.weights + self.bias
        exp = np.exp(logits - logits.max())
        return (exp / exp.sum()).astype(np.float32)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "INPUT_0").as_numpy()
            output = pb_utils.Tensor("OUTPUT_0", self.classify(image))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
