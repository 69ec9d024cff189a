"""End to end, real processes: the mesh against Bilibili as users report it behaves.

Each test starts ``bupmesh sim-bili`` with one of its rules switched on, a hub and
agents on 127.0.0.2-4, and checks the outcome at the simulator:

* upos binds a session to the preupload's address: an agent dies mid-upload, the
  next agent's resume is refused (403), and the task still completes, once, from a
  fresh session;
* the account may not submit twice within a gap (21566): three recordings that end
  together are all submitted, each exactly once, as the account allows;
* two agents whose Bilibili traffic leaves through one proxy are one IP to the
  hub's ledger (the address Bilibili sees), so its pacing holds for that address;
* a 406 on one IP after two uploads that hour teaches that IP, not every IP: the
  healthy IPs keep their configured cap and the waiting parts go out;
* a 601 that lasts until its captcha is solved raises an alert naming the IP, the
  account and the voucher, and ``bupmesh risk solved`` ends the wait at once.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bupmesh.localmesh import (
    OPEN_ACCOUNT_YAML,
    TERMINAL,
    LocalMesh,
    bupmesh_argv,
    wait_for,
    write_random_file,
)
from tests.support.httpproxy import HttpProxy

pytestmark = pytest.mark.e2e

KiB = 1024
MiB = 1024 * KiB
CHUNK = 2 * MiB
SECRET = "hook-secret-rules"

HUB_BASE = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
retry:
  network_retries: 3
  backoff_initial_seconds: 0.5
  backoff_max_seconds: 2
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 1000
{OPEN_ACCOUNT_YAML}"""

_seeds = itertools.count(100)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path / "mesh") as local:
        local.start_sim()
        yield local


def add_file(mesh: LocalMesh, tmp: Path, name: str, size: int) -> tuple[str, str]:
    """A file of ``size`` random bytes handed to the hub: (task id, md5)."""
    path = tmp / name
    md5 = write_random_file(path, size, seed=next(_seeds))
    return mesh.add_part(path, title=name)["task_id"], md5


def only_upload_of(mesh: LocalMesh, task: dict, md5: str, size: int) -> dict:
    """The task's one completed upos object, with the source's bytes."""
    uploads = mesh.sim_uploads()
    mine = [u for u in uploads if u["md5"] == md5]
    assert len(mine) == 1, f"source completed {len(mine)} times: {uploads}"
    assert mine[0]["filename"] == task["result"]["filename"] and mine[0]["size"] == size
    return mine[0]


def metric(mesh: LocalMesh, name: str) -> float:
    text = httpx.get(f"{mesh.hub_url}/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {mesh.admin_token}"}).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def logs(mesh: LocalMesh) -> str:
    return "\n".join(f"===== {p.name}\n{p.log_text()[-3000:]}" for p in mesh.processes)


# ------------------------------------------------------------------------------ failures


def test_a_session_bound_to_its_ip_is_started_afresh_by_the_next_agent(
    mesh: LocalMesh, tmp_path: Path,
) -> None:
    mesh.sim("POST", "/_sim/config", json={
        "chunk_size": CHUNK, "threads": 1, "upos": {"binding": "ip"},
        "faults": {"bandwidth_bps": 1_500_000}})  # each agent's own address: about 8 s a file
    mesh.start_hub(config_yaml=HUB_BASE)
    mesh.add_account("main")
    agents = {1: mesh.start_agent(1), 2: mesh.start_agent(2)}
    mesh.wait_agents_online(2)
    size = 6 * CHUNK
    task_id, md5 = add_file(mesh, tmp_path, "bound.flv", size)

    def holder() -> str | None:
        task = mesh.task(task_id)
        assert task["status"] not in TERMINAL, f"ended before the fault: {task}"
        enough = task["status"] == "uploading" and task["uploaded_bytes"] >= 2 * CHUNK
        return task["agent_id"] if enough else None

    first = wait_for(holder, 60, "two parts committed")
    agents[int(first.rsplit("-", 1)[1])].kill()  # dies mid-upload; the other agent resumes
    (final,) = mesh.wait_tasks([task_id], timeout=120)
    assert final["status"] == "completed", f"{final}\n{logs(mesh)}"
    assert final["agent_id"] != first
    upload = only_upload_of(mesh, final, md5, size)
    refused = [r for r in mesh.sim("GET", "/_sim/requests", params={"status": 403})["requests"]
               if r.get("reason") == "uip_mismatch"]
    assert refused, "the resumed session was never refused: the test proved nothing"
    assert upload["source_ip"] != refused[0]["ip"] or upload["upload_id"] != \
        refused[0].get("upload_id")  # a fresh session, not the refused one
    assert metric(mesh, "bupmesh_sessions_dropped_total") >= 1
    assert metric(mesh, "bupmesh_session_dropped_parts_total") >= 2


def test_recordings_ending_together_are_submitted_as_the_account_allows(
    mesh: LocalMesh, tmp_path: Path,
) -> None:
    brec = tmp_path / "brec"
    brec.mkdir()
    mesh.sim("POST", "/_sim/config", json={"submit": {"min_gap_seconds": 6}})
    # The hub's own gap is short here (its default, 10 minutes, would never meet 21566):
    # what is tested is how it recovers when Bilibili says "too often" anyway.
    account = OPEN_ACCOUNT_YAML.replace("submit_min_gap_seconds: 0",
                                        "submit_min_gap_seconds: 1")
    account += "    throttle_cooldown_seconds: 2\n"
    mesh.start_hub(config_yaml=HUB_BASE.replace(OPEN_ACCOUNT_YAML, account) + f"""\
ingest:
  bililive_recorder_work_dir: {brec}
  webhook_secret: {SECRET}
submission:
  auto_submit: true
  settle_seconds: 0.3
""")
    mesh.add_account("main")
    mesh.start_agent(1)
    mesh.start_agent(2)
    mesh.wait_agents_online(2)
    rooms = (7001, 7002, 7003)
    md5s = {}
    for room in rooms:
        rel = f"room-{room}.flv"
        md5s[room] = write_random_file(brec / rel, 200 * KiB + room, seed=room)
        session = f"s-{room}"
        for kind, extra in (("SessionStarted", {}),
                            ("FileClosed", {"RelativePath": rel, "FileSize": 200 * KiB + room}),
                            ("SessionEnded", {})):
            r = httpx.post(f"{mesh.hub_url}/api/webhook/bililive-recorder",
                           params={"secret": SECRET}, timeout=30,
                           json=_brec_event(kind, session, room, **extra))
            assert r.status_code == 200, r.text

    def recordings() -> list[dict]:
        return mesh.admin("GET", "/api/manage/recordings")["recordings"]

    def all_settled() -> list[dict] | None:
        recs = recordings()
        done = len(recs) == 3 and all(r["state"] in ("submitted", "failed") for r in recs)
        return recs if done else None

    # 21566 is a definite "no archive, too often": the recording waits for the account
    # (seconds here), not as an unknown outcome (unknown_wait_seconds, 30 s by default).
    recs = wait_for(all_settled, 50, "three recordings submitted")
    assert [r["state"] for r in recs] == ["submitted"] * 3, f"{recs}\n{logs(mesh)}"
    throttled = [r for r in mesh.sim("GET", "/_sim/requests", params={"op": "submit"})["requests"]
                 if r.get("code") == 21566]
    assert throttled, "Bilibili never said 21566: the test proved nothing"
    subs = mesh.sim("GET", "/_sim/submissions")["submissions"]
    assert len(subs) == 3  # each exactly once
    uploads = {u["filename"]: u["md5"] for u in mesh.sim_uploads()}
    assert sorted(uploads[s["videos"][0]["filename"]] for s in subs) == sorted(md5s.values())
    risk = mesh.admin("GET", "/api/manage/accounts/main/risk")
    assert 21566 in [e["code"] for e in risk["events"]]


def test_agents_behind_one_proxy_are_one_ip_to_the_ledger(
    mesh: LocalMesh, tmp_path: Path,
) -> None:
    interval = 8.0
    mesh.start_hub(config_yaml=HUB_BASE.replace("min_interval_seconds: 0",
                                                f"min_interval_seconds: {interval}"))
    mesh.add_account("main")
    proxy = HttpProxy(egress="127.0.0.5").start()
    try:
        for index in (1, 2):
            # Each reports its own address (as machines behind one proxy would), and
            # sends its Bilibili traffic through the proxy.
            mesh.spawn(f"agent-{index}", bupmesh_argv(
                "agent", "--server-url", mesh.grpc_address, "--agent-id", f"agent-{index}",
                "--token", mesh.psk, "--insecure", "--ip-address", f"127.0.0.{index + 1}",
                "--proxy", proxy.url, "--bili-api-url", mesh.sim_url))
        wait_for(lambda: [a for a in mesh.agents() if a.get("egress_ip") == "127.0.0.5"
                          and a["status"] in ("online", "busy")].__len__() == 2,
                 30, "both agents online, reporting the proxy's address as their egress")
        tasks = [add_file(mesh, tmp_path, f"proxy{n}.flv", 300 * KiB) for n in range(2)]
        final = mesh.wait_tasks([t for t, _ in tasks], timeout=90)
        assert [t["status"] for t in final] == ["completed"] * 2, f"{final}\n{logs(mesh)}"
    finally:
        proxy.stop()
    preuploads = [r for r in mesh.sim("GET", "/_sim/requests", params={"op": "preupload"})
                  ["requests"] if r["status"] == 200]
    assert {r["ip"] for r in preuploads} == {"127.0.0.5"}  # what Bilibili saw
    times = sorted(r["time"] for r in preuploads)
    assert len(times) == 2 and times[1] - times[0] >= interval - 0.5, times
    rows = {r["ip"]: r for r in mesh.admin("GET", "/api/manage/ips")["ips"]}
    row = rows["127.0.0.5"]
    assert row["agents_now"] == ["agent-1", "agent-2"] and row["egress_reported"]
    assert row["uploads_last_hour"] == 2 and row["link_addresses"]
    agents = {a["agent_id"]: a for a in mesh.agents()}
    assert [agents[f"agent-{i}"]["ip_address"] for i in (1, 2)] == ["127.0.0.2", "127.0.0.3"]


def test_one_406_teaches_its_own_ip_and_the_healthy_ips_keep_their_cap(
    mesh: LocalMesh, tmp_path: Path,
) -> None:
    mesh.start_hub(config_yaml=HUB_BASE.replace("max_uploads_per_hour: 1000",
                                                "max_uploads_per_hour: 6"))
    mesh.add_account("main")
    mesh.start_agent(1)
    mesh.wait_agents_online(1)
    size = 256 * KiB
    early = [add_file(mesh, tmp_path, f"early{n}.flv", size)[0] for n in range(2)]
    assert [t["status"] for t in mesh.wait_tasks(early, timeout=60)] == ["completed"] * 2
    # Two uploads from 127.0.0.2 this hour; the third preupload is refused (406).
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "preupload", "action": "status", "status": 406, "ip": "127.0.0.2",
         "count": 1}]}})
    refused, _ = add_file(mesh, tmp_path, "refused.flv", size)
    wait_for(lambda: (t := mesh.task(refused))["status"] == "pending"
             and t["error_kind"] == "risk_control", 30, "the 406")
    taught = mesh.admin("GET", "/api/manage/ips")
    mesh.admin("POST", "/api/manage/ips/127.0.0.2/enable")  # an admin vouches for it
    mesh.start_agent(2)
    mesh.start_agent(3)
    mesh.wait_agents_online(3)
    # Seven parts for three IPs, each allowed 6 an hour by the configuration.
    later = [add_file(mesh, tmp_path, f"later{n}.flv", size)[0] for n in range(6)]
    final = mesh.wait_tasks([refused, *later], timeout=90)
    assert [t["status"] for t in final] == ["completed"] * 7, f"{final}\n{logs(mesh)}"

    # What the 406 taught, with its evidence, was 127.0.0.2's alone ...
    rows = {r["ip"]: r for r in taught["ips"]}
    learned = rows["127.0.0.2"]["learned"]
    assert learned["hourly_cap"] == 2 and learned["scope"] == "ip"
    (proof,) = learned["evidence"]
    assert (proof["kind"], proof["starts_last_hour"], proof["agent_id"]) == ("406", 3, "agent-1")
    assert [lim["subject"] for lim in taught["learned"]] == ["127.0.0.2"]  # no mesh-wide limit
    # ... and re-enabling the IP forgot it.
    now = {r["ip"]: r for r in mesh.admin("GET", "/api/manage/ips")["ips"]}
    assert now["127.0.0.2"]["learned"] is None
    assert all(r["learned_hourly_cap"] is None for r in now.values())


def test_a_captcha_is_raised_and_marking_it_solved_lets_the_ip_go_on(
    mesh: LocalMesh, tmp_path: Path,
) -> None:
    mesh.sim("POST", "/_sim/config", json={"risk": {
        "preupload_budget": 1, "window_seconds": 3600, "key": "ip", "reply": "601",
        "until_solved": True}})
    mesh.start_hub(config_yaml=HUB_BASE + "alerts:\n  evaluate_interval_seconds: 0.5\n")
    mesh.add_account("main")
    mesh.start_agent(1)
    mesh.wait_agents_online(1)
    first, _ = add_file(mesh, tmp_path, "first.flv", 256 * KiB)
    assert mesh.wait_tasks([first], timeout=60)[0]["status"] == "completed"
    second, md5 = add_file(mesh, tmp_path, "second.flv", 256 * KiB)

    def risk(*args: str) -> dict:
        env = {**os.environ, "BUPMESH_ADMIN_TOKEN": mesh.admin_token}
        done = subprocess.run(bupmesh_argv("risk", *args, "--hub", mesh.hub_url, "--json"),
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def open_captcha() -> dict | None:
        return next((c for c in risk("captchas")["captchas"] if c["open"]), None)

    captcha = wait_for(open_captcha, 30, "the 601's captcha")
    assert (captcha["ip"], captcha["account"]) == ("127.0.0.2", "10001")
    voucher = captcha["voucher"]
    hub = next(p for p in mesh.processes if p.name == "hub")
    wait_for(lambda: f"captcha needed: Bilibili throttles account 10001 on IP 127.0.0.2 "
             f"until captcha {voucher} is solved" in hub.log_text(), 10, "the alert")
    assert mesh.task(second)["status"] == "pending"  # the IP cools for an hour otherwise
    mesh.sim("POST", f"/_sim/captcha/{voucher}/solve")  # what the admin does at Bilibili
    assert risk("solved", voucher)["solved_at"]  # ... and tells the hub
    (final,) = mesh.wait_tasks([second], timeout=30)
    assert final["status"] == "completed", f"{final}\n{logs(mesh)}"
    only_upload_of(mesh, final, md5, 256 * KiB)
    wait_for(lambda: "RESOLVED" in hub.log_text() and voucher in hub.log_text(), 10,
             "the alert resolved")


def _brec_event(kind: str, session: str, room: int, **data: object) -> dict:
    return {
        "EventType": kind, "EventTimestamp": "2026-11-29T20:00:00.4960899+08:00",
        "EventId": f"{session}-{kind}-{data.get('RelativePath', '')}",
        "EventData": {"SessionId": session, "RoomId": room, "ShortId": 0, "Name": f"主播{room}",
                      "Title": "今晚打游戏", "AreaNameParent": "网游", "AreaNameChild": "英雄联盟",
                      "Recording": True, "Streaming": True, **data},
    }
