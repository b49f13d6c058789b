"""Validation: compare responses with perf_analyzer's `validation_data`, only when the input data gives it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from loadgen.inputs import Sample
from loadgen.transport import RequestFailed

Outputs = Mapping[str, tuple[tuple[int, ...], bytes]]
"""A response's outputs by name: shape and raw content."""
Decoder = Callable[[bytes], tuple[str, Outputs]]
"""Turns a raw response into its request id and outputs."""
InferCall = Callable[[bytes], Awaitable[bytes]]


class Validator:
    """Checks each response against the outputs expected for the request it answers (found by request id)."""

    def __init__(self, expected: Sequence[Sample], decode: Decoder) -> None:
        self.expected = tuple(expected)
        self.decode = decode

    def check(self, response: bytes) -> None:
        """Raise `RequestFailed` naming the first output that differs from the validation data."""
        request_id, outputs = self.decode(response)
        for tensor in self.expected[int(request_id)]:
            got = outputs.get(tensor.name)
            if got is None:
                raise RequestFailed(f"validation: the response has no output {tensor.name}")
            shape, content = got
            if shape != tensor.shape:
                raise RequestFailed(
                    f"validation: {tensor.name} has shape {list(shape)}, validation_data {list(tensor.shape)}"
                )
            if content != tensor.content:
                raise RequestFailed(f"validation: {tensor.name} differs from validation_data")

    def wrap(self, call: InferCall) -> InferCall:
        """The call, checking every response it returns."""
        check = self.check

        async def checked(payload: bytes) -> bytes:
            response = await call(payload)
            check(response)
            return response

        return checked
