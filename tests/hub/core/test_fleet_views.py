"""The registry's index of schedulable agents and the scheduler's kept views (sans-IO,
fake clock): after every kind of change they must equal a fresh walk of the fleet, or a
pass would offer work to an agent that left, was disabled or may not use the account."""

from __future__ import annotations

from hub.core.agent_views import FleetViews, agent_view
from hub.core.registry import APPROVED, PENDING, REJECTED, Registry
from hub.core.strategies import AgentView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fleet(n: int = 4) -> Registry:
    r = Registry(clock=Clock())
    for i in range(n):
        info = r.ensure(f"a{i}")
        info.ip_address = f"10.0.0.{i}"
        info.max_concurrent = 2
        r.attach(f"a{i}", object(), f"s{i}", instance_id=f"p{i}")
    return r


def walk(r: Registry) -> set[str]:
    """What the index must equal: the fleet walked afresh."""
    return {a.agent_id for a in r.agents.values() if a.schedulable}


def fresh(r: Registry, active: dict[str, int]) -> dict[str, AgentView]:
    return {a.agent_id: agent_view(a, active.get(a.agent_id, 0))
            for a in r.agents.values() if a.schedulable}


def check(r: Registry, views: FleetViews, active: dict[str, int]) -> dict[str, AgentView]:
    got = views.refresh(r, active)
    assert {a.agent_id for a in r.schedulable()} == walk(r)
    assert got == fresh(r, active)
    assert {v.agent_id for v in views.local()} == {
        a for a, v in got.items() if v.storage_type in ("local", "hybrid")}
    return got


def test_the_index_follows_every_change_that_makes_an_agent_schedulable_or_not() -> None:
    r, views = fleet(), FleetViews()
    check(r, views, {})
    assert walk(r) == {"a0", "a1", "a2", "a3"}

    r.detach("a0", r.agents["a0"].session)  # goes offline
    r.agents["a1"].disabled = True  # disabled by an admin
    r.heartbeat("a2", status="draining")  # drains
    r.agents["a3"].approval = PENDING  # approval withdrawn
    assert check(r, views, {}) == {}

    r.attach("a0", object(), "s0b", instance_id="p0")  # back
    r.agents["a1"].disabled = False
    r.heartbeat("a2", status="online")
    r.agents["a3"].approval = REJECTED
    assert set(check(r, views, {})) == {"a0", "a1", "a2"}
    r.agents["a3"].approval = APPROVED
    r.agents["a2"].drained_by_admin = True
    assert set(check(r, views, {})) == {"a0", "a1", "a3"}

    r.ensure("new")  # known but never connected: not schedulable
    assert "new" not in check(r, views, {})
    r.attach("new", object(), "s9")
    assert "new" in check(r, views, {})


def test_the_allowlist_index_follows_allowlist_and_schedulable_changes() -> None:
    r = fleet()
    assert r.restricted() == {}
    r.agents["a0"].allowed_accounts = frozenset({"alice"})
    assert set(r.restricted()) == {"a0"} and r.restricted()["a0"].may_use("alice")
    r.agents["a0"].allowed_accounts = frozenset({"bob"})
    assert not r.restricted()["a0"].may_use("alice")
    r.detach("a0", r.agents["a0"].session)  # offline: not a candidate at all
    assert r.restricted() == {}
    r.attach("a0", object(), "s0b")
    assert set(r.restricted()) == {"a0"}
    r.agents["a0"].allowed_accounts = None  # every account again
    assert r.restricted() == {}


def test_kept_views_follow_leases_heartbeats_and_attributes() -> None:
    r, views = fleet(), FleetViews()
    check(r, views, {})
    got = check(r, views, {"a0": 2, "a1": 1})  # slots fill
    assert got["a0"].free_slots == 0 and got["a1"].free_slots == 1
    got = check(r, views, {"a1": 1})  # a0's slots free
    assert got["a0"].free_slots == 2
    check(r, views, {})

    r.heartbeat("a1", status="busy", current_tasks=2, free_slots=0)
    assert check(r, views, {"a1": 2})["a1"].status == "busy"
    r.heartbeat("a1", status="online", current_tasks=0, free_slots=2)
    assert check(r, views, {})["a1"].status == "online"

    r.agents["a2"].tags = {"region": "bj"}  # a new hello replaces the tags
    r.agents["a2"].storage_type = "local"
    r.agents["a2"].local_paths = ("/data",)
    r.set_reach("a3", egress_ip="203.0.113.7")
    got = check(r, views, {})
    assert got["a2"].tags == {"region": "bj"} and got["a3"].ip == "203.0.113.7"
    assert [v.agent_id for v in views.local()] == ["a2"]
    r.agents["a2"].disabled = True
    check(r, views, {})
    assert views.local() == []


def test_a_lease_counted_during_a_pass_is_rebuilt_by_the_next() -> None:
    r, views = fleet(2), FleetViews()
    check(r, views, {})
    r.heartbeat("a0", status="busy", current_tasks=1, free_slots=1)
    check(r, views, {})
    views.leased("a0")  # the pass counts its own offer
    assert views.refresh(r, {})["a0"] == agent_view(r.agents["a0"], 0)  # lease gone at once
    views.leased("a0")
    assert check(r, views, {"a0": 1})["a0"].active_tasks == 1
    views.leased("gone")  # an agent no longer in the views: nothing to count


def test_a_second_registry_starts_the_views_afresh() -> None:
    views = FleetViews()
    check(fleet(3), views, {})
    other = fleet(1)
    assert set(check(other, views, {})) == {"a0"}
