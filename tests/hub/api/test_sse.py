"""The live view's SSE stream (hub/api/sse.py) over a fake hub, and the
``GET /api/manage/events`` endpoint of a real hub process read with httpx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bupmesh.localmesh import LocalMesh, wait_for, write_random_file
from hub.api.sse import encode_comment, encode_event, event_stream, trim_tasks
from hub.core.events import EventBus

# ------------------------------------------------------------------ the stream (fake hub)


VERDICTS = {"learned": [], "captchas": [{"voucher": "v1", "ip": "127.0.0.2"}], "accounts": []}


class FakeHub:
    """The reads the stream makes, over plain dicts."""

    def __init__(self) -> None:
        self.events = EventBus()
        self.agents = {"a1": {"agent_id": "a1", "status": "online"}}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.ips = [{"ip": "127.0.0.2", "state": "ok"}]
        self.broken: set[str] = set()

    def clock(self) -> float:
        return 1000.0

    async def list_agents(self) -> list[dict[str, Any]]:
        return list(self.agents.values())

    async def live_and_recent_tasks(self, ended: int) -> list[dict[str, Any]]:
        return list(self.tasks.values())

    async def list_ips(self) -> list[dict[str, Any]]:
        return self.ips

    async def risk_overview(self) -> dict[str, Any]:
        return VERDICTS

    async def get_task(self, task_id: str) -> dict[str, Any]:
        if task_id in self.broken:
            raise RuntimeError("unreadable row")
        return self.tasks[task_id]


def parse(chunk: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in chunk.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line)
        if "event" in lines:
            events.append((lines["event"], msgspec.json.decode(lines["data"])))
    return events


@pytest.mark.anyio
async def test_stream_sends_a_snapshot_then_current_rows_then_ends_on_close() -> None:
    hub = FakeHub()
    hub.tasks["t1"] = {"task_id": "t1", "status": "uploading", "uploaded_bytes": 1}
    stream = event_stream(hub, hub.events, lambda x: x, heartbeat=60, min_gap=0)  # type: ignore[arg-type]
    [(name, snap)] = parse(await stream.__anext__())
    assert name == "snapshot" and snap["server_time"] == 1000.0
    assert snap["tasks"] == [hub.tasks["t1"]] and snap["agents"] == [hub.agents["a1"]]
    assert hub.events.subscriber_count == 1

    for uploaded in (2, 3, 4):  # moves three times before the stream looks: sent once
        hub.tasks["t1"]["uploaded_bytes"] = uploaded
        hub.events.touch_task("t1")
    hub.tasks["t2"] = {"task_id": "t2", "status": "pending"}
    hub.broken.add("t2")  # one row fails to render: the others still go out
    hub.events.touch_task("t2", "a1")
    assert parse(await stream.__anext__()) == [
        ("agent", hub.agents["a1"]), ("task", {**hub.tasks["t1"], "uploaded_bytes": 4}),
        ("ips", {"ips": hub.ips, "verdicts": VERDICTS, "server_time": 1000.0}),
    ]
    hub.events.close()
    assert parse(await stream.__anext__()) == [("shutdown", {"reason": "hub stopping"})]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert hub.events.subscriber_count == 0


@pytest.mark.anyio
async def test_stream_keeps_alive_resyncs_and_unsubscribes_when_the_page_leaves() -> None:
    hub = FakeHub()
    hub.events.limit = 2
    stream = event_stream(hub, hub.events, lambda x: x, heartbeat=0.01, min_gap=0)  # type: ignore[arg-type]
    await stream.__anext__()
    # Quiet: a keep-alive comment, with the IP table (cooldowns end with time alone).
    assert await stream.__anext__() == encode_comment("keep-alive")
    assert parse(await stream.__anext__()) == [
        ("ips", {"ips": hub.ips, "verdicts": VERDICTS, "server_time": 1000.0})]
    for task_id in ("x", "y", "z"):  # more distinct changes than it may hold
        hub.tasks[task_id] = {"task_id": task_id, "status": "pending"}
        hub.events.touch_task(task_id)
    [(name, snap)] = parse(await stream.__anext__())
    assert name == "snapshot" and len(snap["tasks"]) == 3
    await stream.aclose()  # what Starlette does when the client disconnects
    assert hub.events.subscriber_count == 0


class FakeRecordings:
    def __init__(self) -> None:
        self.rows = {1: {"recording_id": 1, "state": "waiting"}}

    async def list(self, *, newest: int | None = None) -> list[dict[str, Any]]:
        rows = list(self.rows.values())
        return rows[-newest:] if newest else rows

    async def describe(self, recording_id: int) -> dict[str, Any]:
        return self.rows[recording_id]


class ChartHub(FakeHub):
    """A hub with the recording pipeline attached and chart history."""

    def __init__(self) -> None:
        super().__init__()
        self.recording_views = FakeRecordings()
        self.history_calls = 0

    def chart_history(self) -> dict[str, Any]:
        self.history_calls += 1
        return {"n": self.history_calls}


@pytest.mark.anyio
async def test_stream_sends_history_and_recordings() -> None:
    hub = ChartHub()
    stream = event_stream(hub, hub.events, lambda x: x, heartbeat=60, min_gap=0,  # type: ignore[arg-type]
                          history_every=3600)
    first = parse(await stream.__anext__())
    assert [name for name, _ in first] == ["snapshot", "history", "recordings"]
    assert first[1][1] == {"n": 1} and first[2][1] == {"recordings": [hub.recording_views.rows[1]]}
    hub.recording_views.rows[1] = {"recording_id": 1, "state": "submitted"}
    hub.events.touch_recording(1)
    hub.events.touch_recording(99)  # unreadable: skipped, the stream goes on
    assert parse(await stream.__anext__()) == [("recording", hub.recording_views.rows[1])]
    await stream.aclose()

    # History comes again on its own clock, even while nothing else happens.
    stream = event_stream(hub, hub.events, lambda x: x, heartbeat=60, min_gap=0,  # type: ignore[arg-type]
                          history_every=0.01)
    await stream.__anext__()
    assert parse(await stream.__anext__()) == [("history", {"n": 3})]
    assert parse(await stream.__anext__()) == [("history", {"n": 4})]
    await stream.aclose()


def test_snapshot_keeps_every_live_task_and_the_latest_ended_ones() -> None:
    tasks = [{"task_id": f"done{i}", "status": "completed", "created_at": i} for i in range(10)]
    tasks += [{"task_id": "old-pending", "status": "pending", "created_at": -5}]
    kept = trim_tasks(tasks, ended=3)
    assert [t["task_id"] for t in kept] == ["done9", "done8", "done7", "old-pending"]


def test_event_encoding() -> None:
    assert encode_event("task", {"a": "x\ny"}) == b'event: task\ndata: {"a":"x\\ny"}\n\n'
    assert encode_comment("keep-alive") == b": keep-alive\n\n"


# ------------------------------------------------------------------ a real hub process


class EventReader:
    """Reads ``GET /api/manage/events`` in a thread; keeps the raw text and the events."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.raw: list[str] = []
        self.events: list[tuple[str, Any]] = []
        self.error: BaseException | None = None
        self.status = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        name = ""
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10, read=30),
                              headers={"Authorization": f"Bearer {self.token}"}) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    self.raw.append(line)
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, msgspec.json.decode(line[6:])))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def task_rows(self, task_id: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == "task"
                and data["task_id"] == task_id]

    def agent_rows(self, agent_id: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == "agent"
                and data["agent_id"] == agent_id]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path / "mesh", media_roots=(str(tmp_path),)) as mesh:
        mesh.start_hub()
        yield mesh


@pytest.mark.e2e
def test_event_stream_of_a_real_hub(hub: LocalMesh) -> None:
    url = f"{hub.hub_url}/api/manage/events"
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401 and refused.json()["code"] == 401
    wrong = httpx.get(url, timeout=10, headers={"Authorization": f"Bearer {hub.psk}"})
    assert wrong.status_code == 401  # the PSK is not the admin token

    reader = EventReader(url, hub.admin_token)
    wait_for(lambda: reader.events, 10, "the snapshot")
    assert reader.status == 200
    assert reader.events[0] == ("snapshot", {
        "agents": [], "tasks": [], "ips": [],
        "verdicts": {"learned": [], "captchas": [], "accounts": []},
        "server_time": reader.events[0][1]["server_time"]})

    # An agent registers over the HTTP agent API and heartbeats: pushed as it happens.
    registered = httpx.post(f"{hub.hub_url}/api/agent/register", timeout=10,
                            headers={"Authorization": f"Bearer {hub.psk}"},
                            json={"agent_id": "web-agent", "ip_address": "127.0.0.9",
                                  "tags": {"region": "home"}})
    jwt = registered.json()["data"]["token"]
    wait_for(lambda: reader.agent_rows("web-agent"), 10, "the registered agent")
    assert reader.agent_rows("web-agent")[0]["tags"] == {"region": "home"}
    beat = httpx.post(f"{hub.hub_url}/api/agent/heartbeat", timeout=10,
                      headers={"Authorization": f"Bearer {jwt}"},
                      json={"status": "online", "memory_usage_mb": 77})
    assert beat.status_code == 200, beat.text
    wait_for(lambda: any(r["memory_usage_mb"] == 77 for r in reader.agent_rows("web-agent")),
             10, "the heartbeat's memory figure")

    hub.admin("POST", "/api/manage/agents/web-agent/disable")
    wait_for(lambda: reader.agent_rows("web-agent")[-1]["status"] == "disabled", 10,
             "the disabled agent")

    # A new task shows while it waits (no agent can take it), and so does its cancel.
    hub.add_account("main")
    source = hub.workdir / "part.flv"
    write_random_file(source, 4096)
    task_id = hub.add_part(source)["task_id"]
    wait_for(lambda: reader.task_rows(task_id), 10, "the new task")
    assert reader.task_rows(task_id)[0]["status"] == "pending"
    hub.admin("POST", "/api/manage/cancel-task", json={"task_id": task_id})
    wait_for(lambda: reader.task_rows(task_id)[-1]["status"] == "cancelled", 10,
             "the cancelled task")

    # SIGTERM: the stream says so and ends cleanly (no reset, no error in the reader).
    assert [p for p in hub.processes if p.name == "hub"][0].stop() == 0
    reader.thread.join(timeout=15)
    assert not reader.thread.is_alive() and reader.error is None, reader.error
    assert reader.events[-1] == ("shutdown", {"reason": "hub stopping"})
    text = "\n".join(reader.raw)
    for secret in (hub.psk, hub.admin_token, jwt):
        assert secret not in text
