"""Exactly-once archive writes against the real simulator (``bupmesh sim-bili``), asyncio and trio.

A lost answer needs a real socket to reset (``lose_reply``), so these run
against the subprocess: the submission or edit takes effect, the client sees a
network error, and the lookup that follows finds what happened instead of
writing a second time, with and without part lists in ``x/web/archives``.
"""

from __future__ import annotations

import pytest

from tests.conftest import SimServer
from tests.uploader.test_uploader_sim import client, ops, upload_bytes
from uploader.archive import append_parts
from uploader.archive_list import find_archive
from uploader.errors import ErrorKind, UploadError
from uploader.submit import Submission, VideoPart, submit_web

pytestmark = pytest.mark.anyio


async def part(sim: SimServer, data: bytes) -> VideoPart:
    result = await upload_bytes(sim, data)
    return VideoPart(filename=result.filename, title="P", cid=result.biz_id)


@pytest.mark.parametrize("list_videos", [True, False], ids=["list-parts", "no-list-parts"])
async def test_a_lost_submission_answer_is_found_not_repeated(
    sim: SimServer, list_videos: bool
) -> None:
    sim.config(archive={"list_videos": list_videos})
    parts = [await part(sim, b"one"), await part(sim, b"two")]
    decoy = await part(sim, b"decoy")
    submission = Submission(title="同一个标题", videos=parts)
    async with client(sim) as c:
        sim.config(faults={"fail_next": [{"op": "submit", "action": "lose_reply"}]})
        with pytest.raises(UploadError) as lost:
            await submit_web(c, submission)
        await submit_web(c, Submission(title="同一个标题", videos=[decoy]))  # newer, same title
        found = await find_archive(c, [p.filename for p in parts], title=submission.title)
    assert lost.value.kind is ErrorKind.NETWORK
    submitted = sim.submissions()
    assert len(submitted) == 2 and found is not None and found.aid == submitted[0]["aid"]
    assert len(ops(sim, "view")) == (0 if list_videos else 2)  # the decoy, then ours


async def test_a_lost_edit_answer_is_not_repeated(sim: SimServer) -> None:
    first, late = await part(sim, b"first"), await part(sim, b"late")
    async with client(sim) as c:
        created = await submit_web(c, Submission(title="t", videos=[first]))
        sim.config(faults={"fail_next": [{"op": "edit", "action": "lose_reply"}]})
        with pytest.raises(UploadError) as lost:
            await append_parts(c, created.aid, [late])
        again = await append_parts(c, created.aid, [late])
    assert lost.value.kind is ErrorKind.NETWORK
    assert again.added == [] and again.videos == 2
    [record] = sim.submissions()
    assert [e["added"] for e in record["edits"]] == [[late.filename]]
    assert len(ops(sim, "edit")) == 1


async def test_a_failing_view_is_not_taken_for_absence(sim: SimServer) -> None:
    """A view that fails must not read as "no such archive": that would submit twice."""
    sim.config(archive={"list_videos": False})
    parts = [await part(sim, b"only")]
    async with client(sim) as c:
        await submit_web(c, Submission(title="t", videos=parts))
        sim.config(faults={"fail_next": [{"op": "view", "action": "status", "status": 503}]})
        with pytest.raises(UploadError) as failed:
            await find_archive(c, [parts[0].filename], title="t")
        found = await find_archive(c, [parts[0].filename], title="t")
    assert failed.value.kind is ErrorKind.NETWORK and found is not None
