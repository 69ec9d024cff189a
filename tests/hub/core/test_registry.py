"""The agent registry (pure, fake clock); scheduling itself is in tests/hub/core/test_strategies.py."""

from __future__ import annotations

from hub.core.registry import Registry


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


def test_an_admin_drain_outlives_heartbeats_until_enabled() -> None:
    r = Registry(clock=Clock())
    r.attach("a", object(), "1")
    r.get("a").drained_by_admin = True
    r.heartbeat("a", status="online")  # the agent does not know: the hub still holds it
    assert r.get("a").status == "draining" and r.schedulable() == []
    r.get("a").drained_by_admin = False
    assert r.get("a").status == "online"
