"""Validation: compare responses with perf_analyzer's `validation_data`, only when the input data gives it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loadgen.transport import InferCall, Mismatch, Outputs, Payload, Response, Sample, StreamCheck

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
        """Raise `Mismatch` unless `outputs` hold what the validation data expects of request `index`."""
        for tensor in self.expected[index]:
            got = outputs.get(tensor.name)
            if got is None:
                raise Mismatch(f"validation: the response has no output {tensor.name}")
            shape, content = got
            if shape != tensor.shape:
                raise Mismatch(
                    f"validation: {tensor.name} has shape {list(shape)}, validation_data {list(tensor.shape)}"
                )
            if content != tensor.content:
                raise Mismatch(f"validation: {tensor.name} differs from validation_data")

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
