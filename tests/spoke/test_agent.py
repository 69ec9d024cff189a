"""The agent (spoke.agent over spoke.link and spoke.stream) against an in-process fake hub
(grpc.aio servicer on loopback), real simulator behind.

The fake hub is deliberately strict: it streams only within the credit the
agent granted (a CreditLedger raises otherwise), checks the agent never has
more credit outstanding than its budget, and checks the transfer never needs
more than that to finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest

from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc as pb_grpc
from protocol.chunks import frame_spans
from protocol.credit import MAX_FRAME, CreditLedger
from spoke.agent import Agent
from spoke.backoff import Backoff
from spoke.config import AgentSettings
from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES, SimServer, bupmesh_command
from uploader.session import UposSession

MiB = 1 << 20
PSK = "test-psk"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio


@pytest.fixture(scope="module", autouse=True)
async def _one_event_loop(anyio_backend: str) -> AsyncIterator[None]:
    """Hold anyio's test runner for the whole module: one event loop for every test.

    grpc.aio's completion-queue poller binds to an event loop; with a fresh loop per
    test it occasionally calls back into the previous, closed one.
    """
    yield


# -- fake hub ------------------------------------------------------------------------------------


@dataclass
class FakeSession:
    hello: pb.Hello | None = None
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)  # AgentMessage | None (closed)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)  # HubMessage | None (end)

    def send(self, **kw: Any) -> None:
        self.outbox.put_nowait(pb.HubMessage(**kw))

    def end(self) -> None:
        self.outbox.put_nowait(None)

    async def next(self, limit: float = 10.0) -> pb.AgentMessage | None:
        return await asyncio.wait_for(self.inbox.get(), limit)

    async def expect(self, kind: str, limit: float = 10.0) -> pb.AgentMessage:
        """Next message of ``kind``, skipping heartbeats/progress/committed."""
        deadline = time.monotonic() + limit
        while True:
            msg = await self.next(max(0.01, deadline - time.monotonic()))
            assert msg is not None, f"stream closed while waiting for {kind}"
            if msg.WhichOneof("kind") == kind:
                return msg
            assert msg.WhichOneof("kind") in ("heartbeat", "progress", "committed", "credit"), msg


class FakeHub(pb_grpc.AgentLinkServicer):
    def __init__(self, heartbeat: int = 30) -> None:
        self.heartbeat = heartbeat
        self.registrations: list[pb.RegisterRequest] = []
        self.register_calls: asyncio.Queue[pb.RegisterRequest] = asyncio.Queue()
        self.sessions: asyncio.Queue[FakeSession] = asyncio.Queue()
        self.connects = 0
        self.tokens: list[str] = []

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        self.registrations.append(request)
        self.register_calls.put_nowait(request)
        if request.psk != PSK:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown pre-shared key")
        return pb.RegisterResponse(
            agent_id=request.agent_id, token=f"jwt-{request.agent_id}",
            expires_at=int(time.time()) + 3600,
        )

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.HubMessage]:
        metadata = dict(context.invocation_metadata())
        if not metadata.get("authorization", "").startswith("Bearer jwt-"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")
        self.connects += 1
        self.tokens.append(metadata["authorization"].removeprefix("Bearer "))
        session = FakeSession()

        async def pump() -> None:
            try:
                async for message in request_iterator:
                    await session.inbox.put(message)
            except Exception:
                pass
            finally:
                await session.inbox.put(None)
                session.outbox.put_nowait(None)  # like the hub: the agent half-closed, end the call

        task = asyncio.ensure_future(pump())
        try:
            first = await session.inbox.get()
            assert first is not None and first.WhichOneof("kind") == "hello"
            session.hello = first.hello
            yield pb.HubMessage(welcome=pb.Welcome(heartbeat_interval_seconds=self.heartbeat,
                                                   session_id=f"s{self.connects}"))
            self.sessions.put_nowait(session)
            while True:
                message = await session.outbox.get()
                if message is None:
                    return
                yield message
        finally:
            task.cancel()


@pytest.fixture
async def hub() -> AsyncIterator[tuple[FakeHub, str]]:
    servicer = FakeHub()
    server = grpc.aio.server(options=[
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
    ])
    pb_grpc.add_AgentLinkServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def settings(address: str, **kw: Any) -> AgentSettings:
    base: dict[str, Any] = dict(
        server_url=address, agent_id="agent-t", agent_name="Agent T", token=PSK, insecure=True,
        max_concurrent=3, buffer_bytes=4 * MiB, chunk_size=1 * MiB, source_ip="127.0.0.2",
        drain_grace=2.0, egress_check_interval=0.0,  # no zone lookups unless a test asks
    )
    return AgentSettings(**{**base, **kw})


def offer(task_id: str, data: bytes, sim: SimServer | None, attempt: int = 1, **kw: Any) -> pb.Offer:
    return pb.Offer(
        task_id=task_id, attempt=attempt, part_id=1, file_name=f"{task_id}.flv",
        file_size=len(data), file_md5=hashlib.md5(data).hexdigest(),
        credentials=pb.BiliCredentials(cookies=SIM_COOKIES, access_key=SIM_ACCESS_KEY, mid=10001),
        line="auto", member_url=sim.url if sim else "http://127.0.0.1:9", **kw,
    )


class Streamer:
    """Hub side of the data plane: strictly within credit, round-robin, EndOfData at the end."""

    def __init__(self, session: FakeSession, budget: int, *, corrupt: set[str] = frozenset()) -> None:
        self.session = session
        self.budget = budget
        self.files: dict[str, bytes] = {}
        self.attempts: dict[str, int] = {}
        self.ledgers: dict[str, CreditLedger] = {}
        self.pos: dict[str, int] = {}
        self.md5: dict[str, Any] = {}
        self.crc: dict[str, int] = {}  # CRC32 of what was sent, for crc32_integrity offers
        self.crc_tasks: set[str] = set()
        self.results: dict[str, pb.Result] = {}
        self.messages: list[pb.AgentMessage] = []
        self.corrupt = corrupt
        self.max_credit_open = 0
        self.ended: set[str] = set()
        self.stop_at: dict[str, int] = {}  # task -> stream no further than this offset
        # Completion handshake: the answer to Finishing per task (proceed | cancel | silent).
        self.finish: dict[str, str] = {}
        self.finishings: list[pb.Finishing] = []
        self.local: set[str] = set()  # tasks the agent accepted with local_read

    def offer(self, o: pb.Offer, data: bytes) -> None:
        self.files[o.task_id] = data
        self.attempts[o.task_id] = o.attempt
        if o.crc32_integrity:
            self.crc_tasks.add(o.task_id)
        self.session.send(offer=o)

    def _pump(self) -> None:
        for task_id, ledger in self.ledgers.items():
            data = self.files[task_id]
            end = min(len(data), self.stop_at.get(task_id, len(data)))
            while self.pos[task_id] < end:
                n = min(ledger.sendable(MAX_FRAME), end - self.pos[task_id])
                if n <= 0:
                    break
                start = self.pos[task_id]
                for offset, length in frame_spans(start, n):
                    piece = data[offset : offset + length]
                    if task_id in self.corrupt and offset == 0:
                        piece = b"\xff" + piece[1:]
                    ledger.on_sent(length)  # raises beyond credit
                    self.md5[task_id].update(piece)
                    self.crc[task_id] = zlib.crc32(piece, self.crc.get(task_id, 0))
                    self.session.send(chunk=pb.Chunk(task_id=task_id, attempt=self.attempts[task_id],
                                                     offset=offset, data=piece))
                self.pos[task_id] = start + n
            if self.pos[task_id] == len(data) and task_id not in self.ended:
                self.ended.add(task_id)
                md5 = self.md5[task_id].hexdigest()
                crc = self.crc.get(task_id, 0)
                if task_id in self.corrupt:  # the hub's checksums are of the real file
                    md5 = hashlib.md5(data).hexdigest()
                    crc = zlib.crc32(data)
                eod = pb.EndOfData(task_id=task_id, attempt=self.attempts[task_id], md5=md5)
                if task_id in self.crc_tasks:
                    eod.crc32 = crc
                self.session.send(end_of_data=eod)

    def handle(self, msg: pb.AgentMessage) -> None:
        self.messages.append(msg)
        kind = msg.WhichOneof("kind")
        if kind == "accept" and msg.accept.local_read:
            self.local.add(msg.accept.task_id)  # the hub streams nothing for this attempt
        elif kind == "accept":
            self.ledgers[msg.accept.task_id] = CreditLedger()
            self.pos[msg.accept.task_id] = msg.accept.resume_offset
            self.md5[msg.accept.task_id] = hashlib.md5()
        elif kind == "credit":
            ledger = self.ledgers[msg.credit.task_id]
            ledger.grant(msg.credit.bytes)
            open_credit = sum(led.available for led in self.ledgers.values())
            self.max_credit_open = max(self.max_credit_open, open_credit)
            assert open_credit <= self.budget, "agent granted more than its buffer budget"
            assert ledger.granted <= len(self.files[msg.credit.task_id])
        elif kind == "reject":
            raise AssertionError(f"unexpected reject: {msg.reject}")
        elif kind == "finishing":
            fin = msg.finishing
            self.finishings.append(fin)
            answer = self.finish.get(fin.task_id, "proceed")
            if answer == "proceed":
                self.session.send(proceed=pb.Proceed(task_id=fin.task_id, attempt=fin.attempt))
            elif answer == "cancel":
                self.session.send(cancel=pb.Cancel(task_id=fin.task_id, attempt=fin.attempt,
                                                   reason="lease ended"))
        elif kind == "result":
            self.results[msg.result.task_id] = msg.result
            self.ledgers.pop(msg.result.task_id, None)
        self._pump()

    async def run_until(self, done: Any, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; results so far: {self.results}"
            msg = await self.session.next(left)
            assert msg is not None, "agent closed the stream"
            self.handle(msg)

    def kinds(self, task_id: str) -> list[str]:
        out = []
        for m in self.messages:
            kind = m.WhichOneof("kind")
            if getattr(getattr(m, kind), "task_id", None) == task_id:
                out.append(kind)
        return out


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_four_tasks_interleave_within_credit_to_the_simulator(
    hub: tuple[FakeHub, str], sim: SimServer, compression: str
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB, threads=2)
    rng = random.Random(3)
    files = {f"t{i}": rng.randbytes(size) for i, size in enumerate([3 * MiB + 17, 5 * MiB, 7, 0])}
    agent = Agent(settings(address, max_concurrent=4, compression=compression))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert session.hello.agent_id == "agent-t" and session.hello.ip_address == "127.0.0.2"
        assert session.hello.capabilities.buffer_bytes == 4 * MiB
        (reg,) = servicer.registrations
        assert reg.psk == PSK and reg.capabilities.max_concurrent_uploads == 4
        assert session.hello.capabilities.crc32_integrity
        streamer = Streamer(session, budget=4 * MiB)
        for task_id, data in files.items():  # both stream checks side by side on one stream
            crc = task_id in ("t0", "t2")
            streamer.offer(offer(task_id, data, sim, crc32_integrity=crc), data)
        await streamer.run_until(lambda: len(streamer.results) == len(files))
        # status query while idle
        session.send(status_query=pb.StatusQuery(query_id="q1"))
        reply = await session.expect("status_reply")
        assert reply.status_reply.query_id == "q1" and reply.status_reply.memory_mb > 0
        assert reply.status_reply.buffered_bytes == 0
        agent.stop()
    for task_id, data in files.items():
        result = streamer.results[task_id]
        assert result.success, result
        if task_id in ("t0", "t2"):
            assert result.crc32 == zlib.crc32(data) and result.md5 == ""
        else:
            assert result.md5 == hashlib.md5(data).hexdigest() and not result.HasField("crc32")
        kinds = streamer.kinds(task_id)
        assert kinds[0] == "accept" and kinds[-1] == "result" and "progress" in kinds
    assert 0 < streamer.max_credit_open <= 4 * MiB
    # the big ones committed their parts with a resumable session
    committed = [m.committed for m in streamer.messages if m.WhichOneof("kind") == "committed"]
    assert any(c.task_id == "t1" and c.offset == 5 * MiB for c in committed)
    uploads = {u["md5"]: u for u in sim.uploads()}
    for data in files.values():
        upload = uploads[hashlib.md5(data).hexdigest()]
        assert upload["size"] == len(data) and upload["source_ip"] == "127.0.0.2"
    assert agent.budget.outstanding == 0 and not agent.runners


@pytest.mark.anyio
async def test_cancel_answers_within_a_second_and_never_completes(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB, faults={"fail_next": [
        {"op": "put", "action": "stall", "seconds": 30, "count": 10}]})
    data = random.Random(4).randbytes(2 * MiB)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("c1", data, sim), data)
        await streamer.run_until(lambda: streamer.pos.get("c1", 0) == len(data))
        # wait until the uploader holds a chunk: its PUT is stalled at the simulator
        with anyio.fail_after(10):
            while not agent.runners["c1"].source.held_by_uploader:  # noqa: ASYNC110 - bounded poll of agent state
                await anyio.sleep(0.02)
        started = time.monotonic()
        session.send(cancel=pb.Cancel(task_id="c1", attempt=1, reason="admin"))
        await streamer.run_until(lambda: "c1" in streamer.results, limit=5)
        assert time.monotonic() - started < 1.0
        agent.stop()
    result = streamer.results["c1"]
    assert not result.success and result.error_kind == "cancelled"
    assert not sim.uploads()
    assert not [r for r in sim.requests() if r["op"] == "complete"]


@pytest.mark.anyio
@pytest.mark.parametrize("check", ["md5", "crc32"])
async def test_md5_mismatch_is_a_file_error_and_nothing_completes(
    hub: tuple[FakeHub, str], sim: SimServer, check: str
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(5).randbytes(MiB + 5)
    agent = Agent(settings(address, crc32_integrity=check == "crc32"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert session.hello.capabilities.crc32_integrity == (check == "crc32")
        streamer = Streamer(session, budget=4 * MiB, corrupt={"bad"})
        streamer.offer(offer("bad", data, sim, crc32_integrity=check == "crc32"), data)
        await streamer.run_until(lambda: "bad" in streamer.results)
        agent.stop()
    result = streamer.results["bad"]
    assert not result.success and result.error_kind == "file" and check in result.error_message
    assert not sim.uploads()


@pytest.mark.anyio
async def test_resume_continues_the_same_upos_upload_from_the_committed_part(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(8).randbytes(5 * MiB + 123)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        first = Streamer(session, budget=4 * MiB)
        first.stop_at["r"] = 2 * MiB  # the hub "dies" after two parts' worth
        first.offer(offer("r", data, sim, attempt=1), data)

        def committed_two() -> bool:
            return any(m.WhichOneof("kind") == "committed" and m.committed.offset == 2 * MiB
                       for m in first.messages)

        await first.run_until(committed_two)
        saved = [m.committed for m in first.messages if m.WhichOneof("kind") == "committed"][-1]
        session.send(cancel=pb.Cancel(task_id="r", attempt=1))
        await first.run_until(lambda: "r" in first.results, limit=5)
        assert first.results["r"].error_kind == "cancelled"
        # attempt 2 resumes the same upos upload from the first missing part
        second = Streamer(session, budget=4 * MiB)
        second.offer(offer("r", data, sim, attempt=2, resume_session=saved.session,
                           resume_offset=saved.offset), data)
        await second.run_until(lambda: "r" in second.results)
        agent.stop()
    accept = next(m.accept for m in second.messages if m.WhichOneof("kind") == "accept")
    assert accept.resume_offset == 2 * MiB
    result = second.results["r"]
    assert result.success, result
    assert result.md5 == hashlib.md5(data[2 * MiB :]).hexdigest()  # bytes of this attempt
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest() and upload["size"] == len(data)
    puts = [r for r in sim.requests() if r["op"] == "put" and r["status"] == 200]
    assert len(puts) == 6  # parts 1-2 once, 3-6 once: nothing sent twice


@pytest.mark.anyio
async def test_a_resume_of_an_upload_already_completed_reports_it_once(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    """Attempt 1 finished the upos upload but the hub never heard (its link died); the
    re-offer resumes an older session and must report that object, not fail."""
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(10).randbytes(3 * MiB + 7)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        first = Streamer(session, budget=4 * MiB)
        first.offer(offer("done", data, sim, attempt=1), data)
        await first.run_until(lambda: "done" in first.results)
        assert first.results["done"].success
        early = next(m.committed for m in first.messages
                     if m.WhichOneof("kind") == "committed" and m.committed.offset == MiB)
        second = Streamer(session, budget=4 * MiB)
        second.offer(offer("done", data, sim, attempt=2, resume_session=early.session,
                           resume_offset=early.offset), data)
        await second.run_until(lambda: "done" in second.results)
        agent.stop()
    result = second.results["done"]
    assert result.success, result
    assert result.filename == first.results["done"].filename
    assert result.md5 == hashlib.md5(data[MiB:]).hexdigest()
    (upload,) = sim.uploads()  # exactly one object
    assert upload["md5"] == hashlib.md5(data).hexdigest()


@pytest.mark.anyio
async def test_offers_beyond_slots_or_with_bad_credentials_or_while_draining(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    stall = {"action": "stall", "seconds": 30, "count": 10}
    sim.config(faults={"fail_next": [{"op": "probe", **stall}, {"op": "preupload", **stall}]})
    agent = Agent(settings(address, max_concurrent=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        data = bytes(3 * MiB)
        session.send(offer=offer("a", data, sim))
        assert (await session.expect("accept")).accept.task_id == "a"
        session.send(offer=offer("b", data, None))
        reject = (await session.expect("reject")).reject
        assert reject.task_id == "b" and "slot" in reject.reason
        # a chunk beyond credit is a protocol violation: that task fails, the agent lives on
        session.send(chunk=pb.Chunk(task_id="a", attempt=1, offset=0, data=bytes(MAX_FRAME)))
        session.send(chunk=pb.Chunk(task_id="a", attempt=1, offset=MAX_FRAME, data=bytes(MAX_FRAME)))
        for _ in range(3):
            session.send(chunk=pb.Chunk(task_id="a", attempt=1, offset=0, data=b""))
        result = (await session.expect("result")).result
        assert result.task_id == "a" and result.error_kind == "agent"
        # messages for unknown tasks or old attempts are ignored
        session.send(cancel=pb.Cancel(task_id="zzz", attempt=1))
        session.send(chunk=pb.Chunk(task_id="a", attempt=7, offset=0, data=b"x"))
        bad = offer("c", data, None)
        bad.credentials.cookies = "no cookies here"
        session.send(offer=bad)
        result = (await session.expect("result")).result
        assert result.task_id == "c" and result.error_kind == "auth"
        assert "no cookies here" not in result.error_message
        session.send(drain=pb.Drain(reason="maintenance"))
        beat = (await session.expect("heartbeat")).heartbeat
        assert beat.status == "draining" and beat.free_slots == 0
        session.send(offer=offer("d", data, None))
        assert "draining" in (await session.expect("reject")).reject.reason
        agent.stop()


@pytest.mark.anyio
async def test_reconnects_with_backoff_after_the_hub_drops_the_stream(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    stall = {"action": "stall", "seconds": 30, "count": 10}
    sim.config(faults={"fail_next": [{"op": "probe", **stall}, {"op": "preupload", **stall}]})
    servicer.heartbeat = 1
    agent = Agent(settings(address), backoff=Backoff(0.05, 0.2, random.Random(1)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        first = await asyncio.wait_for(servicer.sessions.get(), 10)
        data = bytes(2 * MiB)
        first.send(offer=offer("r1", data, sim))
        await first.expect("accept")
        first.send(token_refresh=pb.TokenRefresh(token="jwt-refreshed",
                                                 expires_at=int(time.time()) + 3600))
        first.send(status_query=pb.StatusQuery(query_id="before-drop"))
        await first.expect("status_reply")  # the refresh (sent before it) was handled
        first.end()  # the hub drops the stream mid-task
        second = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert second.hello.agent_id == "agent-t"
        assert list(second.hello.held_tasks) == []  # the attempt was abandoned, not completed
        assert servicer.connects == 2
        assert len(servicer.registrations) == 1  # the JWT was still valid: no second Register
        assert servicer.tokens == ["jwt-agent-t", "jwt-refreshed"]  # the refreshed one
        assert not agent.runners and agent.budget.outstanding == 0
        beat = (await second.expect("heartbeat", limit=3)).heartbeat  # at the hub's 1 s interval
        assert beat.status == "online" and beat.free_slots == 3 and beat.memory_mb > 0
        agent.stop()


@pytest.mark.anyio
async def test_drain_with_reconnect_after_closes_and_comes_back(hub: tuple[FakeHub, str]) -> None:
    servicer, address = hub
    agent = Agent(settings(address), backoff=Backoff(30, 60))  # only the hub's delay may apply
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        first = await asyncio.wait_for(servicer.sessions.get(), 10)
        first.send(drain=pb.Drain(reason="hub restart", reconnect_after_seconds=1))
        assert (await first.expect("heartbeat")).heartbeat.status == "draining"
        started = time.monotonic()
        while (await first.next(5)) is not None:  # the agent half-closes the stream
            pass
        second = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert 0.9 <= time.monotonic() - started < 5
        second.send(offer=offer("after", bytes(10), None))  # taking work again
        assert (await second.expect("accept")).accept.task_id == "after"
        agent.stop()


@pytest.mark.anyio
async def test_wrong_psk_is_logged_and_retried_without_coming_online(
    hub: tuple[FakeHub, str], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, address = hub
    agent = Agent(settings(address, token="wrong"), backoff=Backoff(0.05, 0.1))
    caplog.set_level("WARNING")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run)
            for _ in range(2):  # refused, then retried after the backoff
                await servicer.register_calls.get()
            agent.stop()
    assert servicer.connects == 0
    assert "UNAUTHENTICATED" in caplog.text
    assert "wrong" not in caplog.text.replace("wrong psk", "")


# -- SIGTERM on a real `bupmesh agent` process ---------------------------------------------------


def spawn_agent(tmp_path: Path, *args: str) -> subprocess.Popen:
    with open(tmp_path / "agent.log", "wb") as log:
        return subprocess.Popen(
            # No zone lookups: nobody on loopback plays api.bilibili.com here.
            bupmesh_command("agent", "--egress-check-interval", "0", *args),
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@pytest.mark.anyio
async def test_sigterm_drains_hands_back_and_exits_zero(
    hub: tuple[FakeHub, str], sim: SimServer, tmp_path: Path
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB, faults={"fail_next": [
        {"op": "put", "action": "stall", "seconds": 30, "count": 10}]})
    config = tmp_path / "agent.yml"
    config.write_text(
        "agent:\n  drain_grace: 1s\n  chunk_size_mb: 1\n  buffer_size_mb: 4\n"
    )
    proc = spawn_agent(tmp_path, "--config", str(config), "--server-url", address,
                       "--agent-id", "proc-agent", "--token", PSK, "--insecure",
                       "--source-ip", "127.0.0.2")
    try:
        session = await asyncio.wait_for(servicer.sessions.get(), 30)
        data = random.Random(6).randbytes(2 * MiB)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("s1", data, sim), data)
        await streamer.run_until(lambda: streamer.pos.get("s1", 0) == len(data))
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        # draining heartbeat first, then the stalled task is handed back after the grace
        while True:
            msg = await session.next(10)
            assert msg is not None
            streamer.handle(msg)
            if msg.WhichOneof("kind") == "heartbeat":
                assert msg.heartbeat.status == "draining"
                break
        await streamer.run_until(lambda: "s1" in streamer.results, limit=10)
        result = streamer.results["s1"]
        assert (result.error_kind, result.error_message) == ("agent", "draining")
        assert time.monotonic() - started >= 0.9  # the grace period was honoured
        # then the agent closes the stream and exits 0
        while (msg := await session.next(10)) is not None:
            pass
        assert await anyio.to_thread.run_sync(proc.wait, 15) == 0
        assert not [r for r in sim.requests() if r["op"] == "complete"]
        text = (tmp_path / "agent.log").read_text()
        assert PSK not in text and "jwt-" not in text and "SESSDATA" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.anyio
async def test_multi_agent_file_runs_every_agent_in_one_process(
    hub: tuple[FakeHub, str], tmp_path: Path
) -> None:
    servicer, address = hub
    config = tmp_path / "agents.yml"
    config.write_text(
        "agents:\n"
        f"  - {{id: m1, name: M1, server_url: '{address}', token: {PSK}, insecure: true,"
        " source_ip: 127.0.0.2, buffer_size_mb: 32, tags: {region: a}}\n"
        f"  - {{id: m2, name: M2, server_url: '{address}', token: {PSK}, insecure: true,"
        " source_ip: 127.0.0.3, max_concurrent: 1}\n"
    )
    proc = spawn_agent(tmp_path, "--config", str(config))
    try:
        hellos = [(await asyncio.wait_for(servicer.sessions.get(), 30)).hello for _ in range(2)]
        by_id = {h.agent_id: h for h in hellos}
        assert set(by_id) == {"m1", "m2"}
        assert by_id["m1"].ip_address == "127.0.0.2" and by_id["m2"].ip_address == "127.0.0.3"
        assert by_id["m1"].capabilities.buffer_bytes == 32 * MiB
        assert by_id["m2"].capabilities.max_concurrent_uploads == 1
        assert dict(by_id["m1"].tags) == {"region": "a"}
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.anyio
async def test_sigterm_while_the_hub_is_unreachable_exits_promptly(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = spawn_agent(tmp_path, "--server-url", f"127.0.0.1:{port}", "--agent-id", "lonely",
                       "--token", PSK, "--insecure")
    try:
        log = tmp_path / "agent.log"
        with anyio.fail_after(30):
            while "UNAVAILABLE" not in log.read_text():  # noqa: ASYNC110 - bounded poll of a log
                assert proc.poll() is None, log.read_text()
                await anyio.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 10) == 0
        assert time.monotonic() - started < 5
        assert PSK not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class _NoClient:
    def __init__(self, *args: Any, **kw: Any) -> None:
        pass

    async def __aenter__(self) -> _NoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class _ReadingUploader:
    """Reads and releases every chunk; a file named slow* stops after its first chunk."""

    def __init__(self, client: Any, **kw: Any) -> None:
        pass

    async def upload(self, source: Any, name: str, *, session: Any = None) -> Any:
        for offset in range(0, source.size, MiB):
            data = await source.read(offset, MiB)
            if name.startswith("slow"):
                await anyio.sleep_forever()  # holds its chunk, never reads on
            source.release(offset, len(data))

        class Done:
            filename, biz_id = "n" + name, 1

        return Done()


@pytest.mark.anyio
async def test_a_slow_task_never_stalls_a_fast_one(hub: tuple[FakeHub, str]) -> None:
    servicer, address = hub
    agent = Agent(settings(address), client_factory=_NoClient, uploader_factory=_ReadingUploader)
    slow, fast = bytes(20 * MiB), random.Random(9).randbytes(20 * MiB)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("slow", slow, None), slow)
        streamer.offer(offer("fast", fast, None), fast)
        await streamer.run_until(lambda: "fast" in streamer.results)
        # the slow one is stuck holding no more than its window; the fast one went through
        assert "slow" not in streamer.results
        assert agent.budget.task_outstanding("slow") <= agent.budget.window("slow")
        assert streamer.ledgers["slow"].granted < len(slow)
        agent.stop()  # the stuck one is handed back after the drain grace (2 s here)
        await streamer.run_until(lambda: "slow" in streamer.results, limit=10)
    assert streamer.results["fast"].success
    assert streamer.results["fast"].md5 == hashlib.md5(fast).hexdigest()
    assert streamer.results["slow"].error_message == "draining"


# -- completion handshake (Finishing -> Proceed | Cancel) -----------------------------------------


def completes(sim: SimServer) -> list[dict]:
    return [r for r in sim.requests() if r["op"] == "complete"]


@pytest.mark.anyio
async def test_finishing_asks_before_completing_and_proceed_completes(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(11).randbytes(3 * MiB + 99)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert session.hello.capabilities.finish_handshake
        streamer = Streamer(session, budget=4 * MiB)
        streamer.finish["p"] = "silent"  # answer by hand below
        streamer.offer(offer("p", data, sim, await_proceed=True), data)
        await streamer.run_until(lambda: bool(streamer.finishings))
        (fin,) = streamer.finishings
        assert (fin.task_id, fin.attempt, fin.offset) == ("p", 1, len(data))
        final = UposSession.from_json(fin.session)
        assert final.committed_offset() == len(data)  # every part done
        # every part is at the simulator, and no completion request was made
        puts = [r for r in sim.requests() if r["op"] == "put" and r["status"] == 200]
        assert len(puts) == 4 and not completes(sim) and not sim.uploads()
        session.send(proceed=pb.Proceed(task_id="p", attempt=1))
        await streamer.run_until(lambda: "p" in streamer.results)
        agent.stop()
    result = streamer.results["p"]
    assert result.success, result
    assert result.md5 == hashlib.md5(data).hexdigest()
    kinds = streamer.kinds("p")
    assert kinds.index("finishing") < kinds.index("result")
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest() and upload["upload_id"] == final.upload_id
    assert len(completes(sim)) == 1


@pytest.mark.anyio
async def test_cancel_after_finishing_abandons_without_a_completion_request(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(12).randbytes(2 * MiB + 1)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.finish["x"] = "cancel"  # the hub ended the lease meanwhile
        streamer.offer(offer("x", data, sim, await_proceed=True), data)
        await streamer.run_until(lambda: "x" in streamer.results)
        assert not agent.runners
        agent.stop()
    result = streamer.results["x"]
    assert not result.success and result.error_kind == "cancelled", result
    assert len(streamer.finishings) == 1
    assert not completes(sim) and not sim.uploads()


@pytest.mark.anyio
async def test_no_answer_to_finishing_abandons_after_the_bound(
    hub: tuple[FakeHub, str], sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spoke.runner

    monkeypatch.setattr(spoke.runner, "PROCEED_TIMEOUT", 1.0)  # 30 s in production
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(13).randbytes(MiB + 3)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.finish["q"] = "silent"  # a half-open link: the hub never hears Finishing
        streamer.offer(offer("q", data, sim, await_proceed=True), data)
        await streamer.run_until(lambda: bool(streamer.finishings))
        waited = time.monotonic()
        await streamer.run_until(lambda: "q" in streamer.results, limit=10)
        assert 0.9 <= time.monotonic() - waited < 5
        # a Proceed that arrives too late finds no attempt to complete
        session.send(proceed=pb.Proceed(task_id="q", attempt=1))
        session.send(status_query=pb.StatusQuery(query_id="after"))
        await session.expect("status_reply")
        agent.stop()
    result = streamer.results["q"]
    assert not result.success and result.error_kind == "agent", result
    assert "Proceed" in result.error_message
    assert not completes(sim) and not sim.uploads()


@pytest.mark.anyio
async def test_stream_lost_while_waiting_for_proceed_never_completes(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(14).randbytes(MiB + 5)
    agent = Agent(settings(address), backoff=Backoff(0.05, 0.2, random.Random(2)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        first = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(first, budget=4 * MiB)
        streamer.finish["w"] = "silent"
        streamer.offer(offer("w", data, sim, await_proceed=True), data)
        await streamer.run_until(lambda: bool(streamer.finishings))
        first.end()  # the hub goes away while the agent waits for its word
        second = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert not agent.runners  # the attempt died with its stream
        second.send(proceed=pb.Proceed(task_id="w", attempt=1))  # no such attempt any more
        second.send(status_query=pb.StatusQuery(query_id="after"))
        await second.expect("status_reply")
        agent.stop()
    assert not completes(sim) and not sim.uploads()


@pytest.mark.anyio
async def test_reoffer_after_a_granted_proceed_only_repeats_the_completion(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    """The hub granted Proceed and then lost the Result: the next attempt resumes the final
    session (every part done), asks again, and completion answers with the same object."""
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(15).randbytes(2 * MiB + 50)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        first = Streamer(session, budget=4 * MiB)
        first.offer(offer("g", data, sim, await_proceed=True), data)
        await first.run_until(lambda: "g" in first.results)
        final = first.finishings[0].session
        second = Streamer(session, budget=4 * MiB)
        second.offer(offer("g", data, sim, attempt=2, await_proceed=True, resume_session=final,
                           resume_offset=len(data)), data)
        await second.run_until(lambda: "g" in second.results)
        agent.stop()
    assert first.results["g"].success and second.results["g"].success, second.results
    assert second.results["g"].filename == first.results["g"].filename
    accept = next(m.accept for m in second.messages if m.WhichOneof("kind") == "accept")
    assert accept.resume_offset == len(data)
    assert len(second.finishings) == 1
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest()
    puts = [r for r in sim.requests() if r["op"] == "put" and r["status"] == 200]
    assert len(puts) == 3  # nothing sent again


@pytest.mark.anyio
async def test_without_await_proceed_the_agent_completes_on_its_own(
    hub: tuple[FakeHub, str], sim: SimServer
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(16).randbytes(MiB + 9)
    agent = Agent(settings(address))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("o", data, sim), data)  # an older hub: no await_proceed
        await streamer.run_until(lambda: "o" in streamer.results)
        agent.stop()
    assert streamer.results["o"].success and not streamer.finishings


# -- local reads (storage_type local | hybrid) ------------------------------------------------


@pytest.mark.anyio
async def test_local_agent_reads_a_verified_copy_and_nothing_is_streamed(
    hub: tuple[FakeHub, str], sim: SimServer, tmp_path: Path
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(17).randbytes(3 * MiB + 11)
    (tmp_path / "rec").mkdir()
    path = tmp_path / "rec" / "part.flv"
    path.write_bytes(data)
    agent = Agent(settings(address, storage_type="local", local_roots=(str(tmp_path / "rec"),)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        caps = session.hello.capabilities
        assert caps.storage_type == "local" and list(caps.local_paths) == [str(tmp_path / "rec")]
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("l", data, sim, file_path=str(path), await_proceed=True), data)
        await streamer.run_until(lambda: "l" in streamer.results)
        agent.stop()
    result = streamer.results["l"]
    assert result.success, result
    assert "l" in streamer.local
    assert result.md5 == hashlib.md5(data).hexdigest()  # the whole file's, as the hub requires
    kinds = streamer.kinds("l")
    assert "credit" not in kinds and "finishing" in kinds
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest() and upload["size"] == len(data)


@pytest.mark.anyio
@pytest.mark.parametrize("case", ["other-bytes", "no-md5", "outside-roots", "missing"])
async def test_local_agent_streams_when_its_copy_is_not_the_part(
    hub: tuple[FakeHub, str], sim: SimServer, tmp_path: Path, case: str
) -> None:
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(18).randbytes(MiB + 77)
    root = tmp_path / "rec"
    root.mkdir()
    path = root / "part.flv"
    path.write_bytes(bytes(len(data)) if case == "other-bytes" else data)
    if case == "outside-roots":
        (tmp_path / "elsewhere.flv").write_bytes(data)
        path = root / ".." / "elsewhere.flv"
    if case == "missing":
        path = root / "gone.flv"
    agent = Agent(settings(address, storage_type="hybrid", local_roots=(str(root),)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        streamer = Streamer(session, budget=4 * MiB)
        o = offer("s", data, sim, file_path=str(path))
        if case == "no-md5":
            o.file_md5 = ""  # a first attempt: the hub does not know the MD5 yet
        streamer.offer(o, data)
        await streamer.run_until(lambda: "s" in streamer.results)
        agent.stop()
    assert streamer.results["s"].success, streamer.results["s"]
    assert "s" not in streamer.local and "credit" in streamer.kinds("s")
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest()


@pytest.mark.anyio
@pytest.mark.parametrize("crc32", [False, True], ids=["md5", "crc32"])
async def test_a_held_attempt_survives_a_lost_stream_and_finishes_on_the_next(
    hub: tuple[FakeHub, str], sim: SimServer, crc32: bool
) -> None:
    """With ``held_grace`` the attempt outlives its stream; the next Hello lists it
    with the first byte it lacks, the new stream carries the rest (checked by its own
    checksum, of the tail) and the same attempt completes once. A held task the hub no
    longer leases is stopped by its Cancel."""
    servicer, address = hub
    sim.config(chunk_size=1 * MiB)
    data = random.Random(21).randbytes(3 * MiB + 77)
    other = random.Random(22).randbytes(3 * MiB)
    agent = Agent(settings(address, held_grace=10.0, crc32_integrity=crc32),
                  backoff=Backoff(0.05, 0.2, random.Random(5)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        first = Streamer(session, budget=4 * MiB)
        first.stop_at["h"] = MiB + 4321  # the link dies mid-file
        first.stop_at["x"] = 1000
        first.offer(offer("h", data, sim, await_proceed=True, crc32_integrity=crc32), data)
        first.offer(offer("x", other, sim, await_proceed=True, crc32_integrity=crc32), other)
        await first.run_until(lambda: first.pos.get("h") == MiB + 4321
                              and first.pos.get("x") == 1000)
        session.end()
        second = await asyncio.wait_for(servicer.sessions.get(), 10)
        held = {t.task_id: t for t in second.hello.held_tasks}
        assert set(held) == {"h", "x"}
        assert (held["h"].attempt, held["h"].committed_bytes) == (1, MiB + 4321)
        second.send(cancel=pb.Cancel(task_id="x", attempt=1, reason="lease ended"))
        streamer = Streamer(second, budget=4 * MiB)
        streamer.files["h"] = data
        streamer.attempts["h"] = 1
        if crc32:
            streamer.crc_tasks.add("h")
        # The hub's side of a re-attach: stream from the agent's offset, as after an Accept.
        streamer.handle(pb.AgentMessage(accept=pb.Accept(task_id="h", attempt=1,
                                                         resume_offset=MiB + 4321)))
        # "x" may grant credit before it reads the Cancel (a real hub ignores it): none sent.
        streamer.files["x"], streamer.attempts["x"], streamer.stop_at["x"] = other, 1, 1000
        streamer.handle(pb.AgentMessage(accept=pb.Accept(task_id="x", attempt=1,
                                                         resume_offset=1000)))
        await streamer.run_until(lambda: {"h", "x"} <= set(streamer.results))
        agent.stop()
    assert streamer.results["x"].error_kind == "cancelled"
    result = streamer.results["h"]
    assert result.success, result
    tail = data[MiB + 4321 :]
    if crc32:
        assert result.crc32 == zlib.crc32(tail)
    else:
        assert result.md5 == hashlib.md5(tail).hexdigest()  # what the new stream vouched for
    assert [f.attempt for f in streamer.finishings] == [1]  # the handshake on the new stream
    (upload,) = sim.uploads()
    assert upload["md5"] == hashlib.md5(data).hexdigest() and upload["size"] == len(data)
    assert len(completes(sim)) == 1
