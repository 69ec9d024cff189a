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
import xxhash

from hub.agents.transfer import Transfer
from hub.core.file_identity import fingerprint_of
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
    # MD5 only where it is the stream check (an agent without CRC32), of what was sent.
    assert eod.md5 == ("" if crc32 else hashlib.md5(tail).hexdigest())
    ts = transfer.get("t")
    assert ts is not None
    # The part digest: taken on a whole-file attempt only.
    assert ts.digest == (xxhash.xxh3_128(data).hexdigest() if offset == 0 else "")
    right = (eod.md5, eod.crc32 if crc32 else None)
    wrong = ("0" * 32, (eod.crc32 ^ 1) if crc32 else None)
    assert ts.agent_got_it(*right, part_digest="")
    assert not ts.agent_got_it(*wrong, part_digest="")
    if offset == 0:  # the file is no longer the part it was created as
        assert not ts.agent_got_it(*right, part_digest="1" * 32)
        assert ts.agent_got_it(*right, part_digest=ts.digest)


@pytest.mark.anyio
@pytest.mark.parametrize("changed", [False, True])
async def test_a_known_digest_stands_while_the_file_keeps_its_identity(
    tmp_path: Path, changed: bool
) -> None:
    """Nothing is hashed for a part whose digest is known and whose file is unchanged;
    a file changed since (another stat identity) has its digest taken anew."""
    data = os.urandom(10_000)
    path = tmp_path / "f.flv"
    path.write_bytes(data)
    identity = fingerprint_of(path.stat())
    if changed:
        path.write_bytes(data[::-1])
    async with anyio.create_task_group() as tg:
        transfer = Transfer(tg.start_soon, lambda *a: None, max_frame=700, block_size=1500)
        transfer.start("t", 1, str(path), len(data), 0, crc32=True, known_digest="k" * 32,
                       fingerprint=identity)
        assert transfer.credit("t", 1, len(data))
        await _stream(transfer)
    ts = transfer.get("t")
    assert ts is not None
    if changed:
        assert ts.digest == xxhash.xxh3_128(data[::-1]).hexdigest()
        assert not ts.agent_got_it("", ts.crc.value, part_digest="k" * 32)
    else:
        assert ts.digest == "k" * 32 and ts.agent_got_it("", ts.crc.value, part_digest="k" * 32)


def test_pieces_is_its_bytes_without_joining_them() -> None:
    frames = [b"abc", b"", b"defgh"]
    pieces = Pieces([memoryview(f) for f in frames])
    assert len(pieces) == 8 and bytes(pieces) == b"abcdefgh" and pieces == b"abcdefgh"
    assert pieces != b"abcdefgX" and [bytes(v) for v in pieces] == frames
