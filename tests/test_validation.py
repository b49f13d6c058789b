"""Validation against perf_analyzer's validation_data: a mismatch says what differs."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from loadgen.transport import Mismatch, Output, Tensor
from loadgen.validation import Validator

EXPECTED = (
    Tensor("Y", "FP32", (1, 4), np.array([1, 2, 3, 4], np.float32).tobytes()),
    Tensor("S", "BYTES", (2,), serialize_byte_tensor(np.array([b"a", b"b"], dtype=np.object_)).item()),
)


def _compare(**outputs: Output) -> None:
    Validator([EXPECTED], decode=lambda response: ("0", response)).compare(0, outputs)


GOOD_S = Output("BYTES", (2,), EXPECTED[1].content)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (Output("INT32", (1, 4), np.arange(4, dtype=np.int32).tobytes()), "Y is INT32, validation_data FP32"),
        (Output("FP32", (4,), EXPECTED[0].content), r"Y has shape \[4\], validation_data \[1, 4\]"),
        (
            Output("FP32", (1, 4), np.array([1, 2, 9, 8], np.float32).tobytes()),
            r"Y differs from validation_data: element 2 is 9.0, validation_data 3.0 \(2 of 4 elements differ\)",
        ),
    ],
)
def test_a_mismatch_says_what_differs(y: Output, message: str) -> None:
    with pytest.raises(Mismatch, match=message):
        _compare(Y=y, S=GOOD_S)


def test_strings_and_missing_outputs() -> None:
    _compare(Y=Output("FP32", (1, 4), EXPECTED[0].content), S=GOOD_S)  # equal: no error
    other = serialize_byte_tensor(np.array([b"a", b"c"], dtype=np.object_)).item()
    with pytest.raises(Mismatch, match="element 1 is b'c', validation_data b'b'"):
        _compare(Y=Output("FP32", (1, 4), EXPECTED[0].content), S=Output("BYTES", (2,), other))
    with pytest.raises(Mismatch, match="the response has no output S"):
        _compare(Y=Output("FP32", (1, 4), EXPECTED[0].content))
