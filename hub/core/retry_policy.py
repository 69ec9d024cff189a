"""What the hub does after a failed upload attempt (pure: error kind in, decision out).

One function, :meth:`TaskRetryPolicy.decide`, following this table:

============== ========================================================================
network        retry on the *same* agent, resuming the same Bilibili session, after
               1 s, 2 s, 4 s ... (capped at ``backoff_max_seconds``), up to
               ``network_retries`` times; then another agent (maybe its line is bad).
risk_control   another IP at once (no wait: the part is not at fault) and a risk
               event for this IP in the ledger; the ledger's cooldown keeps every
               other part off that IP too.
agent / lost   the lease ended (stream gone, heartbeat timeout, agent draining):
               re-offer elsewhere at once; not the IP's fault, no risk event.
account_       Bilibili throttles the *account* (21566, 137022): the account ledger
throttle       cools the account down (Bilibili's named wait, else a doubling one) and
               the task waits for it; any agent then. No IP is at fault.
account_       the account is penalised (21515, 21590): the account ledger stops it
penalty        until an admin releases it (an alert asks); the task waits, never fails.
session_       upos refused the session (bound to another IP, or its auth older than
rejected       five days): drop the resume point and start a fresh session at once, on
               whichever agent takes it next (its own session, its own IP).
file           fail with the reason: the source changed or is gone, no retry helps.
auth           fail: the cookies are expired; an admin must fix the account.
bad_request    fail: retrying the same request gets the same answer.
cancelled      terminal.
============== ========================================================================

No retry storm: network retries back off exponentially and are bounded;
risk control never retries on the same IP (the ledger paces the IP and
disables it after repeated events, which bounds those attempts); and every
attempt that is the task's or the agent's doing counts toward ``max_attempts``,
after which the task fails with the last reason. Risk-control re-offers, account
waits and the first fresh start after a refused session do not count: a part
should wait out Bilibili, not fail because of it (a *fresh* session refused
again does count, so an agent whose egress flaps cannot loop forever).

The decision is data (:class:`Decision`); the hub's lifecycle applies it and
writes the attempt and its outcome to ``agent_upload_logs``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

RISK_CONTROL = "risk_control"
NETWORK = "network"
AUTH = "auth"
BAD_REQUEST = "bad_request"
FILE = "file"
CANCELLED = "cancelled"
AGENT = "agent"  # the agent handed the task back (draining) or refused it
LOST = "lost"  # hub side: stream dropped or heartbeats stopped
ACCOUNT_THROTTLE = "account_throttle"  # 21566, 137022: the account goes too fast
ACCOUNT_PENALTY = "account_penalty"  # 21515, 21590: the account is stopped
SESSION_REJECTED = "session_rejected"  # upos 403: the session is bound elsewhere or too old
ACCOUNT_KINDS = frozenset({ACCOUNT_THROTTLE, ACCOUNT_PENALTY})


class Action(enum.StrEnum):
    RETRY_SAME = "retry_same"  # same agent, same session, after `delay`
    OTHER_IP = "other_ip"  # risk control: any agent on another IP, now
    WAIT_ACCOUNT = "wait_account"  # the account ledger holds the task until the account may
    FRESH = "fresh"  # drop the resume point: a fresh upos session, any agent, now
    REOFFER = "reoffer"  # any agent (not the one that failed when `exclude_agent`), now
    FAIL = "fail"
    CANCEL = "cancel"


@dataclass(frozen=True)
class RetryRules:
    """The ``retry`` settings, plus the storm guard."""

    network_retries: int = 3
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    max_attempts: int = 20  # attempts counted against the task (not risk-control ones)

    @classmethod
    def from_settings(cls, settings: Any, **extra: int) -> RetryRules:
        """Build from ``hub.config.RetrySettings`` (or anything with the same attributes)."""
        return cls(
            network_retries=int(settings.network_retries),
            backoff_initial_seconds=float(settings.backoff_initial_seconds),
            backoff_max_seconds=float(settings.backoff_max_seconds),
            **extra,
        )


@dataclass(frozen=True)
class RetryState:
    """Per task; the hub persists it with the task (all ints and strings)."""

    attempts: int = 0  # counted attempts that failed
    network_failures: int = 0  # consecutive network failures on `network_agent`
    network_agent: str | None = None
    risk_events: int = 0  # risk-control failures this task met (for the logs)
    session_rejections: int = 0  # refused upos sessions in a row

    def snapshot(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "network_failures": self.network_failures,
            "network_agent": self.network_agent,
            "risk_events": self.risk_events,
            "session_rejections": self.session_rejections,
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> RetryState:
        return cls(
            attempts=int(data.get("attempts", 0)),
            network_failures=int(data.get("network_failures", 0)),
            network_agent=data.get("network_agent"),
            risk_events=int(data.get("risk_events", 0)),
            session_rejections=int(data.get("session_rejections", 0)),
        )


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    delay: float = 0.0  # do not offer again before now + delay
    agent_id: str | None = None  # RETRY_SAME: the agent to pin the retry to
    exclude_agent: str | None = None  # keep this attempt's agent out of the next offer
    exclude_ip: str | None = None  # keep this IP out of the next offer (risk control)
    record_risk_event: bool = False  # call ledger.risk_event(ip, agent, kind, now)
    drop_session: bool = False  # forget the resume point: the next attempt starts afresh
    state: RetryState = RetryState()  # the task's retry state after this failure

    @property
    def terminal(self) -> bool:
        return self.action in (Action.FAIL, Action.CANCEL)


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``failures`` (1-based): initial, 2x, 4x ... capped."""
    if failures < 1:
        return 0.0
    # cap the exponent so huge counts cannot overflow a float
    return min(maximum, initial * 2.0 ** min(failures - 1, 60))


class TaskRetryPolicy:
    def __init__(self, rules: RetryRules | None = None) -> None:
        self.rules = rules or RetryRules()

    def decide(
        self,
        kind: str,
        state: RetryState,
        *,
        agent_id: str,
        ip: str,
        message: str = "",
    ) -> Decision:
        """What to do after an attempt of a task on ``agent_id`` (egress ``ip``) failed."""
        kind = str(kind or NETWORK)
        why = f"{kind}: {message}" if message else kind
        r = self.rules
        if kind != SESSION_REJECTED and state.session_rejections:
            state = replace(state, session_rejections=0)

        if kind == CANCELLED:
            return Decision(Action.CANCEL, why, state=state)
        if kind == RISK_CONTROL:
            new = replace(state, risk_events=state.risk_events + 1,
                          network_failures=0, network_agent=None)
            return Decision(Action.OTHER_IP, f"{why}; moving to another IP", exclude_ip=ip,
                            exclude_agent=agent_id, record_risk_event=True, state=new)
        if kind in ACCOUNT_KINDS:
            new = replace(state, network_failures=0, network_agent=None)
            what = ("the account is throttled: waiting for it" if kind == ACCOUNT_THROTTLE
                    else "the account is penalised: waiting for an admin to release it")
            return Decision(Action.WAIT_ACCOUNT, f"{why}; {what}", state=new)
        if kind == SESSION_REJECTED:
            # The first refusal in a row is the old session's (another agent's IP, or its
            # age): free. One more right after means the fresh session was refused too.
            counted = state.attempts + (1 if state.session_rejections else 0)
            new = replace(state, attempts=counted, network_failures=0, network_agent=None,
                          session_rejections=state.session_rejections + 1)
            if counted >= r.max_attempts:
                return Decision(Action.FAIL, f"{why} (gave up after {counted} attempts)",
                                state=new)
            return Decision(Action.FRESH, f"{why}; starting a fresh upload session",
                            drop_session=True, state=new)
        if kind in (FILE, AUTH, BAD_REQUEST):
            return Decision(Action.FAIL, why, state=replace(state, attempts=state.attempts + 1))
        if kind not in (NETWORK, AGENT, LOST):
            return Decision(Action.FAIL, f"unknown error kind: {why}",
                            state=replace(state, attempts=state.attempts + 1))

        attempts = state.attempts + 1
        if attempts >= r.max_attempts:
            return Decision(Action.FAIL, f"{why} (gave up after {attempts} attempts)",
                            state=replace(state, attempts=attempts))
        if kind in (AGENT, LOST):
            new = replace(state, attempts=attempts, network_failures=0, network_agent=None)
            return Decision(Action.REOFFER, f"{why}; re-offering elsewhere",
                            exclude_agent=agent_id, state=new)

        # network: same agent while the streak lasts, then someone else
        streak = state.network_failures + 1 if state.network_agent == agent_id else 1
        if streak <= r.network_retries:
            delay = backoff_delay(streak, r.backoff_initial_seconds, r.backoff_max_seconds)
            new = replace(state, attempts=attempts, network_failures=streak,
                          network_agent=agent_id)
            return Decision(Action.RETRY_SAME, f"{why}; retry {streak}/{r.network_retries} "
                            f"on {agent_id} in {delay:g} s", delay=delay, agent_id=agent_id,
                            state=new)
        new = replace(state, attempts=attempts, network_failures=0, network_agent=None)
        return Decision(Action.REOFFER, f"{why}; {r.network_retries} retries on {agent_id} "
                        "failed, trying another agent", exclude_agent=agent_id, state=new)
