"""The end of an attempt: what the risk ledger learns, what is written, who is woken.

An attempt ends by the agent's Result, a failed progress report, the hub
failing to read the source, or the hub having no credentials to offer with.
Each path rules on the task with :class:`hub.core.lifecycle.Lifecycle` and then
comes here, under the state's lock, so every end is recorded the same way.
"""

from __future__ import annotations

import logging

from hub.core.lifecycle import Outcome, Ruling, TaskRecord
from hub.core.ports import Submissions
from hub.core.state import HubState

log = logging.getLogger("bupmesh.hub")


class Outcomes:
    def __init__(self, state: HubState) -> None:
        self.state = state
        self.submissions: Submissions | None = None  # set once the pipeline is attached

    async def note(self, agent_id: str, ip: str, ruling: Ruling, message: str = "") -> None:
        """The end of an attempt, for the risk ledger (caller holds the state's lock)."""
        state = self.state
        ip = ip or "unknown"
        now = state.clock()
        success = ruling.outcome is Outcome.COMPLETED
        state.ledger.upload_finished(ip, agent_id, now, ok=success)
        decision = ruling.decision
        if not success and decision is not None and decision.record_risk_event:
            kind = "601" if "601" in (message or "") else "406"
            state.ledger.risk_event(ip, agent_id, kind, now)
            state.counters.risk_event(ip, kind)
            log.warning("IP %s: risk event %s (agent %s): now %s", ip, kind, agent_id,
                        state.ledger.state(ip, now))
        await state.save_ledger()

    async def finish(self, task: TaskRecord, ruling: Ruling, agent_id: str, ip: str) -> None:
        """Persist the end of an attempt (caller holds the state's lock)."""
        state = self.state
        outcome = ruling.outcome
        if outcome is Outcome.COMPLETED:
            await state.save(task, agent_id, "success",
                             f"uploaded as {task.filename} (biz_id {task.biz_id})", ip=ip,
                             part_state="uploaded")
            info = state.registry.get(agent_id)
            if info is not None:
                info.tasks_completed += 1
            log.info("task %s completed by %s: %s", task.task_id, agent_id, task.filename)
        elif outcome is Outcome.FAILED:
            await state.save(task, agent_id, "error",
                             f"failed: {task.error_kind}: {task.error_message}", ip=ip,
                             part_state="failed")
            log.warning("task %s failed: %s: %s", task.task_id, task.error_kind,
                        task.error_message)
        elif outcome is Outcome.REQUEUED:
            decision = ruling.decision
            # The policy's reason says what happens next ("retry 1/3 on a1 in 1 s",
            # "moving to another IP"), which the log of the attempt should show.
            why = decision.reason if decision is not None else (
                f"{task.error_kind}: {task.error_message}")
            await state.save(task, agent_id, "retry", why, ip=ip)
            log.info("task %s re-queued after %s: %s", task.task_id, task.error_kind,
                     task.error_message)
        state.poke()  # a slot or the task is free again
        if outcome is Outcome.COMPLETED and self.submissions is not None:
            self.submissions.poke()  # the recording of this part may be complete now
