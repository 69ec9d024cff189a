"""The fast scheduling path chooses exactly what the plain one does.

``ip_diversity`` and ``locality`` used to be ``min(eligible(...), key=rank)``
over every agent; ``best_diverse`` now skips agents that could not win before
asking the ledger, and the hub reuses agent views across passes. These tests
compare both against the plain definitions over random meshes and ledgers.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.core.agent_views import AgentViewCache, agent_view
from hub.core.registry import AgentInfo
from hub.core.risk import RiskLedger, RiskRules
from hub.core.strategies import (
    AgentView,
    IPDiversity,
    Locality,
    PartView,
    diversity_key,
    eligible,
)

NOW = 100_000.0
IPS = [f"10.0.0.{i}" for i in range(6)]  # few IPs: agents share them, as behind a NAT
AGENT_IDS = [f"a{i:02d}" for i in range(12)]


def plain_ip_diversity(part: PartView, agents: Sequence[AgentView], ledger: RiskLedger,
                       now: float) -> AgentView | None:
    """The plain definition: every eligible agent ranked by the diversity key."""
    cands = eligible(part, agents, ledger, now, adaptive=True)
    if not cands:
        return None
    key = diversity_key(agents, ledger, now)
    return min(cands, key=lambda a: (*key(a), a.agent_id))


def plain_locality(part: PartView, agents: Sequence[AgentView], ledger: RiskLedger,
                   now: float) -> AgentView | None:
    cands = eligible(part, agents, ledger, now, adaptive=True)
    if not cands:
        return None
    key = diversity_key(agents, ledger, now)

    def rank(a: AgentView) -> tuple[object, ...]:
        local = a.can_read(part.path)
        matches = sum(1 for k, v in part.tags.items() if a.tags.get(k) == v)
        return (not local, -matches, *key(a), a.agent_id)

    return min(cands, key=rank)


@st.composite
def agent_views(draw: st.DrawFn) -> list[AgentView]:
    ids = draw(st.lists(st.sampled_from(AGENT_IDS), min_size=0, max_size=12, unique=True))
    out = []
    for agent_id in ids:
        slots = draw(st.integers(1, 3))
        out.append(AgentView(
            agent_id=agent_id,
            ip=draw(st.sampled_from(IPS)),
            status=draw(st.sampled_from(["online", "online", "busy", "offline", "draining"])),
            max_concurrent_uploads=slots,
            active_tasks=draw(st.integers(0, slots)),
            bandwidth_mbps=draw(st.sampled_from([0.0, 50.0, 100.0])),  # ties are common
            tags=draw(st.sampled_from([{}, {"region": "sh"}, {"region": "bj"}])),
            storage_type=draw(st.sampled_from(["network", "local"])),
            local_paths=draw(st.sampled_from([(), ("/data",), ("/other",)])),
        ))
    return out


@st.composite
def ledgers(draw: st.DrawFn) -> RiskLedger:
    rules = RiskRules(
        min_interval_seconds=draw(st.sampled_from([0.0, 60.0, 300.0])),
        max_uploads_per_hour=draw(st.sampled_from([0, 2, 6])),
        cooldown_seconds=draw(st.sampled_from([0.0, 600.0, 3600.0])),
        disable_after_events=draw(st.sampled_from([0, 2, 3])),
        # small caps make many IPs score exactly the ceiling, or just below it
        idle_cap_seconds=draw(st.sampled_from([100.0, 3600.0, 86_400.0])),
    )
    ledger = RiskLedger(rules)
    events = draw(st.lists(st.tuples(
        st.sampled_from(["noted", "started", "finished", "risk", "reenable"]),
        st.sampled_from(IPS),
        st.floats(NOW - 2 * 3600, NOW),
    ), max_size=25))
    for kind, ip, t in sorted(events, key=lambda e: e[2]):
        if kind == "noted":
            ledger.note_agent(ip, "x")
        elif kind == "started":
            ledger.upload_started(ip, "x", t)
        elif kind == "finished":
            ledger.upload_finished(ip, "x", t, ok=draw(st.booleans()))
        elif kind == "risk":
            ledger.risk_event(ip, "x", "406", t)
        else:
            ledger.admin_reenable(ip, t)
    return ledger


@st.composite
def parts(draw: st.DrawFn) -> PartView:
    pinned = draw(st.one_of(st.none(), st.sampled_from(AGENT_IDS)))
    return PartView(
        part_id=1,
        tags=draw(st.sampled_from([{}, {"region": "sh"}, {"region": "sh", "disk": "ssd"}])),
        path=draw(st.sampled_from([None, "/data/x.flv", "/elsewhere/y.flv"])),
        excluded_agents=frozenset(draw(st.lists(st.sampled_from(AGENT_IDS), max_size=2))),
        excluded_ips=frozenset(draw(st.lists(st.sampled_from(IPS), max_size=1))),
        pinned_agent=pinned,
        force=pinned is not None and draw(st.booleans()),
        resuming=pinned is not None and draw(st.booleans()),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agents=agent_views(), ledger=ledgers(), part=parts())
def test_fast_choice_is_the_plain_choice(agents: list[AgentView], ledger: RiskLedger,
                                         part: PartView) -> None:
    assert IPDiversity().choose(part, agents, ledger, NOW) == plain_ip_diversity(
        part, agents, ledger, NOW)
    assert Locality().choose(part, agents, ledger, NOW) == plain_locality(
        part, agents, ledger, NOW)


def test_a_sequence_of_decisions_matches_as_the_ledger_fills() -> None:
    """As the hub uses it: choose, start the upload on the IP, choose again."""
    agents = [AgentView(f"a{i:03d}", f"10.1.{i % 40}.1", max_concurrent_uploads=2,
                        bandwidth_mbps=float(i % 3) * 50) for i in range(120)]
    fast_ledger, plain_ledger = (RiskLedger(RiskRules(min_interval_seconds=30.0))
                                 for _ in range(2))
    fast, plain = list(agents), list(agents)
    for step in range(200):
        now = NOW + step * 7.0
        part = PartView(part_id=step)
        got = IPDiversity().choose(part, fast, fast_ledger, now)
        want = plain_ip_diversity(part, plain, plain_ledger, now)
        assert got == want, step
        if got is None:
            continue
        fast_ledger.upload_started(got.ip, got.agent_id, now)
        plain_ledger.upload_started(want.ip, want.agent_id, now)
        if step % 5 == 4:  # an upload finishes now and then
            fast_ledger.upload_finished(got.ip, got.agent_id, now)
            plain_ledger.upload_finished(want.ip, want.agent_id, now)


def info(agent_id: str, **kw: object) -> AgentInfo:
    a = AgentInfo(agent_id=agent_id, ip_address="10.0.0.1", max_concurrent=2, **kw)  # type: ignore[arg-type]
    a.session = object()
    return a


def test_cached_views_are_what_a_fresh_build_gives() -> None:
    cache = AgentViewCache()
    infos = [info("a"), info("b", tags={"region": "sh"}), info("c", storage_type="local")]
    first = cache.views(infos, {"a": 1})
    assert first == [agent_view(i, {"a": 1}.get(i.agent_id, 0)) for i in infos]

    again = cache.views(infos, {"a": 1})
    assert all(x is y for x, y in zip(first, again, strict=True))  # nothing changed: reused

    infos[1].tags["region"] = "bj"  # changed in place
    infos[2].reported_status = "busy"
    infos[2].current_tasks = 2
    active = {"a": 2, "c": 2}
    now_views = cache.views(infos, active)
    assert now_views == [agent_view(i, active.get(i.agent_id, 0)) for i in infos]
    assert now_views[1].tags == {"region": "bj"}
    assert now_views[0].active_tasks == 2 and now_views[2].status == "busy"

    infos[0].ip_address = "10.0.0.9"  # any assignment to an agent is noticed
    assert cache.views(infos, active)[0].ip == "10.0.0.9"

    assert cache.views(infos[:1], active) == [agent_view(infos[0], 2)]  # others forgotten
    assert cache.views(infos, active)[2] is not now_views[2]


def test_a_busy_heartbeat_with_capacity_left_is_online() -> None:
    a = info("a", reported_status="busy")
    assert agent_view(a, 1).status == "online"
    assert agent_view(a, 2).status == "busy"
