"""The per-IP risk ledger, driven by events and a fake clock (plain numbers)."""

from __future__ import annotations

import json

import pytest

from hub.config import RiskSettings
from hub.core.risk import CAPPED, COOLING, DISABLED, OK, RESTING, RiskLedger, RiskRules

IP, OTHER = "203.0.113.10", "198.51.100.7"


def ledger(**rules: float) -> RiskLedger:
    return RiskLedger(RiskRules(**rules))


def test_rules_from_hub_config() -> None:
    settings = RiskSettings(min_interval_seconds=120, max_uploads_per_hour=4,
                            cooldown_seconds=900, disable_after_events=2)
    rules = RiskRules.from_settings(settings)
    assert (rules.min_interval_seconds, rules.max_uploads_per_hour,
            rules.cooldown_seconds, rules.disable_after_events) == (120, 4, 900, 2)


def test_unknown_ip_is_fit() -> None:
    assert ledger().is_fit(IP, 0.0) == (True, "ok")


def test_min_interval_between_starts() -> None:
    led = ledger(min_interval_seconds=300)
    led.upload_started(IP, "a1", 1000.0)
    fit, reason = led.is_fit(IP, 1299.0)
    assert not fit and "min interval" in reason
    assert led.state(IP, 1299.0) == RESTING
    assert led.is_fit(OTHER, 1001.0)[0]  # per IP, not global
    assert led.next_fit_at(IP, 1001.0) == 1300.0
    assert led.is_fit(IP, 1300.0)[0]


def test_agents_sharing_an_ip_share_its_interval() -> None:
    led = ledger(min_interval_seconds=300)
    led.upload_started(IP, "a1", 0.0)
    assert not led.is_fit(IP, 10.0)[0]  # agent a2 behind the same NAT must wait too
    assert led.describe(10.0)[0]["agents"] == ["a1"]


def test_hourly_cap_is_a_sliding_window() -> None:
    led = ledger(min_interval_seconds=60, max_uploads_per_hour=3)
    for t in (0.0, 100.0, 2000.0):
        led.upload_started(IP, "a1", t)
    fit, reason = led.is_fit(IP, 3000.0)
    assert not fit and "hourly cap" in reason and led.state(IP, 3000.0) == CAPPED
    assert led.uploads_last_hour(IP, 3000.0) == 3
    assert led.next_fit_at(IP, 3000.0) == 3600.0  # when the start at 0 leaves the window
    assert not led.is_fit(IP, 3599.0)[0]
    assert led.is_fit(IP, 3600.0)[0]
    assert led.uploads_last_hour(IP, 3600.0) == 2
    led.upload_started(IP, "a1", 3600.0)
    # the window slid: the start at 100 leaves next, not a fixed clock hour
    assert led.next_fit_at(IP, 3600.0) == 3700.0


def test_risk_event_cools_the_ip_down() -> None:
    led = ledger(cooldown_seconds=3600, min_interval_seconds=0)
    led.upload_started(IP, "a1", 0.0)
    led.risk_event(IP, "a1", "406", 10.0)
    fit, reason = led.is_fit(IP, 3609.0)
    assert not fit and "cooling" in reason and led.state(IP, 3609.0) == COOLING
    assert led.is_fit(OTHER, 20.0)[0]
    assert led.next_fit_at(IP, 20.0) == 3610.0
    assert led.is_fit(IP, 3610.0)[0]


def test_cooldown_doubles_with_repeated_events() -> None:
    led = ledger(cooldown_seconds=100, disable_after_events=5, min_interval_seconds=0)
    t = 0.0
    for expected in (100, 200, 400, 800):
        led.risk_event(IP, "a1", "406", t)
        assert led.next_fit_at(IP, t) == t + expected
        t += expected  # hit again right after the cooldown ends
    row = led.describe(t)[0]
    assert row["strikes"] == 4 and not row["disabled"]


def test_cooldown_growth_is_capped() -> None:
    led = ledger(cooldown_seconds=100, cooldown_max_seconds=250, disable_after_events=0,
                 min_interval_seconds=0)
    t = 0.0
    for _ in range(5):
        led.risk_event(IP, "a1", "601", t)
        t = led.next_fit_at(IP, t)
    assert led.next_fit_at(IP, t - 1) == t and t == 100 + 200 + 250 + 250 + 250


def test_events_during_a_cooldown_are_one_episode() -> None:
    """Uploads in flight when the first 406 came fail too; that is not three strikes."""
    led = ledger(cooldown_seconds=3600, disable_after_events=3, min_interval_seconds=0)
    for t in (0.0, 5.0, 9.0):
        led.risk_event(IP, f"a{t}", "406", t)
    row = led.describe(10.0)[0]
    assert row["strikes"] == 1 and len(row["events"]) == 3 and not row["disabled"]
    assert led.next_fit_at(IP, 10.0) == 3600.0  # not extended by the later ones


def test_strikes_are_forgotten_after_the_strike_memory() -> None:
    led = ledger(cooldown_seconds=100, strike_memory_seconds=1000, min_interval_seconds=0)
    led.risk_event(IP, "a1", "406", 0.0)
    led.risk_event(IP, "a1", "406", 2000.0)  # the first strike is older than the memory
    assert led.next_fit_at(IP, 2000.0) == 2100.0


def test_disabled_after_n_events_until_admin_reenables() -> None:
    led = ledger(cooldown_seconds=100, disable_after_events=3, min_interval_seconds=0)
    led.risk_event(IP, "a1", "406", 0.0)
    led.risk_event(IP, "a2", "406", 100.0)
    led.risk_event(IP, "a1", "601", 300.0)
    later = 10 * 86400.0
    fit, reason = led.is_fit(IP, later)
    assert not fit and "disabled" in reason and led.state(IP, later) == DISABLED
    assert led.is_fit(IP, later, force=True)[0] is False  # force never beats disabled
    assert led.next_fit_at(IP, later) is None
    led.admin_reenable(IP, later)
    assert led.is_fit(IP, later) == (True, "ok")
    # strikes start over: the next event is a first strike again, not a fourth
    led.risk_event(IP, "a1", "406", later + 1)
    assert led.state(IP, later + 1) == COOLING
    assert led.next_fit_at(IP, later + 1) == later + 101
    # the history is kept for the audit trail and the ranking
    assert len(led.describe(later + 1)[0]["events"]) == 4


def test_disable_after_zero_means_never() -> None:
    led = ledger(cooldown_seconds=1, disable_after_events=0, min_interval_seconds=0)
    for t in range(10):
        led.risk_event(IP, "a1", "406", float(t * 10))
    assert led.state(IP, 1000.0) == OK


def test_force_and_resuming_override_only_what_they_should() -> None:
    led = ledger(min_interval_seconds=300, cooldown_seconds=3600)
    led.upload_started(IP, "a1", 0.0)
    # a resumed session makes no new preupload: interval and cap do not apply
    assert led.is_fit(IP, 10.0, resuming=True)[0]
    led.risk_event(IP, "a1", "406", 20.0)
    assert not led.is_fit(IP, 30.0, resuming=True)[0]  # but a cooldown does
    fit, reason = led.is_fit(IP, 30.0, force=True)
    assert fit and reason.startswith("forced despite: cooling")


def test_mixed_record_ranks_lower_and_fades() -> None:
    led = ledger(min_interval_seconds=300, cooldown_seconds=3600,
                 record_half_life_seconds=86400)
    clean, mixed = "192.0.2.1", "192.0.2.2"
    led.upload_started(clean, "a1", 0.0)
    led.upload_started(mixed, "a2", 0.0)
    led.risk_event(mixed, "a2", "406", 0.0)
    now = 3 * 86400.0
    assert led.score(clean, now) > led.score(mixed, now)
    gap_fresh = led.score(clean, 7200.0) - led.score(mixed, 7200.0)
    gap_old = led.score(clean, now) - led.score(mixed, now)
    assert 0 < gap_old < gap_fresh  # the record fades
    assert led.record_penalty(mixed, 86400.0) == pytest.approx(0.5)


def test_score_prefers_least_recently_used_and_fewest_this_hour() -> None:
    led = ledger()
    led.upload_started("192.0.2.1", "a1", 0.0)
    led.upload_started("192.0.2.2", "a2", 1000.0)
    assert led.score("192.0.2.1", 2000.0) > led.score("192.0.2.2", 2000.0)
    assert led.score("192.0.2.9", 2000.0) > led.score("192.0.2.1", 2000.0)  # never used


def teach(led: RiskLedger, ip: str, starts: int, t0: float = 0.0, *, agent: str = "a1",
          account: str = "") -> float:
    """A clean IP starts ``starts`` uploads 10 min apart (Bilibili accepts all but the last),
    and its last start is refused: evidence of ``starts - 1`` an hour. Returns that time."""
    t = t0
    for i in range(starts):
        t = t0 + 600.0 * i
        led.upload_started(ip, agent, t)
        if i < starts - 1:
            led.upload_finished(ip, agent, t + 300.0)
    led.risk_event(ip, agent, "406", t, account=account)
    return t


def test_a_406_teaches_that_ip_and_no_other() -> None:
    led = ledger(min_interval_seconds=0, max_uploads_per_hour=6, cooldown_seconds=3600)
    assert led.learned_hourly_cap(0.0) is None
    t = teach(led, IP, 5)  # the 5th start in an hour was refused
    assert led.learned_hourly_cap(t, IP) == 4
    assert led.learned_hourly_cap(t) is None  # one IP is no quorum: no mesh-wide limit
    assert led.learned_hourly_cap(t, OTHER) is None
    # another IP with 4 starts this hour is fit, adaptive or not
    for s in (0.0, 600.0, 1200.0, 1800.0):
        led.upload_started(OTHER, "a2", s)
    assert led.is_fit(OTHER, 2500.0, adaptive=True)[0]
    assert led.hourly_cap(2500.0) == 6 and led.hourly_cap(2500.0, adaptive=True, ip=IP) == 4
    # once its cooldown is over, the taught IP itself is held to 4 an hour
    after = t + 3600.0
    for s in (after, after + 60, after + 120, after + 180):
        led.upload_started(IP, "a1", s)
    fit, reason = led.is_fit(IP, after + 200, adaptive=True)
    assert not fit and "learned" in reason
    assert led.is_fit(IP, after + 200)[0]  # not when the strategy is not adaptive
    row = next(r for r in led.describe(after + 200) if r["ip"] == IP)
    assert row["learned_hourly_cap"] == 4
    assert row["learned"]["scope"] == "ip" and row["learned"]["hourly_cap"] == 4
    (proof,) = row["learned"]["evidence"]
    assert (proof["time"], proof["starts_last_hour"], proof["shows_hourly_cap"]) == (t, 5, 4)


def test_the_mesh_is_held_only_when_three_ips_agree() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, mesh_quorum=3)
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    teach(led, ips[0], 3)  # 2/h
    teach(led, ips[1], 5)  # 4/h
    assert led.learned_hourly_cap(3000.0) is None
    assert led.learned_hourly_cap(3000.0, ips[3]) is None
    teach(led, ips[2], 6)  # 5/h: three IPs have learned; at least three were refused at <= 5
    mesh = led.mesh_limit(3000.0)
    assert mesh is not None and mesh.hourly_cap == 5 and mesh.scope == "mesh"
    assert {e.ip for e in mesh.evidence} == set(ips[:3])
    assert led.learned_hourly_cap(3000.0, ips[3]) == 5
    assert led.learned_hourly_cap(3000.0, ips[0]) == 2  # its own is lower
    assert [lim["scope"] for lim in led.learned_limits(3000.0)] == ["ip", "ip", "ip", "mesh"]
    # forgetting one IP's limit breaks the quorum
    assert led.forget_ip(ips[2])
    assert led.mesh_limit(3000.0) is None and led.learned_limit(ips[2], 3000.0) is None
    assert led.learned_hourly_cap(3000.0, ips[0]) == 2


def test_learned_limits_fade_after_a_clean_period_and_a_new_streak_starts_afresh() -> None:
    clean = 6 * 3600.0
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, learned_clean_seconds=clean,
                 mesh_quorum=2)
    t1 = teach(led, IP, 3)
    t2 = teach(led, OTHER, 4)
    assert led.learned_hourly_cap(t2, IP) == 2 and led.mesh_limit(t2).hourly_cap == 3
    assert led.learned_limit(IP, t1 + clean - 1) is not None
    assert led.learned_limit(IP, t1 + clean) is None  # clean for the whole period
    assert led.mesh_limit(t1 + clean) is None  # the quorum went with it
    assert led.learned_limit(OTHER, t1 + clean) is not None
    # a new strike after the clean gap: the old evidence (2/h) does not come back
    t3 = teach(led, IP, 6, t0=t1 + clean + 100)
    lim = led.learned_limit(IP, t3)
    assert lim is not None and lim.hourly_cap == 5 and [e.time for e in lim.evidence] == [t3]


def test_only_a_clean_first_strike_teaches_the_rate() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, disable_after_events=5)
    led.upload_started(IP, "a1", 0.0)
    led.risk_event(IP, "a1", "406", 0.0)  # one start: says nothing about rate
    assert led.learned_hourly_cap(1.0, IP) is None
    led.upload_started(IP, "a1", 100.0)
    led.upload_started(IP, "a1", 150.0)
    led.risk_event(IP, "a1", "406", 150.0)  # second strike: the throttle outlasted us
    assert led.learned_hourly_cap(151.0, IP) is None
    led.upload_started(OTHER, "a2", 0.0)
    led.upload_started(OTHER, "a2", 10.0)
    led.risk_event(OTHER, "a2", "406", 10.0)  # refused from the first: a blocked IP, no rate
    assert led.learned_hourly_cap(10.5, OTHER) is None
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, disable_after_events=5)
    led.upload_started(OTHER, "a2", 0.0)
    led.upload_finished(OTHER, "a2", 5.0)
    led.upload_started(OTHER, "a2", 10.0)
    led.risk_event(OTHER, "a2", "406", 10.0)
    led.upload_started(OTHER, "a2", 11.0)
    led.risk_event(OTHER, "a2", "406", 11.0)  # during the cooldown: same episode
    assert led.learned_hourly_cap(12.0, OTHER) == 1


def test_reenabling_an_ip_forgets_what_it_taught() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, disable_after_events=1,
                 mesh_quorum=2)
    teach(led, IP, 3)
    teach(led, OTHER, 3)
    assert led.state(IP, 2000.0) == DISABLED and led.mesh_limit(2000.0).hourly_cap == 2
    led.admin_reenable(IP, 2000.0)
    assert led.learned_limit(IP, 2001.0) is None and led.mesh_limit(2001.0) is None
    assert led.learned_hourly_cap(2001.0, OTHER) == 2  # the other IP's own lesson stays
    assert len(next(r for r in led.describe(2001.0) if r["ip"] == IP)["events"]) == 1


def test_forgetting_the_mesh_limit_keeps_each_ips_own() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=100, mesh_quorum=2)
    teach(led, IP, 3)
    teach(led, OTHER, 4)
    assert led.learned_hourly_cap(2000.0, "192.0.2.1") == 3
    led.forget_mesh()
    assert led.mesh_limit(2000.0) is None
    assert led.learned_hourly_cap(2000.0, "192.0.2.1") is None
    assert led.learned_hourly_cap(2000.0, IP) == 2 and led.learned_hourly_cap(2000.0, OTHER) == 3
    teach(led, "192.0.2.1", 3, t0=5000.0)  # new evidence counts again
    assert led.mesh_limit(7000.0) is None  # the forgotten ones do not come back
    assert led.forget_ip("nowhere") is False


def test_blaming_the_account_takes_its_answers_off_the_ips() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=1000, disable_after_events=2,
                 mesh_quorum=2)
    led.upload_started("10.0.0.9", "a9", 0.0)
    led.risk_event("10.0.0.9", "a9", "406", 1200.0, account="other")  # another account's
    t1 = teach(led, IP, 3, account="acc1")
    t2 = teach(led, OTHER, 3, t0=100.0, account="acc1")
    led.upload_started(OTHER, "a1", t2 + 1)
    assert led.mesh_limit(t2 + 2) is not None
    assert led.state(IP, t2 + 2) == COOLING
    changed = led.blame_account("acc1", since=t1 - 1, now=t2 + 2)
    assert sorted(changed) == sorted([IP, OTHER])
    assert led.state(IP, t2 + 2) == OK and led.state(OTHER, t2 + 2) == OK
    assert led.mesh_limit(t2 + 2) is None and led.learned_limit(IP, t2 + 2) is None
    assert led.state("10.0.0.9", t2 + 2) == COOLING  # not that account's answer
    row = next(r for r in led.describe(t2 + 2) if r["ip"] == IP)
    assert [(e["blamed"], e["strike"]) for e in row["events"]] == [("account", False)]
    # a disable the account's answers caused is lifted too
    led2 = ledger(min_interval_seconds=0, cooldown_seconds=10, disable_after_events=2)
    led2.risk_event(IP, "a1", "406", 0.0, account="acc1")
    led2.risk_event(IP, "a1", "406", 20.0, account="acc1")
    assert led2.state(IP, 21.0) == DISABLED
    led2.blame_account("acc1", since=0.0, now=21.0)
    assert led2.state(IP, 21.0) == OK


def test_a_solved_captcha_lifts_the_cooldown_and_restarts_the_window() -> None:
    led = ledger(min_interval_seconds=0, cooldown_seconds=1000, max_uploads_per_hour=6)
    t = teach(led, IP, 2, account="acc1")  # 2 starts, the 2nd answered 601: 1/h learned
    assert led.state(IP, t + 5) == COOLING
    assert led.captcha_solved(IP, t + 5) and led.state(IP, t + 5, adaptive=True) == OK
    # Bilibili counts afresh after a solved captcha; the lesson (1/h) caps the new window
    led.upload_started(IP, "a1", t + 6)
    assert led.state(IP, t + 7, adaptive=True) == CAPPED
    assert not led.captcha_solved(OTHER, t + 7)
    event = led.risk_event(OTHER, "a2", "601", 0.0, account="acc1", voucher="voucher_x")
    assert event.voucher == "voucher_x" and event.cooldown_until == 1000.0


def test_snapshot_restore_round_trip() -> None:
    led = ledger(cooldown_seconds=100, disable_after_events=2, min_interval_seconds=60)
    led.note_agent("192.0.2.50", "idle-agent")
    for t in (0.0, 100.0, 200.0):
        led.upload_started(IP, "a1", t)
    led.upload_finished(IP, "a1", 250.0)
    led.upload_finished(IP, "a1", 260.0, ok=False)
    led.risk_event(IP, "a1", "406", 300.0)
    led.upload_started(OTHER, "a2", 0.0)
    led.risk_event(OTHER, "a2", "406", 10.0)
    led.risk_event(OTHER, "a2", "601", 200.0)  # disabled
    data = json.loads(json.dumps(led.snapshot()))  # what the store saves is JSON-safe
    again = RiskLedger.from_snapshot(data, led.rules)
    for now in (301.0, 350.0, 399.0, 400.0, 3700.0):
        assert again.describe(now) == led.describe(now)
        for ip in (IP, OTHER, "192.0.2.50"):
            assert again.is_fit(ip, now) == led.is_fit(ip, now)
            assert again.score(ip, now) == led.score(ip, now)
    assert again.learned_hourly_cap(400.0, IP) == led.learned_hourly_cap(400.0, IP) == 2
    with pytest.raises(ValueError):
        RiskLedger().restore({"version": 99})


def test_describe_rows_for_the_admin_api() -> None:
    led = ledger(min_interval_seconds=300)
    led.note_agent(OTHER, "a2")
    led.upload_started(IP, "a1", 0.0)
    rows = {r["ip"]: r for r in led.describe(10.0)}
    assert set(rows) == {IP, OTHER}
    row = rows[IP]
    for key in ("ip", "agents", "last_upload_at", "uploads_last_hour", "events",
                "cooldown_until", "disabled", "state"):
        assert key in row
    assert (row["agents"], row["last_upload_at"], row["uploads_last_hour"]) == (["a1"], 0.0, 1)
    assert row["state"] == RESTING and row["cooldown_until"] is None
    assert rows[OTHER]["state"] == OK and rows[OTHER]["last_upload_at"] is None


def test_queries_do_not_forget_and_late_events_are_ordered() -> None:
    led = ledger(min_interval_seconds=0, max_uploads_per_hour=2)
    led.upload_started(IP, "a1", 100.0)
    led.upload_started(IP, "a1", 50.0)  # reported late
    assert led.next_fit_at(IP, 200.0) == 3650.0  # the earlier start leaves first
    led.describe(10_000.0)  # a query far ahead must not drop what an earlier query needs
    assert led.uploads_last_hour(IP, 200.0) == 2 and not led.is_fit(IP, 200.0)[0]


def test_take_changes_names_only_ips_that_events_touched() -> None:
    """The hub writes only changed IPs; replaying those over an old snapshot is current."""
    led = ledger(cooldown_seconds=100, min_interval_seconds=0)
    for i in range(50):
        led.note_agent(f"10.0.0.{i}", f"a{i}")
    base = json.loads(json.dumps(led.snapshot()))
    assert len(led.take_changes()) == 50
    assert led.take_changes() == {}  # queries and repeated takes change nothing
    led.is_fit(IP, 5.0, adaptive=True)
    led.describe(5.0)
    assert led.take_changes() == {}
    led.upload_started("10.0.0.3", "a3", 10.0)
    led.risk_event("10.0.0.7", "a7", "406", 11.0)
    changes = led.take_changes()
    assert set(changes) == {"10.0.0.3", "10.0.0.7"}
    led.upload_finished(OTHER, "b", 12.0)
    led.mark_changed(changes)  # a failed write: offered again with the next changes
    changes = {**led.take_changes()}
    assert set(changes) == {"10.0.0.3", "10.0.0.7", OTHER}
    base["ips"].update(json.loads(json.dumps(changes)))
    again = RiskLedger.from_snapshot(base, led.rules)
    assert again.describe(20.0) == led.describe(20.0)
    assert again.take_changes() == {}  # restored state is what the store holds
    led.forget_ip("10.0.0.7")
    assert set(led.take_changes()) == {"10.0.0.7"}


def test_learned_cap_follows_new_evidence_after_being_asked() -> None:
    led = ledger(min_interval_seconds=0, max_uploads_per_hour=6, cooldown_seconds=100,
                 mesh_quorum=2)
    assert led.learned_hourly_cap(0.0, IP) is None  # asked (and remembered) before any event
    assert led.mesh_limit(0.0) is None
    teach(led, IP, 4)
    assert led.learned_hourly_cap(7.0, IP) == 3
    teach(led, OTHER, 3)
    assert led.learned_hourly_cap(2000.0) == 3  # the mesh-wide one, after a quorum of two
