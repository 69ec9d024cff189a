"""The ``Chunk`` frame on the wire: cutting, encoding (hub) and zero-copy decoding (agent).

Nearly every byte on the link is ``HubMessage.chunk.data``, and the generated
protobuf classes copy it more than once on each side: building the nested
message costs the hub about a millisecond per MiB, and decoding it copies the
megabyte twice on the agent (into the message, then into a fresh ``bytes`` on
each ``.data`` access). At hundreds of MB/s that is most of either end's CPU,
so this one message is written and read here by hand:

* :func:`encode_chunk` writes ``HubMessage(chunk=Chunk(...))`` with one copy of
  the payload; the hub hands the ``bytes`` to a pass-through gRPC serializer.
* :func:`parse_hub_message` is the agent's gRPC response deserializer: a
  ``Chunk`` becomes a :class:`WireChunk` whose ``data`` is a ``memoryview`` into
  the buffer gRPC handed over (no copy at all); anything else, or anything
  unusual inside a chunk (unknown or malformed fields), goes to the generated
  parser, so behaviour never depends on the shortcut, only speed does.

Both ends take the field numbers from the generated descriptor of
``mesh.proto``, so the codec cannot drift from the schema; tests check both
directions against the generated classes. Frames carry at most
:data:`MAX_FRAME` bytes (:func:`frame_spans`) so tasks interleave on one stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor

from protocol import mesh_pb2 as pb
from protocol.credit import MAX_FRAME

__all__ = ["MAX_FRAME", "WireChunk", "encode_chunk", "frame_spans", "parse_hub_message"]

_VARINT = 0
_LENGTH_DELIMITED = 2


def _tag(number: int, wire_type: int) -> int:
    return (number << 3) | wire_type


def _field(message: type, name: str, kind: int) -> int:
    """The wire tag of ``message.name``, checked to be what this codec assumes.

    The type must match, and the field number stay below 16 so that its tag is one
    byte on the wire (the encoder writes tags as single bytes).
    """
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.type != kind or field.number >= 16:
        raise RuntimeError(f"mesh.proto changed {message.__name__}.{name}: "
                           f"type {field.type}, number {field.number}")
    wire_type = _VARINT if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64) \
        else _LENGTH_DELIMITED
    return _tag(field.number, wire_type)


_HUB_CHUNK = _field(pb.HubMessage, "chunk", FieldDescriptor.TYPE_MESSAGE)
_TASK_ID = _field(pb.Chunk, "task_id", FieldDescriptor.TYPE_STRING)
_ATTEMPT = _field(pb.Chunk, "attempt", FieldDescriptor.TYPE_INT32)
_OFFSET = _field(pb.Chunk, "offset", FieldDescriptor.TYPE_INT64)
_DATA = _field(pb.Chunk, "data", FieldDescriptor.TYPE_BYTES)
_HUB_CHUNK_B, _TASK_ID_B, _ATTEMPT_B, _OFFSET_B, _DATA_B = (
    bytes([t]) for t in (_HUB_CHUNK, _TASK_ID, _ATTEMPT, _OFFSET, _DATA)
)


# -- cutting ---------------------------------------------------------------------------------


def frame_spans(offset: int, length: int, max_frame: int = MAX_FRAME) -> Iterator[tuple[int, int]]:
    """Yield ``(offset, length)`` spans covering ``[offset, offset + length)`` in order.

    Every span is at most ``max_frame`` bytes; only the last may be shorter. For a
    sender that has a whole range at hand (the hub cuts by credit instead).
    """
    if offset < 0 or length < 0:
        raise ValueError(f"bad range offset={offset} length={length}")
    if max_frame <= 0:
        raise ValueError(f"max_frame must be positive, got {max_frame}")
    end = offset + length
    while offset < end:
        n = min(max_frame, end - offset)
        yield offset, n
        offset += n


# -- encoding (hub) --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_chunk(task_id: str, attempt: int, offset: int, data: bytes | memoryview) -> bytes:
    """``HubMessage(chunk=Chunk(...))`` in protobuf wire format, with one copy of ``data``.

    The caller may reuse ``data``'s buffer as soon as this returns.
    """
    if attempt < 0 or offset < 0:
        raise ValueError("attempt and offset must not be negative")
    tid = task_id.encode("utf-8")
    head = b"".join((
        _TASK_ID_B, _varint(len(tid)), tid,
        _ATTEMPT_B, _varint(attempt),
        _OFFSET_B, _varint(offset),
        _DATA_B, _varint(len(data)),
    ))
    return b"".join((_HUB_CHUNK_B, _varint(len(head) + len(data)), head, data))


# -- decoding (agent) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireChunk:
    """What the agent needs of a ``Chunk``; ``data`` is a view into the received buffer."""

    task_id: str
    attempt: int
    offset: int
    data: memoryview


class _Fallback(Exception):
    pass


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
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
    length, pos = _read_varint(buf, 1, end)
    if pos + length != end:
        raise _Fallback  # more fields after the chunk (or truncated): let protobuf decide
    task_id, attempt, offset = "", 0, 0
    data = memoryview(b"")
    view = memoryview(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        if tag == _ATTEMPT:
            value, pos = _read_varint(buf, pos, end)
            attempt = _signed(value, 32)
        elif tag == _OFFSET:
            value, pos = _read_varint(buf, pos, end)
            offset = _signed(value, 64)
        elif tag in (_TASK_ID, _DATA):
            n, pos = _read_varint(buf, pos, end)
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
    """gRPC response deserializer for ``Connect`` on the agent."""
    try:
        return _parse_chunk(buf)
    except _Fallback:
        return pb.HubMessage.FromString(buf)
