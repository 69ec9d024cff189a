"""Retention and the hub's clock, for real: a simulator, a hub, an agent, BililiveRecorder
webhooks, and one room per policy (rooms.<id>.retention).

- uploaded + delete: the files go once every part is uploaded and the session ended;
- submitted + move (to a tmpfs when one can be mounted, so the move copies across
  filesystems): the files arrive byte-exact, never over an existing file;
- approved: nothing while the simulator keeps the archives in review; once it
  approves one, the hub's review poll reads it and its files go; a rejected archive
  keeps its files;
- dry run, a file changed after its upload, a failed upload: nothing is touched,
  each refusal is in the audit log and the recording's history;
- a delay: the action comes delay_days after the trigger;
- several recordings in a row under a policy: the recorder directory stays bounded;
- a recorder whose clock runs 10 hours ahead: submitted after seconds, not 10 hours;
- the disk guard: a recorder directory below retention.min_free_gb raises an alert.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, wait_for, write_random_file
from tests.e2e.test_ops import Webhook
from tests.e2e.test_web_ui import browser_page

__all__ = ["browser_page"]  # the real Chromium of the web UI's test

pytestmark = pytest.mark.e2e

KiB = 1024
SECRET = "retention-hook-0123"
DELAY_DAYS = 0.00005  # 4.32 s


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    work = tmp_path_factory.mktemp("retention")
    brec = work / "brec"
    brec.mkdir()
    moved = work / "moved"
    moved.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(moved)],
                             capture_output=True).returncode == 0
    # Big files are moved here across filesystems while the hub is killed.
    big = work / "big"
    big.mkdir()
    big_mounted = mounted and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(big)],
        capture_output=True).returncode == 0
    hook = Webhook()
    config = OPEN_RISK_YAML + f"""
ingest:
  bililive_recorder_work_dir: {brec}
  webhook_secret: {SECRET}
submission:
  auto_submit: true
  title_template: "${{title}}"
  settle_seconds: 1
  unknown_wait_seconds: 1
  agent_deadline_seconds: 6
  retry_seconds: 1
  review_poll_seconds: 0.5
retention:
  interval_seconds: 0.3
  min_free_gb: 1000000
alerts:
  webhook_url: "http://127.0.0.1:{hook.port}/hook"
  evaluate_interval_seconds: 0.3
  low_speed_bps: 0
rooms:
  "3001": {{retention: {{trigger: uploaded}}}}
  "3002": {{retention: {{trigger: submitted, action: move, move_to: {moved}}}}}
  "3003": {{retention: {{trigger: approved}}}}
  "3004": {{retention: {{trigger: uploaded, dry_run: true}}}}
  "3005": {{retention: {{trigger: uploaded}}}}
  "3006": {{retention: {{trigger: uploaded}}}}
  "3007": {{retention: {{trigger: submitted, delay_days: {DELAY_DAYS}}}}}
  "3008": {{retention: {{trigger: submitted}}}}
  "3009": {{retention: {{trigger: uploaded, action: move, move_to: {big}}}}}
"""
    try:
        with LocalMesh(work / "mesh") as local:
            local.start_sim()
            # Archives stay in review until a test decides (POST /_sim/archives/{aid}/review).
            local.sim("POST", "/_sim/config",
                      json={"archive": {"review": {"delay_seconds": 3600}}})
            local.start_hub(config_yaml=config)
            local.start_agent(1)
            local.wait_agents_online(1)
            local.add_account("main")
            local.brec = brec  # type: ignore[attr-defined]
            local.moved = moved  # type: ignore[attr-defined]
            local.moved_is_tmpfs = mounted  # type: ignore[attr-defined]
            local.big = big if big_mounted else None  # type: ignore[attr-defined]
            local.alerts = hook  # type: ignore[attr-defined]
            yield local
    finally:
        hook.close()
        for mount, done in ((moved, mounted), (big, big_mounted)):
            if done:
                subprocess.run(["umount", "-l", str(mount)], check=False)


# -- recorder ----------------------------------------------------------------------------

def event(kind: str, session: str, room: int, when: datetime, **data: Any) -> dict[str, Any]:
    return {
        "EventType": kind, "EventTimestamp": when.isoformat(), "EventId": str(uuid.uuid4()),
        "EventData": {"SessionId": session, "RoomId": room, "ShortId": 0, "Name": "主播",
                      "Title": f"room {room}", "AreaNameParent": "网游",
                      "AreaNameChild": "英雄联盟", **data},
    }


def send(mesh: LocalMesh, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{mesh.hub_url}/api/webhook/bililive-recorder", json=body,
                   params={"secret": SECRET}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


class Recording:
    """One live session of a room as BililiveRecorder reports it."""

    def __init__(self, mesh: LocalMesh, room: int, *, ahead: timedelta = timedelta(0)) -> None:
        self.mesh, self.room, self.session = mesh, room, str(uuid.uuid4())
        self.clock = datetime.now(UTC) + ahead
        self.folder = mesh.brec / f"{room}-主播"  # type: ignore[attr-defined]
        self.folder.mkdir(exist_ok=True)
        self.paths: list[Path] = []
        self.md5s: list[str] = []
        self.recording_id = 0
        send(mesh, event("SessionStarted", self.session, room, self.clock))

    def file(self, size: int = 300 * KiB) -> Path:
        n = len(self.paths)
        rel = f"{self.folder.name}/录制-{self.room}-{self.session[:8]}-{n}.flv"
        path = self.mesh.brec / rel  # type: ignore[attr-defined]
        self.md5s.append(write_random_file(path, size, seed=hash((self.session, n)) & 0xFFFF))
        self.paths.append(path)
        opened, closed = self.clock + timedelta(minutes=n), self.clock + timedelta(minutes=n + 1)
        answer = send(self.mesh, event("FileClosed", self.session, self.room, closed,
                                       RelativePath=rel, FileSize=size,
                                       FileOpenTime=opened.isoformat(),
                                       FileCloseTime=closed.isoformat()))
        assert answer["result"] == "imported", answer
        self.recording_id = answer["recording_id"]
        return path

    def end(self) -> None:
        send(self.mesh, event("SessionEnded", self.session, self.room,
                              self.clock + timedelta(minutes=len(self.paths) + 1)))

    def state(self) -> dict[str, Any]:
        recs = self.mesh.admin("GET", "/api/manage/recordings")["recordings"]
        return next(r for r in recs if r["recording_id"] == self.recording_id)

    def wait_state(self, state: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (r := self.state())["state"] == state and r, timeout,
                        f"recording {self.recording_id} {state}")

    def wait_uploaded(self, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (r := self.state()) and all(
            p["upload_state"] == "uploaded" for p in r["parts"]) and
            len(r["parts"]) == len(self.paths) and r, timeout, "every part uploaded")

    def history(self) -> list[dict[str, Any]]:
        return self.mesh.admin("GET", f"/api/manage/recordings/{self.recording_id}/history"
                               )["history"]


def retention_files(mesh: LocalMesh, recording_id: int) -> list[dict[str, Any]]:
    files = mesh.admin("GET", "/api/manage/retention")["files"]
    return [f for f in files if f["recording_id"] == recording_id]


def waiting_for(mesh: LocalMesh, recording_id: int) -> str | None:
    recs = mesh.admin("GET", "/api/manage/retention")["recordings"]
    return next((r["note"] for r in recs if r["recording_id"] == recording_id), None)


def audit(mesh: LocalMesh, recording_id: int) -> list[dict[str, Any]]:
    entries = mesh.admin("GET", "/api/manage/audit?limit=1000")["entries"]
    return [e for e in entries if e["actor"] == "retention"
            and str(e["targets"].get("recording_id")) == str(recording_id)]


def uploaded_md5s(mesh: LocalMesh) -> set[str]:
    return {u["md5"] for u in mesh.sim_uploads()}


def review(mesh: LocalMesh, aid: int, outcome: str, reason: str = "") -> None:
    """Bilibili decides on an archive (the simulator's review control)."""
    body = {"outcome": outcome, **({"reason": reason} if reason else {})}
    mesh.sim("POST", f"/_sim/archives/{aid}/review", json=body)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- the clock ---------------------------------------------------------------------------

def test_a_recorder_ten_hours_ahead_does_not_delay_submission(mesh: LocalMesh) -> None:
    rec = Recording(mesh, 3000, ahead=timedelta(hours=10))
    rec.file()
    rec.end()
    started = time.monotonic()
    done = rec.wait_state("submitted", timeout=90)
    assert time.monotonic() - started < 90
    assert done["ended_at"] > time.time() + 9 * 3600  # the recorder's times, 10 h ahead
    assert rec.paths[0].exists()  # room 3000 has no retention: nothing is touched


# -- triggers ----------------------------------------------------------------------------

def test_uploaded_deletes_the_files_once_every_part_is_up(mesh: LocalMesh) -> None:
    rec = Recording(mesh, 3001)
    rec.file()
    rec.file()
    rec.wait_uploaded()
    assert all(p.exists() for p in rec.paths)  # the live session has not ended
    rec.end()
    wait_for(lambda: not any(p.exists() for p in rec.paths), 60, "the files deleted")
    assert set(rec.md5s) <= uploaded_md5s(mesh)  # deleted only after Bilibili had them
    entries = audit(mesh, rec.recording_id)
    assert sorted((e["method"], e["outcome"]) for e in entries) == [("DELETE", "ok")] * 2
    assert {e["path"] for e in entries} == {str(p) for p in rec.paths}
    messages = [h["message"] for h in rec.history()]
    assert sum(m.startswith("delete ") for m in messages) == 2
    assert all(f["state"] == "done" for f in retention_files(mesh, rec.recording_id))


def test_submitted_moves_the_files_byte_exact_and_never_over_another(mesh: LocalMesh) -> None:
    moved: Path = mesh.moved  # type: ignore[attr-defined]
    rec = Recording(mesh, 3002)
    rec.file(600 * KiB)
    second = rec.file()
    occupied = moved / rec.folder.name / second.name
    occupied.parent.mkdir(parents=True, exist_ok=True)
    occupied.write_bytes(b"not the hub's")
    rec.end()
    rec.wait_state("submitted")
    target = moved / rec.folder.name / rec.paths[0].name
    wait_for(lambda: target.exists() and not rec.paths[0].exists(), 60, "the first file moved")
    assert md5_of(target) == rec.md5s[0]
    wait_for(lambda: any(e["outcome"] == "refused" for e in audit(mesh, rec.recording_id)),
             30, "the refused move")
    assert second.exists() and occupied.read_bytes() == b"not the hub's"
    assert not list(moved.rglob(".*bupmesh-move"))  # no temporary left behind
    outcomes = sorted((e["method"], e["outcome"]) for e in audit(mesh, rec.recording_id))
    assert outcomes == [("MOVE", "ok"), ("MOVE", "refused")]
    kept = [f for f in retention_files(mesh, rec.recording_id) if f["state"] == "kept"]
    assert len(kept) == 1 and "exists already" in kept[0]["note"]
    # Across filesystems when a tmpfs could be mounted: the copy path, journaled.
    if mesh.moved_is_tmpfs:  # type: ignore[attr-defined]
        assert target.stat().st_dev != rec.folder.stat().st_dev


def test_approved_waits_for_the_review_and_a_rejection_keeps_the_files(
        mesh: LocalMesh) -> None:
    good, bad = Recording(mesh, 3003), Recording(mesh, 3003)
    for rec in (good, bad):
        rec.file()
        rec.end()
    aids = {}
    for rec in (good, bad):
        aids[rec.recording_id] = rec.wait_state("submitted")["aid"]
    for rec in (good, bad):  # retention looked, and waits for the review
        wait_for(lambda rec=rec: waiting_for(mesh, rec.recording_id) ==
                 "the archive has not passed review yet", 30, "retention to wait for review")
    assert good.paths[0].exists() and bad.paths[0].exists()
    review(mesh, aids[bad.recording_id], "reject", "内容不符合要求")
    review(mesh, aids[good.recording_id], "approve")
    wait_for(lambda: not good.paths[0].exists(), 60, "the approved recording's file deleted")
    wait_for(lambda: audit(mesh, bad.recording_id), 30, "the rejection's refusal")
    assert bad.paths[0].exists()
    (refusal,) = audit(mesh, bad.recording_id)
    assert refusal["outcome"] == "refused" and "内容不符合要求" in refusal["targets"]["reason"]
    assert any("rejected in review" in h["message"] for h in bad.history())


def test_dry_run_changed_file_and_failed_upload_touch_nothing(mesh: LocalMesh) -> None:
    dry = Recording(mesh, 3004)
    dry.file()
    dry.end()
    wait_for(lambda: audit(mesh, dry.recording_id), 60, "the dry run's record")
    (entry,) = audit(mesh, dry.recording_id)
    assert (entry["method"], entry["outcome"]) == ("DELETE", "dry_run")
    assert dry.paths[0].exists() and md5_of(dry.paths[0]) == dry.md5s[0]

    changed = Recording(mesh, 3005)
    path = changed.file()
    changed.wait_uploaded()
    with open(path, "ab") as fh:  # the recorder (or a person) writes to it after the upload
        fh.write(b"appended later")
    changed.end()
    wait_for(lambda: audit(mesh, changed.recording_id), 60, "the changed file's refusal")
    (entry,) = audit(mesh, changed.recording_id)
    assert entry["outcome"] == "refused" and path.exists()
    assert "flagged" in entry["targets"]["reason"]

    failed = Recording(mesh, 3006)
    failed.file()
    failed.wait_uploaded()
    # The next upload is refused by Bilibili for good (HTTP 400 on preupload).
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "preupload", "status": 400, "count": 1}]}})
    failed.file()
    failed.end()
    wait_for(lambda: any(p["upload_state"] == "failed" for p in failed.state()["parts"]), 60,
             "the second upload failed")
    wait_for(lambda: audit(mesh, failed.recording_id), 60, "the failed upload's refusal")
    (entry,) = audit(mesh, failed.recording_id)
    assert entry["outcome"] == "refused" and "failed" in entry["targets"]["reason"]
    assert all(p.exists() for p in failed.paths)


def test_the_delay_runs_from_the_trigger(mesh: LocalMesh) -> None:
    rec = Recording(mesh, 3007)
    rec.file()
    rec.end()
    rec.wait_state("submitted")
    wait_for(lambda: not rec.paths[0].exists(), 60, "the file deleted after the delay")
    deleted = next(h["at"] for h in rec.history() if h["message"].startswith("delete "))
    recs = mesh.admin("GET", "/api/manage/retention")["recordings"]
    reached = next(r["reached_at"] for r in recs if r["recording_id"] == rec.recording_id)
    assert deleted - reached >= DELAY_DAYS * 86400


def test_the_recorder_directory_stays_bounded_over_several_recordings(
        mesh: LocalMesh) -> None:
    folder_bytes: list[int] = []
    size = 400 * KiB
    for _ in range(4):
        rec = Recording(mesh, 3008)
        rec.file(size)
        rec.file(size)
        rec.end()
        folder_bytes.append(sum(p.stat().st_size for p in rec.folder.glob("*.flv")))
        rec.wait_state("submitted")
        wait_for(lambda rec=rec: not any(p.exists() for p in rec.paths), 60,
                 "the recording's files deleted")
        assert set(rec.md5s) <= uploaded_md5s(mesh)
    # Each recording found only itself in the folder: 4 recordings, never more than one.
    assert folder_bytes == [2 * size] * 4
    assert not list(rec.folder.glob("*.flv"))


def test_the_disk_guard_alerts_below_min_free(mesh: LocalMesh) -> None:
    hook = mesh.alerts  # type: ignore[attr-defined]
    key = f"disk_low:{mesh.brec}"  # type: ignore[attr-defined]
    firing = wait_for(lambda: hook.find(key, "firing"), 30, "the disk_low alert")
    assert firing["severity"] == "warning" and firing["details"]["free_bytes"] > 0
    metrics = httpx.get(f"{mesh.hub_url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {mesh.admin_token}"}).text
    assert "bupmesh_recorder_disk_free_bytes{" in metrics
    assert 'bupmesh_retention_waiting_bytes{stage="kept"}' in metrics
    assert 'bupmesh_retention_actions_total{action="delete",outcome="ok"}' in metrics


def test_the_page_shows_retention_actions(mesh: LocalMesh, browser_page: object) -> None:
    from playwright.sync_api import Page, expect

    rec = Recording(mesh, 3001)
    path = rec.file()
    rec.end()
    wait_for(lambda: not path.exists(), 60, "the file deleted")
    page: Page = browser_page  # type: ignore[assignment]
    page.goto(mesh.hub_url + "/")
    page.fill("#token", mesh.admin_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    row = page.locator("#retention-body tr", has_text=path.name)
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("done")
    expect(row).to_contain_text("deleted")
    expect(page.locator("#retention-summary")).to_contain_text("room rule(s)")
    expect(page.locator("#retention-disks")).to_contain_text(str(mesh.brec))  # type: ignore[attr-defined]
    expect(page.locator("#storage-alarm")).to_be_hidden()


def journal(mesh: LocalMesh) -> list[tuple[int, str]]:
    db = sqlite3.connect(mesh.workdir / "hub-data" / "bupmesh.db", timeout=30)
    try:
        return db.execute("SELECT part_id, phase FROM retention_journal").fetchall()
    except sqlite3.OperationalError:  # a write lock at that moment: look again
        return []
    finally:
        db.close()


def test_a_hub_killed_mid_move_leaves_the_file_in_place_or_moved(mesh: LocalMesh) -> None:
    """SIGKILL while a move copies a 48 MiB file across filesystems (the journal row is
    there before and after the kill: the kill landed mid-action). On disk the file is in
    place or moved, never lost; the restarted hub finishes the move, once."""
    big: Path | None = mesh.big  # type: ignore[attr-defined]
    if big is None:
        pytest.skip("no tmpfs to move to: a move within one filesystem is a single link")
    hub = [p for p in mesh.processes if p.name == "hub"][-1]
    for _attempt in range(6):
        rec = Recording(mesh, 3009)
        path = rec.file(48 * 1024 * KiB)
        dest = big / rec.folder.name / path.name
        rec.end()
        caught = wait_for(lambda p=path: journal(mesh) or (not p.exists() and "moved"), 120,
                          "the move to start", interval=0.002)
        if caught == "moved":
            continue  # the whole move fell between two looks: another recording
        hub.kill()
        if not journal(mesh):
            mesh.restart_hub()  # finished just before the kill: try again
            hub = [p for p in mesh.processes if p.name == "hub"][-1]
            mesh.wait_agents_online(1)
            continue
        # Killed mid-action: the bytes are in one piece somewhere.
        here = path.exists() and md5_of(path) == rec.md5s[0]
        there = dest.exists() and md5_of(dest) == rec.md5s[0]
        assert here or there
        mesh.restart_hub()
        mesh.wait_agents_online(1)
        wait_for(lambda p=path, d=dest: not p.exists() and d.exists() and not journal(mesh), 60,
                 "the move finished after the restart")
        assert md5_of(dest) == rec.md5s[0]
        assert not list(big.rglob(".*bupmesh-move"))
        entries = audit(mesh, rec.recording_id)
        assert [(e["method"], e["outcome"]) for e in entries if e["outcome"] == "ok"] == \
            [("MOVE", "ok")]
        return
    pytest.fail("six tries, and the kill never landed while a move was running")
