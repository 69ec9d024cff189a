"""Zero-copy Chunk decoding agrees with protobuf on every input it accepts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import mesh_pb2 as pb
from spoke.wire import WireChunk, parse_hub_message

chunks = st.builds(
    pb.Chunk,
    task_id=st.text(max_size=40),
    attempt=st.integers(-(2**31), 2**31 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
    data=st.binary(max_size=3000),
)


@settings(max_examples=300)
@given(chunks)
def test_chunk_fields_match_protobuf(chunk: pb.Chunk) -> None:
    buf = pb.HubMessage(chunk=chunk).SerializeToString()
    parsed = parse_hub_message(buf)
    assert isinstance(parsed, WireChunk)
    assert (parsed.task_id, parsed.attempt, parsed.offset) == (
        chunk.task_id, chunk.attempt, chunk.offset)
    assert bytes(parsed.data) == chunk.data


def test_data_is_a_view_not_a_copy() -> None:
    buf = pb.HubMessage(chunk=pb.Chunk(task_id="t", attempt=1, offset=5, data=b"x" * 1000))
    raw = buf.SerializeToString()
    parsed = parse_hub_message(raw)
    assert isinstance(parsed, WireChunk) and parsed.data.obj is raw


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_differently_from_protobuf(raw: bytes) -> None:
    try:
        expected = pb.HubMessage.FromString(raw)
    except Exception:
        expected = None
    try:
        parsed = parse_hub_message(raw)
    except Exception:
        assert expected is None  # only what protobuf itself refuses is refused
        return
    if isinstance(parsed, WireChunk):
        assert expected is not None and expected.WhichOneof("kind") == "chunk"
        c = expected.chunk
        assert (parsed.task_id, parsed.attempt, parsed.offset, bytes(parsed.data)) == (
            c.task_id, c.attempt, c.offset, c.data)
    else:
        assert parsed == expected


def test_other_messages_and_unknown_fields_fall_back_to_protobuf() -> None:
    offer = pb.HubMessage(offer=pb.Offer(task_id="t", file_size=3))
    assert parse_hub_message(offer.SerializeToString()) == offer
    assert parse_hub_message(b"") == pb.HubMessage()
    chunk = pb.HubMessage(chunk=pb.Chunk(task_id="t", data=b"ab")).SerializeToString()
    # an unknown field (number 9, varint) inside the chunk
    inner = pb.Chunk(task_id="t", data=b"ab").SerializeToString() + bytes([9 << 3, 1])
    odd = bytes([(3 << 3) | 2, len(inner)]) + inner
    parsed = parse_hub_message(odd)
    assert isinstance(parsed, pb.HubMessage) and parsed.chunk.data == b"ab"
    assert isinstance(parse_hub_message(chunk), WireChunk)
