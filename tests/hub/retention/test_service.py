"""RetentionService over real SQLite tables and real files, on a fake clock: each trigger,
each refusal recorded once in the audit log and the recording's history, the delay,
dry runs, identities taken by content, a journal finished after a restart, and nothing
done while the data directory is full."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash
from cryptography.fernet import Fernet

from hub.config import HubConfig
from hub.core.errors import StorageFull
from hub.core.file_identity import fingerprint_of
from hub.retention import executor as ex
from hub.retention.service import RetentionService
from hub.retention.store import RetentionStore
from hub.store.recordings import RecordingStore
from hub.store.space import SpaceAlarm
from hub.store.tasks import Store

pytestmark = pytest.mark.anyio
DAY = 86400.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Audit:
    events: list[dict[str, Any]] = field(default_factory=list)

    async def record_event(self, **event: Any) -> None:
        self.events.append(event)

    def outcomes(self) -> list[tuple[str, str]]:
        return [(e["action"], e["outcome"]) for e in self.events]


@dataclass
class Env:
    root: Path
    store: Store
    recordings: RecordingStore
    kept: RetentionStore
    clock: Clock
    audit: Audit
    space: SpaceAlarm

    def service(self, rooms: dict[str, Any], **retention: Any) -> RetentionService:
        config = msgspec.convert({
            "ingest": {"bililive_recorder_work_dir": str(self.root / "rec")},
            "retention": retention,
            "rooms": {room: {"retention": rule} for room, rule in rooms.items()},
        }, HubConfig)
        return RetentionService(config, self.recordings, self.kept, clock=self.clock,
                                audit=self.audit, space=self.space)

    async def recording(self, room: str, sizes: list[int], *, states: list[str] | None = None,
                        submitted: bool = True, review: str = "", fingerprint: bool = True,
                        in_archive: int | None = None) -> tuple[int, list[Path]]:
        """A recording of ``room`` whose files are uploaded (or ``states``), ended,
        submitted with every part (or the first ``in_archive``), reviewed ``review``."""
        rec = await self.recordings.get_or_create(
            source="bililive-recorder", session_key=f"s-{room}-{len(sizes)}-{os.urandom(4).hex()}",
            room_id=room, started_at=0.0, info={})
        paths, part_ids = [], []
        for n, size in enumerate(sizes):
            path = self.root / "rec" / f"{room}-主播" / f"{rec['id']}-{n}.flv"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = os.urandom(size)
            path.write_bytes(data)
            os.utime(path, ns=(10**18, 10**18))  # quiet for long: a stable identity
            part_id = await self.store.insert_part(file_path=str(path), size=size, md5="",
                                                   account=None, title=None)
            state = (states or [])[n] if states else "uploaded"
            await self.store.set_part_hash(
                part_id, digest=xxhash.xxh3_128(data).hexdigest(),
                fingerprint=fingerprint_of(path.stat()) if fingerprint else "", state=state)
            await self.recordings.add_part(rec["id"], part_id=part_id, path=str(path), size=size,
                                           started_at=float(n), ended_at=float(n))
            paths.append(path)
            part_ids.append(part_id)
        await self.recordings.end(rec["id"], 10.0)
        if submitted:
            listed = part_ids if in_archive is None else part_ids[:in_archive]
            await self.recordings.update_submission(rec["id"], submit_state="submitted", aid=7,
                                                    bvid="BV1", archived=listed)
        if review:
            await self.review(rec["id"], review)
        return rec["id"], paths

    async def review(self, recording_id: int, review: str, reason: str = "") -> None:
        """What the review poller writes when it read the archive's state."""
        await self.recordings.save_review(recording_id, aid=7, review=review, reason=reason,
                                          changed_at=self.clock.now, checked_at=self.clock.now)

    async def history(self, recording_id: int) -> list[str]:
        return [h["message"] for h in await self.recordings.history(recording_id)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    (tmp_path / "rec").mkdir()
    db = tmp_path / "data" / "bupmesh.db"
    clock = Clock()
    store = Store(db, Fernet(Fernet.generate_key()))
    await store.open()
    recordings = RecordingStore(db, clock=clock)
    await recordings.open()
    kept = RetentionStore(db, clock=clock)
    await kept.open()
    space = SpaceAlarm(tmp_path, resume_free_bytes=0, probe_interval=1, clock=clock)
    yield Env(tmp_path, store, recordings, kept, clock, Audit(), space)
    for db_ in (store, recordings, kept):
        db_.close()


async def test_uploaded_trigger_deletes_every_file_once_and_records_it(env: Env) -> None:
    service = env.service({"1": {"trigger": "uploaded"}})
    rec, paths = await env.recording("1", [100, 200], submitted=False)
    other, kept_paths = await env.recording("2", [50], submitted=False)  # room 2: never
    await service.tick()
    assert not any(p.exists() for p in paths) and kept_paths[0].exists()
    assert env.audit.outcomes() == [("delete", "ok"), ("delete", "ok")]
    assert {e["subject"] for e in env.audit.events} == {str(p) for p in paths}
    assert env.audit.events[0]["targets"]["recording_id"] == rec
    history = await env.history(rec)
    assert any("reached the retention trigger 'uploaded'" in h for h in history)
    assert sum(h.startswith("delete ") for h in history) == 2
    await service.tick()  # done is done
    assert len(env.audit.events) == 2
    view = await service.overview()
    assert view["totals"]["done"] == {"files": 2, "bytes": 300}
    assert view["rooms"]["1"]["trigger"] == "uploaded" and view["rule"]["trigger"] == "never"
    assert await env.history(other) == []


async def test_a_failed_or_cancelled_upload_never_triggers_and_is_recorded_once(
        env: Env) -> None:
    service = env.service({}, trigger="uploaded")
    rec, paths = await env.recording("1", [10, 10], states=["uploaded", "failed"])
    await service.tick()
    await service.tick()
    assert all(p.exists() for p in paths)
    assert env.audit.outcomes() == [("keep", "refused")]  # once, not every pass
    assert "failed" in env.audit.events[0]["targets"]["reason"]
    assert any("failed or was cancelled" in h for h in await env.history(rec))
    rec2, paths2 = await env.recording("1", [10], states=["cancelled"])
    await service.tick()
    assert paths2[0].exists() and env.audit.outcomes()[-1] == ("keep", "refused")


async def test_a_file_changed_after_upload_is_kept_and_flagged(env: Env) -> None:
    service = env.service({}, trigger="submitted")
    rec, paths = await env.recording("1", [100, 100])
    paths[1].write_bytes(paths[1].read_bytes() + b"appended after the upload")
    await service.tick()
    await service.tick()
    assert not paths[0].exists() and paths[1].exists()
    assert sorted(env.audit.outcomes()) == [("delete", "ok"), ("keep", "refused")]
    view = await service.overview()
    flagged = [f for f in view["files"] if f["state"] == "kept"]
    assert len(flagged) == 1 and "flagged" in flagged[0]["note"]
    assert service.pending_bytes["kept"] == 100


async def test_submitted_needs_the_archive_with_every_part(env: Env) -> None:
    service = env.service({}, trigger="submitted")
    _, waiting = await env.recording("1", [10], submitted=False)
    _, late = await env.recording("1", [10, 10], in_archive=1)  # a part to append
    _, failed = await env.recording("1", [10], submitted=False)
    await env.recordings.update_submission(
        (await env.recordings.list())[-1]["id"], submit_state="failed")
    await service.tick()
    assert all(p.exists() for p in [*waiting, *late, *failed])
    assert env.audit.outcomes() == [("keep", "refused")]  # only the failed submission
    assert "submission failed" in env.audit.events[0]["targets"]["reason"]
    assert service.pending_bytes["trigger"] == 40


async def test_a_part_kept_out_of_the_archive_is_a_refusal(env: Env) -> None:
    service = env.service({}, trigger="submitted")
    rec, paths = await env.recording("1", [10, 10], in_archive=1)
    await env.recordings._run(lambda c: c.execute(
        "UPDATE recording_parts SET archived=-1 WHERE recording_id=? AND archived=0", (rec,)))
    await service.tick()
    assert all(p.exists() for p in paths)
    assert env.audit.outcomes() == [("keep", "refused")]
    assert "kept out of the archive" in env.audit.events[0]["targets"]["reason"]


async def test_approved_waits_for_the_review_state_and_refuses_a_rejection(env: Env) -> None:
    service = env.service({}, trigger="approved")
    rec, paths = await env.recording("1", [10], review="pending")
    bad, bad_paths = await env.recording("1", [10])
    await env.review(bad, "rejected", "内容不符")
    await service.tick()
    assert paths[0].exists() and bad_paths[0].exists()
    assert env.audit.outcomes() == [("keep", "refused")]
    assert "内容不符" in env.audit.events[0]["targets"]["reason"]
    await env.review(rec, "approved")
    await service.tick()
    assert not paths[0].exists() and bad_paths[0].exists()
    assert env.audit.outcomes()[-1] == ("delete", "ok")


async def test_the_delay_runs_on_the_hub_clock_from_the_trigger(env: Env) -> None:
    service = env.service({}, trigger="uploaded", delay_days=2)
    _, paths = await env.recording("1", [10], submitted=False)
    await service.tick()
    assert paths[0].exists() and service.pending_bytes["delay"] == 10
    env.clock.now += 2 * DAY - 1
    await service.tick()
    assert paths[0].exists()
    env.clock.now += 1
    await service.tick()
    assert not paths[0].exists() and service.pending_bytes["delay"] == 0


async def test_a_move_keeps_the_folder_and_never_overwrites(env: Env) -> None:
    target = env.root / "archive"
    service = env.service({}, trigger="uploaded", action="move", move_to=str(target))
    _, paths = await env.recording("1", [10, 20], submitted=False)
    taken = target / paths[1].parent.name / paths[1].name
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"already here")
    data = paths[0].read_bytes()
    await service.tick()
    moved = target / paths[0].parent.name / paths[0].name
    assert moved.read_bytes() == data and not paths[0].exists()
    assert paths[1].exists() and taken.read_bytes() == b"already here"
    assert sorted(env.audit.outcomes()) == [("move", "ok"), ("move", "refused")]
    ok = next(e for e in env.audit.events if e["outcome"] == "ok")
    assert ok["targets"]["destination"] == str(moved)


async def test_dry_run_records_what_it_would_do_once_and_touches_nothing(env: Env) -> None:
    service = env.service({"1": {"trigger": "uploaded", "dry_run": True}})
    rec, paths = await env.recording("1", [10], submitted=False)
    await service.tick()
    await service.tick()
    assert paths[0].exists()
    assert env.audit.outcomes() == [("delete", "dry_run")]
    assert any(h.startswith("dry run: would delete") for h in await env.history(rec))


async def test_without_a_fingerprint_the_content_must_match_the_upload(env: Env) -> None:
    service = env.service({}, trigger="uploaded")
    _, same = await env.recording("1", [1000], submitted=False, fingerprint=False)
    _, other = await env.recording("1", [1000], submitted=False, fingerprint=False)
    other[0].write_bytes(os.urandom(1000))  # same size, other bytes than uploaded
    await service.tick()
    assert not same[0].exists() and other[0].exists()
    refused = [e for e in env.audit.events if e["outcome"] == "refused"]
    assert len(refused) == 1 and "differs" in refused[0]["targets"]["reason"]


async def test_a_move_a_stopped_hub_left_midway_is_finished_on_start(env: Env) -> None:
    target = env.root / "archive"
    service = env.service({}, trigger="uploaded", action="move", move_to=str(target))
    rec, paths = await env.recording("1", [10], submitted=False)
    await service.tick()
    assert not paths[0].exists()  # moved: now stage the same move cut short by a kill
    rec2, paths2 = await env.recording("1", [10], submitted=False)
    part_id = (await env.recordings.parts(rec2))[0]["part_id"]
    source = str(paths2[0])
    identity = ex.identity_of(source)
    assert identity is not None
    await env.kept.track(part_id, recording_id=rec2, room_id="1", path=source, size=10,
                         uploaded=identity)
    moved = target / paths2[0].parent.name / paths2[0].name
    dest = str(moved)
    await env.kept.begin(part_id, op="move", source=source, destination=dest,
                         temporary=ex.temporary_for(dest), size=10,
                         fingerprint=identity.fingerprint)
    ex.prepare(dest)
    assert ex.link(source, dest, identity)  # ... and the hub was killed here
    restarted = env.service({}, trigger="uploaded", action="move", move_to=str(target))
    await restarted.start()
    assert not paths2[0].exists() and moved.exists()
    assert await env.kept.journal() == []
    assert env.audit.outcomes()[-1] == ("move", "ok")
    assert "finished after a restart" in (await env.history(rec2))[0]


async def test_nothing_is_done_while_the_data_directory_is_full(env: Env) -> None:
    service = env.service({}, trigger="uploaded")
    _, paths = await env.recording("1", [10], submitted=False)
    env.space.trip(StorageFull(str(env.root), 0))
    await service.tick()
    assert paths[0].exists() and env.audit.events == []
    env.space.raised = False
    await service.tick()
    assert not paths[0].exists()
