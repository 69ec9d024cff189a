"""Upload assembly without HTTP, on asyncio and trio: part checks, in-order hashing, repeats.

The file MD5 is fed in part order from worker threads (``anyio.to_thread``),
so these run on both backends like every other backend-neutral part.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from uploader.sim.uploads import PartError, Ticket, Upload

CHUNK = 1000


def upload(size: int | None) -> Upload:
    ticket = Ticket(
        key="n1.flv", auth="a", biz_id=1, name="a.flv", size=size, chunk_size=CHUNK,
        mid=1, ip="127.0.0.1", line="cs_bda2", created_at=0.0,
    )  # fmt: skip
    return Upload(upload_id="u", ticket=ticket, size=size, chunk_size=CHUNK, created_at=0.0)


def query(part: int, size: int, /, **over: object) -> dict[str, str]:
    start = (part - 1) * CHUNK
    end = min(start + CHUNK, size)
    chunks = max(1, -(-size // CHUNK))
    values = {"partNumber": part, "chunk": part - 1, "chunks": chunks, "size": end - start,
              "start": start, "end": end, "total": size, **over}  # fmt: skip
    return {k: str(v) for k, v in values.items()}


def test_check_part_accepts_the_right_range_and_names_what_is_wrong() -> None:
    up = upload(2500)
    assert up.check_part(query(3, 2500), 500) == 500
    for over, needle in (
        ({"partNumber": 4}, "outside 1..3"),
        ({"chunk": 0}, "chunk 0 != partNumber - 1"),
        ({"start": 1}, "start 1 != 2000"),
        ({"total": 9}, "total 9 != file size 2500"),
        ({"size": "x"}, "size is not an integer"),
    ):
        with pytest.raises(PartError, match=needle):
            up.check_part(query(3, 2500, **over), None)
    with pytest.raises(PartError, match="Content-Length 499 != size 500"):
        up.check_part(query(3, 2500), 499)


def test_first_part_fixes_an_open_size() -> None:
    up = upload(None)
    assert up.check_part(query(1, 1500), None) == 1000
    assert up.size == 1500 and up.chunks == 2


@pytest.mark.anyio
async def test_parts_in_any_order_hash_as_the_file() -> None:
    data = random.Random(3).randbytes(4 * CHUNK + 7)
    up = upload(len(data))
    order = [4, 2, 5, 1, 3]
    for part in order:
        await up.accept_part(part, [data[(part - 1) * CHUNK : part * CHUNK]])
        if part == 1:  # the prefix now reaches part 2, then stops at the missing 3
            assert up.next_part == 3 and sorted(up.held) == [4, 5]
    assert up.next_part == 6 and up.held == {} and up.held_bytes == 0
    assert up.file_md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert up.received == set(order) and up.corrupt is None


@pytest.mark.anyio
async def test_a_repeat_must_carry_the_same_bytes() -> None:
    data = random.Random(4).randbytes(2 * CHUNK)
    up = upload(len(data))
    await up.accept_part(1, [data[:CHUNK]])
    await up.accept_part(1, [data[:500], data[500:CHUNK]])  # same bytes, other framing
    assert up.corrupt is None
    await up.accept_part(1, [bytes(CHUNK)])
    assert up.corrupt == "part 1 sent again with different bytes"


@pytest.mark.anyio
async def test_a_held_part_may_be_replaced() -> None:
    data = random.Random(5).randbytes(2 * CHUNK)
    up = upload(len(data))
    await up.accept_part(2, [bytes(CHUNK)])
    await up.accept_part(2, [data[CHUNK:]])
    assert up.held_bytes == CHUNK
    await up.accept_part(1, [data[:CHUNK]])
    assert up.file_md5.hexdigest() == hashlib.md5(data).hexdigest() and up.corrupt is None
