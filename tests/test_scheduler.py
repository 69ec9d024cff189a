"""The minimal scheduler: least-loaded online agent with a free slot (pure)."""

from __future__ import annotations

from hub.registry import Registry
from hub.scheduler import Candidate, LeastLoaded, make_scheduler


def c(agent: str, active: int, cap: int = 2, total: int = 0) -> Candidate:
    return Candidate(agent_id=agent, ip_address="ip-" + agent, active_tasks=active,
                     max_concurrent=cap, total_assigned=total)


def test_least_loaded_with_free_slot() -> None:
    s = LeastLoaded()
    assert s.choose("t", []) is None
    assert s.choose("t", [c("a", 2), c("b", 2)]) is None  # all full
    assert s.choose("t", [c("a", 1), c("b", 0)]) == "b"
    assert s.choose("t", [c("a", 1, cap=4), c("b", 1, cap=2)]) == "a"  # relative load
    assert s.choose("t", [c("a", 0, total=5), c("b", 0, total=1)]) == "b"  # spread history
    assert s.choose("t", [c("b", 0), c("a", 0)]) == "a"  # deterministic tie-break


def test_spreads_a_batch_over_all_agents() -> None:
    s = make_scheduler("ip_diversity")
    active = {"a": 0, "b": 0, "c": 0}
    total = dict(active)
    picks = []
    for i in range(6):
        pick = s.choose(f"t{i}", [c(k, active[k], 2, total[k]) for k in active])
        assert pick is not None
        active[pick] += 1
        total[pick] += 1
        picks.append(pick)
    assert sorted(picks) == ["a", "a", "b", "b", "c", "c"]
    assert s.choose("t9", [c(k, active[k]) for k in active]) is None


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_registry_sessions_liveness_and_replacement() -> None:
    clock = Clock()
    r = Registry(heartbeat_interval=30, offline_after=90, clock=clock)
    s1, s2 = object(), object()
    assert r.attach("a", s1, "1") is None
    assert r.get("a").status == "online" and [x.agent_id for x in r.schedulable()] == ["a"]
    assert r.attach("a", s2, "2") is s1  # newest session wins; caller closes the old one
    assert r.detach("a", s1) is False and r.get("a").status == "online"
    clock.now = 60
    r.heartbeat("a", status="online", free_slots=1)
    clock.now = 150
    assert r.expired() == []
    clock.now = 150.1
    assert [x.agent_id for x in r.expired()] == ["a"]
    r.heartbeat("a", status="draining")
    assert r.get("a").status == "draining" and r.schedulable() == []
    assert r.detach("a", s2) is True and r.get("a").status == "offline"
    assert r.expired() == []
    r.get("a").disabled = True
    assert r.get("a").status == "disabled"
