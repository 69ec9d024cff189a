"""IngestService over real SQLite tables, with a stand-in for the hub's create_part:
idempotency (event ids, path + size), grouping per source, and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.fernet import Fernet

from hub.config import HubConfig
from hub.ingest.events import BLREC, BREC, WATCHER, IngestEvent
from hub.ingest.service import IngestRefused, IngestService
from hub.store.recordings import RecordingStore
from hub.store.tasks import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeHub:
    """create_part as the hub does it, minus tasks: one row in ``parts``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.created: list[str] = []

    async def create_part(self, path: str, *, account: Any, title: Any) -> dict[str, Any]:
        self.created.append(path)
        part_id = await self.store.insert_part(file_path=path, size=Path(path).stat().st_size,  # noqa: ASYNC240 - test
                                               md5="", account=account, title=title)
        return {"part_id": part_id, "task_id": None}


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[IngestService, FakeHub, Path]]:
    for name in ("brec", "blrec"):
        (tmp_path / name).mkdir()
    config = msgspec.convert({
        "ingest": {"bililive_recorder_work_dir": str(tmp_path / "brec"),
                   "blrec_work_dir": str(tmp_path / "blrec"), "watch_session_gap_seconds": 60},
        "submission": {"account": "main"}, "rooms": {"9": {"account": "other"}},
    }, HubConfig)
    store = Store(tmp_path / "db.sqlite", Fernet(Fernet.generate_key()))
    await store.open()
    clock = Clock()
    recordings = RecordingStore(tmp_path / "db.sqlite", clock=clock)
    await recordings.open()
    hub = FakeHub(store)
    yield IngestService(config, hub, recordings, clock=clock), hub, tmp_path
    recordings.close()
    store.close()


def file_event(source: str, event_id: str, room: str, path: str, *, key: str | None = None,
               started: float = 0.0, ended: float = 0.0, size: int | None = None) -> IngestEvent:
    return IngestEvent("file_closed", source, event_id, room, ended or started, session_key=key,
                       path=path, size=size, file_started=started or None, file_ended=ended or None)


async def test_duplicates_by_event_id_and_by_file(env: Any) -> None:
    ingest, hub, root = env
    (root / "brec" / "a.flv").write_bytes(b"x" * 10)
    first = file_event(BREC, "e1", "9", "a.flv", key="bililive-recorder:s1", size=10)
    assert (await ingest.handle(first))["result"] == "imported"
    assert (await ingest.handle(first))["result"] == "duplicate"  # same delivery again
    fresh = file_event(BREC, "e2", "9", "a.flv", key="bililive-recorder:s1", size=10)
    assert (await ingest.handle(fresh))["result"] == "duplicate"  # same file, new id
    assert len(hub.created) == 1
    (rec,) = await ingest.recordings.list()
    assert rec["account"] == "other"  # the room's account


async def test_refusals_leave_the_event_retryable(env: Any) -> None:
    ingest, hub, root = env
    with pytest.raises(IngestRefused, match="outside"):
        await ingest.handle(file_event(BREC, "e1", "1", "../blrec/x.flv", key="k"))
    missing = file_event(BREC, "e2", "1", "later.flv", key="bililive-recorder:s2")
    with pytest.raises(FileNotFoundError):
        await ingest.handle(missing)
    (root / "brec" / "later.flv").write_bytes(b"y")
    assert (await ingest.handle(missing))["result"] == "imported"  # the retry works


async def test_blrec_live_began_starts_a_new_recording(env: Any) -> None:
    ingest, hub, root = env
    for name in ("1.flv", "2.flv"):
        (root / "blrec" / name).write_bytes(b"z")
    began = IngestEvent("session_start", BLREC, "b1", "5", 100.0, file_started=100.0,
                        info={"streamer": "u"})
    r1 = (await ingest.handle(began))["recording_id"]
    a = await ingest.handle(file_event(BLREC, "f1", "5", str(root / "blrec" / "1.flv"),
                                       ended=150.0))
    assert a["recording_id"] == r1
    again = IngestEvent("session_start", BLREC, "b2", "5", 200.0, file_started=200.0)
    r2 = (await ingest.handle(again))["recording_id"]
    b = await ingest.handle(file_event(BLREC, "f2", "5", str(root / "blrec" / "2.flv"),
                                       ended=250.0))
    assert r2 != r1 and b["recording_id"] == r2
    first = await ingest.recordings.get(r1)
    assert first["ended_at"] == 200.0 and first["streamer"] == "u"


async def test_watcher_splits_sessions_on_a_gap_and_ends_quiet_rooms(env: Any) -> None:
    ingest, hub, root = env
    paths = []
    for n in range(3):
        path = root / f"w{n}.flv"
        path.write_bytes(b"w" * (n + 1))
        paths.append(str(path))
    clock = ingest.clock
    clock.now = 1500
    one = await ingest.handle(file_event(WATCHER, "w0", "7", paths[0], started=1000, ended=1500))
    clock.now = 2000
    two = await ingest.handle(file_event(WATCHER, "w1", "7", paths[1], started=1501, ended=2000))
    clock.now = 2200
    three = await ingest.handle(file_event(WATCHER, "w2", "7", paths[2], started=2100,
                                           ended=2200))  # 100 s after: a new session
    assert one["recording_id"] == two["recording_id"] != three["recording_id"]
    assert (await ingest.recordings.get(one["recording_id"]))["ended_at"] == 2000
    await ingest.end_quiet_rooms(now=2250)
    assert (await ingest.recordings.get(three["recording_id"]))["ended_at"] is None
    await ingest.end_quiet_rooms(now=2261)
    assert (await ingest.recordings.get(three["recording_id"]))["ended_at"] == 2200
    parts = await ingest.recordings.parts(one["recording_id"])
    assert [p["path"] for p in parts] == paths[:2]


async def test_quiet_rooms_are_timed_by_the_hub_clock_not_the_file_times(env: Any) -> None:
    """Files stamped ten hours ahead (a recorder or file server whose clock runs fast) end
    their recording one session gap after the hub last imported one, not ten hours later."""
    ingest, hub, root = env
    path = root / "ahead.flv"
    path.write_bytes(b"a")
    ahead = 10 * 3600
    ingest.clock.now = 5000
    rec = await ingest.handle(file_event(WATCHER, "a0", "8", str(path), started=5000 + ahead,
                                         ended=5000 + ahead))
    await ingest.end_quiet_rooms(now=5059)
    assert (await ingest.recordings.get(rec["recording_id"]))["ended_at"] is None
    await ingest.end_quiet_rooms(now=5061)
    assert (await ingest.recordings.get(rec["recording_id"]))["ended_at"] == 5000 + ahead


async def test_late_files_are_appended_or_kept_out_and_blrec_covers_are_kept(
        env: Any) -> None:
    ingest, hub, root = env
    for name in ("a.flv", "late.flv", "late9.flv", "cover.jpg"):
        (root / "brec" / name).write_bytes(b"x")
    key = "bililive-recorder:s1"
    await ingest.handle(file_event(BREC, "e1", "5", "a.flv", key=key))
    (rec,) = await ingest.recordings.list()
    await ingest.recordings.update_submission(rec["id"], submit_state="submitted", aid=7)
    await ingest.handle(file_event(BREC, "e2", "5", "late.flv", key=key))
    assert [p["archived"] for p in await ingest.recordings.parts(rec["id"])] == [0, 0]
    # Room 9 keeps late parts out of its archive.
    ingest.config = msgspec.structs.replace(ingest.config, rooms={
        "9": msgspec.convert({"append_late_parts": False}, type(ingest.config.rooms["9"]))})
    other = "bililive-recorder:s9"
    (root / "brec" / "b9.flv").write_bytes(b"y")
    await ingest.handle(file_event(BREC, "e3", "9", "b9.flv", key=other))
    nine = next(r for r in await ingest.recordings.list() if r["room_id"] == "9")
    await ingest.recordings.update_submission(nine["id"], submit_state="submitted", aid=8)
    await ingest.handle(file_event(BREC, "e4", "9", "late9.flv", key=other))
    assert [p["archived"] for p in await ingest.recordings.parts(nine["id"])] == [0, -1]
    # blrec's downloaded live cover goes to the room's open recording.
    began = IngestEvent("session_start", BLREC, "b1", "6", 100.0, file_started=100.0)
    rid = (await ingest.handle(began))["recording_id"]
    (root / "blrec" / "c.jpg").write_bytes(b"\xff\xd8\xff")
    cover = IngestEvent("cover", BLREC, "c1", "6", 110.0, path=str(root / "blrec" / "c.jpg"))
    assert (await ingest.handle(cover)) == {"result": "noted", "recording_id": rid}
    assert (await ingest.recordings.get(rid))["live_cover"] == str(root / "blrec" / "c.jpg")
    outside = IngestEvent("cover", BLREC, "c2", "6", 111.0, path=str(root / "brec" / "a.flv"))
    with pytest.raises(IngestRefused, match="outside"):
        await ingest.handle(outside)


async def test_archive_of_reads_parts_and_review_for_retention(env: Any) -> None:
    ingest, hub, root = env
    store = ingest.recordings
    for name in ("a.flv", "b.flv"):
        (root / "brec" / name).write_bytes(b"x")
    key = "bililive-recorder:s1"
    await ingest.handle(file_event(BREC, "e1", "5", "a.flv", key=key))
    await ingest.handle(file_event(BREC, "e2", "5", "b.flv", key=key))
    (rec,) = await store.list()
    part_ids = [p["part_id"] for p in await store.parts(rec["id"])]
    assert await store.archive_of(999) is None
    before = await store.archive_of(rec["id"])
    assert (before.aid, before.complete, before.approved) == (None, False, False)
    await store.update_submission(rec["id"], archived=part_ids[:1], submit_state="submitted",
                                  aid=7, bvid="BV7")
    half = await store.archive_of(rec["id"])
    assert half.parts == {part_ids[0]: True, part_ids[1]: False} and not half.complete
    assert [r["id"] for r in await store.open_work()] == [rec["id"]]  # a part to append
    await store.update_submission(rec["id"], archived=part_ids[1:])
    assert await store.open_work() == []
    await store.save_review(rec["id"], aid=7, review="approved", changed_at=5.0,
                            checked_at=5.0)
    done = await store.archive_of(rec["id"])
    assert (done.complete, done.approved, done.review, done.reviewed_at) == \
        (True, True, "approved", 5.0)
    await store.save_review(rec["id"], review="rejected", reason="不行")
    assert [r["reason"] for r in await store.rejected()] == ["不行"]
    assert not (await store.archive_of(rec["id"])).approved
    await store.update_submission(rec["id"], season_state="pending")
    assert [r["id"] for r in await store.open_work()] == [rec["id"]]  # a collection to join


async def test_parts_from_before_archives_were_tracked_count_once_submitted(
        env: Any) -> None:
    ingest, hub, root = env
    store = ingest.recordings
    (root / "brec" / "old.flv").write_bytes(b"x")
    await ingest.handle(file_event(BREC, "e1", "5", "old.flv", key="bililive-recorder:s"))
    (rec,) = await store.list()
    await store._run(lambda c: c.execute("UPDATE recording_parts SET archived=NULL"))
    assert not (await store.archive_of(rec["id"])).complete
    await store.update_submission(rec["id"], submit_state="submitted", aid=3)
    assert (await store.archive_of(rec["id"])).complete
    assert await store.open_work() == []  # nothing appended to an old archive
