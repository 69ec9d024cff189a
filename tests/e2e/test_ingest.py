"""End to end: recorder events in, one archive out (real sim, hub and agents).

A BililiveRecorder session of three files, the same with blrec events and with
the folder watcher: three parts upload through the mesh and exactly one archive
lands in the simulator, listing the three server file names in order under the
rendered title. Replays change nothing; hub restarts before and during the
submission still end in exactly one archive.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from bupmesh.localmesh import (
    OPEN_RISK_YAML,
    LocalMesh,
    bupmesh_argv,
    wait_for,
    write_random_file,
)

pytestmark = pytest.mark.e2e

KiB = 1024
SECRET = "hook-secret-0123"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    work = tmp_path_factory.mktemp("ingest")
    for name in ("brec", "blrec", "watch"):
        (work / name).mkdir()
    config = OPEN_RISK_YAML + f"""
ingest:
  bililive_recorder_work_dir: {work / 'brec'}
  blrec_work_dir: {work / 'blrec'}
  watch_dirs: [{work / 'watch'}]
  webhook_secret: {SECRET}
  watch_interval_seconds: 0.3
  watch_stable_seconds: 0.6
  watch_session_gap_seconds: 2
submission:
  auto_submit: true
  title_template: "【${{uname}}】${{title}} ${{yyyy}}-${{MM}}-${{dd}}"
  part_title_template: "P${{index}}"
  tags: "直播录像,${{uname}}"
  settle_seconds: 0.3
  unknown_wait_seconds: 1
  agent_deadline_seconds: 6
  retry_seconds: 1
rooms:
  "4242":
    auto_submit: false
"""
    with LocalMesh(work / "mesh", media_roots=(str(work),)) as local:
        local.start_sim()
        local.start_hub(config_yaml=config)
        local.start_agent(1)
        local.start_agent(2)
        local.wait_agents_online(2)
        local.add_account("main")
        local.dirs = work  # type: ignore[attr-defined]
        yield local


def hub_process(mesh: LocalMesh):  # the newest hub process
    return [p for p in mesh.processes if p.name == "hub"][-1]


def hook(mesh: LocalMesh, kind: str, body: dict, *, secret: str | None = SECRET) -> httpx.Response:
    params = {"secret": secret} if secret is not None else {}
    return httpx.post(f"{mesh.hub_url}/api/webhook/{kind}", json=body, params=params, timeout=30)


def brec_event(kind: str, session: str, room: int, **data: object) -> dict:
    return {
        "EventType": kind, "EventTimestamp": "2026-11-29T20:00:00.4960899+08:00",
        "EventId": str(uuid.uuid4()),
        "EventData": {"SessionId": session, "RoomId": room, "ShortId": 0, "Name": "主播",
                      "Title": "今晚打游戏", "AreaNameParent": "网游", "AreaNameChild": "英雄联盟",
                      "Recording": True, "Streaming": True, **data},
    }


def submissions_for(mesh: LocalMesh, filenames: list[str]) -> list[dict]:
    subs = mesh.sim("GET", "/_sim/submissions")["submissions"]
    return [s for s in subs if {v["filename"] for v in s["videos"]} & set(filenames)]


def recording(mesh: LocalMesh, recording_id: int) -> dict:
    recs = mesh.admin("GET", "/api/manage/recordings")["recordings"]
    return next(r for r in recs if r["recording_id"] == recording_id)


def wait_submitted(mesh: LocalMesh, recording_id: int, timeout: float = 60) -> dict:
    return wait_for(lambda: (r := recording(mesh, recording_id))["state"] == "submitted" and r,
                    timeout, f"recording {recording_id} submitted")


def check_one_archive(mesh: LocalMesh, rec: dict, md5s: list[str]) -> dict:
    names = [p["filename"] for p in rec["parts"]]
    assert len(names) == 3 and all(names)
    uploads = {u["filename"]: u for u in mesh.sim_uploads()}
    assert [uploads[n]["md5"] for n in names] == md5s  # byte-exact, in recording order
    subs = submissions_for(mesh, names)
    assert len(subs) == 1, subs
    assert [v["filename"] for v in subs[0]["videos"]] == names
    assert [v["title"] for v in subs[0]["videos"]] == ["P1", "P2", "P3"]
    assert subs[0]["aid"] == rec["aid"] and subs[0]["bvid"] == rec["bvid"]
    assert subs[0]["source_ip"] in ("127.0.0.2", "127.0.0.3")  # from an agent, not the hub
    return subs[0]


def test_bililive_recorder_session_becomes_one_archive_and_replays_change_nothing(
        mesh: LocalMesh) -> None:
    root = mesh.dirs / "brec"  # type: ignore[attr-defined]
    session, room = str(uuid.uuid4()), 1001
    (root / "1001-主播").mkdir()
    events = [brec_event("SessionStarted", session, room)]
    md5s = []
    for n in range(3):
        rel = f"1001-主播/录制-1001-20261129-20000{n}-000-今晚打游戏.flv"
        md5s.append(write_random_file(root / rel, 300 * KiB + n, seed=n))
        events.append(brec_event("FileOpening", session, room, RelativePath=rel, FileSize=0))
        events.append(brec_event("FileClosed", session, room, RelativePath=rel,
                                 FileSize=300 * KiB + n, FileOpenTime=f"2026-11-29T20:0{n}:00+08:00",
                                 FileCloseTime=f"2026-11-29T20:0{n}:59+08:00"))
    events.append(brec_event("SessionEnded", session, room))
    answers = [hook(mesh, "bililive-recorder", e) for e in events]
    assert [a.status_code for a in answers] == [200] * len(events), [a.text for a in answers]
    imported = [a.json()["data"] for a in answers if a.json()["data"]["result"] == "imported"]
    assert len(imported) == 3
    rec = wait_submitted(mesh, imported[0]["recording_id"])
    sub = check_one_archive(mesh, rec, md5s)
    assert sub["title"] == "【主播】今晚打游戏 2026-11-29"
    assert sub["tag"] == "直播录像,主播"

    # Replays: the same deliveries, and the same files under fresh event ids.
    again = [hook(mesh, "bililive-recorder", e).json()["data"]["result"] for e in events]
    assert set(again) == {"duplicate"}
    fresh = [hook(mesh, "bililive-recorder", {**e, "EventId": str(uuid.uuid4())})
             .json()["data"]["result"] for e in events if e["EventType"] == "FileClosed"]
    assert fresh == ["duplicate"] * 3
    time.sleep(1.0)  # a submission tick or two: nothing may follow
    assert len(submissions_for(mesh, [p["filename"] for p in rec["parts"]])) == 1
    assert len(recording(mesh, rec["recording_id"])["parts"]) == 3


def test_webhook_refusals(mesh: LocalMesh) -> None:
    ok_body = brec_event("SessionStarted", str(uuid.uuid4()), 1002)
    assert hook(mesh, "bililive-recorder", ok_body, secret=None).status_code == 401
    assert hook(mesh, "bililive-recorder", ok_body, secret="wrong").status_code == 401
    bad = hook(mesh, "bililive-recorder", {"EventType": "FileClosed"})
    assert bad.status_code == 400 and "EventId" in bad.json()["message"]
    escape = brec_event("FileClosed", str(uuid.uuid4()), 1002, RelativePath="../blrec/x.flv",
                        FileSize=1)
    answer = hook(mesh, "bililive-recorder", escape)
    assert answer.status_code == 400 and "outside" in answer.json()["message"]
    not_json = httpx.post(f"{mesh.hub_url}/api/webhook/blrec", content=b"{", timeout=10,
                          params={"secret": SECRET})
    assert not_json.status_code == 400 and not_json.json()["code"] == 400
    log = hub_process(mesh).log_text()
    assert SECRET not in log and "sim-sessdata" not in log


def blrec_event(kind: str, data: dict) -> dict:
    return {"id": uuid.uuid4().hex, "date": "2026-11-29T21:00:00.123456+08:00", "type": kind,
            "data": data}


def test_blrec_events_become_one_archive(mesh: LocalMesh) -> None:
    root = mesh.dirs / "blrec"  # type: ignore[attr-defined]
    room_info = {"room_id": 2002, "title": "唱歌", "area_name": "唱见", "parent_area_name": "娱乐",
                 # 2026-11-29T21:00:00+08:00, the same day in any zone within ±3 h of UTC
                 "live_start_time": 1795957200}
    events = [blrec_event("LiveBeganEvent", {"user_info": {"name": "歌手"},
                                             "room_info": room_info})]
    md5s = []
    for n in range(3):
        path = root / f"blive_2002_2026-11-29-21000{n}.flv"
        md5s.append(write_random_file(path, 200 * KiB + n, seed=10 + n))
        events.append(blrec_event("VideoFileCreatedEvent", {"room_id": 2002, "path": str(path)}))
        events.append(blrec_event("VideoFileCompletedEvent", {"room_id": 2002, "path": str(path)}))
    events.append(blrec_event("LiveEndedEvent", {"user_info": {"name": "歌手"},
                                                 "room_info": room_info}))
    answers = [hook(mesh, "blrec", e).json()["data"] for e in events]
    imported = [a for a in answers if a["result"] == "imported"]
    assert len(imported) == 3 and len({a["recording_id"] for a in imported}) == 1
    rec = wait_submitted(mesh, imported[0]["recording_id"])
    sub = check_one_archive(mesh, rec, md5s)
    assert sub["title"] == "【歌手】唱歌 2026-11-29"
    assert {hook(mesh, "blrec", e).json()["data"]["result"] for e in events} == {"duplicate"}


def test_folder_watcher_groups_a_room_into_one_archive(mesh: LocalMesh) -> None:
    folder = mesh.dirs / "watch" / "3003-画师"  # type: ignore[attr-defined]
    folder.mkdir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md5s = [write_random_file(folder / f"录制-3003-{stamp}-00{n}-画画.flv", 100 * KiB + n,
                              seed=20 + n) for n in range(3)]
    (folder / "notes.txt").write_text("not a video")

    def mine() -> list[dict]:
        return [r for r in mesh.admin("GET", "/api/manage/recordings")["recordings"]
                if r["room_id"] == "3003"]

    recs = wait_for(lambda: (r := mine()) and r[0]["state"] == "submitted" and r, 60,
                    "watched room submitted")
    assert len(recs) == 1
    sub = check_one_archive(mesh, recs[0], md5s)
    assert sub["title"].startswith("【画师】画画 ")


def test_manual_submit_and_hub_restart_between_upload_and_submission(
        mesh: LocalMesh) -> None:
    """Room 4242 waits for an admin; the hub restarts while it waits, then submits once."""
    root = mesh.dirs / "brec"  # type: ignore[attr-defined]
    session, room = str(uuid.uuid4()), 4242
    md5s = []
    events = [brec_event("SessionStarted", session, room)]
    for n in range(3):
        rel = f"m-{n}.flv"
        md5s.append(write_random_file(root / rel, 150 * KiB + n, seed=30 + n))
        events.append(brec_event("FileClosed", session, room, RelativePath=rel,
                                 FileSize=150 * KiB + n,
                                 FileOpenTime=f"2026-11-29T22:0{n}:00+08:00"))
    events.append(brec_event("SessionEnded", session, room))
    answers = [hook(mesh, "bililive-recorder", e).json()["data"] for e in events]
    rec_id = answers[0]["recording_id"]
    wait_for(lambda: all(p["upload_state"] == "uploaded"
                         for p in recording(mesh, rec_id)["parts"]), 60, "uploads")
    time.sleep(1.0)
    assert recording(mesh, rec_id)["state"] == "waiting"  # auto_submit is off for this room
    # The agents go too, and come back after the hub: their reconnect backoff would
    # otherwise decide this test's duration. Only the hub's database carries over.
    for process in mesh.processes:
        if process.name.startswith("agent"):
            process.stop()
    hub_process(mesh).kill()
    mesh.restart_hub()
    mesh.start_agent(1)
    mesh.start_agent(2)
    data = mesh.admin("POST", f"/api/manage/recordings/{rec_id}/submit")
    assert data["state"] in ("waiting", "queued", "submitting")
    rec = wait_submitted(mesh, rec_id)
    check_one_archive(mesh, rec, md5s)
    with pytest.raises(Exception, match="409"):
        mesh.admin("POST", f"/api/manage/recordings/{rec_id}/submit")


def test_hub_killed_while_submit_in_flight_submits_once(mesh: LocalMesh) -> None:
    """Submit reaches the simulator, which answers slowly; the hub dies before the answer.
    After the restart the submission's outcome is unknown: the next attempt finds the
    archive and adopts it instead of submitting again."""
    root = mesh.dirs / "brec"  # type: ignore[attr-defined]
    session, room = str(uuid.uuid4()), 5005
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "submit", "action": "stall", "seconds": 2.0, "count": 1}]}})
    md5s = []
    events = [brec_event("SessionStarted", session, room)]
    for n in range(3):
        rel = f"inflight-{n}.flv"
        md5s.append(write_random_file(root / rel, 120 * KiB + n, seed=40 + n))
        events.append(brec_event("FileClosed", session, room, RelativePath=rel,
                                 FileSize=120 * KiB + n,
                                 FileOpenTime=f"2026-11-29T23:0{n}:00+08:00"))
    events.append(brec_event("SessionEnded", session, room))
    rec_id = [hook(mesh, "bililive-recorder", e).json()["data"] for e in events][0]["recording_id"]
    wait_for(lambda: recording(mesh, rec_id)["state"] == "submitting", 60, "Submit sent")
    hub_process(mesh).kill()
    # The stalled request lands in the simulator while the hub is down.
    wait_for(lambda: any(r["op"] == "submit" and r["status"] == 200
                         for r in mesh.sim("GET", "/_sim/requests?op=submit")["requests"]),
             30, "the stalled submit to land")
    mesh.restart_hub()
    rec = wait_submitted(mesh, rec_id)
    assert rec["submit_attempt"] >= 2  # the restart made the outcome unknown
    check_one_archive(mesh, rec, md5s)


def test_risk_control_on_submit_moves_it_to_another_ip(mesh: LocalMesh) -> None:
    """21540 ("投稿过快") on the first Submit: the recording is submitted from the other
    agent's IP, once. Last in the module: it leaves one IP cooling in the hub's ledger."""
    root = mesh.dirs / "brec"  # type: ignore[attr-defined]
    session, room = str(uuid.uuid4()), 6006
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "submit", "action": "code", "code": 21540, "count": 1}]}})
    md5s = []
    events = [brec_event("SessionStarted", session, room)]
    for n in range(3):
        rel = f"risk-{n}.flv"
        md5s.append(write_random_file(root / rel, 100 * KiB + n, seed=50 + n))
        events.append(brec_event("FileClosed", session, room, RelativePath=rel,
                                 FileSize=100 * KiB + n,
                                 FileOpenTime=f"2026-11-29T23:3{n}:00+08:00"))
    events.append(brec_event("SessionEnded", session, room))
    rec_id = [hook(mesh, "bililive-recorder", e).json()["data"] for e in events][0]["recording_id"]
    rec = wait_submitted(mesh, rec_id)
    sub = check_one_archive(mesh, rec, md5s)
    refused = [r for r in mesh.sim("GET", "/_sim/requests?op=submit")["requests"]
               if r.get("code") == 21540]
    assert len(refused) == 1
    assert sub["source_ip"] != refused[0]["ip"]
    assert rec["submit_attempt"] == 2


def test_no_secret_in_database_logs_or_recordings_api(mesh: LocalMesh) -> None:
    """After all of the above (uploads, submissions with credentials over the stream)."""
    secrets = [b"sim-sessdata", b"sim-csrf", SECRET.encode()]
    data_dir = mesh.workdir / "hub-data"
    for path in data_dir.glob("bupmesh.db*"):
        blob = path.read_bytes()
        assert not [s for s in secrets if s in blob], path
    for process in mesh.processes:
        text = process.log_path.read_bytes()  # also of processes already stopped
        assert not [s for s in secrets if s in text], process.name
    api = httpx.get(f"{mesh.hub_url}/api/manage/recordings", timeout=10,
                    headers={"Authorization": f"Bearer {mesh.admin_token}"})
    assert api.status_code == 200 and api.json()["data"]["recordings"]
    assert not [s for s in secrets if s in api.content]
    # The CLI lists the same recordings through the admin API.
    cli = subprocess.run(bupmesh_argv("recordings", "--hub", mesh.hub_url), capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "BUPMESH_ADMIN_TOKEN": mesh.admin_token})
    assert cli.returncode == 0, cli.stderr
    submitted = [r for r in api.json()["data"]["recordings"] if r["state"] == "submitted"]
    for r in submitted:
        assert f"#{r['recording_id']} room {r['room_id']}" in cli.stdout
        assert r["bvid"] in cli.stdout
    assert cli.stdout.count(" uploaded ") >= 3 * len(submitted)
