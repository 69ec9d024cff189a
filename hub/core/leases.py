"""Leases of a stream that ended: re-queued, or kept a while for the agent to dial back.

Only the ended session's leases: by the time this runs the agent may have
dialled again and been offered new work on its new stream, which must not be
taken away. A lost (not replaced) stream's streaming leases may wait for
``heartbeat.held_grace_seconds`` (:mod:`hub.core.held`); the rest are re-queued
at once with their resume point. Callers hold the state's lock.
"""

from __future__ import annotations

import logging

from hub.core.held import HeldLease
from hub.core.state import HubState

log = logging.getLogger("bupmesh.hub")


async def end_session_leases(state: HubState, agent_id: str, session_id: str, reason: str, *,
                             hold: bool = False) -> None:
    """Re-queue (or, with ``hold``, keep) the leases carried by one ended session."""
    for task in list(state.tasks.values()):
        if (
            task.status.leased
            and task.agent_id == agent_id
            and state.lease_session.get(task.task_id, session_id) == session_id
        ):
            if hold and state.held.may_keep(task, local_read=task.task_id in state.local_reads):
                state.held.keep(task.task_id, agent_id, session_id)
                log.info("task %s attempt %d: lease kept %.0fs for %s to dial back",
                         task.task_id, task.attempt, state.held.grace, agent_id)
                continue
            state.lifecycle.agent_lost(task, agent_id, reason)
            await state.save(task, agent_id, "retry", reason)


async def end_held_lease(state: HubState, lease: HeldLease, why: str) -> None:
    """A kept lease nobody re-attached: re-queue it as a lost stream's lease always was."""
    task = state.tasks.get(lease.task_id)
    if (
        task is not None and task.status.leased and task.agent_id == lease.agent_id
        and state.lease_session.get(task.task_id) == lease.session_id
    ):
        reason = f"agent lost: {why}"
        state.lifecycle.agent_lost(task, lease.agent_id, reason)
        await state.save(task, lease.agent_id, "retry", reason)
