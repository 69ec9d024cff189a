"""The agent's pure pieces: backoff, progress policy, task states, streamed source, runner."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import anyio
import pytest

from protocol import mesh_pb2 as pb
from protocol.credit import CreditBudget
from spoke.backoff import Backoff
from spoke.config import AgentSettings
from spoke.progress import ProgressGate
from spoke.runner import TaskRunner, threads_for
from spoke.source import BufferTooSmall, StreamError, StreamSource
from spoke.task_state import InvalidTransition, State, TaskState
from uploader.errors import ErrorKind, UploadError
from uploader.session import UposSession

# -- backoff -------------------------------------------------------------------------------------


def test_backoff_full_jitter_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(7))
    caps = [backoff.cap(n) for n in range(10)]
    assert caps[:6] == [2, 4, 8, 16, 32, 60] and caps[-1] == 60
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[10:]) > 30  # full jitter reaches well into the range
    assert len({round(d, 3) for d in delays[10:]}) > 100  # and is spread, not fixed
    backoff.reset()
    assert backoff.attempt == 0 and 1.0 <= backoff.next_delay() <= 2.0
    first = [b.next_delay() for b in (Backoff(rng=random.Random(i)) for i in range(50))]
    assert all(1.0 <= d <= 2.0 for d in first)
    assert max(first) - min(first) > 0.5  # agents dropped together come back spread out
    assert backoff.cap(10_000) == 60  # no overflow after a long outage
    with pytest.raises(ValueError):
        Backoff(0, 1)


# -- progress ------------------------------------------------------------------------------------


def test_progress_every_ten_percent_or_ten_seconds() -> None:
    total = 1000
    gate = ProgressGate(total, now=0.0)
    assert gate.should_report(0, 0.0)  # the first
    assert not gate.should_report(50, 1.0)
    assert gate.should_report(100, 1.5)  # crossed 10%
    assert not gate.should_report(150, 2.0)
    assert not gate.should_report(199, 11.0)  # 9.5 s since the last report
    assert gate.should_report(199, 11.5)  # 10 s
    assert gate.should_report(450, 12.0)  # jumped two buckets: one report
    assert not gate.should_report(460, 12.1)
    assert gate.should_report(1000, 12.2)  # the last byte
    assert not gate.should_report(1000, 12.3)
    assert gate.next_deadline() == pytest.approx(22.2)


# -- task state ----------------------------------------------------------------------------------


def test_task_state_happy_path_and_illegal_messages() -> None:
    s = TaskState()
    with pytest.raises(InvalidTransition):
        s.on_chunk()  # no chunk before Accept
    assert s.accept() and s.on_chunk() and s.on_chunk()
    assert s.state is State.STREAMING
    with pytest.raises(InvalidTransition):
        s.succeed()  # not before EndOfData
    assert s.on_end_of_data() and s.state is State.FINISHING
    with pytest.raises(InvalidTransition):
        s.on_chunk()  # a chunk after EndOfData
    assert s.succeed() and s.state is State.DONE and s.terminal
    # late messages for an ended attempt are ignored, not errors
    assert not s.on_chunk() and not s.cancel() and not s.fail()


def test_task_state_cancel_fail_reject() -> None:
    s = TaskState()
    assert s.reject() and s.state is State.REJECTED
    s = TaskState()
    s.accept()
    assert s.cancel() and s.state is State.CANCELLED and not s.on_end_of_data()
    s = TaskState()
    s.accept()
    s.on_chunk()
    assert s.fail() and s.state is State.FAILED
    with pytest.raises(InvalidTransition):
        TaskState().on_end_of_data()


# -- streamed source -----------------------------------------------------------------------------


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


# -- runner with a fake uploader -----------------------------------------------------------------


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
                 before_complete: Any = None):
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
