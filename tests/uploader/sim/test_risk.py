"""The simulator's risk model: preupload budgets per IP, blocked IPs, 406 and 601/21540.

The budget itself is pure (a clock is passed in) and tested first. The other
tests talk plain HTTP to a real simulator process (the `sim` fixture, reset
before each test): source IPs need real loopback addresses.
"""

from __future__ import annotations

import os
import time

import httpx

from tests.conftest import SimServer
from tests.uploader.sim.flow import COOKIES, TOO_FAST, Flow, submit_body
from uploader.sim.risk import SlidingBudget, SubmissionLimits, SubmissionRules, Throttles


def test_sliding_budget_per_key_on_a_given_clock() -> None:
    budget = SlidingBudget()
    for now in (0.0, 1.0):
        assert budget.allows("a", limit=2, window=10, now=now)
        budget.count("a", now=now)
    assert not budget.allows("a", limit=2, window=10, now=9.9)
    assert budget.allows("b", limit=2, window=10, now=9.9)  # another key, its own budget
    assert budget.allows("a", limit=2, window=10, now=10.0)  # the first event left the window
    assert budget.allows("a", limit=0, window=10, now=10.0)  # 0: unlimited


def test_sliding_budget_says_when_it_frees() -> None:
    budget = SlidingBudget()
    for now in (0.0, 5.0):
        budget.count("a", now=now)
    assert budget.frees_at("a", limit=2, window=10, now=6) == 10.0
    assert budget.frees_at("a", limit=3, window=10, now=6) == 6  # room now
    budget.clear("a")
    assert budget.used("a", window=10, now=6) == 0


def test_throttles_by_key_and_by_voucher() -> None:
    throttles = Throttles()
    held = throttles.start("ip-a", now=0, until=60, voucher="voucher_1")
    assert throttles.current("ip-a", now=59.9) is held
    assert throttles.current("ip-b", now=1) is None
    assert throttles.current("ip-a", now=60) is None  # over: forgotten
    assert throttles.solve("voucher_1") is None  # its voucher went with it
    forever = throttles.start("ip-a", now=100, until=None, voucher="voucher_2")
    assert throttles.current("ip-a", now=1e9) is forever
    assert [t.voucher for t in throttles.all(now=1e9)] == ["voucher_2"]
    assert throttles.solve("voucher_2") is forever
    assert throttles.current("ip-a", now=1e9) is None


def test_submission_limits_per_account() -> None:
    limits = SubmissionLimits()
    rules = SubmissionRules(min_gap=60, max_per_window=2, window=600)
    assert limits.refusal("a", rules, now=0) is None
    limits.count("a", now=0)
    assert limits.refusal("a", rules, now=30) == 21566
    assert limits.refusal("b", rules, now=30) is None  # another account
    assert limits.refusal("a", rules, now=60) is None
    limits.count("a", now=60)
    assert limits.refusal("a", rules, now=200) == 137022
    assert limits.refusal("a", rules, now=600.1) is None  # the first left the window
    assert limits.refusal("a", SubmissionRules(), now=61) is None  # every rule off


def test_submission_cadence_penalty_sticks() -> None:
    limits = SubmissionLimits()
    rules = SubmissionRules(cadence_count=2, cadence_tolerance=1)
    for now in (0, 300, 700):  # gaps 300, 400: no beat
        assert limits.refusal("a", rules, now=now) is None
        limits.count("a", now=now)
    assert limits.refusal("a", rules, now=1100.5) == 21515  # gaps 400, 400.5
    assert limits.refusal("a", SubmissionRules(), now=1e6) == 21515  # sticky
    assert limits.penalised == {"a"}


def test_preupload_budget_per_ip_then_406(sim: SimServer) -> None:
    sim.config(risk={"preupload_budget": 2, "window_seconds": 3600})
    flow = Flow(sim, 10)
    assert flow.preupload().status_code == 200
    assert flow.preupload().status_code == 200
    third = flow.preupload()
    assert third.status_code == 406
    assert third.json() == {"code": 406, "message": TOO_FAST}
    # Another IP has its own budget.
    assert Flow(sim, 10, ip="127.0.0.2").preupload().status_code == 200
    per_ip = httpx.get(f"{sim.url}/_sim/requests", params={"op": "preupload", "ip": "127.0.0.1"})
    assert [r["status"] for r in per_ip.json()["requests"]] == [200, 200, 406]


def test_preupload_budget_window_slides(sim: SimServer) -> None:
    sim.config(risk={"preupload_budget": 1, "window_seconds": 0.5})
    flow = Flow(sim, 10)
    assert flow.preupload().status_code == 200
    assert flow.preupload().status_code == 406
    time.sleep(0.6)
    assert flow.preupload().status_code == 200


def test_always_406_on_preupload_and_put(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(risk={"always_406": ["127.0.0.1"]})
    assert flow.put(1, data).status_code == 406
    assert flow.preupload().status_code == 406
    assert Flow(sim, 10, ip="127.0.0.2").preupload().status_code == 200


def test_code_601_and_21540(sim: SimServer) -> None:
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    sim.config(risk={"code_601": ["127.0.0.1"]})
    reply = flow.preupload()
    assert reply.status_code == 200
    body = reply.json()
    assert body["OK"] == 0 and body["code"] == 601 and body["message"] == TOO_FAST
    assert body["detail"]["v_voucher"].startswith("voucher_")
    submit = httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    assert submit.json()["code"] == 21540
    assert sim.submissions() == []
