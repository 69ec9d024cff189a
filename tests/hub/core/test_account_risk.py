"""The per-account ledger, driven by events and a fake clock (plain numbers)."""

from __future__ import annotations

import json

import pytest

from hub.config import HubConfig
from hub.core.account_risk import (
    COOLING,
    OK,
    PACED,
    PENALISED,
    AccountLedger,
    AccountRules,
)

ACC = "1"


def ledger(**rules: float) -> AccountLedger:
    base = AccountRules.open()
    return AccountLedger(AccountRules(**{**base.__dict__, **rules}))


def test_rules_from_hub_config_and_open_rules() -> None:
    rules = AccountRules.from_settings(HubConfig().risk)
    assert (rules.submit_min_gap_seconds, rules.submits_per_day, rules.preuploads_per_hour,
            rules.suspect_ips, rules.learned_clean_seconds) == (600, 12, 20, 2, 86400)
    led = AccountLedger(AccountRules.open())
    for t in range(100):
        led.preupload_started(ACC, float(t))
        led.submit_sent(ACC, float(t))
    assert led.preupload_fit(ACC, 100.0) == (True, "ok") and led.submit_fit(ACC, 100.0)[0]


def test_preupload_gap_and_caps_hold_the_account_whatever_the_ip() -> None:
    led = ledger(preupload_min_gap_seconds=60, preuploads_per_hour=3, preuploads_per_day=4)
    assert led.preupload_fit(ACC, 0.0) == (True, "ok")  # unknown account: fit
    led.preupload_started(ACC, 0.0)
    fit, reason = led.preupload_fit(ACC, 30.0)
    assert not fit and "last preupload 30 s ago" in reason and reason.startswith("account 1")
    assert led.preupload_next_at(ACC, 30.0) == 60.0 and led.state(ACC, 30.0) == PACED
    assert led.preupload_fit("2", 30.0)[0]  # per account
    led.preupload_started(ACC, 60.0)
    led.preupload_started(ACC, 120.0)
    fit, reason = led.preupload_fit(ACC, 1000.0)
    assert not fit and "hourly preupload cap" in reason
    assert led.preupload_next_at(ACC, 1000.0) == 3600.0
    led.preupload_started(ACC, 3600.0)
    fit, reason = led.preupload_fit(ACC, 5000.0)
    assert not fit and "daily preupload cap" in reason
    assert led.preupload_next_at(ACC, 5000.0) == 86400.0
    assert led.preupload_fit(ACC, 5000.0, force=True)[0]  # an admin's forced assignment


def test_submissions_are_spaced_by_a_varying_gap_never_a_regular_beat() -> None:
    led = ledger(submit_min_gap_seconds=600, submit_gap_jitter=0.5)
    t = 0.0
    gaps = []
    for _ in range(12):  # a backlog: each goes out as soon as the account is fit
        led.submit_sent(ACC, t)
        nxt = led.submit_next_at(ACC, t)
        assert nxt is not None and not led.submit_fit(ACC, nxt - 1)[0]
        assert led.submit_fit(ACC, nxt)[0]
        gaps.append(nxt - t)
        t = nxt
    assert all(600 <= g <= 900 for g in gaps)
    # consecutive gaps differ by at least 38 % of the 300 s stretch: no cadence to detect
    assert min(abs(a - b) for a, b in zip(gaps, gaps[1:], strict=False)) > 100


def test_submission_caps() -> None:
    led = ledger(submits_per_hour=2, submits_per_day=3)
    led.submit_sent(ACC, 0.0)
    led.submit_sent(ACC, 10.0)
    fit, reason = led.submit_fit(ACC, 20.0)
    assert not fit and "hourly submission cap" in reason
    assert led.submit_next_at(ACC, 20.0) == 3600.0
    led.submit_sent(ACC, 4000.0)
    assert "daily submission cap" in led.submit_fit(ACC, 8000.0)[1]
    assert led.submit_next_at(ACC, 8000.0) == 86400.0


def test_a_throttle_honours_the_named_wait_else_backs_off_doubling() -> None:
    led = ledger(throttle_cooldown_seconds=100, throttle_cooldown_max_seconds=350)
    assert led.throttled(ACC, 0.0, code=21566, retry_after=42.0) == 42.0
    fit, reason = led.submit_fit(ACC, 41.0)
    assert not fit and "throttled" in reason and led.state(ACC, 41.0) == COOLING
    assert led.preupload_fit(ACC, 41.0)[0]  # a submission throttle does not stop uploads
    assert led.submit_fit(ACC, 42.0)[0]
    # no named wait: 100, 200, then capped at 350 (the streak counts from the named one)
    assert led.throttled(ACC, 50.0, code=137022) == 50.0 + 200.0
    assert led.throttled(ACC, 300.0, code=137022) == 300.0 + 350.0
    led.submit_accepted(ACC, 700.0)
    assert led.throttled(ACC, 800.0, code=21566) == 900.0  # accepted: starts afresh
    assert led.describe(ACC, 800.0)["submit"]["throttles_in_a_row"] == 1


def test_a_penalty_stops_the_account_until_an_admin_releases_it() -> None:
    led = ledger()
    led.penalised(ACC, 10.0, code=21515, message="批量作弊投稿", ip="10.0.0.1")
    for t in (11.0, 86400.0 * 30):
        assert led.state(ACC, t) == PENALISED
        assert not led.preupload_fit(ACC, t)[0] and not led.submit_fit(ACC, t)[0]
        assert not led.preupload_fit(ACC, t, force=True)[0]
    assert led.preupload_next_at(ACC, 11.0) is None and led.submit_next_at(ACC, 11.0) is None
    assert "21515" in led.describe(ACC, 11.0)["penalty"]
    assert led.admin_release(ACC, 20.0) and led.state(ACC, 21.0) == OK
    assert not led.admin_release("nobody", 20.0)


def test_answers_from_two_ips_put_the_account_at_fault() -> None:
    led = ledger(suspect_ips=2, suspect_window_seconds=3600, cooldown_seconds=1000)
    for t in (0.0, 100.0, 200.0):
        led.preupload_started(ACC, t)
    v1 = led.risk_event(ACC, "10.0.0.1", "a1", 200.0, code=406)
    assert not v1.suspected and led.preupload_fit(ACC, 201.0)[0]  # one IP: the IP's fault
    v2 = led.risk_event(ACC, "10.0.0.1", "a1", 250.0, code=406)
    assert not v2.suspected  # the same IP again is still one IP
    led.preupload_started(ACC, 300.0)
    v3 = led.risk_event(ACC, "10.0.0.2", "a2", 300.0, code=601, voucher="voucher_1")
    assert v3.suspected and v3.since == 200.0 and v3.ips == ("10.0.0.1", "10.0.0.2")
    fit, reason = led.preupload_fit(ACC, 301.0)
    assert not fit and "cooling down after risk control" in reason
    lim = led.learned_limit(ACC, 301.0)
    # the first answer came after 3 preuploads in the hour: 2/h for the account
    assert lim is not None and lim.hourly_cap == 2 and lim.scope == "account"
    assert [e.ip for e in lim.evidence] == ["10.0.0.1"]
    view = led.describe(ACC, 1301.0)
    assert view["suspected"] and view["learned"]["hourly_cap"] == 2
    assert view["preupload"]["hourly_cap"] == 2
    # a later answer while at fault is the same episode, from any IP
    assert led.risk_event(ACC, "10.0.0.3", "a3", 1400.0).suspected
    # the lesson fades after a clean period, and an admin can forget it sooner
    clean = led.rules.learned_clean_seconds
    assert led.learned_limit(ACC, 1400.0 + clean) is None
    assert led.forget(ACC) and led.learned_limit(ACC, 1500.0) is None
    assert not led.forget("nobody")


def test_answers_outside_the_window_or_before_a_release_do_not_add_up() -> None:
    led = ledger(suspect_ips=2, suspect_window_seconds=600)
    assert not led.risk_event(ACC, "10.0.0.1", "a1", 0.0).suspected
    assert not led.risk_event(ACC, "10.0.0.2", "a2", 700.0).suspected  # 700 s apart
    led.admin_release(ACC, 800.0)
    assert not led.risk_event(ACC, "10.0.0.3", "a3", 900.0).suspected  # 700 is before it


def test_a_solved_captcha_lifts_the_accounts_preupload_cooldown() -> None:
    led = ledger(suspect_ips=2, cooldown_seconds=1000)
    led.risk_event(ACC, "10.0.0.1", "a1", 0.0)
    led.risk_event(ACC, "10.0.0.2", "a2", 10.0, voucher="v")
    assert not led.preupload_fit(ACC, 11.0)[0]
    assert led.lift_cooldown(ACC) and led.preupload_fit(ACC, 11.0)[0]
    assert not led.lift_cooldown(ACC) and not led.lift_cooldown("nobody")


def test_snapshot_restore_round_trip_and_change_tracking() -> None:
    led = ledger(preupload_min_gap_seconds=30, submit_min_gap_seconds=100, suspect_ips=2)
    assert not led.take_changed()
    led.preupload_started(ACC, 0.0)
    led.submit_sent(ACC, 5.0)
    led.risk_event(ACC, "10.0.0.1", "a1", 6.0)
    led.risk_event(ACC, "10.0.0.2", "a2", 7.0, voucher="v", retry_after=5.0)
    led.throttled(ACC, 8.0, code=21566)
    led.penalised("2", 9.0, code=21590, message="投稿工具已停用")
    assert led.take_changed() and not led.take_changed()
    led.describe(ACC, 10.0)
    led.preupload_fit(ACC, 10.0)
    assert not led.take_changed()  # queries change nothing
    data = json.loads(json.dumps(led.snapshot()))
    again = AccountLedger(led.rules)
    again.restore(data)
    for now in (10.0, 50.0, 5000.0):
        for acc in (ACC, "2", "3"):
            assert again.describe(acc, now) == led.describe(acc, now)
    assert again.known() == [ACC, "2"]
    with pytest.raises(ValueError):
        again.restore({"version": 7})
