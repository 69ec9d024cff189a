"""The Chunk codec: frames cover a range; the hand encoding is exactly the protobuf message
it stands for; zero-copy decoding agrees with protobuf on every input it accepts.

Pure functions, no I/O and no event loop: nothing here runs under an async backend.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import mesh_pb2 as pb
from protocol.chunks import MAX_FRAME, WireChunk, encode_chunk, frame_spans, parse_hub_message

# -- frames --------------------------------------------------------------------------------------


@given(st.integers(0, 10**7), st.integers(0, 5 * MAX_FRAME), st.integers(4096, 2 * MAX_FRAME))
def test_frame_spans_cover_the_range(offset: int, length: int, max_frame: int) -> None:
    spans = list(frame_spans(offset, length, max_frame))
    assert sum(n for _, n in spans) == length
    pos = offset
    for start, n in spans:
        assert start == pos and 0 < n <= max_frame
        pos += n
    assert all(n == max_frame for _, n in spans[:-1])


def test_frames_round_trip_as_zero_copy_views() -> None:
    data = bytes(range(256)) * 10
    wires = [encode_chunk("t", 1, 100 + start, memoryview(data)[start : start + n])
             for start, n in frame_spans(0, len(data), max_frame=1000)]
    frames = [parse_hub_message(wire) for wire in wires]
    assert all(isinstance(f, WireChunk) for f in frames)
    assert [f.offset for f in frames] == [100, 1100, 2100]
    assert b"".join(bytes(f.data) for f in frames) == data
    assert all(f.data.obj is wire for f, wire in zip(frames, wires, strict=True))
    with pytest.raises(ValueError):
        list(frame_spans(0, 1, 0))


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        list(frame_spans(-1, 10))
    with pytest.raises(ValueError):
        list(frame_spans(0, -1))


# -- encoding ------------------------------------------------------------------------------------


@given(
    task_id=st.text(max_size=80),
    attempt=st.integers(min_value=0, max_value=2**31 - 1),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    data=st.binary(max_size=5000),
)
def test_encode_chunk_decodes_as_hub_message(task_id: str, attempt: int, offset: int,
                                            data: bytes) -> None:
    wire = encode_chunk(task_id, attempt, offset, memoryview(data))
    msg = pb.HubMessage.FromString(wire)
    assert msg.WhichOneof("kind") == "chunk"
    assert (msg.chunk.task_id, msg.chunk.attempt, msg.chunk.offset, msg.chunk.data) == (
        task_id, attempt, offset, data)
    expected = pb.HubMessage(chunk=pb.Chunk(task_id=task_id, attempt=attempt, offset=offset,
                                            data=data))
    assert msg == expected
    parsed = parse_hub_message(wire)  # and the agent's decoder reads what the hub wrote
    assert isinstance(parsed, WireChunk)
    assert (parsed.task_id, parsed.attempt, parsed.offset, bytes(parsed.data)) == (
        task_id, attempt, offset, data)


def test_full_frame() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    msg = pb.HubMessage.FromString(encode_chunk("task-1", 3, 5 << 30, data))
    assert msg.chunk.data == data and msg.chunk.offset == 5 << 30


def test_negative_fields_are_not_encoded() -> None:
    with pytest.raises(ValueError):
        encode_chunk("t", -1, 0, b"")
    with pytest.raises(ValueError):
        encode_chunk("t", 0, -1, b"")


# -- decoding ------------------------------------------------------------------------------------

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
