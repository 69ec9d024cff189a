"""The end of an attempt: what the risk ledgers learn, what is written, who is woken.

An attempt ends by the agent's Result, a failed progress report, the hub
failing to read the source, or the hub having no credentials to offer with.
Each path rules on the task with :class:`hub.core.lifecycle.Lifecycle` and then
comes here, under the state's lock, so every end is recorded the same way.

What Bilibili's refusal teaches, by kind (the task's own fate is the retry
policy's, hub/core/retry_policy.py):

* ``risk_control`` (406, 601): a risk event for the egress IP the attempt
  started from, and one for its account, which puts the account at fault when
  answers to it came from several IPs (then the IPs' events are taken back);
  a 601's voucher opens a captcha for an admin to solve;
* ``account_throttle`` (21566, 137022): the account cools down, for the wait
  Bilibili named or a doubling one;
* ``account_penalty`` (21515, 21590): the account is stopped until an admin
  releases it;
* ``session_rejected``: the resume point is gone (counted in the metrics).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from hub.core import account_risk
from hub.core.lifecycle import Outcome, Ruling, TaskRecord
from hub.core.ports import Submissions
from hub.core.retry_policy import ACCOUNT_PENALTY, ACCOUNT_THROTTLE, RISK_CONTROL
from hub.core.state import HubState

log = logging.getLogger("bupmesh.hub")


@dataclass(frozen=True)
class Refusal:
    """What Bilibili said with a refusal, as the agent reported it (Result)."""

    code: int = 0  # Bilibili's code (406, 601, 21566 ...), 0 unknown
    voucher: str = ""  # a 601's captcha
    retry_after: float | None = None  # the wait Bilibili named, seconds


class Outcomes:
    def __init__(self, state: HubState) -> None:
        self.state = state
        self.submissions: Submissions | None = None  # set once the pipeline is attached

    def where(self, task: TaskRecord, agent_id: str) -> tuple[str, str]:
        """(egress IP, account key) the task's current attempt started under."""
        known = self.state.lease_risk.get(task.task_id)
        if known is not None:
            return known
        info = self.state.registry.get(agent_id)
        return (info.risk_ip if info is not None else "unknown"), ""

    async def note(self, task: TaskRecord, agent_id: str, ruling: Ruling, message: str = "",
                   refusal: Refusal | None = None) -> None:
        """The end of an attempt, for the risk ledgers (caller holds the state's lock)."""
        state = self.state
        ip, account = self.where(task, agent_id)
        now = state.clock()
        success = ruling.outcome is Outcome.COMPLETED
        state.ledger.upload_finished(ip, agent_id, now, ok=success)
        decision = ruling.decision
        kind = task.error_kind or ""
        refusal = refusal or Refusal()
        if not success and decision is not None and decision.record_risk_event:
            self._risk_control(ip, account, agent_id, message, refusal, now)
        elif not success and kind == ACCOUNT_THROTTLE and account:
            until = state.account_ledger.throttled(
                account, now, what=account_risk.PREUPLOAD, code=refusal.code,
                retry_after=refusal.retry_after, ip=ip, agent_id=agent_id, message=message)
            state.counters.account_event(kind)
            log.warning("account %s throttled on an upload from %s: paused until %.0f",
                        account, ip, until)
        elif not success and kind == ACCOUNT_PENALTY and account:
            state.account_ledger.penalised(account, now, what=account_risk.PREUPLOAD,
                                           code=refusal.code, ip=ip, agent_id=agent_id,
                                           message=message)
            state.counters.account_event(kind)
            log.error("account %s penalised by Bilibili (%s): stopped until an admin "
                      "releases it", account, message)
        if ruling.dropped is not None:
            size, session = ruling.dropped
            parts = _parts_done(session)
            state.counters.session_dropped(parts, size)
            log.warning("task %s: upos refused its session; %d committed part(s) (%d bytes) "
                        "dropped, starting afresh", task.task_id, parts, size)
        await state.save_ledger()

    def _risk_control(self, ip: str, account: str, agent_id: str, message: str,
                      refusal: Refusal, now: float) -> None:
        state = self.state
        code = refusal.code or (601 if "601" in (message or "") else 406)
        kind = str(code)
        state.ledger.risk_event(ip, agent_id, kind, now, account=account,
                                voucher=refusal.voucher)
        state.counters.risk_event(ip, kind)
        if refusal.voucher:
            captcha, new = state.captchas.raised(refusal.voucher, ip=ip, account=account,
                                                 agent_id=agent_id, now=now)
            if new:
                log.warning("captcha needed: Bilibili throttles account %s on IP %s until "
                            "voucher %s is solved", account or "?", ip, captcha.voucher)
        if account:
            verdict = state.account_ledger.risk_event(
                account, ip, agent_id, now, code=code, voucher=refusal.voucher,
                retry_after=refusal.retry_after)
            if verdict.suspected and verdict.since is not None:
                freed = state.ledger.blame_account(account, verdict.since, now)
                state.unexclude_ips(freed)
                state.counters.account_event(RISK_CONTROL)
                log.warning("account %s refused on %s since %.0f: the account is at fault, "
                            "not the IPs (%s freed)", account, ", ".join(verdict.ips),
                            verdict.since, ", ".join(freed) or "none")
        log.warning("IP %s: risk event %s (agent %s, account %s): now %s", ip, kind, agent_id,
                    account or "?", state.ledger.state(ip, now))

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


def _parts_done(session: bytes | None) -> int:
    """Parts a resume session had committed (its JSON lists them); 0 when unreadable."""
    if not session:
        return 0
    try:
        done = json.loads(session).get("parts_done")
    except (ValueError, AttributeError):
        return 0
    return len(set(done)) if isinstance(done, list) else 0
