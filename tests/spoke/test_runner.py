"""One task attempt on the agent with a fake uploader: result and checksums, cancel,
protocol violations cost the task only, resume points, bad offers, thread count."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import anyio
import pytest

from protocol import mesh_pb2 as pb
from protocol.credit import CreditBudget
from spoke.config import AgentSettings
from spoke.runner import TaskRunner, threads_for
from uploader.session import UposSession


class FakeClient:
    def __init__(self, credentials: Any, **kw: Any) -> None:
        self.credentials = credentials
        self.kw = kw

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class FakeUploader:
    """Reads chunk by chunk, commits each, like UposUploader with threads=1."""

    instances: list[FakeUploader] = []

    def __init__(self, client: Any, *, line: str, threads: int, on_progress: Any, on_commit: Any,
                 before_complete: Any = None, **kw: Any):
        self.client, self.threads, self.on_commit = client, threads, on_commit
        self.before_complete = before_complete
        self.completed = False
        FakeUploader.instances.append(self)

    async def upload(self, source: Any, name: str, *, session: Any = None) -> Any:
        chunk = 16
        got = bytearray()
        for offset in range(0, source.size, chunk):
            data = await source.read(offset, chunk)
            got += bytes(data)  # a streamed chunk is its frames (uploader.pieces.Pieces)
            source.release(offset, len(data))
        self.completed = True
        self.data = bytes(got)

        class R:
            filename = "n" + name
            biz_id = 42

        return R()


def _settings(**kw: Any) -> AgentSettings:
    base: dict[str, Any] = dict(
        server_url="127.0.0.1:1", agent_id="a", agent_name="a", token="psk",
        buffer_bytes=64, chunk_size=16, max_concurrent=2,
    )
    return AgentSettings(**{**base, **kw})


def _offer(size: int, **kw: Any) -> pb.Offer:
    return pb.Offer(
        task_id="t1", attempt=1, file_name="f.flv", file_size=size,
        credentials=pb.BiliCredentials(cookies="SESSDATA=s; bili_jct=c; DedeUserID=1"),
        member_url="http://127.0.0.1:9", **kw,
    )


def _runner(size: int, sent: list[pb.AgentMessage], **kw: Any) -> tuple[TaskRunner, CreditBudget]:
    budget = CreditBudget(64)
    runner = TaskRunner(
        _offer(size, **kw), settings=_settings(), budget=budget, send=sent.append,
        client_factory=FakeClient, uploader_factory=FakeUploader,
    )
    runner.prepare()
    return runner, budget


async def _stream(runner: TaskRunner, budget: CreditBudget, data: bytes, md5: str | None = None):
    pos = runner.resume_offset
    with anyio.fail_after(5):
        while pos < len(data):
            for _task, n in budget.grants():
                end = pos + n
                while pos < end:
                    step = min(10, end - pos)
                    runner.on_chunk(pb.Chunk(task_id="t1", attempt=1, offset=pos,
                                             data=data[pos : pos + step]))
                    pos += step
            await anyio.wait_all_tasks_blocked()
    runner.on_end_of_data(pb.EndOfData(task_id="t1", attempt=1,
                                       md5=md5 or hashlib.md5(data[runner.resume_offset:]).hexdigest()))


@pytest.mark.anyio
async def test_runner_uploads_and_reports_result_with_md5() -> None:
    data = bytes(random.Random(1).randbytes(200))
    sent: list[pb.AgentMessage] = []
    runner, budget = _runner(len(data), sent)
    runner.accept()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        await _stream(runner, budget, data)
    kinds = [m.WhichOneof("kind") for m in sent]
    assert kinds[0] == "accept" and kinds[-1] == "result"
    result = sent[-1].result
    assert result.success and result.filename == "nf.flv" and result.biz_id == 42
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert FakeUploader.instances[-1].data == data
    assert "t1" not in budget and runner.credentials is None  # credit and secrets gone


@pytest.mark.anyio
async def test_runner_md5_mismatch_fails_before_completion() -> None:
    data = bytes(100)
    sent: list[pb.AgentMessage] = []
    runner, budget = _runner(len(data), sent)
    runner.accept()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        await _stream(runner, budget, data, md5="f" * 32)
    result = sent[-1].result
    assert not result.success and result.error_kind == "file" and "md5" in result.error_message
    assert not FakeUploader.instances[-1].completed


@pytest.mark.anyio
async def test_runner_cancel_stops_within_a_second() -> None:
    sent: list[pb.AgentMessage] = []
    runner, budget = _runner(1000, sent)
    runner.accept()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        await anyio.wait_all_tasks_blocked()  # the uploader waits for bytes that never come
        start = anyio.current_time()
        runner.cancel("admin")
        with anyio.fail_after(1):
            await runner.finished.wait()
        assert anyio.current_time() - start < 1
    assert sent[-1].result.error_kind == "cancelled"
    assert not FakeUploader.instances[-1].completed


@pytest.mark.anyio
async def test_runner_protocol_violation_fails_the_task_not_the_agent() -> None:
    sent: list[pb.AgentMessage] = []
    runner, budget = _runner(1000, sent)
    runner.accept()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        runner.on_chunk(pb.Chunk(task_id="t1", attempt=1, offset=0, data=bytes(65)))  # no credit
        with anyio.fail_after(1):
            await runner.finished.wait()
    result = sent[-1].result
    assert result.error_kind == "agent" and "protocol violation" in result.error_message


def test_runner_resume_point_and_bad_offers() -> None:
    session = UposSession(
        name="f.flv", size=100, upos_uri="upos://b/k.flv", endpoint="//h", upload_url="http://h/b/k",
        auth="secret", biz_id=1, chunk_size=16, threads=1, upload_id="u", parts_done=[1, 2, 4],
        created_at=0.0,
    )
    runner, _ = _runner(100, [], resume_session=session.to_json())
    assert runner.resume_offset == 32 and runner.min_window == 16
    # an unreadable resume session is ignored: a fresh upload is always possible
    runner, _ = _runner(100, [], resume_session=b"{nope")
    assert runner.resume_offset == 0 and runner.session is None
    bad = TaskRunner(
        pb.Offer(task_id="t", attempt=1, file_size=1, credentials=pb.BiliCredentials(cookies="")),
        settings=_settings(), budget=CreditBudget(10), send=lambda m: None,
    )
    with pytest.raises(Exception) as info:
        bad.prepare()
    assert info.value.kind == "auth"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_bad_member_url_is_a_bad_request() -> None:
    sent: list[pb.AgentMessage] = []
    budget = CreditBudget(64)
    runner = TaskRunner(
        _offer(10), settings=_settings(), budget=budget, send=sent.append,
    )
    runner.member_url = "ftp://nowhere"
    runner.prepare()
    runner.accept()
    with anyio.fail_after(5):
        await runner.run()
    result = sent[-1].result
    assert result.error_kind == "bad_request" and "member URL" in result.error_message


def test_threads_follow_the_budget_share() -> None:
    mib = 1 << 20
    assert threads_for(64 * mib // 3, 10 * mib) == 1
    assert threads_for(64 * mib, 10 * mib) == 5
    assert threads_for(5 * mib, 10 * mib) == 1
