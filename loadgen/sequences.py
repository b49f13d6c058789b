"""Sequences for stateful models: correlation IDs, start and end flags, and sequence lengths.

A request of a sequence is its step's pre-serialised request with the sequence parameters added by the connection
(over gRPC, a few serialised bytes appended: protobuf merges concatenated messages), so nothing is re-encoded per
request, and the parameters are serialised once per sequence.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from loadgen.errors import OptionError
from loadgen.inputs import Requests
from loadgen.plan import RunPlan, Shard
from loadgen.settings import SEQUENCE_LENGTH
from loadgen.transport import Payload, Wire

SEED = 0


def check_sequence_ids(run: RunPlan) -> None:
    """Sequences in flight at once need distinct correlation IDs: a --sequence-id-range must hold enough."""
    first, last = run.sequence_ids
    if run.closed_loop:
        needed, what = max(load.concurrency or 0 for load in run.loads), "the highest concurrency"
    else:
        needed, what = run.settings.num_of_sequences, "--num-of-sequences"
    if last is not None and last - first + 1 < needed:
        raise OptionError(
            f"--sequence-id-range {run.settings.sequence_id_range}: {last - first + 1} IDs for {needed} sequences "
            f"in flight ({what})"
        )


class Sequences:
    """Endless sequences over the requests, with IDs unique to this shard of the load.

    perf_analyzer's rule: every sequence starts at the first step of a stream (the streams taken in turn). Its length
    is --sequence-length varied by --sequence-length-variation percent, its steps the stream's cycled; without
    --sequence-length, a sequence of JSON data is its stream, whole, and of other data 20 steps, varied.
    """

    def __init__(self, requests: Requests, run: RunPlan, wire: Wire, shard: Shard) -> None:
        shard_index, shard_count = shard.index, shard.count
        self.payloads = requests.payloads
        self.flags = wire.sequence_flags
        self.join = wire.with_flags
        self.streams = requests.streams
        self.whole = requests.json and run.settings.sequence_length is None  # each sequence: its stream, whole
        self.length = run.settings.sequence_length or SEQUENCE_LENGTH
        self.variation = run.settings.sequence_length_variation / 100
        first, last = run.sequence_ids
        ids = itertools.count(first + shard_index, shard_count)
        self.ids = ids if last is None else itertools.cycle(range(first + shard_index, last + 1, shard_count))
        self.next_stream = itertools.cycle(range(len(self.streams)))
        self.rng = random.Random(SEED + shard_index)
        self.open: dict[int, int] = {}  # sequences started and not ended: ID -> the payload index of their last step
        self.in_use: set[int] = set()  # IDs of sequences started whose last request may not have returned yet
        self.id_count = None if last is None else len(range(first + shard_index, last + 1, shard_count))

    def next_id(self) -> int:
        """The next correlation ID that no sequence holds: in a --sequence-id-range, IDs are reused only once free."""
        for _ in range(self.id_count or 1):
            sequence_id = next(self.ids)
            if sequence_id not in self.in_use:
                break
        self.in_use.add(sequence_id)
        return sequence_id

    def steps(self) -> list[int]:
        """The payload indices of the next sequence: from the first step of the next stream."""
        stream = self.streams[next(self.next_stream)]
        if self.whole:
            return list(stream)
        spread = self.length * self.variation
        length = max(1, self.length + int(self.rng.uniform(-spread, spread)))  # the offset truncated, as there
        return [stream[k % len(stream)] for k in range(length)]

    def slot(self, _index: int = 0) -> SequenceSlot:
        """One sequence after another, each request only after the previous one's response (a concurrency slot)."""
        return SequenceSlot(self)

    def walk(self, slot: SequenceSlot) -> Iterator[Payload]:
        """The requests of one sequence after another; `slot.current` is the sequence left open, if any."""
        payloads = self.payloads
        flags = self.flags
        join = self.join
        while True:
            sequence_id = self.next_id()
            steps = self.steps()
            last = len(steps) - 1
            middle = flags(sequence_id)
            first = flags(sequence_id, start=True, end=last == 0)
            final = flags(sequence_id, end=True)
            self.open[sequence_id] = steps[-1]
            slot.current = sequence_id
            for position, index in enumerate(steps):
                if position == last:
                    del self.open[sequence_id]
                    slot.current = None
                yield join(payloads[index], first if position == 0 else final if position == last else middle)
            self.in_use.discard(sequence_id)  # the slot asks for more only once the last request has returned

    def end(self, sequence_id: int) -> Payload:
        """The request that ends an open sequence; it no longer counts as open."""
        return self.join(self.payloads[self.open.pop(sequence_id)], self.flags(sequence_id, end=True))

    def closing(self) -> list[Payload]:
        """Requests that end every sequence still open (a slot cut short, the open loop's, the end of the run)."""
        return [self.end(sequence_id) for sequence_id in list(self.open)]

    def interleaved(self, count: int) -> tuple[Iterator[Payload], list[SequenceSlot]]:
        """Requests of `count` sequences in flight at once, taken in turn (open loop: --num-of-sequences), and the
        slots they come from (request k from slot k mod count), which can end the sequences they leave open."""
        slots = [self.slot() for _ in range(count)]

        def requests() -> Iterator[Payload]:
            while True:
                for slot in slots:
                    yield next(slot)

        return requests(), slots


class SequenceSlot:
    """One concurrency slot's sequences: an iterator of their requests that can end the one it leaves open."""

    def __init__(self, sequences: Sequences) -> None:
        self.sequences = sequences
        self.current: int | None = None  # the sequence started and not yet ended
        self._requests = sequences.walk(self)

    def __iter__(self) -> SequenceSlot:
        return self

    def __next__(self) -> Payload:
        return next(self._requests)

    def ending(self) -> Payload | None:
        """The request that ends the sequence this slot left open, or None; the slot's next request starts a new
        sequence."""
        if self.current is None or self.current not in self.sequences.open:
            return None
        sequence_id, self.current = self.current, None
        self._requests = self.sequences.walk(self)
        self.sequences.in_use.discard(sequence_id)
        return self.sequences.end(sequence_id)
