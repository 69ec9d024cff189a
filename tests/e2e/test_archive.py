"""End to end: an archive's life past its submission (real sim, hub and agents).

Recorder webhooks bring recordings in; what reaches the simulator's ledger is
checked there: a cover uploaded from an agent's IP with the scheduled time, the
switches and the collection the room asks for, and the recorder's live cover;
a recording longer than Bilibili takes in one request, submitted as one archive
in batches that fit the simulator's limit; a late part appended exactly once
although the hub is SIGKILLed while the edit is in flight; a lost submission
found again when the archive list carries no part lists; and a rejected review
that the hub reads, shows and alerts on, until an appeal clears it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, wait_for, write_random_file
from tests.support.browser import open_page

pytestmark = pytest.mark.e2e

KiB = 1024
SECRET = "archive-hook-secret"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) * 4
DELAY = 3 * 3600  # rooms.7001.publish_delay_seconds


class AlertSink:
    """A loopback webhook receiver for the hub's alerts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                sink.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [a for a in self.received if a["alert"] == kind]


@pytest.fixture(scope="module")
def alerts() -> Iterator[AlertSink]:
    sink = AlertSink()
    yield sink
    sink.server.shutdown()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, alerts: AlertSink) -> Iterator[LocalMesh]:
    work = tmp_path_factory.mktemp("archive")
    (work / "brec").mkdir()
    cover = work / "cover.png"
    cover.write_bytes(PNG)
    with LocalMesh(work / "mesh") as local:
        local.start_sim()
        season = local.sim("POST", "/_sim/seasons", json={"title": "录播合集"})["season"]
        config = OPEN_RISK_YAML + f"""
ingest:
  bililive_recorder_work_dir: {work / 'brec'}
  webhook_secret: {SECRET}
submission:
  auto_submit: true
  settle_seconds: 0.3
  unknown_wait_seconds: 1
  agent_deadline_seconds: 6
  retry_seconds: 1
  review_poll_seconds: 0.5
alerts:
  webhook_url: {alerts.url}
  evaluate_interval_seconds: 0.3
rooms:
  "7001":
    cover: {cover}
    publish_delay_seconds: {DELAY}
    season_id: {season['season_id']}
    dynamic_template: "${{uname}} 的直播录像"
    no_reprint: true
    is_only_self: true
    up_close_reply: true
    up_close_danmu: true
  "7002":
    cover: live
"""
        local.start_sim_season = season  # type: ignore[attr-defined]
        local.start_hub(config_yaml=config)
        local.start_agent(1)
        local.start_agent(2)
        local.wait_agents_online(2)
        local.add_account("main")
        local.dirs = work  # type: ignore[attr-defined]
        yield local


# -- helpers ---------------------------------------------------------------------------------

def hook(mesh: LocalMesh, body: dict) -> dict:
    answer = httpx.post(f"{mesh.hub_url}/api/webhook/bililive-recorder", json=body,
                        params={"secret": SECRET}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def brec_event(kind: str, session: str, room: int, **data: object) -> dict:
    return {
        "EventType": kind, "EventTimestamp": "2026-12-01T20:00:00+08:00",
        "EventId": str(uuid.uuid4()),
        "EventData": {"SessionId": session, "RoomId": room, "Name": "主播", "Title": "今晚",
                      "AreaNameParent": "网游", "AreaNameChild": "英雄联盟", **data},
    }


def file_closed(mesh: LocalMesh, session: str, room: int, name: str, size: int, seed: int,
                minute: int = 0) -> tuple[dict, str]:
    root: Path = mesh.dirs / "brec"  # type: ignore[attr-defined]
    md5 = write_random_file(root / name, size, seed=seed)
    stamp = f"2026-12-01T{20 + minute // 60:02d}:{minute % 60:02d}:00+08:00"
    return hook(mesh, brec_event("FileClosed", session, room, RelativePath=name, FileSize=size,
                                 FileOpenTime=stamp)), md5


def session_of(mesh: LocalMesh, room: int, count: int, *, size: int = 64 * KiB, seed: int = 0,
               end: bool = True) -> tuple[str, int, list[str]]:
    """A BililiveRecorder session of ``count`` files; -> (session id, recording id, md5s)."""
    session = str(uuid.uuid4())
    hook(mesh, brec_event("SessionStarted", session, room))
    md5s, rec_id = [], 0
    for n in range(count):
        data, md5 = file_closed(mesh, session, room, f"{room}-{session[:8]}-{n:03d}.flv",
                                size + n, seed + n, minute=n)
        rec_id = data["recording_id"]
        md5s.append(md5)
    if end:
        hook(mesh, brec_event("SessionEnded", session, room))
    return session, rec_id, md5s


def recording(mesh: LocalMesh, recording_id: int) -> dict:
    recs = mesh.admin("GET", "/api/manage/recordings")["recordings"]
    return next(r for r in recs if r["recording_id"] == recording_id)


def settled(mesh: LocalMesh, recording_id: int, timeout: float = 90) -> dict:
    """Submitted, with every part in the archive and nothing left to send."""
    def done() -> dict | None:
        r = recording(mesh, recording_id)
        return r if r["state"] == "submitted" and all(p["archived"] == 1 for p in r["parts"]) \
            and r["season"]["state"] != "pending" else None

    return wait_for(done, timeout, f"recording {recording_id} settled")


def archive(mesh: LocalMesh, aid: int) -> dict:
    return next(a for a in mesh.sim("GET", "/_sim/archives")["archives"] if a["aid"] == aid)


def sim_ops(mesh: LocalMesh, op: str) -> list[dict]:
    return mesh.sim("GET", f"/_sim/requests?op={op}")["requests"]


def uploads_by_name(mesh: LocalMesh) -> dict[str, dict]:
    return {u["filename"]: u for u in mesh.sim_uploads()}


def hub_process(mesh: LocalMesh):  # the newest hub process
    return [p for p in mesh.processes if p.name == "hub"][-1]


def kill_hub_and_restart_after(mesh: LocalMesh, landed: Any, what: str) -> None:
    hub_process(mesh).kill()
    wait_for(landed, 30, what)
    mesh.restart_hub()


# -- tests -----------------------------------------------------------------------------------

def test_cover_schedule_switches_and_collection_reach_the_simulator(mesh: LocalMesh) -> None:
    season = mesh.start_sim_season  # type: ignore[attr-defined]
    before = time.time()
    _, rec_id, md5s = session_of(mesh, 7001, 2, seed=100)
    rec = settled(mesh, rec_id)
    got = archive(mesh, rec["aid"])
    names = [p["filename"] for p in rec["parts"]]
    assert [v["filename"] for v in got["videos"]] == names
    uploads = uploads_by_name(mesh)
    assert [uploads[n]["md5"] for n in names] == md5s
    # The cover: our bytes, uploaded from an agent's IP, named by the archive.
    [cover] = [c for c in mesh.sim("GET", "/_sim/covers")["covers"]
               if c["md5"] == hashlib.md5(PNG).hexdigest()]
    assert got["cover"] == cover["url"] and cover["source_ip"] in ("127.0.0.2", "127.0.0.3")
    # Scheduled publishing: the room's delay from the moment of submission.
    assert before + DELAY - 5 <= got["dtime"] <= time.time() + DELAY
    assert got["state"] == -40  # approved, waiting for its time: still pending for the hub
    assert (got["no_reprint"], got["is_only_self"]) == (1, 1)
    assert got["up_close_reply"] in (True, 1) and got["up_close_danmu"] in (True, 1)
    assert got["dynamic"] == "主播 的直播录像"
    # The collection, joined once after the archive existed.
    assert got["season"]["season_id"] == season["season_id"]
    assert got["season"]["section_id"] == season["sections"][0]["section_id"]
    assert rec["season"]["state"] == "added"
    [stored] = [s for s in mesh.sim("GET", "/_sim/seasons")["seasons"]
                if s["season_id"] == season["season_id"]]
    assert [e["aid"] for e in stored["sections"][0]["episodes"]] == [rec["aid"]]
    assert rec["archive_url"] == f"https://www.bilibili.com/video/{rec['bvid']}"
    scheduled = wait_for(lambda: (r := recording(mesh, rec_id))["review"]["state_code"] == -40
                         and r, 30, "the review read")
    assert scheduled["review"]["state"] == "pending"


def test_the_recorders_live_cover_goes_with_the_archive(mesh: LocalMesh) -> None:
    root: Path = mesh.dirs / "brec"  # type: ignore[attr-defined]
    session = str(uuid.uuid4())
    name = f"7002-{session[:8]}-000.flv"
    # BililiveRecorder's "save stream cover": <file>.cover.jpg beside the recording.
    (root / name).with_suffix(".cover.jpg").write_bytes(JPEG)
    hook(mesh, brec_event("SessionStarted", session, 7002))
    data, _ = file_closed(mesh, session, 7002, name, 40 * KiB, seed=150)
    hook(mesh, brec_event("SessionEnded", session, 7002))
    rec = settled(mesh, data["recording_id"])
    [cover] = [c for c in mesh.sim("GET", "/_sim/covers")["covers"]
               if c["md5"] == hashlib.md5(JPEG).hexdigest()]
    assert archive(mesh, rec["aid"])["cover"] == cover["url"]


def test_a_recording_longer_than_one_request_is_one_archive_in_batches(mesh: LocalMesh) -> None:
    """101 parts against a simulator that takes 60 per request: the first add (100) is
    refused with 21058, the hub halves its batch and submits 50, then appends 50 and 1."""
    mesh.sim("POST", "/_sim/config", json={"archive": {"max_parts": 60}})
    try:
        _, rec_id, md5s = session_of(mesh, 7003, 101, size=2 * KiB, seed=200)
        rec = settled(mesh, rec_id, timeout=240)
    finally:
        mesh.sim("POST", "/_sim/config", json={"archive": {"max_parts": 100}})
    names = [p["filename"] for p in rec["parts"]]
    assert len(names) == 101 == len(set(names))
    got = archive(mesh, rec["aid"])
    assert [v["filename"] for v in got["videos"]] == names
    assert [v["title"] for v in got["videos"]] == [f"P{n}" for n in range(1, 102)]
    uploads = uploads_by_name(mesh)
    assert [uploads[n]["md5"] for n in names] == md5s
    submits = [s for s in mesh.sim("GET", "/_sim/submissions")["submissions"]
               if {v["filename"] for v in s["videos"]} & set(names)]
    assert len(submits) == 1  # one archive
    assert [len(e["added"]) for e in got["edits"]] == [50, 1]
    refused = [r for r in sim_ops(mesh, "submit") if r.get("code") == 21058]
    assert len(refused) == 1


def test_a_late_part_is_appended_once_across_a_hub_kill(mesh: LocalMesh) -> None:
    session, rec_id, _ = session_of(mesh, 7004, 2, seed=300)
    rec = settled(mesh, rec_id)
    edits_before = len(sim_ops(mesh, "edit"))
    # The edit stalls in the simulator; the hub dies while it is in flight.
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "edit", "action": "stall", "seconds": 3.0, "count": 1}]}})
    file_closed(mesh, session, 7004, f"7004-{session[:8]}-late.flv", 70 * KiB, seed=310,
                minute=30)
    wait_for(lambda: (r := recording(mesh, rec_id))["state"] == "submitting"
             and r["operation"] == "append", 60, "the append sent")
    kill_hub_and_restart_after(
        mesh, lambda: len([r for r in sim_ops(mesh, "edit") if r["status"] == 200])
        > edits_before, "the stalled edit to land")
    rec = settled(mesh, rec_id)
    assert rec["submit_attempt"] >= 3  # add, the lost append, the append after the restart
    names = [p["filename"] for p in rec["parts"]]
    got = archive(mesh, rec["aid"])
    assert [v["filename"] for v in got["videos"]] == names and len(names) == 3
    assert [e["added"] for e in got["edits"]] == [[names[2]]]  # once, by the lost attempt
    assert len(sim_ops(mesh, "edit")) == edits_before + 1
    again = wait_for(lambda: (r := recording(mesh, rec_id))["review"]["state"] == "approved"
                     and r, 30, "the edited archive reviewed again")
    assert again["review"]["checked_at"] is not None


def test_a_lost_submission_is_found_when_the_list_carries_no_part_lists(
        mesh: LocalMesh) -> None:
    mesh.sim("POST", "/_sim/config", json={"archive": {"list_videos": False}, "faults": {
        "fail_next": [{"op": "submit", "action": "stall", "seconds": 3.0, "count": 1}]}})
    try:
        views_before = len(sim_ops(mesh, "view"))
        submits_before = len([r for r in sim_ops(mesh, "submit") if r["status"] == 200])
        _, rec_id, md5s = session_of(mesh, 7005, 3, seed=400)
        wait_for(lambda: recording(mesh, rec_id)["state"] == "submitting", 60, "Submit sent")
        kill_hub_and_restart_after(
            mesh, lambda: len([r for r in sim_ops(mesh, "submit") if r["status"] == 200])
            > submits_before, "the stalled submission to land")
        rec = settled(mesh, rec_id)
    finally:
        mesh.sim("POST", "/_sim/config", json={"archive": {"list_videos": True}})
    assert rec["submit_attempt"] >= 2
    names = [p["filename"] for p in rec["parts"]]
    subs = [s for s in mesh.sim("GET", "/_sim/submissions")["submissions"]
            if {v["filename"] for v in s["videos"]} & set(names)]
    assert len(subs) == 1 and subs[0]["aid"] == rec["aid"]
    assert len(sim_ops(mesh, "view")) > views_before  # confirmed by the archive's view
    uploads = uploads_by_name(mesh)
    assert [uploads[n]["md5"] for n in names] == md5s


def test_a_rejected_review_is_shown_and_alerted_until_an_appeal_clears_it(
        mesh: LocalMesh, alerts: AlertSink) -> None:
    reason = "视频内容与标题不符"
    mesh.sim("POST", "/_sim/config", json={"archive": {"review": {
        "delay_seconds": 1.0, "outcome": "reject", "reason": reason}}})
    try:
        _, rec_id, _ = session_of(mesh, 7006, 1, seed=500)
        rec = settled(mesh, rec_id)
        rejected = wait_for(lambda: (r := recording(mesh, rec_id))["review"]["state"]
                            == "rejected" and r, 60, "the rejection read")
    finally:
        mesh.sim("POST", "/_sim/config", json={"archive": {"review": {
            "delay_seconds": 0, "outcome": "approve"}}})
    assert rejected["review"]["reason"] == reason
    firing = wait_for(lambda: [a for a in alerts.of("archive_rejected")
                               if a["state"] == "firing"
                               and a["details"]["recording_id"] == rec_id], 30,
                      "the rejection alert")
    assert len(firing) == 1
    alert = firing[0]
    assert (alert["details"]["aid"], alert["details"]["bvid"]) == (rec["aid"], rec["bvid"])
    for words in (f"recording {rec_id}", rec["bvid"], reason):
        assert words in alert["summary"]
    # An appeal succeeds on Bilibili: the next read clears the alert.
    mesh.sim("POST", f"/_sim/archives/{rec['aid']}/review", json={"outcome": "approve"})
    wait_for(lambda: recording(mesh, rec_id)["review"]["state"] == "approved", 30,
             "the approval read")
    wait_for(lambda: [a for a in alerts.of("archive_rejected") if a["state"] == "resolved"
                      and a["details"]["recording_id"] == rec_id], 30, "the alert resolved")
    assert len([a for a in alerts.of("archive_rejected") if a["state"] == "firing"
                and a["details"]["recording_id"] == rec_id]) == 1


def test_the_page_shows_each_archive_with_its_link_and_review(mesh: LocalMesh,
                                                              tmp_path: Path) -> None:
    """In a real browser (Debian's Chromium: tests/support/browser.py)."""
    from playwright.sync_api import Page, expect

    _, rec_id, _ = session_of(mesh, 7001, 1, seed=600)  # scheduled: pending, read again
    _, plain_id, _ = session_of(mesh, 7002, 1, seed=610)  # approved at once
    rec = settled(mesh, rec_id)
    reason = "封面不符合规范"
    mesh.sim("POST", f"/_sim/archives/{rec['aid']}/review",
             json={"outcome": "reject", "reason": reason})
    wait_for(lambda: recording(mesh, rec_id)["review"]["state"] == "rejected", 30,
             "the rejection read")
    wait_for(lambda: recording(mesh, plain_id)["review"]["state"] == "approved", 30,
             "the approval read")
    with open_page(tmp_path / "profile", "en-US") as opened:
        page: Page = opened  # type: ignore[assignment]
        page.goto(mesh.hub_url + "/")
        page.fill("#token", mesh.admin_token)
        page.click("#login-form button[type=submit]")
        cell = page.locator(f'#recordings-body tr[data-key="{rec_id}"] .col-archive')
        expect(cell.locator("a.archive-link")).to_have_text(rec["bvid"])
        expect(cell.locator("a.archive-link")).to_have_attribute("href", rec["archive_url"])
        expect(cell.locator(".archive-review")).to_have_text("rejected")
        expect(cell.locator(".archive-reason")).to_contain_text(reason)
        other = page.locator(
            f'#recordings-body tr[data-key="{plain_id}"] .col-archive')
        expect(other.locator(".archive-review")).to_have_text("approved")
