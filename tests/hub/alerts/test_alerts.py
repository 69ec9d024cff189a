"""Alert rules (hub/alerts/rules.py) on a fake clock, and delivery (hub/alerts/delivery.py)
against an in-process webhook transport: firing, de-duplication, recovery, retries,
a receiver that is down, and a webhook URL whose token never reaches the log."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from hub.alerts.delivery import QUEUE_SIZE, AlertDelivery
from hub.alerts.rules import (
    FIRING,
    RESOLVED,
    AccountSample,
    AgentSample,
    Alert,
    AlertEvaluator,
    AlertRules,
    CaptchaSample,
    IpSample,
    Snapshot,
    TaskSample,
)

RULES = AlertRules(agent_offline_seconds=300, failure_rate=0.1, failure_window_seconds=3600,
                   min_failures=3, low_speed_bps=100_000, low_speed_seconds=60)


def agents(*samples: AgentSample) -> Snapshot:
    return Snapshot(agents=samples)


def states(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.key, a.state) for a in alerts]


def test_offline_agent_fires_once_after_the_threshold_and_recovers() -> None:
    ev = AlertEvaluator(RULES)
    down = AgentSample("a1", "offline", last_heartbeat=1000.0, ip_address="127.0.0.2")
    assert ev.evaluate(agents(down), now=1299.0) == []  # 299 s: not yet
    [alert] = ev.evaluate(agents(down), now=1300.0)
    assert (alert.key, alert.state, alert.subject) == ("agent_offline:a1", FIRING, "a1")
    assert "offline for 5 min" in alert.summary and alert.details["ip_address"] == "127.0.0.2"
    # still down on every later evaluation: nothing new (de-duplicated)
    for now in (1315.0, 1330.0, 5000.0):
        assert ev.evaluate(agents(down), now=now) == []
    back = AgentSample("a1", "online", last_heartbeat=5010.0)
    [recovered] = ev.evaluate(agents(back), now=5010.0)
    assert recovered.state == RESOLVED and recovered.since == 1300.0 and recovered.at == 5010.0
    assert recovered.summary.startswith("resolved after 62 min: agent a1 offline")
    assert ev.evaluate(agents(back), now=5020.0) == []
    # down again later: a new alert
    again = AgentSample("a1", "offline", last_heartbeat=6000.0)
    assert states(ev.evaluate(agents(again), now=6400.0)) == [("agent_offline:a1", FIRING)]


def test_captcha_needed_names_ip_account_and_voucher_until_solved() -> None:
    ev = AlertEvaluator(RULES)
    captcha = CaptchaSample("voucher_abc", "203.0.113.7", "10001", raised_at=100.0)
    [alert] = ev.evaluate(Snapshot(captchas=(captcha,)), now=110.0)
    assert (alert.key, alert.state, alert.severity) == ("captcha:voucher_abc", FIRING, "critical")
    for word in ("captcha needed", "203.0.113.7", "10001", "voucher_abc"):
        assert word in alert.summary
    assert alert.details["voucher"] == "voucher_abc"
    assert ev.evaluate(Snapshot(captchas=(captcha,)), now=120.0) == []
    assert states(ev.evaluate(Snapshot(), now=130.0)) == [("captcha:voucher_abc", RESOLVED)]


def test_account_penalty_and_throttle_alerts() -> None:
    ev = AlertEvaluator(RULES)
    penal = AccountSample("10001", "penalised", penalty="code 21515: 批量作弊投稿")
    slow = AccountSample("10002", "cooling", submit_cooldown_until=1000.0)
    fine = AccountSample("10003", "paced")
    fired = ev.evaluate(Snapshot(accounts=(penal, slow, fine)), now=100.0)
    assert states(fired) == [("account_penalty:10001", FIRING),
                             ("account_throttle:10002", FIRING)]
    assert fired[0].severity == "critical" and "releases it" in fired[0].summary
    assert "21515" in fired[0].summary
    assert "submissions wait 15 min" in fired[1].summary
    calm = AccountSample("10002", "ok")
    assert states(ev.evaluate(Snapshot(accounts=(penal, calm)), now=1000.0)) == [
        ("account_throttle:10002", RESOLVED)]


def test_offline_rule_skips_disabled_never_seen_and_online_agents() -> None:
    ev = AlertEvaluator(RULES)
    snap = agents(
        AgentSample("disabled", "offline", last_heartbeat=0.0, disabled=True),
        AgentSample("never-seen", "offline", last_heartbeat=None),
        AgentSample("busy", "busy", last_heartbeat=0.0),
        AgentSample("draining", "draining", last_heartbeat=0.0),
    )
    assert ev.evaluate(snap, now=10_000.0) == []
    # an admin disabling an agent that is alerting resolves it
    ev.evaluate(agents(AgentSample("a", "offline", last_heartbeat=0.0)), now=400.0)
    [alert] = ev.evaluate(agents(AgentSample("a", "offline", 0.0, disabled=True)), now=500.0)
    assert alert.state == RESOLVED


def test_failure_rate_needs_rate_and_minimum_failures() -> None:
    ev = AlertEvaluator(RULES)
    # 2 of 2 failed: 100 %, but below min_failures
    assert ev.evaluate(Snapshot(window_completed=0, window_failed=2), now=1.0) == []
    # 3 of 40 = 7.5 %: below 10 %
    assert ev.evaluate(Snapshot(window_completed=37, window_failed=3), now=2.0) == []
    [alert] = ev.evaluate(Snapshot(window_completed=20, window_failed=3), now=3.0)
    assert alert.key == "failure_rate" and alert.state == FIRING
    assert alert.details == {"failed": 3, "completed": 20, "rate": 0.1304,
                             "window_seconds": 3600}
    assert "3 of 23 tasks failed in the last 60 min (13% > 10%)" == alert.summary
    assert ev.evaluate(Snapshot(window_completed=21, window_failed=4), now=4.0) == []
    [resolved] = ev.evaluate(Snapshot(window_completed=60, window_failed=4), now=5.0)
    assert resolved.state == RESOLVED


def test_ip_in_cooldown_or_disabled_alerts_until_it_is_fit_again() -> None:
    ev = AlertEvaluator(RULES)
    resting = IpSample("127.0.0.2", "resting")
    cooling = IpSample("127.0.0.3", "cooling", reason="406 on preupload", cooldown_until=4600.0,
                       agents=("a3",))
    disabled = IpSample("127.0.0.4", "disabled", disabled=True)
    alerts = ev.evaluate(Snapshot(ips=(resting, cooling, disabled)), now=1000.0)
    assert states(alerts) == [("ip_risk:127.0.0.3", FIRING), ("ip_risk:127.0.0.4", FIRING)]
    assert "cooling down for 60 min" in alerts[0].summary
    assert alerts[0].details["agents"] == ["a3"]
    assert "re-enables" in alerts[1].summary
    fit = IpSample("127.0.0.3", "ok")
    assert states(ev.evaluate(Snapshot(ips=(fit, disabled)), now=4700.0)) == [
        ("ip_risk:127.0.0.3", RESOLVED)]


def test_low_speed_needs_every_sample_slow_for_the_hold_time() -> None:
    ev = AlertEvaluator(RULES)

    def tasks(speed: float, status: str = "uploading") -> Snapshot:
        return Snapshot(tasks=(TaskSample("t1", status, agent_id="a1", speed_bps=speed),))

    assert ev.evaluate(tasks(50_000), now=0.0) == []
    assert ev.evaluate(tasks(50_000), now=59.0) == []
    assert ev.evaluate(tasks(500_000), now=60.0) == []  # a fast sample restarts the count
    assert ev.evaluate(tasks(50_000), now=70.0) == []
    assert ev.evaluate(tasks(50_000), now=129.0) == []
    [alert] = ev.evaluate(tasks(50_000), now=130.0)
    assert alert.key == "low_speed:t1" and "49 KiB/s for 60 s" in alert.summary
    assert ev.evaluate(tasks(10_000), now=200.0) == []
    # the task finishes (no longer in the snapshot): resolved
    assert states(ev.evaluate(Snapshot(), now=210.0)) == [("low_speed:t1", RESOLVED)]
    # an assigned task that has not started yet is not "slow"
    assert ev.evaluate(tasks(0, "assigned"), now=300.0) == []
    assert ev.evaluate(tasks(0, "assigned"), now=1000.0) == []


def test_low_speed_rule_can_be_turned_off() -> None:
    ev = AlertEvaluator(AlertRules(low_speed_bps=0, low_speed_seconds=1))
    slow = Snapshot(tasks=(TaskSample("t", "uploading", speed_bps=0),))
    assert ev.evaluate(slow, 0.0) == [] and ev.evaluate(slow, 100.0) == []


def test_payload_shape() -> None:
    ev = AlertEvaluator(RULES)
    [alert] = ev.evaluate(agents(AgentSample("a1", "offline", 0.0)), now=600.0)
    payload = alert.to_json()
    assert payload["source"] == "bupmesh" and payload["alert"] == "agent_offline"
    assert payload["state"] == "firing" and payload["severity"] == "critical"
    assert payload["text"].startswith("[FIRING] agent a1 offline")
    json.dumps(payload)  # plain JSON


# -- delivery ------------------------------------------------------------------------------

WEBHOOK = "http://127.0.0.1:9/hooks/T0KEN-in-the-path-0123456789?key=query-S3CRET-value"


def _alert(key: str = "agent_offline:a1", state: str = FIRING) -> Alert:
    return Alert(key=key, kind="agent_offline", state=state, severity="critical",  # type: ignore[arg-type]
                 subject="a1", summary="agent a1 offline for 6 min", since=1.0, at=2.0)


class Receiver:
    """An httpx transport standing in for the webhook: answers from a script."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 0:
            raise httpx.ConnectError(f"connection refused to {request.url}")
        return httpx.Response(status)


async def _drain(delivery: AlertDelivery, receiver: Receiver, count: int) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        await tg.start(delivery.run)
        with anyio.fail_after(10):
            while delivery.delivered + delivery.failed < count:  # noqa: ASYNC110 - counters, no event to wait on
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_webhook_retries_until_delivered_and_keeps_order(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(0, 503, 200, 200)
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    delivery = AlertDelivery(WEBHOOK, retries=3, transport=httpx.MockTransport(receiver.handler),
                             sleep=no_sleep)
    caplog.set_level(logging.INFO, logger="bupmesh.alerts")
    delivery.deliver(_alert())
    delivery.deliver(_alert(state=RESOLVED))
    await _drain(delivery, receiver, 2)
    assert (delivery.delivered, delivery.failed) == (2, 0)
    assert [b["state"] for b in receiver.bodies] == ["firing", "firing", "firing", "resolved"]
    assert sleeps == [1.0, 2.0]  # backoff between the three tries of the first alert
    assert "ALERT agent_offline:a1" in caplog.text and "RESOLVED agent_offline:a1" in caplog.text


@pytest.mark.anyio
async def test_a_dead_webhook_costs_bounded_tries_and_never_logs_its_url(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bupmesh.logs import SECRETS, HumanFormatter

    receiver = Receiver(*([0] * 10))

    async def no_sleep(seconds: float) -> None:
        pass

    delivery = AlertDelivery(WEBHOOK, retries=2, transport=httpx.MockTransport(receiver.handler),
                             sleep=no_sleep)
    caplog.set_level(logging.DEBUG)
    delivery.deliver(_alert())
    await _drain(delivery, receiver, 1)
    assert delivery.failed == 1 and len(receiver.bodies) == 3
    assert "alert webhook failed" in caplog.text and "ConnectError" in caplog.text
    formatted = "\n".join(HumanFormatter(SECRETS).format(r) for r in caplog.records)
    for secret in ("T0KEN-in-the-path-0123456789", "query-S3CRET-value"):
        assert secret not in caplog.text and secret not in formatted


@pytest.mark.anyio
async def test_a_client_error_is_not_retried(anyio_backend: str) -> None:
    receiver = Receiver(400)
    delivery = AlertDelivery(WEBHOOK, retries=3, transport=httpx.MockTransport(receiver.handler))
    delivery.deliver(_alert())
    await _drain(delivery, receiver, 1)
    assert delivery.failed == 1 and len(receiver.bodies) == 1


def test_deliver_never_blocks_and_drops_beyond_the_backlog() -> None:
    delivery = AlertDelivery(WEBHOOK)  # no worker running: nothing is ever sent
    for i in range(QUEUE_SIZE + 5):
        delivery.deliver(_alert(key=f"agent_offline:a{i}"))
    assert delivery.dropped == 5


def test_without_a_webhook_alerts_only_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    delivery = AlertDelivery(None)
    caplog.set_level(logging.INFO, logger="bupmesh.alerts")
    for _ in range(QUEUE_SIZE + 5):
        delivery.deliver(_alert())
    assert delivery.dropped == 0 and caplog.text.count("ALERT agent_offline:a1") == QUEUE_SIZE + 5
