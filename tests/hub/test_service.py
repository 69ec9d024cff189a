"""HubService beyond the stream: restarts, manual assignment, HTTP alternatives, inputs."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from hub.core.errors import BadRequest, Conflict, NotFound
from hub.core.reports import HeartbeatReport, ProgressReport
from protocol import mesh_pb2 as pb
from tests.support.hub import (
    MiB,
    _is,
    _status,
    anyio_backend,
    make_hub,
    stream_all,
    wait_for,
)

__all__ = ["anyio_backend"]  # asyncio only: grpc.aio


@pytest.mark.anyio
async def test_hub_restart_keeps_resume_point_and_reoffers(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        agent = await hub.agent("a1")
        path, _ = hub.file("big.bin", 2 * MiB)
        created = await hub.service.create_part(path, account=None, title=None)
        offer = await agent.recv("offer")
        await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
        await agent.send(committed=pb.Committed(task_id=offer.task_id, attempt=1, offset=MiB,
                                                session=b'{"auth": "s"}'))
        await wait_for(lambda: hub.service.tasks[offer.task_id].committed_offset == MiB)
    async with make_hub(tmp_path) as hub:  # same data dir: a restarted hub
        task = await hub.service.get_task(created["task_id"])
        assert task["status"] == "pending" and task["attempt"] == 1
        agent = await hub.agent("a1", held=[pb.HeldTask(task_id=offer.task_id, attempt=1)])
        seen = {}
        for _ in range(2):
            msg = await agent.recv()
            seen[msg.WhichOneof("kind")] = msg
        assert seen["cancel"].cancel.attempt == 1
        again = seen["offer"].offer
        assert (again.attempt, again.resume_offset, again.resume_session) == (
            2, MiB, b'{"auth": "s"}')
        messages = [e["message"] for e in await hub.service.task_logs(offer.task_id)]
        # Either the old hub saw the stream end while shutting down, or the new one voided
        # the lease on start: the lease ended once, with its resume point kept.
        assert "hub restarted" in messages or "agent lost: agent closed the stream" in messages


@pytest.mark.anyio
async def test_assign_task_pins_a_part_to_an_agent(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a1 = await hub.agent("a1")
        a2 = await hub.agent("a2")
        path, _ = hub.file("p.bin", 1000)
        created = await hub.service.create_part(path, account=None, title=None,
                                                auto_upload=False)
        assert created["task_id"] is None
        with pytest.raises(NotFound):
            await hub.service.assign_task(999, "a2")
        with pytest.raises(NotFound):
            await hub.service.assign_task(created["part_id"], "nobody")
        task_id = await hub.service.assign_task(created["part_id"], "a2")
        offer = await a2.recv("offer")
        assert offer.task_id == task_id
        with pytest.raises(Conflict):  # already leased
            await hub.service.assign_task(created["part_id"], "a1")
        a1.drop()
        await wait_for(lambda: _is(_agent(hub, "a1"), "offline"))
        path2, _ = hub.file("q.bin", 1000)
        other = await hub.service.create_part(path2, account=None, title=None,
                                              auto_upload=False)
        with pytest.raises(Conflict):
            await hub.service.assign_task(other["part_id"], "a1")


async def _agent(hub, agent_id: str) -> str:
    return {a["agent_id"]: a["status"] for a in await hub.service.list_agents()}[agent_id]


@pytest.mark.anyio
async def test_http_alternatives_only_touch_own_tasks(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a1 = await hub.agent("a1")
        await hub.agent("a2", max_concurrent=1)
        path, _ = hub.file("h.bin", 5000)
        await hub.service.create_part(path, account=None, title=None)
        # least loaded: both idle, a1 sorts first
        offer = await a1.recv("offer")
        await a1.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
        await wait_for(lambda: _is(_status(hub, offer.task_id), "uploading"))
        await hub.service.agent_heartbeat("a1", HeartbeatReport(status="online", memory_mb=77))
        assert hub.service.registry.get("a1").memory_mb == 77
        with pytest.raises(NotFound):
            await hub.service.agent_progress("a2", ProgressReport(offer.task_id, uploaded_bytes=1))
        await hub.service.agent_progress("a1", ProgressReport(offer.task_id, uploaded_bytes=2500,
                                                              speed_bps=100))
        task = await hub.service.get_task(offer.task_id)
        assert task["uploaded_bytes"] == 2500 and task["progress"] == 50.0
        # A field that is not a number never gets this far: tests/hub/api/test_bodies.py
        ips = {e["ip_address"]: e for e in await hub.service.list_ips()}
        assert ips["127.0.0.9"]["active_tasks"] == 1
        assert sorted(ips["127.0.0.9"]["agents"]) == ["a1", "a2"]


@pytest.mark.anyio
async def test_create_part_refuses_bad_input(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        with pytest.raises(NotFound):
            await hub.service.create_part(str(tmp_path / "missing.flv"), account=None,
                                          title=None)
        empty = tmp_path / "empty.flv"
        empty.write_bytes(b"")
        with pytest.raises(BadRequest):
            await hub.service.create_part(str(empty), account=None, title=None)
        with pytest.raises(BadRequest):
            await hub.service.create_part(str(tmp_path), account=None, title=None)
        path, _ = hub.file("ok.flv", 10)
        with pytest.raises(NotFound):
            await hub.service.create_part(path, account="nobody", title=None)
        assert await hub.service.list_tasks() == {"tasks": [], "next_cursor": None}


@pytest.mark.anyio
async def test_unreadable_source_fails_with_kind_file(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        agent = await hub.agent("a1")
        path, _ = hub.file("gone.bin", 3 * MiB)
        created = await hub.service.create_part(path, account=None, title=None)
        offer = await agent.recv("offer")
        Path(path).unlink()  # noqa: ASYNC240 - the recording vanished before streaming
        await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
        cancel = await agent.recv("cancel")
        assert cancel.task_id == offer.task_id and "read" in cancel.reason
        task = await hub.service.get_task(created["task_id"])
        assert task["status"] == "failed" and task["error_kind"] == "file"
        # A resumed attempt needs an MD5 pass; an unreadable file fails the part too.
        path2, _ = hub.file("gone2.bin", 3 * MiB)
        created2 = await hub.service.create_part(path2, account=None, title=None)
        offer2 = await agent.recv("offer")
        Path(path2).unlink()  # noqa: ASYNC240
        await agent.send(accept=pb.Accept(task_id=offer2.task_id, attempt=1,
                                          resume_offset=MiB))
        await wait_for(lambda: _part_state(hub, created2["part_id"], "failed"))
        with pytest.raises(Conflict):
            await hub.service.assign_task(created2["part_id"], "a1")


async def _part_state(hub, part_id: int, state: str) -> bool:
    return (await hub.service.store.get_part(part_id))["state"] == state


@pytest.mark.anyio
async def test_a_result_still_being_written_lands_before_the_store_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC's stop returns before the handlers it cancelled have finished. The hub stops
    as make_hub does: it waits for them, so a write that a busy machine had not yet run
    finds the store open, and no handler fails."""
    caplog.set_level(logging.WARNING)
    slow = False
    writing = anyio.Event()
    written = threading.Event()
    outcomes: list[str] = []
    real_run_sync = anyio.to_thread.run_sync

    async def run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        if not slow:
            return await real_run_sync(func, *args, **kwargs)

        def late() -> Any:  # the worker thread gets the CPU only as the hub stops
            time.sleep(0.5)
            try:
                result = func(*args)
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
                raise
            else:
                outcomes.append("written")
                return result
            finally:
                written.set()

        return await real_run_sync(late, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)
    async with make_hub(tmp_path) as hub:
        agent = await hub.agent("a1")
        path, _ = hub.file("p.bin", 1000)
        await hub.service.create_part(path, account=None, title=None)
        offer = await agent.recv("offer")
        _, md5 = await stream_all(agent, offer)
        save_ledger = hub.service.store.save_ledger_ips

        async def save_ledger_slowly(changes: dict[str, Any]) -> None:
            nonlocal slow
            slow = True
            writing.set()
            await save_ledger(changes)

        monkeypatch.setattr(hub.service.store, "save_ledger_ips", save_ledger_slowly)
        await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                          filename="n1", biz_id=1, md5=md5))
        await writing.wait()
    assert await real_run_sync(written.wait, 10)
    assert outcomes and set(outcomes) == {"written"}, outcomes
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.mark.anyio
async def test_a_handler_still_busy_as_the_server_stops_ends_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's handler still applying a Result, in a worker thread, when gRPC stops
    finishes applying it (gRPC's cancellation does not cut it short), then ends like any
    broken stream: no read of the stopped server, no servicer exception logged at error
    level."""
    caplog.set_level(logging.WARNING)
    busy = anyio.Event()
    returned = threading.Event()
    async with make_hub(tmp_path) as hub:
        agent = await hub.agent("a1")
        path, _ = hub.file("p.bin", 1000)
        await hub.service.create_part(path, account=None, title=None)
        offer = await agent.recv("offer")
        _, md5 = await stream_all(agent, offer)
        real_message = hub.service.sessions.message

        async def message_then_a_slow_thread(session: Any, kind: str, msg: Any) -> None:
            await real_message(session, kind, msg)
            if kind == "result":
                busy.set()
                await anyio.to_thread.run_sync(time.sleep, 0.5)
                returned.set()

        monkeypatch.setattr(hub.service.sessions, "message", message_then_a_slow_thread)
        await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                          filename="n1", biz_id=1, md5=md5))
        await busy.wait()
    assert returned.is_set()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
