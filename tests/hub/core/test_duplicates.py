"""hub/core/duplicates.py and the registry's claim rule, on a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

from hub.core.duplicates import DuplicateClaims
from hub.core.registry import APPROVED, PENDING, REJECTED, Registry, describe_address


def test_claims_count_retries_and_are_forgotten_after_a_quiet_spell() -> None:
    claims = DuplicateClaims(forget_after=900)
    first, new = claims.note("a1", "10.0.0.1", "10.0.0.2", 100.0)
    assert new and first.attempts == 1
    again, new = claims.note("a1", "10.0.0.1", "10.0.0.3", 700.0)
    assert not new and (again.attempts, again.refused_address, again.first_at) == (2, "10.0.0.3", 100)
    assert [c.agent_id for c in claims.current(1500.0)] == ["a1"]
    assert claims.current(1601.0) == [] and claims.of("a1", 1601.0) is None
    _, new = claims.note("a1", "x", "y", 1700.0)
    assert new  # a fresh episode


def test_only_the_same_process_passes_a_live_stream() -> None:
    now = [0.0]
    reg = Registry(clock=lambda: now[0])
    assert reg.holder("a1", "p1") is None  # unknown id: free
    session = SimpleNamespace(closed=False, peer_ip="10.0.0.1")
    reg.attach("a1", session, "s1", "p1")
    info = reg.get("a1")
    assert reg.holder("a1", "p1") is None  # itself, reconnecting
    assert reg.holder("a1", "p2") is info and reg.holder("a1", "") is info
    session.closed = True  # closing: the id is free for whoever comes next
    assert reg.holder("a1", "p2") is None
    session.closed = False
    reg.detach("a1", session)
    assert reg.holder("a1", "p2") is None
    assert describe_address("10.0.0.1", "") == "10.0.0.1"
    assert describe_address("10.0.0.1", "10.0.0.1") == "10.0.0.1"
    assert describe_address("127.0.0.1", "203.0.113.9") == "127.0.0.1 (reports 203.0.113.9)"


def test_only_approved_agents_are_schedulable_and_allowlists_match_any_name() -> None:
    reg = Registry(clock=lambda: 0.0)
    reg.attach("a1", SimpleNamespace(closed=False), "s1", "p1")
    info = reg.get("a1")
    for approval, status, schedulable in ((PENDING, "pending", False),
                                          (REJECTED, "rejected", False),
                                          (APPROVED, "online", True)):
        info.approval = approval
        assert (info.status, info.schedulable) == (status, schedulable)
    assert info.may_use("main", "1")  # no allowlist: every account
    info.allowed_accounts = frozenset({"2"})
    assert info.may_use("backup", "2") and not info.may_use("main", "1")
    assert not info.may_use()  # an account of no name matches no allowlist
