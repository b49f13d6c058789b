"""Sequences for stateful models: correlation IDs, start and end flags, and sequence lengths.

A request of a sequence is its step's pre-serialised `ModelInferRequest` followed by a few serialised bytes that
carry the sequence parameters: protobuf merges concatenated messages, so nothing is re-encoded per request, and
the flag suffixes are built once per sequence.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from tritonclient.grpc import service_pb2

from loadgen.errors import OptionError
from loadgen.inputs import Requests
from loadgen.settings import Settings

SEED = 0


def flags(sequence_id: int, start: bool = False, end: bool = False) -> bytes:
    """The serialised sequence parameters of one request, to append to its payload."""
    request = service_pb2.ModelInferRequest()
    request.parameters["sequence_id"].int64_param = sequence_id
    if start:
        request.parameters["sequence_start"].bool_param = True
    if end:
        request.parameters["sequence_end"].bool_param = True
    return request.SerializeToString()


def check_sequence_ids(settings: Settings) -> None:
    """Sequences in flight at once need distinct correlation IDs: a --sequence-id-range must hold enough."""
    first, last = settings.sequence_ids
    if settings.mode == "concurrency":
        needed, what = int(max(settings.levels)), "the highest concurrency"
    else:
        needed, what = settings.num_of_sequences, "--num-of-sequences"
    if last is not None and last - first + 1 < needed:
        raise OptionError(
            f"--sequence-id-range {settings.sequence_id_range}: {last - first + 1} IDs for {needed} sequences in "
            f"flight ({what})"
        )


class Sequences:
    """Endless sequences over the requests, with IDs unique to this shard of the load.

    With several data streams, each sequence walks one stream from start to end; otherwise a sequence takes
    --sequence-length steps (varied by --sequence-length-variation percent) from the data in turn.
    """

    def __init__(self, requests: Requests, settings: Settings, shard_index: int = 0, shard_count: int = 1) -> None:
        self.payloads = requests.payloads
        self.streams = requests.streams
        self.length = settings.sequence_length
        self.variation = settings.sequence_length_variation / 100
        first, last = settings.sequence_ids
        ids = itertools.count(first + shard_index, shard_count)
        self.ids = ids if last is None else itertools.cycle(range(first + shard_index, last + 1, shard_count))
        self.next_stream = itertools.cycle(range(len(self.streams)))
        self.position = 0
        self.rng = random.Random(SEED + shard_index)
        self.open: dict[int, int] = {}  # sequences started and not ended: ID -> the payload index of their last step

    def steps(self) -> list[int]:
        """The payload indices of the next sequence."""
        if len(self.streams) > 1:
            return list(self.streams[next(self.next_stream)])
        spread = self.length * self.variation
        length = max(1, round(self.length + self.rng.uniform(-spread, spread)))
        count = len(self.payloads)
        steps = [(self.position + k) % count for k in range(length)]
        self.position = (self.position + length) % count
        return steps

    def slot(self, _index: int = 0) -> Iterator[bytes]:
        """One sequence after another, each request only after the previous one's response (a concurrency slot)."""
        payloads = self.payloads
        while True:
            sequence_id = next(self.ids)
            steps = self.steps()
            last = len(steps) - 1
            middle = flags(sequence_id)
            first = flags(sequence_id, start=True, end=last == 0)
            final = flags(sequence_id, end=True)
            self.open[sequence_id] = steps[-1]
            for position, index in enumerate(steps):
                if position == last:
                    del self.open[sequence_id]
                yield payloads[index] + (first if position == 0 else final if position == last else middle)

    def closing(self) -> list[bytes]:
        """Requests that end every sequence left open (a load level cut short, or the end of the run)."""
        ending = [self.payloads[index] + flags(sequence_id, end=True) for sequence_id, index in self.open.items()]
        self.open.clear()
        return ending

    def interleaved(self, count: int) -> Iterator[bytes]:
        """Requests of `count` sequences in flight at once, taken in turn (open loop: --num-of-sequences)."""
        slots = [self.slot() for _ in range(count)]
        while True:
            for slot in slots:
                yield next(slot)
