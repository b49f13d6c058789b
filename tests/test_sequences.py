"""Sequence bookkeeping: correlation IDs in a --sequence-id-range are reused only once their sequence is over."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from loadgen.inputs import Requests
from loadgen.plan import Shard, plan
from loadgen.sequences import Sequences
from loadgen.settings import Settings
from loadgen.transport import GrpcWire


def _id(payload: bytes) -> tuple[int, bool, bool]:
    parameters = service_pb2.ModelInferRequest.FromString(payload).parameters
    return (
        parameters["sequence_id"].int64_param,
        parameters["sequence_start"].bool_param,
        parameters["sequence_end"].bool_param,
    )


def test_an_id_still_held_by_a_sequence_is_skipped() -> None:
    requests = Requests((b"",), ((0,),), sequential=True)
    settings = Settings(sequence_id_range="1:3", sequence_length=2, sequence_length_variation=0)
    sequences = Sequences(requests, plan(settings), GrpcWire(), Shard())
    a, b, c = (sequences.slot(index) for index in range(3))
    assert [_id(next(slot)) for slot in (a, b, c)] == [(1, True, False), (2, True, False), (3, True, False)]
    assert _id(next(b)) == (2, False, True)
    # b's next sequence: the cycle's next ID, 1, is a's until a's last request returns; 2 is free again
    assert _id(next(b)) == (2, True, False)
    assert _id(next(a)) == (1, False, True)
    assert _id(next(a)) == (1, True, False)


def test_a_slot_whose_sequence_was_ended_starts_a_new_one() -> None:
    """An open loop with a request count ends the sequences it leaves open as soon as its schedule is spent (a
    one-slot sequence model would otherwise keep sequences queued behind them until its idle timeout); a later
    level's requests from that slot then start a new sequence instead of going on with the ended one."""
    requests = Requests((b"",), ((0,),), sequential=True)
    settings = Settings(sequence_id_range="1:2", sequence_length=3, sequence_length_variation=0)
    sequences = Sequences(requests, plan(settings), GrpcWire(), Shard())
    slot = sequences.slot()
    assert _id(next(slot)) == (1, True, False)
    ending = slot.ending()
    assert ending is not None and _id(ending) == (1, False, True)
    assert slot.ending() is None and sequences.closing() == []  # ended once
    assert _id(next(slot)) == (2, True, False)  # a new sequence (ID 1 is free again: the cycle goes on to 2)
    assert _id(next(slot)) == (2, False, False)
