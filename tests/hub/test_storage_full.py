"""A full data directory: SQLite's "disk is full" becomes StorageFull, running state waits
in the write-behind queue, the space alarm refuses new work (507) and clears by itself.

The in-process tests make a database "full" by failing every write at commit with the
error SQLite gives on ENOSPC (``DiskSwitch``); the real-process test on a small tmpfs is
tests/e2e/test_full_data_dir.py. SQLite's own page limit (``max_page_count``) gives a
genuine SQLITE_FULL for the translation test.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from hub.api.app import build_http_app
from hub.config import HubConfig, IngestSettings
from hub.core.errors import StorageFull
from hub.ingest.events import BREC, IngestEvent
from hub.ingest.service import IngestService
from hub.store.database import Database
from hub.store.recordings import RecordingStore
from hub.store.space import SpaceAlarm
from hub.store.tasks import Store
from hub.store.writebehind import WriteBehind
from hub.submission.manager import SubmissionManager
from protocol import mesh_pb2 as pb
from tests.support.hub import anyio_backend, make_hub, stream_all, wait_for

__all__ = ["anyio_backend"]  # asyncio only: grpc.aio

ADMIN = {"Authorization": "Bearer admin"}


class DiskSwitch:
    """Makes databases fail every write with SQLite's full-disk error while ``full``;
    reads pass. Installed on the instance, so only these databases see it."""

    def __init__(self, *dbs: Database) -> None:
        self.full = False
        for db in dbs:
            run = db._run

            def patched(fn: Any, run: Any = run) -> Any:
                return run(self._wrap(fn))

            db._run = patched  # type: ignore[method-assign]

    def _wrap(self, fn: Any) -> Any:
        def wrapped(conn: sqlite3.Connection) -> Any:
            result = fn(conn)
            if self.full and conn.in_transaction:
                raise sqlite3.OperationalError("database or disk is full")
            return result

        return wrapped


class Table(Database):
    SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT, v TEXT);"


# -- the database edge ------------------------------------------------------------------

@pytest.mark.anyio
async def test_sqlite_full_is_storage_full_naming_the_directory(tmp_path: Path) -> None:
    db = Table(tmp_path / "x.db")
    await db.open()
    seen: list[StorageFull] = []
    db.on_full = seen.append
    # SQLite's own page limit: a genuine SQLITE_FULL, as on a disk with no room.
    await db._run(lambda c: c.execute("PRAGMA max_page_count = 3"))
    with pytest.raises(StorageFull) as caught:
        await db._run(lambda c: c.executemany("INSERT INTO t VALUES (?, ?)",
                                              [("k", "v" * 4000)] * 50))
    assert str(tmp_path) in str(caught.value) and "bytes free" in str(caught.value)
    assert caught.value.free_bytes is not None and caught.value.free_bytes > 0
    assert seen == [caught.value]
    assert await db._run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
    db.close()


# -- the write-behind queue -------------------------------------------------------------

@pytest.mark.anyio
async def test_write_behind_keeps_order_per_key_and_coalesces_rows(tmp_path: Path) -> None:
    db = Table(tmp_path / "x.db")
    await db.open()
    disk = DiskSwitch(db)
    behind = WriteBehind(lambda fn: db._run(fn))

    def put(k: str, v: str) -> Any:
        return lambda c: c.execute("INSERT INTO t VALUES (?, ?)", (k, v))

    assert await behind.write("a", put("a", "1"))  # room: written at once
    disk.full = True
    assert not await behind.write("a", put("a", "2"))
    assert not await behind.write("a", put("a", "3"), snapshot=True)
    assert not await behind.write("a", put("a", "4"), snapshot=True)  # replaces "3"
    assert not await behind.write("b", put("b", "1"), snapshot=True)
    assert behind.waiting == 3
    assert not await behind.flush()  # still full: nothing lost, nothing written
    assert behind.waiting == 3
    disk.full = False
    # A later write of a waiting key joins its queue instead of overtaking it.
    assert not await behind.write("a", put("a", "5"))
    assert await behind.flush()
    assert behind.waiting == 0
    rows = await db._run(lambda c: c.execute("SELECT k, v FROM t ORDER BY rowid").fetchall())
    assert [tuple(r) for r in rows] == [("a", "1"), ("a", "2"), ("a", "4"), ("a", "5"),
                                        ("b", "1")]
    db.close()


@pytest.mark.anyio
async def test_batched_heartbeats_wait_for_space_and_never_overtake_a_waiting_write(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await store.open()
    for agent in ("a", "b"):
        await store.upsert_agent(agent, agent_name=agent, ip_address="", status="online",
                                 max_concurrent=2, bandwidth_mbps=0, storage_type="network",
                                 buffer_bytes=0, tags={})
    disk = DiskSwitch(store)
    disk.full = True
    await store.set_agent_status("b", "draining")  # waits in the write-behind queue
    store.note_heartbeat("a", "busy", last_heartbeat=50.0, tasks_completed=3)
    store.note_heartbeat("b", "busy", last_heartbeat=60.0, tasks_completed=1)
    assert await store.flush_heartbeats() == 0  # a's goes back to the queue, b's behind
    store.note_heartbeat("a", "online", last_heartbeat=70.0, tasks_completed=4)  # newer
    disk.full = False
    assert await store.write_behind.flush()
    assert await store.flush_heartbeats() == 1
    rows = {r["agent_id"]: r for r in await store.load_agents()}
    assert (rows["a"]["status"], rows["a"]["last_heartbeat"]) == ("online", 70.0)
    assert (rows["b"]["status"], rows["b"]["last_heartbeat"]) == ("busy", 60.0)
    store.close()


# -- the alarm --------------------------------------------------------------------------

@pytest.mark.anyio
async def test_alarm_clears_only_with_room_flushed_writes_and_a_probe(tmp_path: Path) -> None:
    db = Table(tmp_path / "x.db")
    await db.open()
    disk = DiskSwitch(db)
    db.write_behind = WriteBehind(lambda fn: db._run(fn))  # type: ignore[attr-defined]
    alarm = SpaceAlarm(tmp_path, resume_free_bytes=1 << 70, probe_interval=1, clock=lambda: 5.0)
    alarm.watch(db)
    cleared: list[bool] = []
    alarm.on_cleared(lambda: cleared.append(True))
    disk.full = True
    await db.write_behind.write("k", lambda c: c.execute("INSERT INTO t VALUES ('k', 'v')"))
    assert alarm.raised and alarm.since == 5.0 and alarm.waiting_writes == 1
    disk.full = False
    assert not await alarm.check()  # less free than resume_free_bytes: stays raised
    alarm.resume_free_bytes = 0
    disk.full = True
    assert not await alarm.check()  # the flush failed again: stays raised, write kept
    assert alarm.raised and alarm.waiting_writes == 1 and not cleared
    disk.full = False
    assert await alarm.check()
    assert not alarm.raised and cleared == [True] and alarm.waiting_writes == 0
    assert await db._run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 1
    assert alarm.trips == 1
    db.close()


# -- the hub ----------------------------------------------------------------------------

async def _status_on_disk(service: Any, task_id: str) -> str:
    return await service.store.run(lambda c: c.execute(
        "SELECT status FROM agent_tasks WHERE task_id=?", (task_id,)).fetchone()[0])


@pytest.mark.anyio
async def test_a_full_data_dir_keeps_agents_and_running_uploads(tmp_path: Path) -> None:
    """Heartbeats, resume points, the end of an upload: all written while the disk is full
    would have ended the stream (and the hub). Now the stream and the upload go on, new
    work is refused with 507, and once space returns the task's end is on disk, once."""
    async with make_hub(tmp_path) as hub:
        service = hub.service
        service.space.resume_free_bytes = 0
        disk = DiskSwitch(service.store)
        app = build_http_app(service, service.config)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://hub")
        a = await hub.agent("a", finish_handshake=True)
        path, _ = hub.file("x.bin", 3000)
        created = await service.create_part(path, account=None, title=None)
        offer = await a.recv("offer")
        disk.full = True
        data, md5 = await stream_all(a, offer)  # Accept's write waits; the stream goes on
        assert service.space.raised
        await a.send(heartbeat=pb.Heartbeat(status="busy", current_tasks=1))
        await a.send(committed=pb.Committed(task_id=offer.task_id, attempt=offer.attempt,
                                            offset=3000, session=b'{"p": 1}'))
        # The upload finishes: the completion grant waits for space, Proceed goes out.
        await a.send(finishing=pb.Finishing(task_id=offer.task_id, attempt=offer.attempt,
                                            offset=3000, session=b'{"p": 1}'))
        proceed = await a.recv("proceed")
        assert proceed.attempt == offer.attempt
        await a.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt,
                                      success=True, filename="x", biz_id=1, md5=md5))
        await wait_for(lambda: offer.task_id not in service.tasks)  # completed, in memory
        assert await _status_on_disk(service, offer.task_id) == "assigned"  # the Offer's
        shown = await client.get(f"/api/manage/tasks/{offer.task_id}", headers=ADMIN)
        assert shown.json()["data"]["status"] == "completed"  # reads show what waits
        other, _ = hub.file("y.bin", 100)
        refused = await client.post("/api/manage/parts", headers=ADMIN,
                                    json={"file_path": other})
        assert refused.status_code == 507
        assert str(tmp_path) in refused.json()["message"]
        assert refused.headers["retry-after"]
        assert (await client.get("/api/manage/tasks", headers=ADMIN)).status_code == 200
        state = (await client.get("/api/manage/storage", headers=ADMIN)).json()["data"]
        assert state["full"] and state["waiting_writes"] > 0
        assert (await client.post("/api/manage/parts", json={})).status_code == 401
        disk.full = False  # space returns: the alarm clears, what waited is written
        await service.space.check()
        assert not service.space.raised and service.space.waiting_writes == 0
        assert await _status_on_disk(service, offer.task_id) == "completed"
        assert not a.ended.is_set()  # the stream lived through it all
        logs = [row["event_type"] for row in await service.store.logs(offer.task_id)]
        assert logs.count("start") == 1 and logs.count("finishing") == 1
        assert logs.count("success") == 1
        part = await service.store.get_part(created["part_id"])
        assert part["state"] == "uploaded"
        assert (await client.post("/api/manage/parts", headers=ADMIN,
                                  json={"file_path": other})).status_code == 200
        await client.aclose()


# -- ingest and submission --------------------------------------------------------------

@pytest.mark.anyio
async def test_a_webhook_event_is_refused_whole_while_the_disk_is_full(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.flv").write_bytes(b"x")
    config = HubConfig(ingest=IngestSettings(bililive_recorder_work_dir=str(tmp_path / "rec")))
    alarm = SpaceAlarm(tmp_path, resume_free_bytes=0, probe_interval=1, clock=lambda: 0.0)
    created: list[str] = []

    class Hub:
        space = alarm

        async def create_part(self, path: str, **kw: Any) -> dict[str, Any]:
            created.append(path)
            return {"part_id": 1, "task_id": "t"}

    recordings = RecordingStore(tmp_path / "db")
    await recordings.open()
    ingest = IngestService(config, Hub(), recordings, clock=lambda: 0.0)
    event = IngestEvent("file_closed", BREC, "e1", "1", 0.0, session_key="s", path="a.flv")
    alarm.trip(StorageFull(str(tmp_path), 0))
    with pytest.raises(StorageFull, match=str(tmp_path)):
        await ingest.handle(event)
    assert created == [] and await recordings.list() == []  # nothing half written
    assert not await recordings.seen_event(BREC, "e1")  # the recorder's retry is welcome
    alarm.raised = False
    assert (await ingest.handle(event))["result"] == "imported"
    recordings.close()


@pytest.mark.anyio
async def test_a_submit_result_that_cannot_be_stored_is_applied_once_space_returns(
        tmp_path: Path) -> None:
    """The archive exists whether or not the hub can write it down: the answer is kept,
    and the recording ends submitted (not taken for lost and submitted again)."""
    async with make_hub(tmp_path) as running:
        service = running.service
        recordings = RecordingStore(service.store.db_path, clock=lambda: 100.0)
        await recordings.open()
        disk = DiskSwitch(recordings)
        rec = await recordings.get_or_create(source="watcher", session_key="k", room_id="1",
                                             started_at=0.0, info={})
        await recordings.update_submission(rec["id"], submit_state="submitting",
                                           submit_attempt=1, submit_id="sub-1",
                                           submit_agent="a", submit_sent_at=90.0)
        manager = SubmissionManager(service, recordings, clock=lambda: 100.0)
        session = type("Session", (), {"agent_id": "a"})()
        disk.full = True
        await manager.on_result(session, pb.SubmitResult(submit_id="sub-1", attempt=1,
                                                         success=True, aid=7, bvid="BV1"))
        assert (await recordings.get(rec["id"]))["submit_state"] == "submitting"
        disk.full = False
        await manager.tick()
        done = await recordings.get(rec["id"])
        assert (done["submit_state"], done["aid"], done["bvid"]) == ("submitted", 7, "BV1")
        recordings.close()
