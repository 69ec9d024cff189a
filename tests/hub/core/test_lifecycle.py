"""The task state machine, driven by events and a fake clock (no IO)."""

from __future__ import annotations

import pytest

from hub.core import lifecycle as lc
from hub.core.lifecycle import Lifecycle, Outcome, Policy, Status, TaskRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**policy: float) -> tuple[Lifecycle, Clock, TaskRecord]:
    clock = Clock()
    machine = Lifecycle(Policy(**policy), clock=clock)  # type: ignore[arg-type]
    task = TaskRecord(task_id="t", part_id=1, file_path="/f", file_size=100, file_md5="m")
    return machine, clock, task


def test_happy_path() -> None:
    m, clock, t = make()
    assert m.can_offer(t, "a")
    assert m.offer(t, "a") == 1 and t.status is Status.ASSIGNED
    assert m.accepted(t, "a", 1) is Outcome.UPDATED and t.status is Status.UPLOADING
    assert m.committed(t, "a", 1, 50, b"s") is Outcome.UPDATED and t.committed_offset == 50
    assert m.progress(t, "a", 1, 60, 10.0, 4.0) is Outcome.UPDATED and t.uploaded_bytes == 60
    clock.now += 5
    out = m.result(t, "a", 1, success=True, filename="n1", biz_id=9)
    assert out.outcome is Outcome.COMPLETED and t.status is Status.COMPLETED
    assert (t.filename, t.biz_id, t.completed_at, t.uploaded_bytes) == ("n1", 9, 1005.0, 100)


def test_fencing_other_agent_or_attempt_changes_nothing() -> None:
    m, _, t = make()
    m.offer(t, "a")
    m.accepted(t, "a", 1)
    m.agent_lost(t, "a")
    m.offer(t, "b")  # attempt 2 at b
    before = repr(t)
    assert m.accepted(t, "a", 1) is Outcome.IGNORED
    assert m.result(t, "a", 1, success=True, filename="x").outcome is Outcome.IGNORED
    assert m.result(t, "b", 1, success=True, filename="x").outcome is Outcome.IGNORED
    assert m.committed(t, "a", 2, 10, b"") is Outcome.IGNORED
    assert m.progress(t, "a", 1, 10, 1, 1) is Outcome.IGNORED
    assert m.rejected(t, "a", 1, "no") is Outcome.IGNORED
    assert repr(t) == before


def test_committed_never_moves_backwards() -> None:
    m, _, t = make()
    m.offer(t, "a")
    m.accepted(t, "a", 1)
    m.committed(t, "a", 1, 60, b"s1")
    assert m.committed(t, "a", 1, 40, b"s0") is Outcome.IGNORED
    assert m.committed(t, "a", 1, 101, b"x") is Outcome.IGNORED
    assert t.committed_offset == 60 and t.resume_session == b"s1"
    # A later attempt that had to start a fresh upos session resets the point.
    m.agent_lost(t, "a")
    m.offer(t, "b")
    assert m.committed(t, "b", 2, 10, b"fresh") is Outcome.UPDATED
    assert (t.committed_offset, t.resume_session) == (10, b"fresh")
    assert m.committed(t, "b", 2, 5, b"x") is Outcome.IGNORED


def test_network_retries_on_the_same_agent_with_backoff_then_another_agent() -> None:
    """Same agent (same session) up to network_retries, 1 s, 2 s ... capped; then
    another agent (the line of the first may be bad), never straight to failed."""
    m, clock, t = make(network_retries=2, backoff_initial=1, backoff_max=1.5)
    for attempt, delay in ((1, 1.0), (2, 1.5)):
        m.offer(t, "a")
        out = m.result(t, "a", attempt, success=False, error_kind="network", error_message="x")
        assert out.outcome is Outcome.REQUEUED and t.status is Status.PENDING
        assert t.retry_agent == "a"
        assert not m.can_offer(t, "a") and not m.can_offer(t, "b")  # backing off, pinned
        clock.now += delay
        assert m.can_offer(t, "a") and not m.can_offer(t, "b")
    m.offer(t, "a")
    assert m.result(t, "a", 3, success=False, error_kind="network").outcome is Outcome.REQUEUED
    assert t.retry_agent is None and not m.can_offer(t, "a") and m.can_offer(t, "b")
    assert t.network_failures == 3


def test_network_retries_are_bounded_by_max_attempts() -> None:
    m, clock, t = make(network_retries=1, backoff_initial=0, backoff_max=0, max_attempts=4)
    outcomes = []
    for attempt, agent in enumerate("abcd", start=1):
        clock.now += 100
        m.offer(t, agent)
        outcomes.append(m.result(t, agent, attempt, success=False, error_kind="network").outcome)
    assert outcomes[-1] is Outcome.FAILED and t.error_kind == "network"
    assert "gave up" in (t.error_message or "")


def test_risk_control_excludes_that_agent_for_cooldown() -> None:
    m, clock, t = make(exclude_seconds=100)
    m.offer(t, "a")
    assert m.result(t, "a", 1, success=False, error_kind="risk_control").outcome is Outcome.REQUEUED
    assert not m.can_offer(t, "a") and m.can_offer(t, "b")
    clock.now += 100
    assert m.can_offer(t, "a")


@pytest.mark.parametrize("kind", ["auth", "bad_request", "file", "whatever"])
def test_permanent_errors_fail(kind: str) -> None:
    m, _, t = make()
    m.offer(t, "a")
    assert m.result(t, "a", 1, success=False, error_kind=kind, error_message="m").outcome is Outcome.FAILED
    assert t.status is Status.FAILED and t.error_kind == kind


def test_md5_mismatch_is_a_file_failure() -> None:
    m, _, t = make()
    m.offer(t, "a")
    assert m.result(t, "a", 1, success=True, filename="n", md5_ok=False).outcome is Outcome.FAILED
    assert t.error_kind == "file" and t.filename is None


def test_agent_lost_and_handed_back_requeue_keep_resume_point() -> None:
    m, _, t = make()
    m.offer(t, "a")
    m.accepted(t, "a", 1)
    m.committed(t, "a", 1, 70, b"sess")
    assert m.agent_lost(t, "b") is Outcome.IGNORED
    assert m.agent_lost(t, "a") is Outcome.REQUEUED
    assert t.status is Status.PENDING and t.committed_offset == 70 and t.resume_session == b"sess"
    m.offer(t, "b")
    assert m.result(t, "b", 2, success=False, error_kind="agent").outcome is Outcome.REQUEUED


def test_cancel_from_any_live_state_and_terminal_is_final() -> None:
    for setup in ("pending", "assigned", "uploading"):
        m, _, t = make()
        if setup != "pending":
            m.offer(t, "a")
        if setup == "uploading":
            m.accepted(t, "a", 1)
        assert m.cancel(t) is Outcome.CANCELLED and t.status is Status.CANCELLED
        assert m.cancel(t) is Outcome.IGNORED
        assert m.result(t, "a", 1, success=True, filename="late").outcome is Outcome.IGNORED
        assert t.status is Status.CANCELLED and t.filename is None


def test_offer_timeout_and_pinning() -> None:
    m, clock, t = make(offer_timeout=30)
    t.pinned_agent = "b"
    assert not m.can_offer(t, "a") and m.can_offer(t, "b")
    m.offer(t, "b")
    clock.now += 29
    assert not m.offer_expired(t)
    clock.now += 1
    assert m.offer_expired(t)
    m.agent_lost(t, "b", "offer timeout")
    assert t.pinned_agent is None and m.can_offer(t, "a")  # a pin never means waiting forever


def test_max_attempts_bounds_flapping() -> None:
    m, _, t = make(max_attempts=3)
    for _ in (1, 2):
        m.offer(t, "a")
        assert m.agent_lost(t, "a") is Outcome.REQUEUED
    m.offer(t, "a")
    assert m.agent_lost(t, "a") is Outcome.FAILED and t.status is Status.FAILED


def test_risk_control_excludes_the_whole_ip_and_says_so() -> None:
    m, clock, t = make(exclude_seconds=100)
    m.offer(t, "a")
    out = m.result(t, "a", 1, success=False, error_kind="risk_control",
                   error_message="HTTP 406 on preupload", ip="10.0.0.1")
    assert out.outcome is Outcome.REQUEUED
    assert out.decision is not None and out.decision.record_risk_event
    assert t.excluded_ips == {"10.0.0.1": clock.now + 100}
    assert t.retry_state["risk_events"] == 1


def test_lost_agent_is_not_excluded_and_may_take_its_task_back() -> None:
    m, _, t = make()
    m.offer(t, "a")
    assert m.agent_lost(t, "a", "stream ended") is Outcome.REQUEUED
    assert m.can_offer(t, "a") and t.excluded == {}


def _granted(m: Lifecycle, t: TaskRecord, agent: str, ip: str) -> int:
    attempt = m.offer(t, agent)
    m.accepted(t, agent, attempt)
    m.committed(t, agent, attempt, 100, b"session")
    assert m.completion_granted(t, agent, attempt, ip)
    return attempt


def test_a_granted_completion_whose_answer_was_lost_waits_for_its_ip() -> None:
    # The hub let agent a complete from 10.0.0.1, then lost a (or restarted) before its
    # Result: the object may exist at Bilibili. Another IP's repeat of the completion is
    # refused when upos binds sessions to their IP; dropping the session then would
    # upload the part a second time.
    m, clock, t = make()
    _granted(m, t, "a", "10.0.0.1")
    assert m.agent_lost(t, "a") is Outcome.REQUEUED
    assert m.completion_ip(t) == "10.0.0.1" and t.resume_session == b"session"
    attempt = m.offer(t, "b")
    m.accepted(t, "b", attempt)
    ruling = m.result(t, "b", attempt, success=False, error_kind=lc.SESSION_REJECTED,
                      error_message="upos refused the session: AUTH_UIP_MISMATCH",
                      ip="10.0.0.2")
    assert ruling.outcome is Outcome.REQUEUED and ruling.dropped is None
    assert (t.resume_session, t.committed_offset) == (b"session", 100)
    assert m.completion_ip(t) == "10.0.0.1"
    # Refused on the very IP it was granted on: it never completed (expired, or that IP
    # moved on), so a fresh session is the only way left.
    attempt = m.offer(t, "a")
    m.accepted(t, "a", attempt)
    ruling = m.result(t, "a", attempt, success=False, error_kind=lc.SESSION_REJECTED,
                      error_message="upos refused the session: AUTH_TS_GT_5DAY",
                      ip="10.0.0.1")
    assert ruling.dropped == (100, b"session") and t.resume_session is None
    assert m.completion_ip(t) is None and (t.proceed_attempt, t.proceed_ip) == (0, "")


def test_the_wait_for_a_granted_completions_ip_is_bounded() -> None:
    m, clock, t = make(completion_wait=600)
    _granted(m, t, "a", "10.0.0.1")
    m.agent_lost(t, "a")
    clock.now += 599
    assert m.completion_ip(t) == "10.0.0.1"
    clock.now += 1  # a part that never finishes is worse than a spare object
    assert m.completion_ip(t) is None
    attempt = m.offer(t, "b")
    m.accepted(t, "b", attempt)
    ruling = m.result(t, "b", attempt, success=False, error_kind=lc.SESSION_REJECTED,
                      ip="10.0.0.2")
    assert ruling.dropped is not None and t.resume_session is None


def test_only_the_lease_holder_is_granted_a_completion() -> None:
    m, _, t = make()
    m.offer(t, "a")
    assert not m.completion_granted(t, "a", 1, "10.0.0.1")  # assigned, not uploading
    m.accepted(t, "a", 1)
    assert not m.completion_granted(t, "b", 1, "10.0.0.2")
    assert not m.completion_granted(t, "a", 2, "10.0.0.1")
    assert (t.proceed_attempt, t.proceed_ip) == (0, "")
    assert m.completion_granted(t, "a", 1, "10.0.0.1")
    assert (t.proceed_attempt, t.proceed_ip, t.proceed_at) == (1, "10.0.0.1", 1000.0)


def test_the_agent_a_completion_was_granted_to_may_finish_it_from_a_moved_egress() -> None:
    # Its egress moved since (and may never come back): the agent itself remembers the
    # sessions it completed, so it is offered the task too, and its refusal is final.
    m, _, t = make()
    _granted(m, t, "a", "10.0.0.1")
    m.agent_lost(t, "a")
    attempt = m.offer(t, "a")
    m.accepted(t, "a", attempt)
    ruling = m.result(t, "a", attempt, success=False, error_kind=lc.SESSION_REJECTED,
                      ip="10.0.0.9")
    assert ruling.dropped is not None and t.resume_session is None
    assert (t.proceed_ip, t.proceed_agent) == ("", "")
