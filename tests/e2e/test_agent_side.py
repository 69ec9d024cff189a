"""End to end, with real processes: the agent's side of scheduling and recovery.

* A ``--storage-type local --local-root DIR`` agent uploads a part that lies in
  ``DIR`` from disk: the hub streams none of it (the agent's link carries only
  control messages, measured at a TCP proxy in front of the hub), the hub's
  task log says the agent read it itself, and the simulator holds the exact
  bytes. A ``network`` agent next to it, given a part from the same directory,
  still has it streamed.
* Both ask before completing (Finishing -> Proceed): the hub's task log shows
  the grant before the attempt's result.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bupmesh.localmesh import OPEN_ACCOUNT_YAML, LocalMesh, wait_for, write_random_file
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024

HUB_CONFIG = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
scheduler:
  strategy: locality
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 1000
{OPEN_ACCOUNT_YAML}"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    config = tmp_path / "hub.yml"
    config.write_text(HUB_CONFIG)
    with LocalMesh(tmp_path / "mesh", media_roots=(str(tmp_path),)) as local:
        local.start_sim()
        local.sim("POST", "/_sim/config", json={"chunk_size": 2 * MiB})
        local.start_hub("--config", str(config))
        local.add_account("main")
        yield local


def messages(mesh: LocalMesh, task_id: str) -> str:
    logs = mesh.admin("GET", f"/api/manage/tasks/{task_id}/logs")
    rows = logs["logs"] if isinstance(logs, dict) else logs
    return "\n".join(str(row.get("message", row)) for row in rows)


def test_local_agent_reads_from_disk_while_a_network_agent_streams(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    size = 8 * MiB + 321
    md5_local = write_random_file(shared / "local.flv", size, seed=1)
    md5_net = write_random_file(shared / "net.flv", size, seed=2)
    proxies = {i: FaultProxy(mesh.grpc_address, lifetime=300).start() for i in (1, 2)}
    try:
        mesh.start_agent(1, "--server-url", proxies[1].address, "--storage-type", "local",
                         "--local-root", str(shared))
        mesh.start_agent(2, "--server-url", proxies[2].address)
        mesh.wait_agents_online(2)
        parts = {
            name: mesh.add_part(shared / f"{name}.flv", title=name, auto_upload=False)
            for name in ("local", "net")
        }
        tasks = {
            name: mesh.admin("POST", "/api/manage/assign-task",
                             json={"part_id": parts[name]["part_id"], "agent_id": agent})["task_id"]
            for name, agent in (("local", "agent-1"), ("net", "agent-2"))
        }
        final = {t["task_id"]: t for t in mesh.wait_tasks(list(tasks.values()), timeout=90)}
        logs = "\n".join(p.log_text()[-3000:] for p in mesh.processes)
        local_task, net_task = final[tasks["local"]], final[tasks["net"]]
        assert local_task["status"] == "completed", f"{local_task}\n{logs}"
        assert net_task["status"] == "completed", f"{net_task}\n{logs}"
        assert local_task["agent_id"] == "agent-1" and net_task["agent_id"] == "agent-2"

        # Exact bytes at the simulator, from each agent's own IP.
        uploads = {u["filename"]: u for u in mesh.sim_uploads()}
        assert len(uploads) == 2
        up_local = uploads[local_task["result"]["filename"]]
        up_net = uploads[net_task["result"]["filename"]]
        assert (up_local["md5"], up_local["size"], up_local["source_ip"]) == (
            md5_local, size, "127.0.0.2")
        assert (up_net["md5"], up_net["size"], up_net["source_ip"]) == (md5_net, size, "127.0.0.3")

        # The local agent's link carried control messages only; the network agent's the file.
        assert proxies[1].bytes_down < MiB, proxies[1].bytes_down
        assert proxies[2].bytes_down >= size, proxies[2].bytes_down

        local_log, net_log = messages(mesh, tasks["local"]), messages(mesh, tasks["net"])
        assert "read by the agent" in local_log and "streaming from byte" not in local_log, local_log
        assert "streaming from byte 0" in net_log and "read by the agent" not in net_log, net_log
        agent_1 = next(p for p in mesh.processes if p.name == "agent-1").log_text()
        assert "local read of" in agent_1 and str(shared / "local.flv") in agent_1

        # Completion handshake on both: the hub granted each completion before it happened.
        for text in (local_log, net_log):
            assert "proceed to complete" in text, text
        completes = mesh.sim("GET", "/_sim/requests", params={"op": "complete"})["requests"]
        assert len([r for r in completes if r["status"] == 200]) == 2
    finally:
        for proxy in proxies.values():
            proxy.stop()


def test_blackholed_link_after_the_last_part_never_completes_behind_the_hubs_back(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    """The agent has every byte and uploads every part, but its link to the hub is dead
    (blackholed: no error anywhere). It asks (Finishing) into the void and must give up
    without a completion request; the hub ends the lease, the task completes on another
    agent, and the simulator sees one completion only, from the new agent's IP."""
    mesh.sim("POST", "/_sim/config", json={"faults": {"bandwidth_bps": 2 * MiB}})
    size = 8 * MiB + 5
    md5 = write_random_file(tmp_path / "tail.flv", size, seed=7)
    proxies = {i: FaultProxy(mesh.grpc_address, lifetime=300).start() for i in (1, 2, 3)}
    try:
        for index, proxy in proxies.items():
            mesh.start_agent(index, "--server-url", proxy.address)
        mesh.wait_agents_online(3)
        task_id = mesh.add_part(tmp_path / "tail.flv", title="tail")["task_id"]

        def holder() -> str | None:
            task = mesh.task(task_id)
            return task["agent_id"] if task["status"] == "uploading" else None

        agent_id = wait_for(holder, 30, "the upload to start")
        index = int(agent_id.rsplit("-", 1)[1])
        proxy = proxies[index]
        process = next(p for p in mesh.processes if p.name == agent_id)
        # The agent logs the EndOfData that follows the file's last byte (the proxy's
        # byte count cannot tell: it includes the frames and the Offer).
        received = re.compile(rf"task {task_id} attempt \d+: every byte received")
        wait_for(lambda: received.search(process.log_text()), 15,
                 "the whole file and its EndOfData to reach the agent")
        proxy.blackhole()
        ends_before = process.log_text().count("reconnecting in")
        old_ip = f"127.0.0.{index + 1}"
        parts = -(-size // (2 * MiB))

        def parts_put() -> int:
            puts = mesh.sim("GET", "/_sim/requests", params={"op": "put", "ip": old_ip})
            return len({r["part"] for r in puts["requests"] if r["status"] == 200})

        # The simulator is not behind the proxy: the agent uploads every part and asks.
        wait_for(lambda: parts_put() == parts, 30, f"{agent_id} to upload every part")
        wait_for(lambda: "asking the hub to complete" in process.log_text(), 10,
                 f"{agent_id} to send Finishing")
        (final,) = mesh.wait_tasks([task_id], timeout=90)
        assert final["status"] == "completed" and final["agent_id"] != agent_id, final
        # The old attempt ends without completing: no Proceed in 30 s, or keepalive drops it.
        wait_for(
            lambda: "no Proceed from the hub" in (text := process.log_text())
            or text.count("reconnecting in") > ends_before,
            60, f"{agent_id} to abandon the attempt",
        )
        proxy.heal()
        completes = mesh.sim("GET", "/_sim/requests", params={"op": "complete"})["requests"]
        assert completes and not [r for r in completes if r["ip"] == old_ip], completes
        (upload,) = mesh.sim_uploads()
        assert upload["md5"] == md5 and upload["size"] == size
        assert upload["filename"] == final["result"]["filename"]
        # (Resumed or fresh depends on whether a Committed got out before the blackhole;
        # the old agent's own session, if abandoned, never becomes an object.)
    finally:
        for proxy in proxies.values():
            proxy.stop()
