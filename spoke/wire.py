"""Zero-copy decoding of the hub's ``Chunk`` frames; every other message via protobuf.

Nearly every byte the agent receives is ``HubMessage.chunk.data``. Decoding it
with the generated classes copies the megabyte twice (into the message, then
into a fresh ``bytes`` on each ``.data`` access). Here a ``Chunk`` is read
straight from the wire format and its data is a ``memoryview`` into the buffer
gRPC handed us: no copy at all. Anything unusual (another message kind,
unknown or malformed fields) falls back to the generated parser, so behaviour
never depends on this shortcut, only speed does.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import mesh_pb2 as pb

_HUB_CHUNK = (3 << 3) | 2  # HubMessage.chunk, length-delimited
_TASK_ID = (1 << 3) | 2
_ATTEMPT = (2 << 3) | 0
_OFFSET = (3 << 3) | 0
_DATA = (4 << 3) | 2


@dataclass(frozen=True, slots=True)
class WireChunk:
    """What the agent needs of a ``Chunk``; ``data`` is a view into the received buffer."""

    task_id: str
    attempt: int
    offset: int
    data: memoryview


class _Fallback(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Fallback
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed(value: int, bits: int) -> int:
    """Two's complement, as protobuf encodes negative int32/int64 varints."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value &= 0xFFFFFFFF
        if value >= 1 << 31:
            value -= 1 << 32
    return value


def _parse_chunk(buf: bytes) -> WireChunk:
    end = len(buf)
    if end == 0 or buf[0] != _HUB_CHUNK:
        raise _Fallback
    length, pos = _varint(buf, 1, end)
    if pos + length != end:
        raise _Fallback  # more fields after the chunk (or truncated): let protobuf decide
    task_id, attempt, offset = "", 0, 0
    data = memoryview(b"")
    view = memoryview(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == _ATTEMPT:
            value, pos = _varint(buf, pos, end)
            attempt = _signed(value, 32)
        elif tag == _OFFSET:
            value, pos = _varint(buf, pos, end)
            offset = _signed(value, 64)
        elif tag in (_TASK_ID, _DATA):
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Fallback
            if tag == _TASK_ID:
                try:
                    task_id = bytes(view[pos : pos + n]).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Fallback from None
            else:
                data = view[pos : pos + n]
            pos += n
        else:
            raise _Fallback  # unknown field: the generated parser keeps it honest
    return WireChunk(task_id, attempt, offset, data)


def parse_hub_message(buf: bytes) -> pb.HubMessage | WireChunk:
    """gRPC response deserializer for ``Connect``."""
    try:
        return _parse_chunk(buf)
    except _Fallback:
        return pb.HubMessage.FromString(buf)
