"""Splitting byte ranges into <= 1 MiB Chunk frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.credit import MAX_FRAME
from protocol.frames import frame_spans, split

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


def test_split_is_zero_copy_views() -> None:
    data = bytes(range(256)) * 10
    frames = list(split(data, offset=100, max_frame=1000))
    assert [o for o, _ in frames] == [100, 1100, 2100]
    assert b"".join(bytes(v) for _, v in frames) == data
    with pytest.raises(ValueError):
        list(frame_spans(0, 1, 0))


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        list(frame_spans(-1, 10))
    with pytest.raises(ValueError):
        list(frame_spans(0, -1))
