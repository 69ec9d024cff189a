"""``GET /metrics`` of a real hub, parsed by prometheus-client's own parser.

One mesh (simulator, hub, two agents): an agent reconnects, then one upload is
throttled at the simulator so it is scraped mid-flight, its first preupload is
refused with a 406 (a risk event, a retry on the other IP), and the agents'
credit budget (20 MiB) is half the file (the hub stalls on credit).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, wait_for, write_random_file

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
FAMILIES = {
    "bupmesh_agents": "gauge",
    "bupmesh_tasks": "gauge",
    "bupmesh_uploaded_bytes": "counter",
    "bupmesh_upload_speed_bytes_per_second": "gauge",
    "bupmesh_upload_starts": "counter",
    "bupmesh_risk_events": "counter",
    "bupmesh_task_retries": "counter",
    "bupmesh_stream_connects": "counter",
    "bupmesh_stream_reconnects": "counter",
    "bupmesh_scheduler_decisions": "counter",
    "bupmesh_credit_stalls": "counter",
}


class Scrape:
    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for ls, v in self.samples.get(name, [])
                   if all(ls.get(k) == want for k, want in labels.items()))


def scrape(mesh: LocalMesh) -> Scrape:
    response = httpx.get(f"{mesh.hub_url}/metrics", timeout=10,
                         headers={"Authorization": f"Bearer {mesh.admin_token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path / "mesh") as local:
        local.start_sim()
        local.start_hub(config_yaml=OPEN_RISK_YAML)
        for index in (1, 2):
            local.start_agent(index, "--max-concurrent", "1", "--buffer-size-mb", "20")
        local.wait_agents_online(2)
        local.add_account("main")
        yield local


def test_metrics_are_served_and_move_during_an_upload(mesh: LocalMesh, tmp_path: Path) -> None:
    refused = httpx.get(f"{mesh.hub_url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert mesh.psk not in refused.text and mesh.admin_token not in refused.text

    first = scrape(mesh)
    for name, kind in FAMILIES.items():
        assert first.types.get(name) == kind, (name, first.types.get(name))
    assert first.value("bupmesh_agents", status="online") == 2
    assert first.value("bupmesh_agents") == 2
    assert first.value("bupmesh_tasks") == 0
    assert first.value("bupmesh_uploaded_bytes_total") == 0
    assert first.value("bupmesh_stream_connects_total") == 2

    # A dropped stream and the agent dialling again is a reconnect.
    agent1 = next(p for p in mesh.processes if p.name == "agent-1")
    agent1.stop()
    wait_for(lambda: scrape(mesh).value("bupmesh_agents", status="offline") == 1, 30,
             "the hub to see agent-1 go")
    mesh.start_agent(1, "--max-concurrent", "1", "--buffer-size-mb", "20")
    wait_for(lambda: scrape(mesh).value("bupmesh_stream_reconnects_total", agent="agent-1") == 1,
             30, "agent-1 to reconnect")
    mesh.wait_agents_online(2)

    size = 40 * MiB + 3
    path = tmp_path / "rec.flv"
    write_random_file(path, size, seed=5)
    mesh.sim("POST", "/_sim/config", json={"faults": {
        "bandwidth_bps": 8 * MiB,
        "fail_next": [{"op": "preupload", "action": "status", "status": 406, "count": 1}],
    }})
    task_id = mesh.add_part(path, title="metrics")["task_id"]

    # Mid-upload: the task counts as uploading, bytes and speed are moving.
    def mid_upload() -> Scrape | None:
        s = scrape(mesh)
        done = s.value("bupmesh_uploaded_bytes_total")
        moving = (s.value("bupmesh_tasks", status="uploading") == 1 and 0 < done < size
                  and s.value("bupmesh_upload_speed_bytes_per_second") > 0)
        return s if moving else None

    during = wait_for(mid_upload, 30, "bytes to move during the upload", interval=0.1)
    assert during.value("bupmesh_agents", status="busy") + during.value(
        "bupmesh_agents", status="online") == 2

    (final,) = mesh.wait_tasks([task_id], timeout=40)
    mesh.sim("POST", "/_sim/config", json={"faults": {"bandwidth_bps": 0}})
    assert final["status"] == "completed", final

    after = scrape(mesh)
    assert after.value("bupmesh_tasks", status="completed") == 1
    assert after.value("bupmesh_tasks", status="uploading") == 0
    assert after.value("bupmesh_uploaded_bytes_total") == size
    [(labels, value)] = [(ls, v) for ls, v in after.samples["bupmesh_uploaded_bytes_total"]
                         if v > 0]
    uploads = mesh.sim_uploads()
    assert value == size and labels["ip"] == uploads[0]["source_ip"]
    assert labels["agent"] == final["agent_id"]
    # The refused preupload: a risk event on the other IP, one retry, two choices.
    (refused_ip,) = {"127.0.0.2", "127.0.0.3"} - {labels["ip"]}
    assert after.value("bupmesh_risk_events_total", ip=refused_ip) == 1
    assert after.value("bupmesh_task_retries_total") >= 1
    assert after.value("bupmesh_scheduler_decisions_total", result="chosen") >= 2
    # 40 MiB through a 20 MiB credit budget: the hub had to wait for credit.
    assert after.value("bupmesh_credit_stalls_total", agent=final["agent_id"]) >= 1
    assert after.value("bupmesh_upload_speed_bytes_per_second") == 0
    starts = {ls["ip"]: v for ls, v in after.samples["bupmesh_upload_starts_total"]}
    assert starts == {labels["ip"]: 1, refused_ip: 1}

    # The console's charts count the same things, bucketed in time.
    history = mesh.admin("GET", "/api/manage/history")
    assert sum(sum(b) for b in history["throughput"]["agents"].values()) == size
    assert sum(history["throughput"]["agents"][final["agent_id"]]) == size
    assert {ip: sum(b) for ip, b in history["ips"]["uploads"].items()} == starts
    assert {ip: sum(b) for ip, b in history["ips"]["risk_events"].items()} == {refused_ip: 1}
