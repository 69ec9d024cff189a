"""A chunk kept as the buffers it arrived in, so it reaches the socket without a copy.

A streamed source receives a 10 MiB upos chunk as ten-odd 1 MiB frames, each a
view into the buffer gRPC handed over. Joining them into one contiguous chunk
cost the agent a full copy of every byte (about a tenth of its CPU at loopback
speed); the PUT body only needs the bytes in order, so the chunk is handed to
the uploader as the list of views instead. ``len()``, ``bytes()`` and ``==``
behave as for the joined bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


class Pieces:
    """Read-only, in-order views that together are one chunk."""

    __slots__ = ("_views", "_length")

    def __init__(self, views: Sequence[memoryview]) -> None:
        self._views = tuple(views)
        self._length = sum(v.nbytes for v in self._views)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[memoryview]:
        return iter(self._views)

    def __bytes__(self) -> bytes:
        return b"".join(self._views)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pieces):
            return bytes(self) == bytes(other)
        if isinstance(other, bytes | bytearray | memoryview):
            return bytes(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares by content, like bytearray

    def __repr__(self) -> str:
        return f"Pieces({len(self._views)} views, {self._length} bytes)"
