"""What the hub does after each kind of failed attempt."""

from __future__ import annotations

import pytest

from hub.config import RetrySettings
from hub.core.retry_policy import (
    SESSION_REJECTED,
    Action,
    RetryRules,
    RetryState,
    TaskRetryPolicy,
    backoff_delay,
)

IP = "203.0.113.10"


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(0, 1, 60) == 0
    assert backoff_delay(10_000, 1, 60) == 60  # no overflow


def test_rules_from_hub_config() -> None:
    rules = RetryRules.from_settings(RetrySettings(network_retries=5, backoff_initial_seconds=2,
                                                   backoff_max_seconds=30))
    assert (rules.network_retries, rules.backoff_initial_seconds, rules.backoff_max_seconds) == (
        5, 2, 30)


def test_network_errors_retry_the_same_agent_with_backoff_then_move_on() -> None:
    policy = TaskRetryPolicy(RetryRules(network_retries=3, backoff_initial_seconds=1,
                                        backoff_max_seconds=60))
    state = RetryState()
    delays = []
    for _ in range(3):
        d = policy.decide("network", state, agent_id="a1", ip=IP, message="connection reset")
        assert d.action is Action.RETRY_SAME and d.agent_id == "a1"
        assert not d.record_risk_event and d.exclude_ip is None
        delays.append(d.delay)
        state = d.state
    assert delays == [1, 2, 4]
    d = policy.decide("network", state, agent_id="a1", ip=IP)
    assert d.action is Action.REOFFER and d.exclude_agent == "a1" and d.delay == 0
    assert not d.terminal
    # a fresh streak on the next agent starts from 1 s again
    d = policy.decide("network", d.state, agent_id="a2", ip="198.51.100.7")
    assert d.action is Action.RETRY_SAME and d.agent_id == "a2" and d.delay == 1


def test_risk_control_moves_to_another_ip_at_once_and_records_the_event() -> None:
    policy = TaskRetryPolicy()
    d = policy.decide("risk_control", RetryState(), agent_id="a1", ip=IP,
                      message="HTTP 406 on preupload")
    assert d.action is Action.OTHER_IP and d.delay == 0
    assert d.exclude_ip == IP and d.record_risk_event
    assert "406" in d.reason
    assert d.state.risk_events == 1 and d.state.attempts == 0


@pytest.mark.parametrize("kind", ["agent", "lost"])
def test_a_lost_agent_re_offers_elsewhere_without_blaming_the_ip(kind: str) -> None:
    d = TaskRetryPolicy().decide(kind, RetryState(), agent_id="a1", ip=IP, message="gone")
    assert d.action is Action.REOFFER and d.delay == 0 and d.exclude_agent == "a1"
    assert not d.record_risk_event and d.exclude_ip is None


@pytest.mark.parametrize("kind", ["file", "auth", "bad_request", "mystery"])
def test_errors_no_retry_can_fix_fail_at_once_with_the_reason(kind: str) -> None:
    d = TaskRetryPolicy().decide(kind, RetryState(), agent_id="a1", ip=IP,
                                 message="MD5 mismatch")
    assert d.action is Action.FAIL and d.terminal
    assert kind in d.reason and "MD5 mismatch" in d.reason


def test_cancelled_is_terminal() -> None:
    d = TaskRetryPolicy().decide("cancelled", RetryState(), agent_id="a1", ip=IP)
    assert d.action is Action.CANCEL and d.terminal


def test_no_retry_storm_every_task_ends() -> None:
    """Network errors on every agent and lost agents: bounded by max_attempts."""
    policy = TaskRetryPolicy(RetryRules(network_retries=3, max_attempts=10))
    state = RetryState()
    kinds = ["network", "network", "lost", "network"] * 10
    total_delay = 0.0
    for i, kind in enumerate(kinds):
        d = policy.decide(kind, state, agent_id=f"a{i % 3}", ip=IP, message="boom")
        total_delay += d.delay
        state = d.state
        if d.terminal:
            break
    assert d.action is Action.FAIL and "gave up after 10 attempts" in d.reason
    assert state.attempts == 10 and total_delay < 60


def test_risk_control_alone_never_fails_a_part() -> None:
    """Waiting out Bilibili is the ledger's job; the part itself is not at fault."""
    policy = TaskRetryPolicy(RetryRules(max_attempts=3))
    state = RetryState()
    for i in range(20):
        d = policy.decide("risk_control", state, agent_id=f"a{i}", ip=f"10.0.0.{i}")
        assert d.action is Action.OTHER_IP
        state = d.state
    assert state.risk_events == 20


def test_state_snapshot_round_trip() -> None:
    state = RetryState(attempts=3, network_failures=2, network_agent="a1", risk_events=1)
    assert RetryState.restore(state.snapshot()) == state
    assert RetryState.restore({}) == RetryState()


def test_a_refused_session_whose_completion_was_granted_elsewhere_is_kept() -> None:
    policy = TaskRetryPolicy(RetryRules(max_attempts=3))
    d = policy.decide(SESSION_REJECTED, RetryState(), agent_id="b", ip="10.0.0.2",
                      completion_ip="10.0.0.1")
    assert d.action is Action.WAIT_IP and not d.drop_session and d.state.attempts == 1
    assert "granted on IP 10.0.0.1" in d.reason
    # from the IP it was granted on: the completion never happened there, start afresh
    d = policy.decide(SESSION_REJECTED, RetryState(), agent_id="a", ip="10.0.0.1",
                      completion_ip="10.0.0.1")
    assert d.action is Action.FRESH and d.drop_session
    # an egress that keeps moving cannot loop forever
    d = policy.decide(SESSION_REJECTED, RetryState(attempts=2), agent_id="b", ip="10.0.0.2",
                      completion_ip="10.0.0.1")
    assert d.action is Action.FAIL
