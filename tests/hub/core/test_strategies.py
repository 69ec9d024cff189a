"""Scheduling strategies: the shared gate, each strategy's ranking, and the schedule bench."""

from __future__ import annotations

import importlib.util
import sys
import typing
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from hub.config import SchedulerSettings
from hub.core.risk import RiskLedger, RiskRules
from hub.core.strategies import (
    STRATEGIES,
    AgentView,
    PartView,
    SingleIP,
    make_strategy,
    next_dispatch_at,
    why_not,
)

NAMES = list(STRATEGIES)
PART = PartView(part_id=1, size=4_000_000_000)


def agent(agent_id: str, ip: str | None = None, **kw: object) -> AgentView:
    kw.setdefault("max_concurrent_uploads", 2)
    return AgentView(agent_id=agent_id, ip=ip or f"10.0.0.{agent_id[-1]}", **kw)  # type: ignore[arg-type]


def fresh_ledger(**rules: float) -> RiskLedger:
    return RiskLedger(RiskRules(**rules))


def test_every_configurable_strategy_exists() -> None:
    hint = typing.get_type_hints(SchedulerSettings)["strategy"]
    assert set(typing.get_args(hint)) == set(STRATEGIES)
    for name in NAMES:
        assert make_strategy(name).name == name
    with pytest.raises(ValueError, match="unknown scheduler.strategy"):
        make_strategy("random")


# -- the gate every strategy shares ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_unusable_agents_are_never_chosen(name: str) -> None:
    led = fresh_ledger()
    agents = [
        agent("a1", status="offline"),
        agent("a2", status="draining"),
        agent("a3", status="disabled"),
        agent("a4", active_tasks=2),  # full
        agent("a5", max_concurrent_uploads=0),
    ]
    assert make_strategy(name).choose(PART, agents, led, 0.0) is None
    ok = agent("a6", status="busy", active_tasks=1)  # busy with a free slot is fine
    for _ in range(5):
        assert make_strategy(name).choose(PART, [*agents, ok], led, 0.0) == ok


@pytest.mark.parametrize("name", NAMES)
def test_unfit_and_excluded_ips_are_skipped(name: str) -> None:
    led = fresh_ledger(disable_after_events=1, min_interval_seconds=300)
    led.risk_event("10.0.0.1", "a1", "406", 0.0)  # disabled
    led.upload_started("10.0.0.2", "a2", 90.0)  # resting
    agents = [agent("a1"), agent("a2"), agent("a3"), agent("a4")]
    part = replace(PART, excluded_ips=frozenset({"10.0.0.3"}), excluded_agents=frozenset({"a4"}))
    strat = make_strategy(name)
    assert strat.choose(part, agents, led, 100.0) is None
    assert strat.choose(PART, agents, led, 100.0) in (agents[2], agents[3])
    reasons = why_not(part, agents, led, 100.0)
    assert "disabled" in reasons["a1"] and "min interval" in reasons["a2"]
    assert "excluded" in reasons["a3"] and "excluded" in reasons["a4"]


@pytest.mark.parametrize("name", NAMES)
def test_pinned_part_waits_for_its_agent_and_force_beats_cooling_not_disabled(name: str) -> None:
    led = fresh_ledger(disable_after_events=2, cooldown_seconds=3600)
    agents = [agent("a1"), agent("a2")]
    pinned = replace(PART, pinned_agent="a2")
    strat = make_strategy(name)
    assert strat.choose(pinned, agents, led, 0.0) == agents[1]
    led.risk_event("10.0.0.2", "a2", "406", 10.0)  # cooling
    assert strat.choose(pinned, agents, led, 20.0) is None  # waits, not a1
    assert strat.choose(replace(pinned, force=True), agents, led, 20.0) == agents[1]
    led.risk_event("10.0.0.2", "a2", "406", 4000.0)  # second strike: disabled
    assert strat.choose(replace(pinned, force=True), agents, led, 4001.0) is None
    # force is for the pinned agent only: an unpinned forced part respects the ledger
    led.risk_event("10.0.0.1", "a1", "406", 4001.0)
    assert strat.choose(replace(PART, force=True), agents, led, 4002.0) is None


@pytest.mark.parametrize("name", NAMES)
def test_a_network_retry_resumes_on_its_agent_despite_the_interval(name: str) -> None:
    led = fresh_ledger(min_interval_seconds=300)
    led.upload_started("10.0.0.1", "a1", 0.0)
    agents = [agent("a1"), agent("a2")]
    retry = replace(PART, pinned_agent="a1", resuming=True)
    assert make_strategy(name).choose(retry, agents, led, 2.0) == agents[0]
    assert make_strategy(name).choose(replace(retry, resuming=False), agents, led, 2.0) is None


@pytest.mark.parametrize("name", NAMES)
def test_capacity_is_respected_while_filling_up(name: str) -> None:
    """Call after call, as the hub does, updating active counts; no agent is overfilled."""
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=0)
    agents = {a.agent_id: a for a in (agent("a1", max_concurrent_uploads=1, bandwidth_mbps=100),
                                      agent("a2", max_concurrent_uploads=3, bandwidth_mbps=10),
                                      agent("a3", max_concurrent_uploads=2, bandwidth_mbps=50))}
    strat = make_strategy(name)
    for i in range(6):
        pick = strat.choose(PART, list(agents.values()), led, float(i))
        assert pick is not None
        agents[pick.agent_id] = replace(pick, active_tasks=pick.active_tasks + 1)
        led.upload_started(pick.ip, pick.agent_id, float(i))
    assert {a.agent_id: a.active_tasks for a in agents.values()} == {"a1": 1, "a2": 3, "a3": 2}
    assert strat.choose(PART, list(agents.values()), led, 10.0) is None


# -- each strategy's ranking -------------------------------------------------------------


def test_round_robin_cycles_by_id_and_survives_membership_changes() -> None:
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=0)
    rr = make_strategy("round_robin")
    agents = [agent("a3"), agent("a1"), agent("a2")]
    picks = [rr.choose(PART, agents, led, 0.0).agent_id for _ in range(5)]  # type: ignore[union-attr]
    assert picks == ["a1", "a2", "a3", "a1", "a2"]
    # a2 leaves, a4 joins: continue after the last one chosen (a2) by id
    agents = [agent("a1"), agent("a3"), agent("a4")]
    picks = [rr.choose(PART, agents, led, 0.0).agent_id for _ in range(4)]  # type: ignore[union-attr]
    assert picks == ["a3", "a4", "a1", "a3"]


def test_least_connections_prefers_the_idlest_then_the_least_recently_chosen() -> None:
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=0)
    lc = make_strategy("least_connections")
    agents = [agent("a1", active_tasks=1), agent("a2", active_tasks=0),
              agent("a3", active_tasks=1, max_concurrent_uploads=4)]
    assert lc.choose(PART, agents, led, 0.0).agent_id == "a2"  # type: ignore[union-attr]
    # equal active counts: the lower ratio (a3 has more capacity) wins
    agents[1] = replace(agents[1], active_tasks=1)
    assert lc.choose(PART, agents, led, 0.0).agent_id == "a3"  # type: ignore[union-attr]
    # full tie: never chosen first (a1), then the one chosen longest ago (a2)
    agents = [agent("a1"), agent("a2"), agent("a3")]
    assert [lc.choose(PART, agents, led, 0.0).agent_id for _ in range(3)] == ["a1", "a2", "a3"]  # type: ignore[union-attr]


def test_weighted_round_robin_follows_bandwidth_smoothly() -> None:
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=0)
    wrr = make_strategy("weighted_round_robin")
    agents = [agent("a1", bandwidth_mbps=300), agent("a2", bandwidth_mbps=100)]
    picks = [wrr.choose(PART, agents, led, 0.0).agent_id for _ in range(400)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a1": 300, "a2": 100}
    assert "a1a1a1a1" not in "".join(picks)  # interleaved, not in runs
    # unknown bandwidth weighs as the slowest known
    agents.append(agent("a3"))
    picks = [wrr.choose(PART, agents, led, 0.0).agent_id for _ in range(500)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a1": 300, "a2": 100, "a3": 100}


def test_ip_diversity_prefers_an_ip_with_nothing_running() -> None:
    led = fresh_ledger()
    ipd = make_strategy("ip_diversity")
    agents = [agent("a1", bandwidth_mbps=1000, active_tasks=1), agent("a2", bandwidth_mbps=10)]
    assert ipd.choose(PART, agents, led, 0.0).agent_id == "a2"  # type: ignore[union-attr]
    # two agents on one IP count as one IP: a3 shares a1's IP and its running upload
    agents = [agent("a1", ip="10.9.9.9", active_tasks=1), agent("a3", ip="10.9.9.9"),
              agent("a2", bandwidth_mbps=1)]
    assert ipd.choose(PART, agents, led, 0.0).agent_id == "a2"  # type: ignore[union-attr]


def test_ip_diversity_prefers_the_least_recently_used_ip() -> None:
    led = fresh_ledger()
    led.upload_started("10.0.0.1", "a1", 0.0)
    led.upload_started("10.0.0.2", "a2", 1000.0)
    ipd = make_strategy("ip_diversity")
    agents = [agent("a2"), agent("a1")]
    assert ipd.choose(PART, agents, led, 5000.0).agent_id == "a1"  # type: ignore[union-attr]
    agents.append(agent("a3"))  # never used at all: first
    assert ipd.choose(PART, agents, led, 5000.0).agent_id == "a3"  # type: ignore[union-attr]


def test_ip_diversity_deprioritises_a_mixed_record_but_never_starves_it() -> None:
    led = fresh_ledger(cooldown_seconds=3600)
    led.upload_started("10.0.0.1", "a1", 0.0)
    led.risk_event("10.0.0.1", "a1", "406", 0.0)  # mixed record, cooled down by now
    led.upload_started("10.0.0.2", "a2", 0.0)
    now = 2 * 86400.0
    ipd = make_strategy("ip_diversity")
    clean, mixed = agent("a2"), agent("a1")
    assert ipd.choose(PART, [mixed, clean], led, now) == clean
    busy_clean = replace(clean, active_tasks=2)
    assert ipd.choose(PART, [mixed, busy_clean], led, now) == mixed  # not starved
    resting_clean = clean
    led.upload_started("10.0.0.2", "a2", now)
    assert ipd.choose(PART, [mixed, resting_clean], led, now + 1) == mixed


def test_ip_diversity_paces_to_the_learned_rate_and_round_robin_does_not() -> None:
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=6, cooldown_seconds=3600)
    for n in (1, 2, 3):  # three IPs each refused their 3rd start in an hour: 2/h, agreed
        ip = f"10.0.0.{n}"
        for t in (0.0, 100.0, 200.0):
            led.upload_started(ip, f"a{n}", t)
        led.upload_finished(ip, f"a{n}", 150.0)  # Bilibili accepted uploads from it
        led.risk_event(ip, f"a{n}", "406", 200.0)
    led.upload_started("10.0.0.4", "a4", 300.0)
    led.upload_started("10.0.0.4", "a4", 400.0)  # a4's IP is at the learned rate
    agents = [agent("a1"), agent("a4")]
    assert make_strategy("ip_diversity").choose(PART, agents, led, 500.0) is None
    assert make_strategy("locality").choose(PART, agents, led, 500.0) is None
    assert make_strategy("round_robin").choose(PART, agents, led, 500.0) == agents[1]
    # a1: cooling until 3800; a4: its start at 300 leaves the window at 3900
    assert next_dispatch_at(agents, led, 500.0, adaptive=True) == 3800.0
    assert next_dispatch_at(agents, led, 500.0) == 500.0
    assert make_strategy("ip_diversity").choose(PART, agents, led, 3799.0) is None
    assert make_strategy("ip_diversity").choose(PART, agents, led, 3800.0) == agents[0]
    assert make_strategy("ip_diversity").choose(PART, agents[1:], led, 3900.0) == agents[1]


def test_one_ips_406_does_not_hold_back_the_others() -> None:
    """One answer teaches that IP only: healthy IPs keep the configured cap."""
    led = fresh_ledger(min_interval_seconds=0, max_uploads_per_hour=6, cooldown_seconds=600)
    for t in (0.0, 100.0, 200.0):
        led.upload_started("10.0.0.1", "a1", t)
    led.upload_finished("10.0.0.1", "a1", 150.0)
    led.risk_event("10.0.0.1", "a1", "406", 200.0)  # 2/h for 10.0.0.1 alone
    for t in (300.0, 400.0, 500.0):
        led.upload_started("10.0.0.2", "a2", t)
    agents = [agent("a1"), agent("a2")]
    assert make_strategy("ip_diversity").choose(PART, agents, led, 600.0) == agents[1]
    for t in (900.0, 1000.0):
        led.upload_started("10.0.0.1", "a1", t)  # after its cooldown: at its own 2/h
    assert make_strategy("ip_diversity").choose(PART, agents[:1], led, 1100.0) is None


def test_locality_prefers_local_readers_then_tags_then_diversity() -> None:
    led = fresh_ledger(min_interval_seconds=300)
    led.upload_started("10.0.0.3", "a3", -5000.0)
    part = PartView(part_id=7, size=1, path="/srv/recordings/room1/p1.flv",
                    tags={"region": "sh"})
    local = agent("a1", storage_type="hybrid", local_paths=("/srv/recordings/",))
    wrong_prefix = agent("a2", storage_type="local", local_paths=("/srv/rec",))
    network = agent("a3", storage_type="network", local_paths=("/srv/recordings",))
    tagged = agent("a4", tags={"region": "sh"})
    loc = make_strategy("locality")
    assert loc.choose(part, [network, tagged, wrong_prefix, local], led, 0.0) == local
    assert not wrong_prefix.can_read(part.path) and not network.can_read(part.path)
    # the local agent's IP is resting: locality never outranks risk; the tag match wins
    led.upload_started(local.ip, "a1", 0.0)
    assert loc.choose(part, [network, tagged, wrong_prefix, local], led, 10.0) == tagged
    # local reader and tag match both resting: the most diverse IP (a2, never used)
    led.upload_started(tagged.ip, "a4", 10.0)
    assert loc.choose(part, [network, tagged, wrong_prefix, local], led, 100.0) == wrong_prefix
    assert loc.choose(part, [network, tagged, local], led, 100.0) == network


def test_single_ip_baseline_ignores_the_ledger_but_not_capacity() -> None:
    led = fresh_ledger(disable_after_events=1)
    led.risk_event("10.0.0.1", "a1", "406", 0.0)
    base = SingleIP("a1")
    agents = [agent("a1"), agent("a2")]
    assert base.choose(PART, agents, led, 1.0) == agents[0]
    assert base.choose(PART, [replace(agents[0], active_tasks=2), agents[1]], led, 1.0) is None


# -- the schedule benchmark --------------------------------------------------------------


def _bench():
    path = Path(__file__).resolve().parents[3] / "bench" / "schedule.py"
    spec = importlib.util.spec_from_file_location("bench_schedule", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_ip_diversity_meets_the_target_on_seed_1() -> None:
    """The point of spreading by IP: >= 5x fewer 406s than round robin, makespan no worse."""
    bench = _bench()
    rr = bench.simulate("round_robin", 1)
    ipd = bench.simulate("ip_diversity", 1)
    assert rr.unfinished == ipd.unfinished == 0
    assert sum(ipd.per_ip.values()) == sum(rr.per_ip.values()) == 200
    assert ipd.responses_406 * 5 <= rr.responses_406
    assert ipd.makespan <= rr.makespan


def test_bench_when_the_configured_cap_is_right_nobody_sees_a_406() -> None:
    bench = _bench()
    for name in ("round_robin", "ip_diversity"):
        assert bench.simulate(name, 2, 100, budget=6).responses_406 == 0
    assert bench.simulate("single IP", 2, 100, budget=6).responses_406 > 0
