"""The streamed source: frames joined into reads, credit released as bytes leave, the
stream check at the end, gaps, overlaps and bytes beyond credit refused."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import pytest

from protocol.credit import CreditBudget
from spoke.source import BufferTooSmall, StreamError, StreamSource
from uploader.errors import ErrorKind, UploadError


def _source(size: int, *, start: int = 0, budget: int = 100, min_window: int = 10):
    b = CreditBudget(budget)
    b.open("t", need=size - start, min_window=min_window)
    woken: list[int] = []
    src = StreamSource(size=size, start=start, budget=b, key="t", on_space=lambda: woken.append(1))
    return b, src, woken


def _feed_all(b: CreditBudget, src: StreamSource, data: bytes, start: int = 0, frame: int = 7):
    pos = start
    while pos < len(data):
        b.grants()
        n = min(b.in_flight("t"), len(data) - pos)
        assert n, "no credit"
        end = pos + n
        while pos < end:
            step = min(frame, end - pos)
            src.feed(pos, data[pos : pos + step])
            pos += step


@pytest.mark.anyio
async def test_source_reads_joined_frames_and_releases_credit() -> None:
    data = bytes(range(256)) * 2  # 512 bytes
    b, src, woken = _source(len(data), budget=600)
    _feed_all(b, src, data)
    assert b.held("t") == 512
    assert await src.read(0, 100) == data[:100]
    src.release(0, 100)
    assert b.held("t") == 412 and woken
    # skip forward: bytes before the offset are discarded and released
    assert await src.read(200, 100) == data[200:300]
    assert b.held("t") == 312  # [100, 200) dropped; [200, 300) handed out; the rest queued
    with pytest.raises(StreamError):
        await src.read(150, 10)  # offsets never go back
    src.end_of_data(hashlib.md5(data).hexdigest())
    assert await src.read(300, 1000) == data[300:]  # tail: short read
    src.verify()
    assert src.md5() == hashlib.md5(data).hexdigest()


@pytest.mark.anyio
async def test_source_tail_read_waits_for_end_and_checks_md5() -> None:
    data = b"x" * 50
    b, src, _ = _source(50)
    _feed_all(b, src, data)
    result: list[Any] = []

    async def reader() -> None:
        try:
            result.append(await src.read(0, 50))
        except UploadError as exc:
            result.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert not result  # all bytes here, but no EndOfData yet
        src.end_of_data("0" * 32)
    assert isinstance(result[0], UploadError) and result[0].kind is ErrorKind.FILE


@pytest.mark.anyio
async def test_source_skipped_parts_are_dropped_on_arrival() -> None:
    data = bytes(range(100))
    b, src, _ = _source(100, budget=40)
    # The uploader skips [0, 30) (done in an earlier attempt) before anything arrives.
    src.release(0, 30)
    _feed_all(b, src, data[:30])
    assert b.held("t") == 0  # dropped and released as they came
    _feed_all(b, src, data[:70], start=30)
    assert await src.read(30, 20) == data[30:50]


def test_source_rejects_gaps_overlaps_and_bytes_beyond_credit() -> None:
    b, src, _ = _source(100, budget=20)
    with pytest.raises(Exception, match="credit"):
        src.feed(0, b"x" * 5)  # nothing granted yet
    b.grants()
    src.feed(0, b"x" * 5)
    with pytest.raises(StreamError):
        src.feed(10, b"x")  # gap
    with pytest.raises(StreamError):
        src.feed(2, b"x")  # overlap
    with pytest.raises(StreamError):
        src.end_of_data("")  # before the last byte


@pytest.mark.anyio
async def test_source_refuses_a_chunk_larger_than_the_budget() -> None:
    b, src, _ = _source(1000, budget=100, min_window=10)
    with pytest.raises(BufferTooSmall):
        await src.read(0, 500)
    # a larger chunk that still fits grows the task's minimum window instead
    assert b.window("t") == 100
    b2, src2, _ = _source(1000, budget=100, min_window=10)
    b2.open("other", need=1000, min_window=10)
    assert b2.window("t") == 50
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await src2.read(0, 80))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert b2.window("t") >= 80
        _feed_all(b2, src2, bytes(80))
    assert got == [bytes(80)]
