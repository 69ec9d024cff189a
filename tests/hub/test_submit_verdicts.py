"""Submissions refused for the account wait for it and still go out exactly once (the
recording pipeline on a hub with a fake agent that submits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from hub.config import SubmissionSettings
from hub.pipeline import RecordingPipeline
from protocol import mesh_pb2 as pb
from tests.support.hub import (
    FakeAgent,
    Hub,
    anyio_backend,
    make_config,
    make_hub,
    stream_all,
    wait_for,
)

__all__ = ["anyio_backend"]  # asyncio only: grpc.aio

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def recording_hub(tmp: Path) -> AsyncIterator[tuple[Hub, RecordingPipeline, FakeAgent]]:
    config = make_config(tmp, submission=SubmissionSettings(
        auto_submit=True, settle_seconds=0, retry_seconds=0.2, unknown_wait_seconds=1))
    async with make_hub(tmp, config) as hub:
        pipeline = await RecordingPipeline.attach(hub.service)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipeline.run)
                agent = await hub.agent("a", ip="127.0.0.20", submit=True)
                yield hub, pipeline, agent
                tg.cancel_scope.cancel()
        finally:
            pipeline.close()


async def uploaded_recording(hub: Hub, pipeline: RecordingPipeline, agent: FakeAgent) -> int:
    """One recording of one part, uploaded through ``agent`` and ended: ready to submit."""
    path, _ = hub.file("r.flv", 1000)
    part = await hub.service.create_part(path, account=None, title=None)
    offer = await agent.recv("offer")
    _, md5 = await stream_all(agent, offer)
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt, success=True,
                                      filename="n-r", biz_id=11, md5=md5))
    rec = await pipeline.recordings.get_or_create(
        source="watcher", session_key="watcher:7:1", room_id="7", started_at=1.0,
        info={"title": "live"})
    await pipeline.recordings.add_part(rec["id"], part_id=part["part_id"], path=path,
                                       size=1000, started_at=None, ended_at=None)
    await pipeline.recordings.end(rec["id"], hub.service.clock())
    return int(rec["id"])


async def answer(agent: FakeAgent, submit: pb.Submit, **result: Any) -> None:
    await agent.send(submit_result=pb.SubmitResult(submit_id=submit.submit_id,
                                                   attempt=submit.attempt, **result))


async def state_of(pipeline: RecordingPipeline, rec_id: int) -> dict[str, Any]:
    return await pipeline.submissions.describe(rec_id)


async def test_a_throttled_submission_waits_for_the_account_and_goes_out_once(
    tmp_path: Path,
) -> None:
    async with recording_hub(tmp_path) as (hub, pipeline, agent):
        rec_id = await uploaded_recording(hub, pipeline, agent)
        first = await agent.recv("submit")
        assert first.attempt == 1
        await answer(agent, first, success=False, error_kind="account_throttle",
                     error_message="code 21566: 投稿过于频繁", error_code=21566,
                     retry_after_seconds=0.8)
        await wait_for(lambda: _is_queued(pipeline, rec_id))
        view = await state_of(pipeline, rec_id)
        assert "account_throttle" in view["error_message"]
        assert "throttled" in view["waiting_for"], view
        with pytest.raises(TimeoutError):
            await agent.recv("submit", wait=0.4)  # the account's named wait holds it
        second = await agent.recv("submit", wait=5)
        assert second.attempt == 2  # looks for the archive first, then submits
        await answer(agent, second, success=True, aid=99, bvid="BV1x")
        await wait_for(lambda: _state_is(pipeline, rec_id, "submitted"))
        risk = await hub.service.account_risk("main")
        assert [e["code"] for e in risk["events"]] == [21566]
        assert risk["submit"]["throttles_in_a_row"] == 0  # accepted since
        with pytest.raises(TimeoutError):
            await agent.recv("submit", wait=0.3)  # never a third


async def test_a_penalised_account_holds_its_submission_until_released(tmp_path: Path) -> None:
    async with recording_hub(tmp_path) as (hub, pipeline, agent):
        rec_id = await uploaded_recording(hub, pipeline, agent)
        first = await agent.recv("submit")
        await answer(agent, first, success=False, error_kind="account_penalty",
                     error_message="code 21515: 批量作弊投稿", error_code=21515)
        await wait_for(lambda: _is_queued(pipeline, rec_id))
        with pytest.raises(TimeoutError):
            await agent.recv("submit", wait=0.6)
        view = await state_of(pipeline, rec_id)
        assert view["state"] == "queued" and "penalised" in view["waiting_for"]
        assert (await hub.service.account_risk("main"))["penalised"]
        await hub.service.release_account("main")
        second = await agent.recv("submit", wait=5)
        assert second.attempt == 2


async def _is_queued(pipeline: RecordingPipeline, rec_id: int) -> bool:
    return await _state_is(pipeline, rec_id, "queued")


async def _state_is(pipeline: RecordingPipeline, rec_id: int, state: str) -> bool:
    return (await state_of(pipeline, rec_id))["state"] == state
