"""The task state machine (sans-IO: plain data in, decisions out, injected clock).

    pending -> assigned -> uploading -> completed | failed | cancelled
       ^          |            |
       +----------+------------+   (rejected, agent lost, retryable failure)

A task is leased to one agent for one ``attempt``; every message from an agent
names ``(task_id, attempt)`` and anything that is not the current lease of
that agent changes nothing (fencing), so a late ``Result`` from an agent that
lost its lease cannot complete or fail a task that moved on.

The hub applies an event here, writes the record to the database, and only
then acts (sends the Offer/Cancel, tells the transfer engine), so a hub restart
never forgets a decision it already acted on.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.core.retry_policy import Action, Decision, RetryRules, RetryState, TaskRetryPolicy


class Status(enum.StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    @property
    def leased(self) -> bool:
        return self in (Status.ASSIGNED, Status.UPLOADING)


# Error kinds an agent reports in Result (docs/internals.md "Link conversation").
RISK_CONTROL = "risk_control"
NETWORK = "network"
AUTH = "auth"
BAD_REQUEST = "bad_request"
FILE = "file"
CANCELLED = "cancelled"
AGENT = "agent"
LOST = "lost"  # hub-side: the agent's stream dropped or it went silent
ACCOUNT_THROTTLE = "account_throttle"
ACCOUNT_PENALTY = "account_penalty"
SESSION_REJECTED = "session_rejected"


@dataclass
class TaskRecord:
    """Everything the hub knows about one task; the store persists all of it."""

    task_id: str
    part_id: int
    file_path: str
    file_size: int
    file_md5: str  # only for parts hashed by an older hub; new parts have a digest
    account: str | None = None
    # stat identity of the file when its digest was taken (dev:ino:size:mtime_ns:ctime_ns)
    file_fingerprint: str = ""
    file_digest: str = ""  # the part digest (protocol.integrity), "" until known
    status: Status = Status.PENDING
    attempt: int = 0
    agent_id: str | None = None  # lease holder while assigned/uploading, last one after
    pinned_agent: str | None = None  # set by assign-task: only this agent may take it
    force: bool = False  # assign-task with force: the pinned agent's IP may be cooling/resting
    # network retry: the next attempt goes to this agent (same upos session), see
    # hub.core.retry_policy; cleared when it is not connected at dispatch time
    retry_agent: str | None = None
    retry_state: dict = field(default_factory=dict)  # hub.core.retry_policy.RetryState.snapshot()
    excluded_ips: dict[str, float] = field(default_factory=dict)  # IP -> excluded until
    # the attempt the hub let complete (Proceed, after Finishing): a re-offer after it
    # resumes the same session, whose completion Bilibili answers idempotently
    proceed_attempt: int = 0
    retry_count: int = 0  # attempts that ended in a retryable failure
    network_failures: int = 0
    excluded: dict[str, float] = field(default_factory=dict)  # agent -> excluded until
    not_before: float = 0.0  # backoff: do not offer before this time
    committed_offset: int = 0
    committed_attempt: int = 0  # the attempt whose Committed set the resume point
    resume_session: bytes | None = None  # uploader session JSON (secret; encrypted at rest)
    uploaded_bytes: int = 0
    upload_speed: float = 0.0
    eta_seconds: float = 0.0
    error_kind: str | None = None
    error_message: str | None = None
    filename: str | None = None
    biz_id: int | None = None
    created_at: float = 0.0
    assigned_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None

    def holds(self, agent_id: str, attempt: int) -> bool:
        """Whether ``agent_id`` holds the current lease at ``attempt``."""
        return self.status.leased and self.agent_id == agent_id and self.attempt == attempt


class Outcome(enum.Enum):
    IGNORED = "ignored"  # fenced or meaningless: change nothing, persist nothing
    UPDATED = "updated"  # record changed, persist
    REQUEUED = "requeued"  # back to pending (retry, other agent, lost agent)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Ruling:
    """What an attempt's end did to the task, and the retry policy's decision behind it.

    ``decision`` is None when no failure was judged (completed, or fenced off); the
    hub acts on it beyond the task's own state (a risk event for the ledger, the
    reason a re-queue is logged with).
    """

    outcome: Outcome
    decision: Decision | None = None
    # A refused upos session's resume point, dropped for a fresh start: (bytes, session)
    dropped: tuple[int, bytes | None] | None = None


@dataclass(frozen=True)
class Policy:
    # The four retry fields only build the default TaskRetryPolicy (tests); the hub
    # passes its own TaskRetryPolicy built from the ``retry`` config.
    network_retries: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    exclude_seconds: float = 3600.0  # after risk control, keep the task away from that agent
    max_attempts: int = 20  # guard against endless re-offers (flapping agents)
    offer_timeout: float = 30.0  # assigned without Accept for this long -> agent lost


class Lifecycle:
    """Applies events to :class:`TaskRecord` objects under a :class:`Policy`."""

    def __init__(self, policy: Policy | None = None, *, clock: Callable[[], float] = time.time,
                 retry: TaskRetryPolicy | None = None):
        self.policy = policy or Policy()
        self.clock = clock
        self.retry = retry or TaskRetryPolicy(RetryRules(
            network_retries=self.policy.network_retries,
            backoff_initial_seconds=self.policy.backoff_initial,
            backoff_max_seconds=self.policy.backoff_max,
            max_attempts=self.policy.max_attempts,
        ))

    # -- hub decisions --------------------------------------------------------------------

    def can_offer(self, task: TaskRecord, agent_id: str) -> bool:
        now = self.clock()
        if task.status is not Status.PENDING or task.not_before > now:
            return False
        if task.pinned_agent is not None and task.pinned_agent != agent_id:
            return False
        if task.retry_agent is not None and task.retry_agent != agent_id:
            return False
        return task.excluded.get(agent_id, 0.0) <= now

    def offer(self, task: TaskRecord, agent_id: str) -> int:
        """Lease ``task`` to ``agent_id`` with a new attempt; returns the attempt."""
        if task.status is not Status.PENDING:
            raise ValueError(f"task {task.task_id} is {task.status}, not pending")
        task.attempt += 1
        task.status = Status.ASSIGNED
        task.agent_id = agent_id
        task.assigned_at = self.clock()
        task.error_kind = task.error_message = None
        task.upload_speed = task.eta_seconds = 0.0
        return task.attempt

    def cancel(self, task: TaskRecord, reason: str = "cancelled by admin") -> Outcome:
        """Cancel from any non-terminal state; the caller tells a lease holder to stop."""
        if task.status.terminal:
            return Outcome.IGNORED
        task.status = Status.CANCELLED
        task.error_kind = CANCELLED
        task.error_message = reason
        task.completed_at = self.clock()
        return Outcome.CANCELLED

    def fail(self, task: TaskRecord, kind: str, message: str) -> Outcome:
        """A hub-side verdict (e.g. the source file cannot be hashed): fail a live task."""
        if task.status.terminal:
            return Outcome.IGNORED
        return self._fail(task, kind, message)

    def revive(self, task: TaskRecord) -> Outcome:
        """Admin retry of a failed (or cancelled) task: pending again, keeping its resume
        point and its attempt counter (fencing needs attempts to only grow)."""
        if task.status not in (Status.FAILED, Status.CANCELLED):
            return Outcome.IGNORED
        task.status = Status.PENDING
        task.retry_state = {}
        task.network_failures = 0
        task.excluded.clear()
        task.excluded_ips.clear()
        task.retry_agent = task.pinned_agent = None
        task.force = False
        task.not_before = 0.0
        task.error_kind = task.error_message = None
        task.completed_at = None
        task.uploaded_bytes = task.committed_offset
        return Outcome.REQUEUED

    def offer_expired(self, task: TaskRecord) -> bool:
        return (
            task.status is Status.ASSIGNED
            and task.assigned_at is not None
            and self.clock() - task.assigned_at >= self.policy.offer_timeout
        )

    # -- agent events (all fenced) --------------------------------------------------------

    def accepted(self, task: TaskRecord, agent_id: str, attempt: int) -> Outcome:
        if not task.holds(agent_id, attempt) or task.status is not Status.ASSIGNED:
            return Outcome.IGNORED
        task.status = Status.UPLOADING
        task.started_at = task.started_at or self.clock()
        return Outcome.UPDATED

    def rejected(self, task: TaskRecord, agent_id: str, attempt: int, reason: str) -> Outcome:
        if not task.holds(agent_id, attempt):
            return Outcome.IGNORED
        # A refusal is not the task's fault: try another agent for a short while.
        return self.failed(task, agent_id, AGENT, f"rejected by {agent_id}: {reason}").outcome

    def committed(
        self, task: TaskRecord, agent_id: str, attempt: int, offset: int, session: bytes
    ) -> Outcome:
        if not task.holds(agent_id, attempt):
            return Outcome.IGNORED
        if offset > task.file_size:
            return Outcome.IGNORED
        if attempt == task.committed_attempt and offset < task.committed_offset:
            return Outcome.IGNORED  # within one attempt the resume point only moves forward
        # A new attempt's first Committed replaces the old point even if lower: it may have
        # had to start a fresh upos session (the old one expired), and that is the one
        # a further attempt must resume.
        task.committed_attempt = attempt
        task.committed_offset = offset
        task.resume_session = session or task.resume_session
        task.uploaded_bytes = max(task.uploaded_bytes, offset)
        return Outcome.UPDATED

    def progress(
        self, task: TaskRecord, agent_id: str, attempt: int, uploaded: int, speed: float, eta: float
    ) -> Outcome:
        if not task.holds(agent_id, attempt):
            return Outcome.IGNORED
        task.uploaded_bytes = max(0, min(uploaded, task.file_size))
        task.upload_speed = max(0.0, speed)
        task.eta_seconds = max(0.0, eta)
        return Outcome.UPDATED

    def result(
        self,
        task: TaskRecord,
        agent_id: str,
        attempt: int,
        *,
        success: bool,
        filename: str = "",
        biz_id: int = 0,
        error_kind: str = "",
        error_message: str = "",
        md5_ok: bool = True,
        ip: str = "",
    ) -> Ruling:
        """The attempt's final word. ``md5_ok``: the agent's checksum (MD5 or CRC32) matched."""
        if not task.holds(agent_id, attempt):
            return Ruling(Outcome.IGNORED)
        if success and not md5_ok:
            success, error_kind = False, FILE
            error_message = "checksum of the bytes the agent received differs from what the hub sent"
        if success and not filename:
            success, error_kind = False, BAD_REQUEST
            error_message = "agent reported success without a file name"
        if success:
            task.status = Status.COMPLETED
            task.filename, task.biz_id = filename, biz_id
            task.uploaded_bytes = task.file_size
            task.completed_at = self.clock()
            task.error_kind = task.error_message = None
            task.eta_seconds = 0.0
            return Ruling(Outcome.COMPLETED)
        return self.failed(task, agent_id, error_kind or NETWORK, error_message, ip=ip)

    def failed(self, task: TaskRecord, agent_id: str, kind: str, message: str, *,
               ip: str = "") -> Ruling:
        """Apply :class:`hub.core.retry_policy.TaskRetryPolicy`'s decision for a failed attempt.

        The caller has checked the lease. The decision comes back with the outcome so
        the caller can act on what is not the task's own state (a risk event for the
        ledger).
        """
        message = message or kind
        d = self.retry.decide(kind, RetryState.restore(task.retry_state), agent_id=agent_id,
                              ip=ip, message=message)
        task.retry_state = d.state.snapshot()
        now = self.clock()
        if kind == NETWORK:
            task.network_failures += 1
        if d.action is Action.FAIL:
            reason = d.reason.removeprefix(f"{kind}: ") if d.reason != kind else message
            return Ruling(self._fail(task, kind, reason), d)
        if d.exclude_ip:
            task.excluded_ips[d.exclude_ip] = now + self.policy.exclude_seconds
        if d.exclude_agent and kind != LOST:
            # A lost agent is offline anyway and may take the task again once it is back
            # (a cut link): only refusals, hand-backs and failures keep an agent away.
            hold = self.policy.exclude_seconds if kind == RISK_CONTROL else min(
                60.0, self.policy.exclude_seconds)
            task.excluded[d.exclude_agent] = now + hold
        dropped = None
        if d.drop_session:
            if task.resume_session or task.committed_offset:
                dropped = (task.committed_offset, task.resume_session)
            task.resume_session = None
            task.committed_offset = 0
            task.committed_attempt = task.attempt
            task.proceed_attempt = 0
        retry_agent = d.agent_id if d.action is Action.RETRY_SAME else None
        outcome = self._requeue(task, kind, message, backoff=d.delay)
        task.retry_agent = retry_agent if outcome is Outcome.REQUEUED else None
        return Ruling(outcome, d, dropped)

    def agent_lost(self, task: TaskRecord, agent_id: str, reason: str = "agent lost") -> Outcome:
        """The lease holder's stream dropped or went silent: re-offer, keep the resume point."""
        if not task.status.leased or task.agent_id != agent_id:
            return Outcome.IGNORED
        return self.failed(task, agent_id, LOST, reason).outcome

    # -- internals ------------------------------------------------------------------------

    def _requeue(self, task: TaskRecord, kind: str, message: str, *, backoff: float) -> Outcome:
        task.retry_count += 1
        task.pinned_agent = None  # a manual assignment covers one attempt, never a wait forever
        task.force = False
        task.retry_agent = None
        # No cap on task.attempt here: the retry policy counts the attempts that are the
        # task's or the agent's doing (max_attempts) and lets risk-control re-offers wait
        # out Bilibili; an admin retry starts that count afresh (``revive``).
        task.status = Status.PENDING
        task.error_kind, task.error_message = kind, message
        task.not_before = self.clock() + backoff
        task.upload_speed = task.eta_seconds = 0.0
        task.uploaded_bytes = task.committed_offset
        return Outcome.REQUEUED

    def _fail(self, task: TaskRecord, kind: str, message: str) -> Outcome:
        task.status = Status.FAILED
        task.error_kind, task.error_message = kind, message
        task.completed_at = self.clock()
        task.upload_speed = task.eta_seconds = 0.0
        return Outcome.FAILED
