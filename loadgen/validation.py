"""Validation: compare responses with perf_analyzer's `validation_data`, only when the input data gives it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

from loadgen.transport import InferCall, Mismatch, Output, Outputs, Payload, Response, Sample, StreamCheck, Tensor

Decoder = Callable[[Response], tuple[str, Outputs]]
"""Turns a raw response into its request id and outputs."""


class Validator:
    """Checks each response against the outputs expected for the request it answers (found by request id)."""

    def __init__(self, expected: Sequence[Sample], decode: Decoder) -> None:
        self.expected = tuple(expected)
        self.decode = decode

    def check(self, response: Response) -> None:
        """Raise `Mismatch` naming the first output that differs from the validation data."""
        request_id, outputs = self._decoded(response)
        self.compare(int(request_id), outputs)

    def _decoded(self, response: Response) -> tuple[str, Outputs]:
        try:
            return self.decode(response)
        except Exception as error:  # any malformed response is a failed request, never a crashed slot
            raise Mismatch(f"validation: cannot decode the response: {error}") from None

    def compare(self, index: int, outputs: Outputs) -> None:
        """Raise `Mismatch` naming the first output that differs from what the validation data expects of request
        `index`, and how: its datatype, its shape, or its first differing element."""
        for tensor in self.expected[index]:
            got = outputs.get(tensor.name)
            if got is None:
                raise Mismatch(f"validation: the response has no output {tensor.name}")
            if got.datatype != tensor.datatype:
                raise Mismatch(f"validation: {tensor.name} is {got.datatype}, validation_data {tensor.datatype}")
            if got.shape != tensor.shape:
                raise Mismatch(
                    f"validation: {tensor.name} has shape {list(got.shape)}, validation_data {list(tensor.shape)}"
                )
            if got.content != tensor.content:
                raise Mismatch(f"validation: {tensor.name} differs from validation_data: {_difference(got, tensor)}")

    def for_stream(self, payloads: Sequence[Payload]) -> StreamCheck:
        """A check of streamed responses, each compared with what its request's sample expects.

        The request is known by its payload (one of `payloads`, the objects themselves), since a stream shared
        by requests on schedule gives them ids of its own.
        """
        index_of = {id(payload): index for index, payload in enumerate(payloads)}
        compare = self.compare
        decoded = self._decoded

        def check(payload: Payload, message: Response) -> None:
            compare(index_of[id(payload)], decoded(message)[1])

        return check

    def wrap(self, call: InferCall) -> InferCall:
        """The call, checking every response it returns."""
        check = self.check

        async def checked(payload: Payload) -> Response:
            response = await call(payload)
            check(response)
            return response

        return checked


def _elements(datatype: str, content: bytes) -> list[object]:
    if datatype == "BYTES":
        return list(deserialize_bytes_tensor(content)) if content else []
    return np.frombuffer(content, dtype=triton_to_np_dtype(datatype)).tolist()


def _difference(got: Output, expected: Tensor) -> str:
    """Where two contents of the same datatype and shape differ: the first element, and how many do."""
    try:
        mine, theirs = _elements(got.datatype, got.content), _elements(expected.datatype, expected.content)
    except (ValueError, TypeError):
        return f"{len(got.content)} bytes against {len(expected.content)}"
    if len(mine) != len(theirs):
        return f"{len(mine)} elements, validation_data {len(theirs)}"
    differing = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    first = differing[0]
    return (
        f"element {first} is {mine[first]!r}, validation_data {theirs[first]!r} "
        f"({len(differing)} of {len(mine)} elements differ)"
    )
