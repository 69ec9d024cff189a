"""The hub's HTTP API against a fake HubService: routes, auth, bodies, envelope, secrecy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hub.accounts.store import AccountStore
from hub.api.bodies import MAX_JSON_BODY
from hub.api.routes import build_app
from hub.core.errors import AuthError, BadRequest, Conflict, NotFound
from hub.core.reports import HeartbeatReport, ProgressReport

pytestmark = pytest.mark.anyio

ADMIN = "admin-SECRET-token-0123456789"
PSK = "psk-SECRET-preshared"
COOKIES = "SESSDATA=sess-SECRET-abc; bili_jct=csrf-SECRET-def; DedeUserID=4242"
ACCESS_KEY = "ak-SECRET-xyz"
LEAKY = "leaky-SECRET-from-service"
# Strings that must never appear in a response body (the register token is
# the one deliberate exception and is checked separately).
SECRETS = [ADMIN, PSK, "sess-SECRET-abc", "csrf-SECRET-def", ACCESS_KEY, LEAKY, "SESSDATA"]


class FakeService:
    """Same methods as hub.service.HubService, with just enough behaviour to test the layer."""

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts
        self.calls: list[tuple[str, Any]] = []
        self.task_owner = {"task-1": "agent-a", "task-2": "agent-b"}

    async def register_agent(
        self,
        psk: str,
        agent_id: str,
        agent_name: str,
        ip_address: str,
        capabilities: dict[str, Any],
        tags: dict[str, str],
        *,
        instance_id: str = "",
        peer: str = "",
    ) -> tuple[str, int]:
        if psk != PSK:
            raise AuthError("invalid pre-shared key")
        self.calls.append(("register", (agent_id, agent_name, ip_address, capabilities, tags)))
        return f"jwt.{agent_id}", 1_900_000_000

    def verify_agent_token(self, token: str) -> str:
        if not token.startswith("jwt."):
            raise AuthError("invalid agent token")
        return token.removeprefix("jwt.")

    async def agent_heartbeat(self, agent_id: str, report: HeartbeatReport) -> None:
        self.calls.append(("heartbeat", (agent_id, report)))

    async def agent_progress(self, agent_id: str, report: ProgressReport) -> None:
        if self.task_owner.get(report.task_id) != agent_id:
            raise NotFound(f"no task {report.task_id} leased to this agent")
        self.calls.append(("task_status", (agent_id, report)))

    async def create_part(
        self, file_path: str, *, account: str | None, title: str | None, auto_upload: bool = True
    ) -> dict[str, Any]:
        if file_path.endswith(".empty"):
            raise BadRequest(f"file is empty: {file_path}")
        if not await anyio.Path(file_path).is_file():
            raise FileNotFoundError(2, "No such file or directory", file_path)
        if account is not None:
            await self.accounts.resolve(account)
        self.calls.append(("create_part", (file_path, account, title, auto_upload)))
        return {"part_id": 7, "task_id": "task-7"}

    async def assign_task(self, part_id: int, agent_id: str, *, force: bool = False) -> str:
        self.calls.append(("assign", (part_id, agent_id, force)))
        if agent_id == "offline":
            raise Conflict("agent offline is not connected")
        if part_id != 7:
            raise NotFound(f"no part {part_id}")
        return "task-8"

    async def cancel_task(self, task_id: str) -> None:
        if task_id == "done":
            raise Conflict("task done is already completed")
        if task_id not in self.task_owner:
            raise NotFound(f"no task {task_id}")
        self.calls.append(("cancel", task_id))

    async def list_agents(self) -> list[dict[str, Any]]:
        return [{"agent_id": "agent-a", "status": "online", "token": LEAKY}]

    async def list_tasks(self, query: Any = None) -> dict[str, Any]:
        self.calls.append(("list_tasks", query))
        return {"tasks": [await self.get_task("task-1")], "next_cursor": None}

    async def get_task(self, task_id: str) -> dict[str, Any]:
        if task_id == "boom":
            raise RuntimeError(f"database exploded near {LEAKY}")
        if task_id not in self.task_owner:
            raise NotFound(f"no task {task_id}")
        return {
            "task_id": task_id,
            "part_id": 7,
            "agent_id": self.task_owner[task_id],
            "status": "uploading",
            "uploaded_bytes": 10,
            "total_bytes": 100,
            "upload_speed": 5.0,
            "eta_seconds": 18.0,
            "retry_count": 0,
            "error_message": None,
            "result": None,
            "resume_session": {"auth": LEAKY},
            "credentials": {"cookies": LEAKY},
        }

    async def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        await self.get_task(task_id)
        return [{"event_type": "start", "message": "offered", "session": LEAKY}]

    async def list_ips(self) -> list[dict[str, Any]]:
        return [{"ip": "127.0.0.2", "uploads_last_hour": 1}]

    def learned_limits(self) -> list[dict[str, Any]]:
        return [{"scope": "ip", "subject": "127.0.0.2", "hourly_cap": 3, "evidence": []}]


class Recorder:
    """Every response body the tests saw, to check none carries a secret."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []

    async def hook(self, response: httpx.Response) -> None:
        await response.aread()
        self.bodies.append((response.request.url.path, response.content))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FakeService]:
    accounts = AccountStore(tmp_path / "bupmesh.db", tmp_path / "secret.key")
    accounts.open_sync()
    yield FakeService(accounts)
    accounts.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(
    service: FakeService, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[httpx.AsyncClient]:
    caplog.set_level(logging.DEBUG)
    app = build_app(service, admin_token=ADMIN)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 5555))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://hub", event_hooks={"response": [recorder.hook]}
    ) as c:
        yield c
    # After every test: nothing secret in any response or log line.
    for path, body in recorder.bodies:
        for secret in SECRETS:
            assert secret.encode() not in body, f"{secret} in response to {path}"
    for secret in SECRETS:
        assert secret not in caplog.text, f"{secret} in the log"


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def agent(agent_id: str = "agent-a") -> dict[str, str]:
    return {"Authorization": f"Bearer jwt.{agent_id}"}


def assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["code"] != 0
    assert body["data"] is None
    for needle in needles:
        assert needle in body["message"], body["message"]


def ok_data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and body["message"] in ("success", "Task cancelled")
    return body["data"]


ADMIN_ROUTES = [
    ("GET", "/api/manage/agents", None),
    ("POST", "/api/manage/assign-task", {"part_id": 7, "agent_id": "agent-a"}),
    ("POST", "/api/manage/cancel-task", {"task_id": "task-1"}),
    ("POST", "/api/manage/accounts", {"name": "n", "cookies": COOKIES}),
    ("GET", "/api/manage/accounts", None),
    ("POST", "/api/manage/parts", {"file_path": "/etc/hostname"}),
    ("GET", "/api/manage/tasks", None),
    ("GET", "/api/manage/tasks/task-1", None),
    ("GET", "/api/manage/tasks/task-1/logs", None),
    ("GET", "/api/manage/ips", None),
]


async def test_healthz_needs_no_auth(client: httpx.AsyncClient) -> None:
    assert ok_data(await client.get("/healthz")) == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": f"Bearer {ADMIN}x"},
        {"Authorization": "Bearer jwt.agent-a"},  # an agent token is not an admin token
        {"Authorization": f"Bearer {PSK}"},
    ],
)
async def test_admin_routes_refuse_other_credentials(
    client: httpx.AsyncClient, service: FakeService, headers: dict[str, str]
) -> None:
    for method, path, body in ADMIN_ROUTES:
        response = await client.request(method, path, json=body, headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert service.calls == []
    assert await service.accounts.list() == []


async def test_empty_admin_token_closes_the_admin_api(service: FakeService) -> None:
    app = build_app(service, admin_token="")  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            assert_error(await c.get("/api/manage/tasks", headers=headers), 401)


async def test_agent_routes_refuse_admin_and_missing_tokens(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    for headers in ({}, admin(), {"Authorization": "Bearer nonsense"}):
        assert_error(await client.post("/api/agent/heartbeat", json={}, headers=headers), 401)
        response = await client.post(
            "/api/agent/task-status",
            json={"task_id": "task-1", "status": "uploading"},
            headers=headers,
        )
        assert_error(response, 401)
    assert service.calls == []


async def test_register(client: httpx.AsyncClient, service: FakeService) -> None:
    body = {
        "agent_id": "agent-001",
        "agent_name": "Tokyo-Agent-1",
        "ip_address": "1.2.3.4",
        "max_concurrent_uploads": 2,
        "bandwidth_mbps": 500,
        "tags": {"region": "tokyo", "isp": "aws"},
        "grpc_address": "agent-001.example.com:12382",
    }
    response = await client.post(
        "/api/agent/register", json=body, headers={"Authorization": f"Bearer {PSK}"}
    )
    data = ok_data(response)
    assert data == {"agent_id": "agent-001", "token": "jwt.agent-001", "expires_at": 1_900_000_000}
    ((_, (agent_id, name, ip, caps, tags)),) = service.calls
    assert (agent_id, name, ip, tags) == ("agent-001", "Tokyo-Agent-1", "1.2.3.4", body["tags"])
    assert caps["max_concurrent_uploads"] == 2 and caps["bandwidth_mbps"] == 500


async def test_register_defaults_ip_to_the_peer_and_name_to_the_id(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    response = await client.post(
        "/api/agent/register", json={"agent_id": "a2"}, headers={"Authorization": f"Bearer {PSK}"}
    )
    ok_data(response)
    ((_, (_, name, ip, _, _)),) = service.calls
    assert (name, ip) == ("a2", "127.0.0.9")


async def test_register_refusals(client: httpx.AsyncClient, service: FakeService) -> None:
    good = {"agent_id": "a1"}
    assert_error(await client.post("/api/agent/register", json=good), 401, "Bearer")
    wrong = {"Authorization": "Bearer wrong-psk"}
    assert_error(
        await client.post("/api/agent/register", json=good, headers=wrong), 401, "pre-shared"
    )
    psk = {"Authorization": f"Bearer {PSK}"}
    assert_error(await client.post("/api/agent/register", json={}, headers=psk), 400, "agent_id")
    response = await client.post(
        "/api/agent/register", json={"agent_id": "a1", "colour": "red"}, headers=psk
    )
    assert_error(response, 400, "colour", "unknown field")
    response = await client.post(
        "/api/agent/register", json={"agent_id": "a1", "tags": {"x": 1}}, headers=psk
    )
    assert_error(response, 400, "tags[...]", "Expected `str`")
    response = await client.post("/api/agent/register", json={"agent_id": ""}, headers=psk)
    assert_error(response, 400, "agent_id")
    assert service.calls == []


async def test_heartbeat(client: httpx.AsyncClient, service: FakeService) -> None:
    body = {
        "agent_id": "agent-a",
        "status": "online",
        "current_tasks": 1,
        "available_slots": 1,
        "memory_usage_mb": 650,
        "tasks_completed": 156,
    }
    assert ok_data(await client.post("/api/agent/heartbeat", json=body, headers=agent())) is None
    ok_data(await client.post("/api/agent/heartbeat", json={"status": "busy"}, headers=agent()))
    (_, (agent_id, first)), (_, (second_agent, second)) = service.calls
    assert agent_id == "agent-a" and first == HeartbeatReport(
        status="online", current_tasks=1, free_slots=1, memory_mb=650, tasks_completed=156)
    assert second_agent == "agent-a" and second.status == "busy"


async def test_heartbeat_cannot_speak_for_another_agent(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    response = await client.post(
        "/api/agent/heartbeat", json={"agent_id": "agent-b"}, headers=agent("agent-a")
    )
    assert_error(response, 403, "agent_id")
    response = await client.post(
        "/api/agent/heartbeat", json={"status": "sleeping"}, headers=agent()
    )
    assert_error(response, 400, "status")
    assert service.calls == []


async def test_task_status_only_for_own_tasks(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    body = {
        "task_id": "task-1",
        "status": "uploading",
        "uploaded_bytes": 104857600,
        "total_bytes": 524288000,
        "upload_speed": 6291456,
        "error_message": None,
    }
    ok_data(await client.post("/api/agent/task-status", json=body, headers=agent("agent-a")))
    response = await client.post("/api/agent/task-status", json=body, headers=agent("agent-b"))
    assert_error(response, 404, "task-1")
    ((_, (agent_id, sent)),) = service.calls
    assert agent_id == "agent-a" and sent.uploaded_bytes == 104857600
    bad = {**body, "uploaded_bytes": -1}
    assert_error(
        await client.post("/api/agent/task-status", json=bad, headers=agent()),
        400,
        "uploaded_bytes",
    )


async def test_bad_bodies(client: httpx.AsyncClient, service: FakeService) -> None:
    url = "/api/manage/assign-task"
    cases = [
        (b"", "JSON object"),
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "request body"),
        (b'{"part_id": "7", "agent_id": "a"}', "part_id"),
        (b'{"agent_id": "a"}', "part_id: required"),
        (b'{"part_id": 7, "agent_id": "a", "extra": 1}', "extra: unknown field"),
    ]
    for raw, needle in cases:
        response = await client.post(
            url, content=raw, headers={**admin(), "Content-Type": "application/json"}
        )
        assert_error(response, 400, needle)
    assert service.calls == []


async def test_body_size_limit(client: httpx.AsyncClient) -> None:
    big = b'{"task_id": "' + b"x" * MAX_JSON_BODY + b'"}'
    response = await client.post("/api/manage/cancel-task", content=big, headers=admin())
    assert_error(response, 413, "too large")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b'{"task_id": "'
        for _ in range(MAX_JSON_BODY // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post("/api/manage/cancel-task", content=chunked(), headers=admin())
    assert_error(response, 413, "too large")
    # just under the limit is fine as far as size goes (then the task is unknown)
    body = b'{"task_id": "' + b"y" * (MAX_JSON_BODY - 100) + b'"}'
    assert_error(await client.post("/api/manage/cancel-task", content=body, headers=admin()), 400)


async def test_accounts(client: httpx.AsyncClient, service: FakeService) -> None:
    body = {"name": "main", "cookies": COOKIES, "access_key": ACCESS_KEY}
    data = ok_data(await client.post("/api/manage/accounts", json=body, headers=admin()))
    account_id = data["account_id"]
    assert isinstance(account_id, int)
    biliup = {
        "cookie_info": {"cookies": [{"name": "SESSDATA", "value": "sess-SECRET-abc"}]},
        "token_info": {"access_token": ACCESS_KEY, "mid": 9, "refresh_token": "r"},
    }
    body2 = {"name": "json", "cookies_json": biliup}
    ok_data(await client.post("/api/manage/accounts", json=body2, headers=admin()))
    listed = ok_data(await client.get("/api/manage/accounts", headers=admin()))["accounts"]
    assert [(a["account_id"], a["name"], a["mid"]) for a in listed] == [
        (account_id, "main", 4242),
        (account_id + 1, "json", 9),
    ]
    assert listed[0]["has_access_key"] is True
    # the secrets really were stored
    assert (await service.accounts.credentials("main")).access_key == ACCESS_KEY


async def test_account_refusals(client: httpx.AsyncClient, service: FakeService) -> None:
    body = {"name": "main", "cookies": COOKIES}
    ok_data(await client.post("/api/manage/accounts", json=body, headers=admin()))
    assert_error(await client.post("/api/manage/accounts", json=body, headers=admin()), 409, "main")
    both = {"name": "b", "cookies": COOKIES, "cookies_json": {}}
    assert_error(await client.post("/api/manage/accounts", json=both, headers=admin()), 400, "one")
    broken = {"name": "c", "cookies": "sess-SECRET-abc"}  # not NAME=VALUE
    assert_error(
        await client.post("/api/manage/accounts", json=broken, headers=admin()), 400, "cookies"
    )
    wrong_type = {"name": "d", "cookies": ["SESSDATA=sess-SECRET-abc"]}
    response = await client.post("/api/manage/accounts", json=wrong_type, headers=admin())
    assert_error(response, 400, "cookies")
    assert [a["name"] for a in await service.accounts.list()] == ["main"]


async def test_parts(client: httpx.AsyncClient, service: FakeService, tmp_path: Path) -> None:
    video = tmp_path / "rec.flv"
    video.write_bytes(b"flv")
    await service.accounts.add("main", cookies=COOKIES)
    body = {"file_path": str(video), "account": "main", "title": "P1", "auto_upload": False}
    assert ok_data(await client.post("/api/manage/parts", json=body, headers=admin())) == {
        "part_id": 7,
        "task_id": "task-7",
    }
    body = {"file_path": str(video), "account": 1}
    ok_data(await client.post("/api/manage/parts", json=body, headers=admin()))
    assert [c[1] for c in service.calls] == [
        (str(video), "main", "P1", False),
        (str(video), "1", None, True),
    ]
    relative = {"file_path": "rec.flv"}
    assert_error(
        await client.post("/api/manage/parts", json=relative, headers=admin()), 400, "absolute"
    )
    missing = {"file_path": str(tmp_path / "nope.flv")}
    response = await client.post("/api/manage/parts", json=missing, headers=admin())
    assert_error(response, 404, "nope.flv")
    empty = {"file_path": str(tmp_path / "x.empty")}
    response = await client.post("/api/manage/parts", json=empty, headers=admin())
    assert_error(response, 400, "file is empty")
    unknown_account = {"file_path": str(video), "account": "ghost"}
    response = await client.post("/api/manage/parts", json=unknown_account, headers=admin())
    assert_error(response, 404, "ghost")


async def test_assign_and_cancel(client: httpx.AsyncClient, service: FakeService) -> None:
    assign = {"part_id": 7, "agent_id": "agent-a"}
    assert ok_data(await client.post("/api/manage/assign-task", json=assign, headers=admin())) == {
        "task_id": "task-8"
    }
    forced = {**assign, "force": True}
    assert ok_data(await client.post("/api/manage/assign-task", json=forced, headers=admin()))
    assert [c[1] for c in service.calls if c[0] == "assign"] == [
        (7, "agent-a", False), (7, "agent-a", True)]
    offline = {"part_id": 7, "agent_id": "offline"}
    response = await client.post("/api/manage/assign-task", json=offline, headers=admin())
    assert_error(response, 409, "not connected")
    response = await client.post(
        "/api/manage/cancel-task", json={"task_id": "task-1"}, headers=admin()
    )
    assert response.json()["message"] == "Task cancelled"
    assert ok_data(response) == {"task_id": "task-1"}
    response = await client.post(
        "/api/manage/cancel-task", json={"task_id": "done"}, headers=admin()
    )
    assert_error(response, 409, "completed")
    response = await client.post("/api/manage/cancel-task", json={"task_id": "zz"}, headers=admin())
    assert_error(response, 404, "zz")


async def test_reads_and_redaction(client: httpx.AsyncClient) -> None:
    agents = ok_data(await client.get("/api/manage/agents", headers=admin()))["agents"]
    assert agents == [{"agent_id": "agent-a", "status": "online"}]  # token dropped
    task = ok_data(await client.get("/api/manage/tasks/task-1", headers=admin()))
    assert task["task_id"] == "task-1" and task["uploaded_bytes"] == 10
    assert "resume_session" not in task and "credentials" not in task
    tasks = ok_data(await client.get("/api/manage/tasks", headers=admin()))["tasks"]
    assert tasks == [task]
    logs = ok_data(await client.get("/api/manage/tasks/task-1/logs", headers=admin()))["logs"]
    assert logs == [{"event_type": "start", "message": "offered"}]
    ips = ok_data(await client.get("/api/manage/ips", headers=admin()))["ips"]
    assert ips[0]["ip"] == "127.0.0.2"
    assert_error(await client.get("/api/manage/tasks/nope", headers=admin()), 404, "nope")
    assert_error(await client.get("/api/manage/tasks/nope/logs", headers=admin()), 404, "nope")


async def test_unexpected_error_is_a_generic_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/api/manage/tasks/boom", headers=admin())
    assert_error(response, 500, "internal error")
    assert "exploded" not in response.text
    assert "GET /api/manage/tasks/boom failed" in caplog.text
    caplog.clear()  # the traceback names the fake's secret on purpose; the log check is for the rest


async def test_unknown_route_and_method_keep_the_envelope(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/manage/nothing", headers=admin()), 404)
    assert_error(await client.get("/api/manage/parts", headers=admin()), 405)
    assert_error(await client.delete("/healthz"), 405)
