"""Validation: compare responses with perf_analyzer's `validation_data`, only when the input data gives it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loadgen.transport import InferCall, Outputs, Payload, RequestFailed, Response, Sample

Decoder = Callable[[Response], tuple[str, Outputs]]
"""Turns a raw response into its request id and outputs."""


class Validator:
    """Checks each response against the outputs expected for the request it answers (found by request id)."""

    def __init__(self, expected: Sequence[Sample], decode: Decoder) -> None:
        self.expected = tuple(expected)
        self.decode = decode

    def check(self, response: Response) -> None:
        """Raise `RequestFailed` naming the first output that differs from the validation data."""
        try:
            request_id, outputs = self.decode(response)
        except Exception as error:  # any malformed response is a failed request, never a crashed slot
            raise RequestFailed(f"validation: cannot decode the response: {error}") from None
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

        async def checked(payload: Payload) -> Response:
            response = await call(payload)
            check(response)
            return response

        return checked
