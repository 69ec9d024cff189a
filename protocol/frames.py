"""Splitting a byte range into ``Chunk`` frames of at most 1 MiB (sans-IO).

Frames stay small so one big task never holds the shared stream for long and
each gRPC message stays well under the default 4 MiB limit.
"""

from __future__ import annotations

from collections.abc import Iterator

from protocol.credit import MAX_FRAME


def frame_spans(offset: int, length: int, max_frame: int = MAX_FRAME) -> Iterator[tuple[int, int]]:
    """Yield ``(offset, length)`` spans covering ``[offset, offset + length)`` in order.

    Every span is at most ``max_frame`` bytes; only the last may be shorter.
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


def split(data: bytes | bytearray | memoryview, offset: int = 0,
          max_frame: int = MAX_FRAME) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(absolute offset, view)`` frames of ``data`` (zero-copy views)."""
    view = memoryview(data)
    for start, n in frame_spans(0, len(view), max_frame):
        yield offset + start, view[start : start + n]
