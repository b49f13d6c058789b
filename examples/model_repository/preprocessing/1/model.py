"""Preprocessing step of the ensemble: raw image bytes -> normalised CHW float32.

Decodes the UINT8 input with Pillow, resizes it to 224x224, scales to [0, 1],
normalises with the ImageNet mean/std and returns a [3, 224, 224] FP32 tensor.
Bytes that are not an image fail that request with Pillow's own error, e.g.
``UnidentifiedImageError: cannot identify image file <_io.BytesIO ...>``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image

SIZE = (224, 224)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(raw: bytes) -> np.ndarray:
    """Decode ``raw`` and return a normalised float32 array of shape [3, 224, 224]."""
    image = Image.open(io.BytesIO(raw)).convert("RGB").resize(SIZE, Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return np.ascontiguousarray(((pixels - MEAN) / STD).transpose(2, 0, 1))


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "INPUT_0").as_numpy()
            try:
                chw = preprocess(raw.tobytes())
            except Exception as exc:  # report the decoder's error to this client only
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            output = pb_utils.Tensor("OUTPUT_0", chw)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
