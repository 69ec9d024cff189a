"""The hand-encoded file frame is exactly the protobuf message it stands for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.transfer import encode_chunk
from protocol import mesh_pb2 as pb


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


def test_full_frame() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    msg = pb.HubMessage.FromString(encode_chunk("task-1", 3, 5 << 30, data))
    assert msg.chunk.data == data and msg.chunk.offset == 5 << 30
