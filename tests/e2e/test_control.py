"""End to end, with real processes: an admin steering the mesh over HTTP.

Simulator, hub and two agents on 127.0.0.2-3; every step goes through the admin API
and is checked at the simulator (which IP uploaded what) and in the hub's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bupmesh.localmesh import OPEN_ACCOUNT_YAML, LocalMesh, MeshError, wait_for, write_random_file

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024

HUB_CONFIG = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 1000
  cooldown_seconds: 3600
  disable_after_events: 1
{OPEN_ACCOUNT_YAML}"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    config = tmp_path / "hub.yml"
    config.write_text(HUB_CONFIG)
    with LocalMesh(tmp_path / "mesh") as local:
        local.start_sim()
        local.start_hub("--config", str(config))
        local.add_account("main")
        for index in (1, 2):
            local.start_agent(index)
        local.wait_agents_online(2)
        yield local


def part(mesh: LocalMesh, tmp: Path, name: str, size: int, seed: int, **fields: object) -> dict:
    path = tmp / name
    write_random_file(path, size, seed=seed)
    return mesh.add_part(path, title=name, **fields)


def ip_row(mesh: LocalMesh, ip: str) -> dict:
    return next(r for r in mesh.admin("GET", "/api/manage/ips")["ips"] if r["ip"] == ip)


def status_of(mesh: LocalMesh, agent_id: str) -> str:
    return next(a["status"] for a in mesh.agents() if a["agent_id"] == agent_id)


def test_assign_retry_disable_and_reenable_through_the_admin_api(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    # assign-task pins a part to one agent: it is uploaded from that agent's IP.
    pinned = part(mesh, tmp_path, "pinned.flv", MiB + 1, seed=1, auto_upload=False)
    assert pinned["task_id"] is None
    task_id = mesh.admin("POST", "/api/manage/assign-task",
                         json={"part_id": pinned["part_id"], "agent_id": "agent-2"})["task_id"]
    (done,) = mesh.wait_tasks([task_id], timeout=60)
    assert done["status"] == "completed" and done["agent_id"] == "agent-2"
    (upload,) = mesh.sim_uploads()
    assert upload["source_ip"] == "127.0.0.3"

    # A task failed by Bilibili (expired login on preupload) is retried by the admin and
    # completes; the same task id, one object.
    mesh.sim("POST", "/_sim/config", json={"faults": {"fail_next": [
        {"op": "preupload", "action": "code", "code": -101, "count": 1}]}})
    failing = part(mesh, tmp_path, "retry.flv", MiB + 2, seed=2)["task_id"]
    (failed,) = mesh.wait_tasks([failing], timeout=60)
    assert failed["status"] == "failed" and failed["error_kind"] == "auth", failed
    again = mesh.admin("POST", "/api/manage/retry-task", json={"task_id": failing})
    assert again["status"] == "pending"
    (retried,) = mesh.wait_tasks([failing], timeout=60)
    assert retried["status"] == "completed" and retried["attempt"] == 2
    assert len(mesh.sim_uploads()) == 2
    with pytest.raises(MeshError, match="409"):
        mesh.admin("POST", "/api/manage/retry-task", json={"task_id": failing})

    # A disabled agent is cut off and refused; its work goes to the other agent.
    row = mesh.admin("POST", "/api/manage/agents/agent-1/disable")
    assert row["status"] == "disabled"
    others = [part(mesh, tmp_path, f"d{i}.flv", MiB + 10 + i, seed=10 + i)["task_id"]
              for i in range(2)]
    final = mesh.wait_tasks(others, timeout=60)
    assert {t["agent_id"] for t in final} == {"agent-2"}
    assert status_of(mesh, "agent-1") == "disabled"
    mesh.admin("POST", "/api/manage/agents/agent-1/enable")
    # The agent dials again on its own (jittered backoff after being refused).
    wait_for(lambda: status_of(mesh, "agent-1") in ("online", "busy"), 60, "agent-1 back")

    # One 406 disables 127.0.0.2 (disable_after_events: 1); the admin re-enables it.
    mesh.sim("POST", "/_sim/config", json={"risk": {"always_406": ["127.0.0.2"]}})
    refused = part(mesh, tmp_path, "refused.flv", MiB + 20, seed=20, auto_upload=False)
    task_id = mesh.admin("POST", "/api/manage/assign-task",
                         json={"part_id": refused["part_id"], "agent_id": "agent-1"})["task_id"]
    wait_for(lambda: ip_row(mesh, "127.0.0.2")["state"] == "disabled", 30, "127.0.0.2 disabled")
    (moved,) = mesh.wait_tasks([task_id], timeout=60)
    assert moved["status"] == "completed" and moved["agent_id"] == "agent-2"
    mesh.sim("POST", "/_sim/config", json={"risk": {"always_406": []}})
    row = mesh.admin("POST", "/api/manage/ips/127.0.0.2/enable")
    assert row["state"] == "ok" and not row["disabled"] and len(row["events"]) == 1
    back = part(mesh, tmp_path, "back.flv", MiB + 30, seed=30, auto_upload=False)
    task_id = mesh.admin("POST", "/api/manage/assign-task",
                         json={"part_id": back["part_id"], "agent_id": "agent-1"})["task_id"]
    (last,) = mesh.wait_tasks([task_id], timeout=60)
    assert last["status"] == "completed" and last["agent_id"] == "agent-1"
    names = [u["filename"] for u in mesh.sim_uploads()]
    assert len(names) == len(set(names)) == 6
