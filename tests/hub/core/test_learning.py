"""How far one risk-control answer reaches and how long it lasts (plain numbers)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.core.learning import IP, MESH, Evidence, LearnedLimit, ip_limit, mesh_limit, streak_start


@dataclass
class Ev:
    time: float
    starts_last_hour: int
    agent_id: str = "a1"
    kind: str = "406"
    account: str = ""


def limit(ip: str, cap: int, last: float, decays_at: float) -> LearnedLimit:
    proof = (Evidence(last, ip, "a", "406", cap + 1),)
    return LearnedLimit(IP, ip, cap, proof, last, decays_at)


def test_streak_starts_after_the_last_clean_gap() -> None:
    assert streak_start([], 10.0) is None
    assert streak_start([5.0], 10.0) == 5.0
    assert streak_start([0.0, 9.0, 18.0], 10.0) == 0.0  # no gap of 10
    assert streak_start([0.0, 10.0, 15.0, 40.0, 45.0], 10.0) == 40.0


def test_ip_limit_is_the_lowest_rate_of_its_streak_and_names_its_evidence() -> None:
    events = [(Ev(0.0, 3), True), (Ev(50.0, 7), True), (Ev(100.0, 5), False),
              (Ev(130.0, 6), True)]
    lim = ip_limit("10.0.0.1", events, clean_seconds=60.0)
    # no gap of 60 s: one streak, whose lowest figure is 3 starts -> 2/h
    assert lim is not None and lim.hourly_cap == 2
    assert [e.time for e in lim.evidence] == [0.0, 50.0, 130.0]
    assert (lim.last_event, lim.decays_at) == (130.0, 190.0)
    lim = ip_limit("10.0.0.1", events, clean_seconds=40.0)  # 50 -> 100 is a clean gap
    assert lim is not None and lim.hourly_cap == 5 and [e.time for e in lim.evidence] == [130.0]
    assert ip_limit("10.0.0.1", [(Ev(0.0, 3), False)], 60.0) is None  # no evidence
    assert ip_limit("10.0.0.1", [], 60.0) is None
    assert Evidence(0.0, "ip", "a", "406", 1).cap == 1  # never below one an hour
    d = lim.to_dict()
    assert d["scope"] == IP and d["learned_at"] == 130.0 and d["evidence"][0]["shows_hourly_cap"] == 5


def test_mesh_limit_needs_a_quorum_and_fades_with_it() -> None:
    limits = [limit("a", 2, 0.0, 100.0), limit("b", 5, 10.0, 300.0), limit("c", 4, 20.0, 200.0),
              limit("d", 9, 30.0, 400.0)]
    assert mesh_limit(limits[:2], 3, 50.0) is None
    mesh = mesh_limit(limits, 3, 50.0)
    # the 3rd lowest of 2, 4, 5, 9 is 5: three IPs were refused at 5/h or less
    assert mesh is not None and (mesh.scope, mesh.subject, mesh.hourly_cap) == (MESH, "*", 5)
    assert {e.ip for e in mesh.evidence} == {"a", "b", "c"}
    # a, b, c are the ones at or below 5; the third to fade among them is "a" at 100
    assert mesh.decays_at == 100.0
    later = mesh_limit(limits, 3, 100.0)  # "a" faded: b, c, d remain -> 3rd lowest is 9
    assert later is not None and later.hourly_cap == 9
    assert mesh_limit(limits, 3, 200.0) is None
    assert mesh_limit(limits, 0, 50.0) is None
