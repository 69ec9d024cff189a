"""The hub's file streaming: a Transfer streams exact bytes (its frames encoded by
:mod:`protocol.chunks`) and the checksums the Offer asked for."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from hub.agents.transfer import Transfer
from protocol import mesh_pb2 as pb
from uploader.pieces import Pieces


async def _stream(transfer: Transfer) -> tuple[bytes, pb.EndOfData]:
    """Play the session's writer: take frames until EndOfData (credit granted up front)."""
    got = bytearray()
    with anyio.fail_after(10):
        while True:
            wake = transfer.reset_wake()
            msg = transfer.next_message()
            if msg is None:
                await wake.wait()
            elif isinstance(msg, bytes):
                got += pb.HubMessage.FromString(msg).chunk.data
            else:
                return bytes(got), msg.end_of_data


@pytest.mark.anyio
@pytest.mark.parametrize(("crc32", "offset"), [(False, 0), (True, 0), (False, 1000), (True, 1000)])
async def test_streams_exact_bytes_through_reused_read_buffers(
    tmp_path: Path, crc32: bool, offset: int
) -> None:
    data = os.urandom(20_000 + 123)  # many blocks, the last one short
    path = tmp_path / "f.flv"
    path.write_bytes(data)
    errors: list[Any] = []
    async with anyio.create_task_group() as tg:
        transfer = Transfer(tg.start_soon, lambda *a: errors.append(a), max_frame=700,
                            block_size=1500)
        transfer.start("t", 1, str(path), len(data), offset, crc32=crc32)
        assert transfer.credit("t", 1, len(data) - offset)
        got, eod = await _stream(transfer)
    tail = data[offset:]
    assert got == tail and not errors
    assert eod.HasField("crc32") == crc32
    if crc32:
        assert eod.crc32 == zlib.crc32(tail)
    # MD5: the whole file's on a first attempt; for a resumed one, of the tail only
    # where MD5 is the stream check, and none at all when CRC32 is.
    whole, tail_md5 = hashlib.md5(data).hexdigest(), hashlib.md5(tail).hexdigest()
    assert eod.md5 == (whole if offset == 0 else ("" if crc32 else tail_md5))
    ts = transfer.get("t")
    assert ts is not None
    right = (eod.md5, eod.crc32 if crc32 else None)
    wrong = ("0" * 32, (eod.crc32 ^ 1) if crc32 else None)
    assert ts.agent_got_it(*right, part_md5="")
    assert not ts.agent_got_it(*wrong, part_md5="")
    if offset == 0:  # the file is no longer the part it was created as
        assert not ts.agent_got_it(*right, part_md5="1" * 32)


def test_pieces_is_its_bytes_without_joining_them() -> None:
    frames = [b"abc", b"", b"defgh"]
    pieces = Pieces([memoryview(f) for f in frames])
    assert len(pieces) == 8 and bytes(pieces) == b"abcdefgh" and pieces == b"abcdefgh"
    assert pieces != b"abcdefgX" and [bytes(v) for v in pieces] == frames
