"""Restart recovery on plain fakes: leases from before a restart are void, agents that were
connected get a moment to dial back, an unreadable risk ledger starts afresh."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core.events import EventBus
from hub.core.held import HeldLeases
from hub.core.lifecycle import Lifecycle, Status, TaskRecord
from hub.core.recovery import MAX_RESTART_GRACE, RestartGrace, recover
from hub.core.registry import Registry
from hub.core.risk import RiskLedger
from hub.core.state import HubState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    def __init__(self, agents: list[dict[str, Any]], tasks: list[TaskRecord],
                 ledger: dict[str, Any] | None = None) -> None:
        self.agents, self.tasks, self.ledger = agents, tasks, ledger
        self.saved: list[tuple[str, Any]] = []
        self.offline = False

    async def load_agents(self) -> list[dict[str, Any]]:
        return self.agents

    async def mark_all_agents_offline(self) -> None:
        self.offline = True

    async def load_ledger(self) -> dict[str, Any] | None:
        return self.ledger

    async def load_risk_state(self, name: str) -> dict[str, Any] | None:
        return None

    async def load_tasks(self, *, active_only: bool = False) -> list[TaskRecord]:
        return [t for t in self.tasks if not (active_only and t.status.terminal)]

    async def save_task(self, task: TaskRecord, *, log: Any = None, part_state: Any = None
                        ) -> None:
        self.saved.append((task.task_id, log))


class NoCounters:
    def uploaded(self, *args: Any) -> None: ...
    def risk_event(self, ip: str, kind: str) -> None: ...
    def account_event(self, kind: str) -> None: ...
    def session_dropped(self, parts: int, size: int) -> None: ...
    def retry(self, kind: str) -> None: ...
    def decision(self, chosen: bool) -> None: ...

    def upload_started(self, ip: str) -> None: ...


def agent_row(agent_id: str, status: str, *, ip: str = "10.0.0.1", disabled: bool = False
              ) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_name": agent_id, "ip_address": ip, "status": status,
            "max_concurrent_uploads": 3, "bandwidth_mbps": 0, "storage_type": None,
            "buffer_bytes": 0, "tags": {}, "disabled": disabled, "tokens_valid_after": 0,
            "last_heartbeat": 900.0, "tasks_completed": 4}


def make(store: FakeStore, clock: Clock) -> tuple[HubState, RestartGrace]:
    registry = Registry(clock=clock)
    state = HubState(registry=registry, lifecycle=Lifecycle(clock=clock), ledger=RiskLedger(),
                     held=HeldLeases(0, clock), store=store, events=EventBus(),
                     counters=NoCounters(), clock=clock)
    return state, RestartGrace(registry)


@pytest.mark.anyio
async def test_a_restart_voids_leases_and_waits_for_connected_agents() -> None:
    clock = Clock()
    leased = TaskRecord("t1", 1, "/f", 10, "", status=Status.UPLOADING, attempt=2,
                        agent_id="a1", committed_offset=4)
    pending = TaskRecord("t2", 2, "/g", 10, "")
    done = TaskRecord("t3", 3, "/h", 10, "", status=Status.COMPLETED)
    store = FakeStore([agent_row("a1", "busy"), agent_row("a2", "offline"),
                       agent_row("a3", "online", disabled=True)], [leased, pending, done])
    state, grace = make(store, clock)
    await recover(state, grace, offline_after=60)
    assert store.offline
    assert set(state.tasks) == {"t1", "t2"}
    assert leased.status is Status.PENDING and leased.uploaded_bytes == 4
    assert store.saved == [("t1", ("a1", "", "retry", "hub restarted"))]
    info = state.registry.get("a1")
    assert info is not None and info.max_concurrent == 3 and info.tasks_completed == 4
    assert "a1" in state.ledger.describe(clock())[0]["agents"]
    # Only a1 was connected (a2 offline, a3 disabled): scheduling waits for it, not longer.
    assert grace.awaited == {"a1"} and grace.until == clock() + MAX_RESTART_GRACE
    assert grace.holding(clock())
    state.registry.attach("a1", object(), "s1")
    assert not grace.holding(clock())


@pytest.mark.anyio
async def test_the_restart_grace_runs_out_and_an_unreadable_ledger_starts_afresh() -> None:
    clock = Clock()
    store = FakeStore([agent_row("a1", "online")], [], ledger={"version": "nonsense"})
    state, grace = make(store, clock)
    await recover(state, grace, offline_after=5)
    rows = state.ledger.describe(clock())  # afresh: only what the agents table says
    assert [(r["ip"], sorted(r["agents"]), r["state"]) for r in rows] == [
        ("10.0.0.1", ["a1"], "ok")]
    assert grace.until == clock() + 5  # never longer than the heartbeat timeout
    assert grace.holding(clock.now + 4.9)
    assert not grace.holding(clock.now + 5)
    assert not grace.holding(clock.now)  # over for good once it ran out
