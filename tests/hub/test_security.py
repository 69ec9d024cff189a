"""Hardening of the hub's surfaces, over the real service and the app the hub serves
(hub.api.app: API + /metrics + audit route + audit middleware):

- every admin route refuses no token, the PSK and an agent JWT (checked by walking
  the app's routes, so a route added later is covered without editing this file);
- an agent acts only on its own tasks, over HTTP and over the stream;
- every POST route refuses an oversized body;
- admin actions land in the audit log (table + ``bupmesh.audit``) without secrets;
- plaintext is refused off loopback unless ``insecure``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from bupmesh.config import ConfigError
from hub.api.app import build_http_app
from hub.api.audit import AuditLog
from hub.api.bodies import MAX_JSON_BODY
from hub.app import build_service
from hub.config import HubConfig, is_loopback, load_hub_config
from hub.service import HubService
from protocol import mesh_pb2 as pb
from tests.support.hub import PSK, Hub, _status, make_hub, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

ADMIN = "adm-tok-3e9f41"
COOKIES = "SESSDATA=sec-sess-5a1e; bili_jct=sec-csrf-77b2; DedeUserID=10001"
ADMIN_PREFIXES = ("/api/manage/", "/metrics")


class Api:
    def __init__(self, service: HubService, app: Any, audit: AuditLog, tmp: Path,
                 hub: Hub | None = None) -> None:
        self.service, self.app, self.audit, self.tmp = service, app, audit, tmp
        self.hub = hub
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.7", 5555)),
            base_url="http://hub")

    async def jwt(self, agent_id: str) -> dict[str, str]:
        r = await self.client.post("/api/agent/register", json={"agent_id": agent_id},
                                   headers={"Authorization": f"Bearer {PSK}"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['data']['token']}"}


async def _api(service: HubService, tmp: Path, hub: Hub | None = None) -> Api:
    audit = AuditLog(service.store)
    await audit.open()
    app = build_http_app(service, service.config, audit=audit)
    return Api(service, app, audit, tmp, hub)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """The real service (real account store), no agent link."""
    config = HubConfig(psk=PSK, admin_token=ADMIN, data_dir=str(tmp_path), insecure=True)
    service = await build_service(config)
    try:
        api = await _api(service, tmp_path)
        async with api.client:
            yield api
    finally:
        service.accounts.close()
        service.store.close()


@pytest.fixture
async def link_api(tmp_path: Path) -> AsyncIterator[Api]:
    """The service with its gRPC agent link (fake agents), for lease checks."""
    async with make_hub(tmp_path) as hub:
        api = await _api(hub.service, tmp_path, hub)
        async with api.client:
            yield api


def admin_routes(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) of every admin route the app serves: all under
    ``/api/manage/`` and ``/metrics`` (web UI pages, agent and webhook routes have
    credentials of their own and are tested where they are built)."""
    out = []
    while not hasattr(app, "routes"):  # the middlewares (audit, storage gate) around it
        app = app.app
    for route in app.routes:
        if not isinstance(route, Route) or not route.path.startswith(ADMIN_PREFIXES):
            continue
        path = route.path
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", "x").replace("{" + name + ":str}", "x")
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                out.append((method, path))
    return out


async def test_every_admin_route_refuses_everything_but_the_admin_token(api: Api) -> None:
    routes = admin_routes(api.app)
    paths = {p for _, p in routes}
    # the walk found the routes this test is about
    assert {"/metrics", "/api/manage/audit", "/api/manage/agents",
            "/api/manage/agents/x/x", "/api/manage/ips/x/enable",
            "/api/manage/accounts/x/risk", "/api/manage/accounts/x/risk/release",
            "/api/manage/risk/learned", "/api/manage/risk/forget", "/api/manage/captchas",
            "/api/manage/captchas/x/solved"} <= paths
    jwt = await api.jwt("agent-sec")
    for headers in ({}, {"Authorization": f"Bearer {PSK}"}, jwt, {"Authorization": "Basic x"},
                    {"Authorization": f"Bearer {ADMIN}x"}):
        for method, path in routes:
            r = await api.client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["code"] == 401
    # and the admin token opens them (a fixed list: a streaming route would never end here)
    for path in ("/metrics", "/api/manage/audit", "/api/manage/agents", "/api/manage/tasks",
                 "/api/manage/ips", "/api/manage/accounts", "/api/manage/captchas",
                 "/api/manage/risk/learned"):
        r = await api.client.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, (path, r.text)


async def test_oversized_bodies_are_refused_on_every_post_route(api: Api) -> None:
    jwt = await api.jwt("agent-big")
    big = b"{" + b" " * (MAX_JSON_BODY + 1) + b"}"
    headers = {"Authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    posts = [p for m, p in admin_routes(api.app) if m == "POST"]
    checked = 0
    for path in posts + ["/api/agent/heartbeat", "/api/agent/task-status"]:
        auth = jwt if path.startswith("/api/agent/") else headers
        r = await api.client.post(path, content=big, headers={**headers, **auth})
        checked += r.status_code == 413
        if r.status_code != 413:
            # only a route that reads no body may take it: it answers as it does to none
            bare = await api.client.post(path, headers={**headers, **auth})
            assert (r.status_code, r.text) == (bare.status_code, bare.text), path
    assert checked >= 8  # the routes that read a body did refuse it
    r = await api.client.post("/api/agent/register", content=big,
                              headers={"Authorization": f"Bearer {PSK}"})
    assert r.status_code == 413


async def test_an_agent_only_reaches_its_own_tasks(link_api: Api) -> None:
    api = link_api
    hub = api.hub
    assert hub is not None
    owner = await hub.agent("owner")
    path, _ = hub.file("own.flv", 1 << 20)
    await hub.service.create_part(path, account=None, title=None)
    offer = await owner.recv("offer")
    await owner.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt))
    await wait_for(lambda: _is_uploading(hub, offer.task_id))

    # HTTP: another agent's JWT cannot report on it; the owner's can
    other = await api.jwt("other")
    status = {"task_id": offer.task_id, "status": "failed", "attempt": offer.attempt,
              "error_message": "forged"}
    r = await api.client.post("/api/agent/task-status", json=status, headers=other)
    assert r.status_code == 404
    r = await api.client.post("/api/agent/heartbeat", json={"agent_id": "owner"}, headers=other)
    assert r.status_code == 403
    # Stream: another agent's messages about the task are ignored (fenced by the lease)
    intruder = await hub.agent("intruder")
    tid, attempt = offer.task_id, offer.attempt
    await intruder.send(progress=pb.Progress(task_id=tid, attempt=attempt, uploaded_bytes=7,
                                             total_bytes=1 << 20))
    await intruder.send(committed=pb.Committed(task_id=tid, attempt=attempt, offset=1 << 20,
                                               session=b'{"forged": 1}'))
    await intruder.send(result=pb.Result(task_id=tid, attempt=attempt, success=False,
                                         error_kind="network", error_message="forged"))
    await intruder.send(result=pb.Result(task_id=tid, attempt=attempt, success=True,
                                         filename="forged", biz_id=1))
    # the owner's next message is handled after the intruder's (one service lock, in order)
    await owner.send(progress=pb.Progress(task_id=tid, attempt=attempt, uploaded_bytes=5,
                                          total_bytes=1 << 20))
    await wait_for(lambda: hub.service.tasks[tid].uploaded_bytes == 5)
    task = await hub.service.get_task(tid)
    assert (task["status"], task["agent_id"], task["result"]["filename"]) == (
        "uploading", "owner", None)
    assert hub.service.tasks[tid].committed_offset == 0
    # and the owner's own HTTP report is accepted
    r = await api.client.post("/api/agent/task-status", headers=await api.jwt("owner"), json={
        "task_id": tid, "status": "uploading", "uploaded_bytes": 9})
    assert r.status_code == 200, r.text


async def _is_uploading(hub: Hub, task_id: str) -> bool:
    return await _status(hub, task_id) == "uploading"


async def test_admin_actions_are_audited_without_secrets(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bupmesh.audit")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    account = {"name": "main", "cookies": COOKIES, "access_key": "sec-ak-91c3"}
    assert (await api.client.post("/api/manage/accounts", json=account, headers=auth)
            ).status_code == 200
    r = await api.client.post("/api/manage/accounts", json=account, headers=auth)
    assert r.status_code == 409
    r = await api.client.post("/api/manage/cancel-task", json={"task_id": "t-404"}, headers=auth)
    assert r.status_code == 404
    r = await api.client.post("/api/manage/agents/a9/disable", headers=auth)
    assert r.status_code == 404
    jwt = await api.jwt("nosy")
    assert (await api.client.get("/api/manage/tasks", headers=jwt)).status_code == 401
    assert (await api.client.get("/api/manage/tasks", headers=auth)).status_code == 200  # a read

    r = await api.client.get("/api/manage/audit", headers=auth)
    entries = r.json()["data"]["entries"]
    got = [(e["actor"], e["method"], e["route"], e["targets"], e["status"], e["outcome"],
            e["remote_addr"]) for e in reversed(entries)]
    assert got == [
        ("admin", "POST", "/api/manage/accounts", {"name": "main"}, 200, "ok", "127.0.0.7"),
        ("admin", "POST", "/api/manage/accounts", {"name": "main"}, 409, "error", "127.0.0.7"),
        ("admin", "POST", "/api/manage/cancel-task", {"task_id": "t-404"}, 404, "error",
         "127.0.0.7"),
        ("admin", "POST", "/api/manage/agents/{agent_id}/{action:str}",
         {"agent_id": "a9", "action": "disable"}, 404, "error", "127.0.0.7"),
        ("agent:nosy", "GET", "/api/manage/tasks", {}, 401, "refused", "127.0.0.7"),
    ]
    assert all(e["at"] > 1e9 for e in entries)
    one = await api.client.get("/api/manage/audit?limit=1", headers=auth)
    assert len(one.json()["data"]["entries"]) == 1
    bad = await api.client.get("/api/manage/audit?limit=0", headers=auth)
    assert bad.status_code == 400
    assert "admin from 127.0.0.7: POST /api/manage/cancel-task [task_id=t-404] -> 404" in caplog.text
    raw = b"".join(p.read_bytes() for p in api.tmp.glob("bupmesh.db*"))
    assert b"audit_log" in raw
    for secret in ("sec-sess-5a1e", "sec-csrf-77b2", "sec-ak-91c3", ADMIN):
        assert secret.encode() not in raw and secret not in caplog.text


def test_plaintext_only_on_loopback_unless_insecure(anyio_backend: str) -> None:
    base = {"psk": "p" * 8, "admin_token": "a" * 8}
    for http, grpc_ in (("127.0.0.1:1", "127.0.0.2:2"), ("[::1]:1", "localhost:2")):
        load_hub_config(env={}, flags={**base, "http_listen": http, "grpc_listen": grpc_})
    for http, grpc_ in (("0.0.0.0:1", "127.0.0.1:2"), ("127.0.0.1:1", "hub.example:2"),
                        ("127.0.0.1:1", "[::]:2")):
        with pytest.raises(ConfigError, match="refusing plaintext on a non-loopback") as err:
            load_hub_config(env={}, flags={**base, "http_listen": http, "grpc_listen": grpc_})
        assert "--insecure" in str(err.value) and "gen-cert" in str(err.value)
        load_hub_config(env={}, flags={**base, "http_listen": http, "grpc_listen": grpc_,
                                       "insecure": True})
    assert is_loopback("127.8.9.10") and not is_loopback("0.0.0.0")
    with pytest.raises(ConfigError, match="alerts.webhook_url: expected an http"):
        load_hub_config(env={}, flags={**base, "insecure": True,
                                       "alerts.webhook_url": "ftp://x/tok"})
    with pytest.raises(ConfigError, match="alerts.failure_rate"):
        load_hub_config(env={}, flags={**base, "insecure": True, "alerts.failure_rate": 2})
    config = load_hub_config(env={"BUPMESH_ALERT_WEBHOOK_URL": "https://h/t"},
                             flags={**base, "insecure": True})
    assert isinstance(config, HubConfig) and config.alerts.webhook_url == "https://h/t"
