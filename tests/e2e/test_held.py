"""End to end, real processes: an attempt held across a reconnect.

A link reset (``tests.support.faultproxy.FaultProxy.cut``) in the middle of an upload.
With a grace period on both ends, the agent keeps the attempt running, lists it
in its next Hello, and the hub streams on from the first byte the agent lacks:
the SAME attempt completes, once, with the source's bytes at the simulator.
When the agent cannot come back within the grace period, the lease ends as it
always did: the task is re-offered as a new attempt resuming the upos session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bupmesh.localmesh import LocalMesh, wait_for
from tests.e2e.test_failures import (
    CHUNK,
    HUB_CONFIG,
    MiB,
    Scenario,
    assert_exactly_once,
    holder_of,
    wait_all_terminal,
)
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e


def _held_scenario(tmp_path: Path, grace: float) -> Iterator[Scenario]:
    hub_config = tmp_path / "hub.yml"
    hub_config.write_text(HUB_CONFIG.replace(
        "heartbeat:\n", f"heartbeat:\n  held_grace_seconds: {grace}\n", 1))
    with LocalMesh(tmp_path / "mesh") as mesh:
        mesh.start_sim()
        mesh.sim("POST", "/_sim/config", json={"chunk_size": CHUNK, "threads": 1,
                                               "faults": {"bandwidth_bps": 2 * MiB}})
        mesh.start_hub("--config", str(hub_config))
        mesh.add_account("main")
        case = Scenario(mesh=mesh, tmp=tmp_path)
        agent_config = tmp_path / "agent.yml"
        # Two parts of credit: the agent cannot finish without the link.
        agent_config.write_text(f"agent:\n  chunk_size_mb: {CHUNK // MiB}\n"
                                f"  buffer_size_mb: {2 * CHUNK // MiB}\n"
                                f"  held_grace: {grace}\n")
        proxy = FaultProxy(mesh.grpc_address, lifetime=120).start()
        case.proxies[1] = proxy
        try:
            mesh.start_agent(1, "--config", str(agent_config), "--server-url", proxy.address)
            mesh.wait_agents_online(1)
            yield case
        finally:
            proxy.stop()


@pytest.fixture
def held_case(tmp_path: Path) -> Iterator[Scenario]:
    yield from _held_scenario(tmp_path, grace=10)


@pytest.fixture
def short_grace_case(tmp_path: Path) -> Iterator[Scenario]:
    yield from _held_scenario(tmp_path, grace=1)


def _task_log(case: Scenario, task_id: str) -> str:
    logs = case.mesh.admin("GET", f"/api/manage/tasks/{task_id}/logs")
    logs = logs["logs"] if isinstance(logs, dict) else logs
    return "\n".join(f"{entry['event_type']}: {entry['message']}" for entry in logs)


def test_link_reset_within_the_grace_period_completes_the_same_attempt(
    held_case: Scenario,
) -> None:
    case = held_case
    proxy = case.proxies[1]
    task_id = case.add_file("held.flv", 8 * MiB + 3, seed=81)
    holder_of(case, task_id, min_parts=1)
    attempt = case.mesh.task(task_id)["attempt"]
    accepted = proxy.accepted
    assert proxy.cut() >= 1
    wait_for(lambda: proxy.accepted > accepted, 15, "the agent to dial again after the reset")
    (final,) = wait_all_terminal(case, 60)
    assert_exactly_once(case, [final])
    log = _task_log(case, task_id)
    assert final["attempt"] == attempt, log  # no re-offer: the held attempt went on
    assert "held across a reconnect" in log, log
    assert "retry:" not in log, log  # the lease never ended
    agent_log = next(p for p in case.mesh.processes if p.name == "agent-1").log_text()
    assert "held across the reconnect" in agent_log


def test_reconnect_after_the_grace_period_reoffers_as_before(short_grace_case: Scenario) -> None:
    case = short_grace_case
    proxy = case.proxies[1]
    task_id = case.add_file("late.flv", 6 * MiB + 5, seed=82)
    holder_of(case, task_id, min_parts=1)
    attempt = case.mesh.task(task_id)["attempt"]
    # Reset, and stall the agent's next dial (accepted, never carried) past both graces.
    proxy.blackhole()
    assert proxy.cut() >= 1
    hub = next(p for p in case.mesh.processes if p.name == "hub")
    wait_for(lambda: "no reconnect within" in _task_log(case, task_id), 15,
             "the hub to end the kept lease")
    proxy.heal()
    (final,) = wait_all_terminal(case, 60)
    assert_exactly_once(case, [final])
    assert final["attempt"] > attempt, _task_log(case, task_id)
    assert "held across a reconnect" not in _task_log(case, task_id)
    assert "lease kept" in hub.log_text()
