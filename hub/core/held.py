"""Leases that outlive their stream for a short grace period (held tasks).

When an agent's stream ends, its running attempts need not be lost: the agent
keeps them for its own grace period (spoke/link.py) and lists them in the next
``Hello.held_tasks`` with the offset it has received up to. The hub keeps the
matching leases for ``heartbeat.held_grace_seconds`` instead of re-queuing them at
once, so a reconnect within that time re-attaches the SAME attempt to the new
stream and streaming resumes at that offset. Past the grace period (or for an
agent that comes back without them) the leases end as they always did: re-queued
with their resume point.

Only streamed leases (status ``uploading``, not a local read) are kept: an offer
not yet answered, or a local read that never needed the stream, is re-queued at
once as before. Sans-IO: the hub asks and acts; time comes from ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hub.core.lifecycle import Status, TaskRecord
from protocol import mesh_pb2 as pb


@dataclass(frozen=True)
class HeldLease:
    task_id: str
    agent_id: str
    session_id: str  # the ended session that carried the lease
    until: float  # re-queue after this (clock time)


class HeldLeases:
    """The leases of ended streams waiting for their agent to dial back."""

    def __init__(self, grace: float, clock: Callable[[], float]) -> None:
        self.grace = grace
        self._clock = clock
        self._leases: dict[str, HeldLease] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def may_keep(self, task: TaskRecord, *, local_read: bool) -> bool:
        """Whether a lease of an ended stream waits for its agent instead of ending now."""
        return self.grace > 0 and task.status is Status.UPLOADING and not local_read

    def keep(self, task_id: str, agent_id: str, session_id: str) -> HeldLease:
        lease = HeldLease(task_id, agent_id, session_id, self._clock() + self.grace)
        self._leases[task_id] = lease
        return lease

    def pop(self, task_id: str) -> HeldLease | None:
        return self._leases.pop(task_id, None)

    def of_agent(self, agent_id: str) -> list[HeldLease]:
        """Every lease still waiting for ``agent_id`` (removed: the caller ends or re-attaches them)."""
        mine = [lease for lease in self._leases.values() if lease.agent_id == agent_id]
        for lease in mine:
            del self._leases[lease.task_id]
        return mine

    def expired(self) -> list[HeldLease]:
        """Leases whose grace period is over (removed: the caller re-queues them)."""
        now = self._clock()
        due = [lease for lease in self._leases.values() if lease.until <= now]
        for lease in due:
            del self._leases[lease.task_id]
        return due


def reattach_offset(
    task: TaskRecord | None, agent_id: str, held: pb.HeldTask, *, local_read: bool
) -> int | None:
    """Where to resume streaming a task an agent says it holds, or None: cancel it.

    Fencing: the attempt must still hold the lease for this very agent (same task and
    attempt, leased to it and streaming, not cancelled or offered again meanwhile),
    and the offset must lie within the file.
    """
    if task is None or local_read:
        return None
    if not task.holds(agent_id, held.attempt) or task.status is not Status.UPLOADING:
        return None
    if not 0 <= held.committed_bytes <= task.file_size:
        return None
    return int(held.committed_bytes)
