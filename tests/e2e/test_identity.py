"""Agent identity end to end, with real processes: simulator, hub and agents on loopback.

One mesh (``mesh``) is shared by the tests of one process per agent id, per-agent
tokens, the viewer token, media roots and gRPC's stderr; every process in it runs
with ``GRPC_TRACE=all`` so the last test can look for tokens in their output. A
second hub (``gated``) wants approval for new ids and fences one agent to one
account. Agents report 127.0.0.N as their address (they all dial the hub from
127.0.0.1), so both addresses of a duplicate can be told apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from bupmesh.localmesh import (
    OPEN_RISK_YAML,
    LocalMesh,
    Process,
    bupmesh_argv,
    wait_for,
    write_random_file,
)
from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc
from tests.support.browser import open_page

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
VIEWER = "viewer-token-5e1f0a"
BACKUP_COOKIES = "SESSDATA=backup-sess-77; bili_jct=backup-csrf-77; DedeUserID=20002"
HUB_YAML = OPEN_RISK_YAML + f"""\
viewer_token: {VIEWER}
alerts:
  evaluate_interval_seconds: 0.25
"""
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")


def start_agent(mesh: LocalMesh, index: int, agent_id: str, *extra: str,
                token: str | None = None) -> Process:
    """Agent process ``index`` on 127.0.0.<index+1>, reporting that address to the hub."""
    return mesh.start_agent(index, "--ip-address", f"127.0.0.{index + 1}", *extra,
                            agent_id=agent_id, token=token)


def row(mesh: LocalMesh, agent_id: str) -> dict[str, Any]:
    return next((a for a in mesh.agents() if a["agent_id"] == agent_id), {})


def cli(mesh: LocalMesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUPMESH_ADMIN_TOKEN": mesh.admin_token, "BUPMESH_HUB_URL": mesh.hub_url}
    return subprocess.run(bupmesh_argv(*args), capture_output=True, text=True, timeout=60,
                          env=env)


def hub_log(mesh: LocalMesh) -> str:
    return next(p for p in reversed(mesh.processes) if p.name == "hub").log_text()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    work = tmp_path_factory.mktemp("identity")
    media = work / "media"
    media.mkdir()
    with LocalMesh(work / "mesh", media_roots=(str(media),),
                   extra_env={"GRPC_TRACE": "all", "GRPC_VERBOSITY": "debug"}) as local:
        local.start_sim()
        local.start_hub(config_yaml=HUB_YAML)
        local.add_account("main")
        start_agent(local, 1, "agent-1")
        local.wait_agents_online(1)
        yield local


# ------------------------------------------------------------------------ one process per id


def test_an_impostor_with_the_psk_cannot_take_a_live_id(mesh: LocalMesh) -> None:
    live = row(mesh, "agent-1")
    target = mesh.grpc_address

    async def impostor() -> list[tuple[str, str]]:
        out = []
        async with grpc.aio.insecure_channel(target) as channel:
            stub = mesh_pb2_grpc.AgentLinkStub(channel)
            for instance in ("", "impostor-process"):
                try:
                    await stub.Register(pb.RegisterRequest(
                        psk=mesh.psk, agent_id="agent-1", instance_id=instance,
                        ip_address="203.0.113.66"))
                    out.append(("registered", instance))
                except grpc.aio.AioRpcError as exc:
                    out.append((exc.code().name, exc.details() or ""))
        return out

    answers = asyncio.run(impostor())
    assert [code for code, _ in answers] == ["ALREADY_EXISTS", "ALREADY_EXISTS"], answers
    assert "already connected from 127.0.0.1 (reports 127.0.0.2)" in answers[0][1]
    # the live agent was not disconnected and still uploads
    now = row(mesh, "agent-1")
    assert (now["session_id"], now["ip_address"], now["status"]) == \
        (live["session_id"], "127.0.0.2", "online")
    path = Path(mesh.media_roots[0]) / "impostor-era.flv"
    md5 = write_random_file(path, MiB + 5, seed=11)
    task_id = mesh.add_part(path)["task_id"]
    (done,) = mesh.wait_tasks([task_id], timeout=60)
    assert (done["status"], done["agent_id"]) == ("completed", "agent-1")
    assert any(u["md5"] == md5 and u["source_ip"] == "127.0.0.2" for u in mesh.sim_uploads())


def test_a_duplicated_agent_config_gives_one_error_no_flapping_and_a_warning(
        mesh: LocalMesh) -> None:
    live = row(mesh, "agent-1")
    tries = (live["duplicate"] or {}).get("attempts", 0)  # the impostor's, if it ran first
    copy = start_agent(mesh, 2, "agent-1")  # the same agent.yml, copied to another machine
    wait_for(lambda: "the hub refused agent id agent-1" in copy.log_text(), 30,
             "the copy's refusal")
    # API: the duplicate with both addresses; the alert, in the hub's log
    dup = row(mesh, "agent-1")["duplicate"]
    assert dup["live_address"] == "127.0.0.1 (reports 127.0.0.2)"
    assert dup["refused_address"] == "127.0.0.1 (reports 127.0.0.3)"
    assert mesh.admin("GET", "/api/manage/agent-duplicates")["duplicates"][0]["agent_id"] == \
        "agent-1"
    wait_for(lambda: "ALERT agent_duplicate:agent-1" in hub_log(mesh), 10, "the alert")
    time.sleep(3.0)  # long enough for any flapping to show: the copy waits minutes
    log = copy.log_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "change --agent-id" in errors[0] and "Trying again in" in errors[0]
    assert log.count("connected to ") == 0
    assert row(mesh, "agent-1")["session_id"] == live["session_id"]  # never kicked out
    assert row(mesh, "agent-1")["duplicate"]["attempts"] == tries + 1  # one try, no loop
    copy.stop()


def test_a_restarted_agent_comes_back_at_once(mesh: LocalMesh) -> None:
    first = next(p for p in mesh.processes if p.name == "agent-1" and p.alive())
    first.kill()  # SIGKILL: no goodbye, the hub learns from the socket
    started = time.monotonic()
    start_agent(mesh, 1, "agent-1")
    wait_for(lambda: row(mesh, "agent-1").get("status") == "online" and
             row(mesh, "agent-1").get("peer_address"), 30, "agent-1 back")
    assert time.monotonic() - started < 20  # far below the refused agent's wait (1-2 min)
    assert "refused" not in mesh.processes[-1].log_text()


# ------------------------------------------------------------------------ per-agent tokens


def test_a_token_works_only_for_its_id_revocation_cuts_at_once_expiry_refuses(
        mesh: LocalMesh) -> None:
    made = cli(mesh, "hub", "agent-token", "create", "tok-agent")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("bma_") and "shown only now" in made.stderr
    db = b"".join(p.read_bytes() for p in (mesh.workdir / "hub-data").glob("bupmesh.db*"))
    assert token.encode() not in db
    good = start_agent(mesh, 3, "tok-agent", token=token)
    wait_for(lambda: row(mesh, "tok-agent").get("status") == "online", 30, "tok-agent online")
    assert row(mesh, "tok-agent")["admitted_by"].startswith("token:")
    wrong = start_agent(mesh, 4, "other-id", token=token)
    wait_for(lambda: "another agent id" in wrong.log_text(), 30, "the wrong id refused")
    assert row(mesh, "other-id") == {}
    wrong.stop()

    listed = json.loads(cli(mesh, "hub", "agent-token", "list", "--json").stdout)
    token_id = next(t["token_id"] for t in listed if t["agent_id"] == "tok-agent")
    revoked = cli(mesh, "hub", "agent-token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    cut = time.monotonic()
    wait_for(lambda: row(mesh, "tok-agent")["status"] == "offline", 5, "the revoked stream")
    assert time.monotonic() - cut < 1.0
    wait_for(lambda: "revoked" in good.log_text(), 30, "the agent told why")
    assert row(mesh, "tok-agent")["status"] == "offline"
    good.stop()

    short = cli(mesh, "hub", "agent-token", "create", "tok-short", "--expires", "12s", "--json")
    short_token = json.loads(short.stdout)["token"]
    brief = start_agent(mesh, 5, "tok-short", token=short_token)
    wait_for(lambda: row(mesh, "tok-short").get("status") == "online", 12, "tok-short online")
    wait_for(lambda: row(mesh, "tok-short")["status"] == "offline", 20, "expiry cuts the stream")
    wait_for(lambda: "agent token expired" in brief.log_text(), 60, "the expired token refused")
    brief.stop()


# ------------------------------------------------------------------------ the viewer token


def test_the_viewer_token_reads_and_cannot_change_anything(mesh: LocalMesh, tmp_path: Path
                                                            ) -> None:
    viewer = {"Authorization": f"Bearer {VIEWER}"}

    def state() -> tuple[Any, ...]:
        agents = [(a["agent_id"], a["disabled"], a["approval"], a["allowed_accounts"])
                  for a in mesh.agents()]
        tokens = [(t["token_id"], t["state"])
                  for t in mesh.admin("GET", "/api/manage/agent-tokens")["tokens"]]
        accounts = [a["name"] for a in mesh.admin("GET", "/api/manage/accounts")["accounts"]]
        return agents, tokens, accounts, len(mesh.admin("GET", "/api/manage/tasks")["tasks"])

    before = state()
    changes = [
        ("POST", "/api/manage/parts", {"file_path": "/etc/hostname"}),
        ("POST", "/api/manage/accounts", {"name": "x", "cookies": "SESSDATA=a; bili_jct=b"}),
        ("DELETE", "/api/manage/accounts/main", None),
        ("POST", "/api/manage/agents/agent-1/disable", None),
        ("POST", "/api/manage/agents/agent-1/reject", None),
        ("PUT", "/api/manage/agents/agent-1/accounts", {"accounts": []}),
        ("POST", "/api/manage/agent-tokens", {"agent_id": "viewer-made"}),
        ("POST", "/api/manage/cancel-task", {"task_id": "t"}),
        ("POST", "/api/manage/accounts/qr-login", {}),
    ]
    for method, path, body in changes:
        r = httpx.request(method, mesh.hub_url + path, json=body, headers=viewer, timeout=10)
        assert r.status_code == 403, (method, path, r.text)
    for path in ("/api/manage/agents", "/api/manage/tasks", "/api/manage/agent-tokens",
                 "/metrics"):
        assert httpx.get(mesh.hub_url + path, headers=viewer, timeout=10).status_code == 200
    assert state() == before
    check_the_page_as_viewer(mesh, tmp_path / "chromium-profile")


def check_the_page_as_viewer(mesh: LocalMesh, profile: Path) -> None:
    """The web console with the viewer token: everything shows, no button that changes
    anything does (a task's log, a recording's history and Refresh stay)."""
    from playwright.sync_api import expect

    with open_page(profile) as page:
        page.goto(mesh.hub_url + "/")
        page.fill("#token", VIEWER)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("body")).to_have_attribute("data-role", "viewer")
        expect(page.locator("#role")).to_have_text("read-only")
        expect(page.locator("#app")).to_have_attribute("data-loaded", "true")
        expect(page.locator('#agents-body tr[data-key="agent-1"]')).to_be_visible()
        expect(page.locator('#agents-body tr[data-key="agent-1"] .act-disable')).to_be_hidden()
        for form in ("#token-form", "#allow-form", ".add-account", "#rooms-add"):
            expect(page.locator(form)).to_be_hidden()
        # the duplicate of agent-1, with both addresses
        dups = page.locator("#access-duplicates")
        expect(dups).to_be_visible()
        expect(dups).to_contain_text("127.0.0.1 (reports 127.0.0.2)")
        expect(dups).to_contain_text("127.0.0.1 (reports 127.0.0.3)")
        expect(page.locator('#access-tokens-body tr[data-key] .col-state').first) \
            .to_have_text(re.compile("revoked|expired|active"))
        expect(page.locator("#accounts-body tr[data-key]").first).to_be_visible()
        shown = page.evaluate("""() => [...document.querySelectorAll("main button")]
            .filter((b) => b.offsetParent !== null).map((b) => b.className || b.id)""")
        # reads only: a task's log, a recording's history, refreshing, older tasks' pages
        assert shown and set(shown) <= {"act-logs", "act-history", "verdicts-refresh",
                                        "recordings-refresh", "retention-refresh",
                                        "older-show", "older-more"}, shown


# ------------------------------------------------------------------------ media roots


def test_no_file_outside_the_media_roots_or_in_the_data_dir_is_uploaded(
        mesh: LocalMesh, tmp_path: Path) -> None:
    media = Path(mesh.media_roots[0])
    data = mesh.workdir / "hub-data"
    outside = tmp_path / "outside.flv"
    write_random_file(outside, 1000, seed=3)
    (media / "link-out.flv").symlink_to(outside)
    (media / "link-key.flv").symlink_to(data / "secret.key")
    refused = {
        str(outside): "outside the hub's media roots",
        str(media / "link-out.flv"): "outside the hub's media roots",
        str(media / ".." / "mesh" / "hub-data" / "token.secret"): "data directory",
        str(media / "link-key.flv"): "data directory",
        str(data / "secret.key"): "data directory",
        "/etc/passwd": "outside the hub's media roots",
    }
    for path, rule in refused.items():
        r = httpx.post(f"{mesh.hub_url}/api/manage/parts", json={"file_path": path}, timeout=10,
                       headers={"Authorization": f"Bearer {mesh.admin_token}"})
        assert r.status_code == 403 and rule in r.json()["message"], (path, r.text)
    # `bupmesh upload` says why, in one line, and exits 1
    cli_run = cli(mesh, "upload", str(outside))
    assert cli_run.returncode == 1 and "403" in cli_run.stderr and "media_roots" in cli_run.stderr
    # and a file in a media root still goes up, as `bupmesh upload FILE` promises
    inside = media / "inside.flv"
    md5 = write_random_file(inside, MiB, seed=4)
    ok = cli(mesh, "upload", str(inside), "--wait", "--json")
    assert ok.returncode == 0, ok.stderr
    uploaded = {u["md5"] for u in mesh.sim_uploads()}
    assert md5 in uploaded
    for name in ("secret.key", "token.secret", "bupmesh.db"):
        assert hashlib.md5((data / name).read_bytes()).hexdigest() not in uploaded


# ------------------------------------------------------------------------ gRPC's own stderr


def test_grpc_traces_never_show_a_token(mesh: LocalMesh) -> None:
    """Every process of this mesh ran with GRPC_TRACE=all: the hub and the agents dropped
    it, so no JWT reached their output. An agent that opts in shows what would have."""
    mesh.extra_env["BUPMESH_UNSAFE_GRPC_TRACE"] = "1"
    try:
        traced = start_agent(mesh, 7, "traced-unsafe")
    finally:
        del mesh.extra_env["BUPMESH_UNSAFE_GRPC_TRACE"]
    wait_for(lambda: row(mesh, "traced-unsafe").get("status") == "online", 30, "online")
    wait_for(lambda: JWT.search(traced.log_text()), 10, "the opted-in trace")  # can fail
    traced.stop()
    for process in mesh.processes:
        if process.name == "agent-7" or process.name == "sim":
            continue
        text = process.log_path.read_text(errors="replace")  # stopped ones closed theirs
        assert not JWT.search(text), process.name
        if process.name in ("hub", "agent-1"):
            assert "ignoring GRPC_TRACE=all" in text, process.name


# ------------------------------------------------------------------------ approval, allowlists


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    work = tmp_path_factory.mktemp("gated")
    with LocalMesh(work / "mesh", media_roots=(str(work),)) as local:
        local.start_sim()
        local.sim("POST", "/_sim/accounts", json={"cookies": BACKUP_COOKIES, "mid": 20002})
        local.start_hub(config_yaml=OPEN_RISK_YAML + (
            "agents:\n  require_approval: true\n"
            "  allowed_accounts: {fenced: [backup]}\n"))
        local.add_account("main")
        local.add_account("backup", cookies=BACKUP_COOKIES)
        yield local


def test_approval_gates_work(gated: LocalMesh) -> None:
    newcomer = start_agent(gated, 1, "newcomer")
    wait_for(lambda: row(gated, "newcomer").get("status") == "pending", 30, "pending")
    pending = row(gated, "newcomer")
    assert pending["ip_address"] == "127.0.0.2" and pending["peer_address"] == "127.0.0.1"
    wait_for(lambda: "waits for the hub's admin to approve it" in newcomer.log_text(), 10,
             "the agent told")
    path = gated.workdir.parent / "gated.flv"
    md5 = write_random_file(path, MiB + 1, seed=21)
    task_id = gated.add_part(path, account="main")["task_id"]
    time.sleep(2.0)  # several scheduling passes
    task = gated.task(task_id)
    assert task["status"] == "pending" and task["waiting_for"] == {"newcomer": "agent is pending"}
    gated.admin("POST", "/api/manage/agents/newcomer/approve")
    (done,) = gated.wait_tasks([task_id], timeout=60)
    assert (done["status"], done["agent_id"]) == ("completed", "newcomer")
    assert any(u["md5"] == md5 for u in gated.sim_uploads())

    gated.admin("POST", "/api/manage/agents/newcomer/reject")
    wait_for(lambda: "ask the hub's admin to clear this agent id" in newcomer.log_text(), 30,
             "the rejected agent's error")
    assert row(gated, "newcomer")["status"] == "rejected"
    assert sum(" ERROR " in line for line in newcomer.log_text().splitlines()) == 1
    gated.admin("POST", "/api/manage/agents/newcomer/clear")
    assert row(gated, "newcomer")["approval"] == "pending"
    newcomer.stop()


def test_an_agent_outside_an_accounts_allowlist_never_gets_its_cookies(gated: LocalMesh) -> None:
    start_agent(gated, 2, "open")
    start_agent(gated, 3, "fenced")
    for agent_id in ("open", "fenced"):
        wait_for(lambda a=agent_id: row(gated, a).get("status") == "pending", 30, agent_id)
        gated.admin("POST", f"/api/manage/agents/{agent_id}/approve")
    assert row(gated, "fenced")["allowed_accounts"] == ["backup"]
    tasks = {}
    for n, account in enumerate(["main", "backup"] * 3):
        path = gated.workdir.parent / f"acct-{n}.flv"
        write_random_file(path, MiB + n, seed=40 + n)
        tasks[gated.add_part(path, account=account)["task_id"]] = account
    final = gated.wait_tasks(list(tasks), timeout=120)
    assert all(t["status"] == "completed" for t in final), final
    by_agent = {(t["agent_id"], tasks[t["task_id"]]) for t in final}
    assert ("fenced", "main") not in by_agent
    for t in final:  # not even offered: the task logs name no other agent
        if tasks[t["task_id"]] == "main":
            logs = gated.admin("GET", f"/api/manage/tasks/{t['task_id']}/logs")["logs"]
            assert all(entry["agent_id"] != "fenced" for entry in logs)
    # and Bilibili never saw the main account (mid 10001) from the fenced agent's address
    mains = [u for u in gated.sim_uploads() if u["mid"] == 10001]
    assert mains and all(u["source_ip"] != "127.0.0.4" for u in mains)


def test_the_access_section_in_the_browser(gated: LocalMesh, tmp_path: Path) -> None:
    """The admin's page: decide on an id, fence an agent to an account and lift it, and
    make a token that is shown once, then revoke it; each change reaches the hub."""
    from playwright.sync_api import expect

    if not row(gated, "fenced"):  # hub.yml's allowlist shows once its agent was seen
        start_agent(gated, 3, "fenced")
        wait_for(lambda: row(gated, "fenced"), 30, "fenced seen")
    start_agent(gated, 4, "walk-in")
    stranger = start_agent(gated, 5, "stranger")
    for agent_id in ("walk-in", "stranger"):
        wait_for(lambda a=agent_id: row(gated, a).get("status") == "pending", 30, agent_id)
    with open_page(tmp_path / "chromium-profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(gated.hub_url + "/")
        page.fill("#token", gated.admin_token)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("body")).to_have_attribute("data-role", "admin")
        expect(page.locator("#role")).to_be_hidden()

        # approval: the waiting id with its addresses; Approve lets it in
        pending = page.locator('#access-pending-body tr[data-key="walk-in"]')
        expect(pending).to_have_attribute("data-approval", "pending")
        expect(pending.locator(".col-address")).to_have_text("127.0.0.1 / 127.0.0.5")
        expect(pending.locator(".act-clear")).to_be_hidden()
        pending.locator(".act-approve").click()
        expect(pending).to_have_count(0)
        wait_for(lambda: row(gated, "walk-in").get("status") == "online", 30, "walk-in online")

        # Reject closes the stranger's stream and keeps it out; Clear: it waits again
        refused = page.locator('#access-pending-body tr[data-key="stranger"]')
        refused.locator(".act-reject").click()
        expect(refused).to_have_attribute("data-approval", "rejected")
        expect(refused.locator(".act-clear")).to_be_visible()
        wait_for(lambda: row(gated, "stranger").get("status") == "rejected", 10, "rejected")
        wait_for(lambda: "clear this agent id" in stranger.log_text(), 30, "the stranger told")
        refused.locator(".act-clear").click()
        expect(refused).to_have_attribute("data-approval", "pending")
        assert row(gated, "stranger")["approval"] == "pending"
        stranger.stop()

        # allowlists: the one hub.yml sets, one set here, then every account again
        fenced = page.locator('#access-allow-body tr[data-key="fenced"]')
        expect(fenced.locator(".col-accounts")).to_have_text("backup")
        expect(fenced.locator(".col-source")).to_have_text("hub config")
        page.fill("#allow-agent", "walk-in")
        page.fill("#allow-names", "main")
        page.click("#allow-form button[type=submit]")
        walk_in = page.locator('#access-allow-body tr[data-key="walk-in"]')
        expect(walk_in.locator(".col-accounts")).to_have_text("main")
        expect(walk_in.locator(".col-source")).to_have_text("API")
        assert row(gated, "walk-in")["allowed_accounts"] == ["main"]
        page.click("#allow-all")
        expect(walk_in).to_have_count(0)
        assert row(gated, "walk-in")["allowed_accounts"] is None

        # a token: shown once, listed without its secret, revoked from its row
        page.fill("#token-agent", "walk-in")
        page.fill("#token-expires", "1d")
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-created")).to_be_visible()
        expect(page.locator("#token-created-text")).to_contain_text("walk-in")
        secret = page.locator("#token-created-value").input_value()
        assert secret.startswith("bma_")
        (made,) = gated.admin("GET", "/api/manage/agent-tokens?agent_id=walk-in")["tokens"]
        assert made["state"] == "active" and made["expires_at"]
        token_row = page.locator(f'#access-tokens-body tr[data-key="{made["token_id"]}"]')
        expect(token_row).to_have_attribute("data-state", "active")
        page.click("#token-created-done")
        expect(page.locator("#token-created")).to_be_hidden()
        assert secret not in page.content()
        token_row.locator(".act-revoke").click()
        expect(token_row).to_have_attribute("data-state", "revoked")
        expect(token_row.locator(".act-revoke")).to_be_hidden()
        (gone,) = gated.admin("GET", "/api/manage/agent-tokens?agent_id=walk-in")["tokens"]
        assert gone["state"] == "revoked"

        # the section speaks Chinese too
        page.select_option("#lang", "zh-CN")
        expect(page.locator("#access h2")).to_have_text("节点准入")
        expect(token_row.locator(".col-state")).to_have_text("已吊销")
        assert errors == []
