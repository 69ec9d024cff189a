"""The HTTP layer over the real HubService (no agents connected, no background loops).

tests/hub/api/test_routes.py pins the layer's own behaviour with a fake; this file checks
the seam: the real service's answers and exceptions come out as the contract
says, and the database stays free of plaintext secrets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hub.api.routes import build_app
from hub.app import build_service
from hub.config import HubConfig
from hub.service import HubService

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

PSK = "psk-SECRET-for-http-hub"
ADMIN = "admin-SECRET-for-http-hub"
COOKIES = "SESSDATA=hub-sess-SECRET; bili_jct=hub-csrf-SECRET; DedeUserID=10001"
ACCESS_KEY = "hub-ak-SECRET"
SECRETS = [PSK, ADMIN, "hub-sess-SECRET", "hub-csrf-SECRET", ACCESS_KEY]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[HubService, httpx.AsyncClient]]:
    config = HubConfig(psk=PSK, admin_token=ADMIN, data_dir=str(tmp_path / "data"), insecure=True,
                       media_roots=[str(tmp_path)])
    service = await build_service(config)
    app = build_app(service, admin_token=ADMIN)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.5", 4000))
    bodies: list[bytes] = []

    async def keep(response: httpx.Response) -> None:
        bodies.append(await response.aread())

    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hub", event_hooks={"response": [keep]}
        ) as client:
            yield service, client
    finally:
        service.accounts.close()
        service.store.close()
    for body in bodies:
        for secret in SECRETS:
            assert secret.encode() not in body
    for path in (tmp_path / "data").iterdir():
        if path.name.startswith("bupmesh.db"):
            data = path.read_bytes()
            for secret in SECRETS[2:]:
                assert secret.encode() not in data, f"{secret} in {path.name}"


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def data(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and body["message"] in ("success", "Task cancelled")
    return body["data"]


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["data"] is None
    return body["message"]


async def test_agent_registration_and_token_use(
    hub: tuple[HubService, httpx.AsyncClient],
) -> None:
    service, client = hub
    psk = {"Authorization": f"Bearer {PSK}"}
    body = {"agent_id": "agent-001", "agent_name": "Tokyo", "max_concurrent_uploads": 3}
    reg = data(await client.post("/api/agent/register", json=body, headers=psk))
    assert reg["agent_id"] == "agent-001" and reg["token"].count(".") == 2
    jwt = {"Authorization": f"Bearer {reg['token']}"}

    heartbeat = {"status": "online", "current_tasks": 0, "available_slots": 3}
    assert data(await client.post("/api/agent/heartbeat", json=heartbeat, headers=jwt)) is None
    agents = data(await client.get("/api/manage/agents", headers=admin()))["agents"]
    assert [(a["agent_id"], a["agent_name"], a["ip_address"]) for a in agents] == [
        ("agent-001", "Tokyo", "127.0.0.5")
    ]

    # the credentials are not interchangeable
    assert "admin" in error(await client.get("/api/manage/agents", headers=jwt), 401)
    error(await client.post("/api/agent/heartbeat", json=heartbeat, headers=admin()), 401)
    error(await client.post("/api/agent/heartbeat", json=heartbeat, headers=psk), 401)
    wrong = {"Authorization": "Bearer not-the-psk"}
    error(await client.post("/api/agent/register", json=body, headers=wrong), 401)
    # alg none with the right subject is still refused
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    claims = json.dumps({"sub": "agent-001", "exp": 9999999999, "iat": 1, "jti": "x"}).encode()
    forged = b".".join([header, base64.urlsafe_b64encode(claims).rstrip(b"="), b""]).decode()
    forged_auth = {"Authorization": f"Bearer {forged}"}
    error(await client.post("/api/agent/heartbeat", json=heartbeat, headers=forged_auth), 401)
    # a bad agent id is the service's 400
    bad = {"agent_id": "-bad id-"}
    assert "agent_id" in error(await client.post("/api/agent/register", json=bad, headers=psk), 400)
    # an agent cannot report on a task it does not hold
    status = {"task_id": "task-nope", "status": "uploading", "uploaded_bytes": 1}
    error(await client.post("/api/agent/task-status", json=status, headers=jwt), 404)


async def test_accounts_parts_tasks(
    hub: tuple[HubService, httpx.AsyncClient], tmp_path: Path
) -> None:
    service, client = hub
    account = {"name": "main", "cookies": COOKIES, "access_key": ACCESS_KEY}
    account_id = data(await client.post("/api/manage/accounts", json=account, headers=admin()))[
        "account_id"
    ]
    listed = data(await client.get("/api/manage/accounts", headers=admin()))["accounts"]
    assert [(a["account_id"], a["name"], a["mid"]) for a in listed] == [(account_id, "main", 10001)]
    assert (await service.accounts.credentials("main")).access_key == ACCESS_KEY

    video = tmp_path / "rec.flv"
    video.write_bytes(b"FLV" * 1000)
    part = data(
        await client.post(
            "/api/manage/parts",
            json={"file_path": str(video), "account": "main", "title": "P1"},
            headers=admin(),
        )
    )
    task_id = part["task_id"]
    task = data(await client.get(f"/api/manage/tasks/{task_id}", headers=admin()))
    assert task["status"] == "pending" and task["total_bytes"] == 3000
    assert task["part_id"] == part["part_id"]
    tasks = data(await client.get("/api/manage/tasks", headers=admin()))["tasks"]
    assert [t["task_id"] for t in tasks] == [task_id]
    logs = data(await client.get(f"/api/manage/tasks/{task_id}/logs", headers=admin()))["logs"]
    assert logs and logs[0]["event_type"] == "created"
    assert isinstance(data(await client.get("/api/manage/ips", headers=admin()))["ips"], list)

    missing = {"file_path": str(tmp_path / "nope.flv")}
    assert "no such file" in error(
        await client.post("/api/manage/parts", json=missing, headers=admin()), 404
    )
    ghost = {"file_path": str(video), "account": "ghost"}
    error(await client.post("/api/manage/parts", json=ghost, headers=admin()), 404)
    offline = {"part_id": part["part_id"], "agent_id": "agent-x"}
    error(await client.post("/api/manage/assign-task", json=offline, headers=admin()), 404)

    cancel = {"task_id": task_id}
    response = await client.post("/api/manage/cancel-task", json=cancel, headers=admin())
    assert data(response) == {"task_id": task_id}
    task = data(await client.get(f"/api/manage/tasks/{task_id}", headers=admin()))
    assert task["status"] == "cancelled"
    error(await client.post("/api/manage/cancel-task", json=cancel, headers=admin()), 409)
    error(await client.get("/api/manage/tasks/task-nope", headers=admin()), 404)
