"""What the hub does with each message an agent sends after its Hello.

Every task message names ``(task_id, attempt)``; one that is not the sender's
current lease changes nothing (fencing), except that an agent about to start or
complete an attempt whose lease is gone is told to Cancel it. A message that
cannot mean anything raises :class:`hub.core.errors.ProtocolViolation`, which
ends that one stream (the link maps it to a gRPC status).

The HTTP agent API feeds the same handlers with the same report types
(:mod:`hub.core.reports`), so a heartbeat or a failure means one thing whichever
way it came.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from hub.core import lifecycle as lc
from hub.core.errors import Conflict, NotFound, ProtocolViolation, Violation
from hub.core.lifecycle import Outcome, Status, TaskRecord
from hub.core.outcomes import Outcomes, Refusal
from hub.core.ports import Submissions
from hub.core.reports import HeartbeatReport, ProgressReport
from hub.core.spawner import Spawner
from hub.core.state import HubState
from hub.parts import Parts
from protocol import mesh_pb2 as pb
from protocol.credit import CreditError

if TYPE_CHECKING:
    from hub.agents.link import AgentSession
    from hub.metrics import HubMetrics

log = logging.getLogger("bupmesh.hub")


def _malformed(details: str) -> ProtocolViolation:
    return ProtocolViolation(Violation.MALFORMED, details)


def _out_of_order(details: str) -> ProtocolViolation:
    return ProtocolViolation(Violation.OUT_OF_ORDER, details)


class Messages:
    def __init__(self, state: HubState, *, outcomes: Outcomes, parts: Parts,
                 metrics: HubMetrics, spawn: Spawner) -> None:
        self.state = state
        self.outcomes = outcomes
        self.parts = parts
        self.metrics = metrics
        self.spawn = spawn
        self.submissions: Submissions | None = None  # set once the pipeline is attached

    async def handle(self, session: AgentSession, kind: str, msg: Any) -> None:
        """Act on one agent message (after Hello); ProtocolViolation on nonsense."""
        state = self.state
        if kind == "heartbeat":
            await self._heartbeat(session.agent_id, HeartbeatReport(
                status=msg.status, current_tasks=msg.current_tasks, free_slots=msg.free_slots,
                memory_mb=msg.memory_mb, tasks_completed=msg.tasks_completed,
                egress_ip=msg.egress_ip, line=msg.line, line_bps=msg.line_bps))
            return
        if kind == "submit_result":
            if self.submissions is not None:
                await self.submissions.on_result(session, msg)
            return
        if kind == "status_reply":
            return  # the hub asks no StatusQuery; an answer anyway changes nothing
        if not msg.task_id:
            raise _malformed(f"{kind} without task_id")
        task = state.tasks.get(msg.task_id)
        current = task is not None and task.holds(session.agent_id, msg.attempt)
        if kind == "credit":
            if msg.bytes <= 0:
                raise _malformed(f"Credit of {msg.bytes} bytes (must be positive)")
            if not current:
                return  # fenced: late credit for an ended lease
            if task.status is not Status.UPLOADING:
                raise _out_of_order("Credit before Accept")
            try:
                session.transfer.credit(msg.task_id, msg.attempt, int(msg.bytes))
            except CreditError as exc:
                raise _malformed(str(exc)) from None
            return
        if not current:
            if kind in ("accept", "finishing"):
                # The agent wants to start (or complete) an attempt whose lease is gone
                # (re-queued while the Offer was in flight, or after its link went silent):
                # tell it to drop the attempt, without completing the upload.
                session.send(pb.HubMessage(cancel=pb.Cancel(
                    task_id=msg.task_id, attempt=msg.attempt, reason="lease ended")))
            log.debug("agent %s: ignoring %s for %s attempt %s (not its lease)",
                      session.agent_id, kind, msg.task_id, msg.attempt)
            return
        if kind == "accept":
            await self._accept(session, task, msg)
        elif kind == "reject":
            await self._reject(session, task, msg)
        elif kind == "committed":
            await self._committed(session, task, msg)
        elif kind == "progress":
            before = task.uploaded_bytes
            state.lifecycle.progress(task, session.agent_id, msg.attempt, msg.uploaded_bytes,
                                     msg.speed_bps, msg.eta_seconds)
            self.metrics.uploaded(task, session.agent_id, session.ip_address, msg.attempt, before)
            state.events.touch_task(task.task_id)
        elif kind == "result":
            await self._result(session, task, msg)
        elif kind == "finishing":
            await self._finishing(session, task, msg)
        else:  # pragma: no cover - every oneof member is handled above
            raise _malformed(f"unexpected {kind}")

    def start_stream(self, session: AgentSession, task: TaskRecord, offset: int) -> None:
        """Stream ``task`` from ``offset`` on ``session`` (an accepted or re-attached attempt)."""
        if offset > 0 and not task.file_digest:
            # A resumed stream sees only the tail: the part's digest needs its own pass.
            self.parts.request_hash(task.part_id)
        session.transfer.start(task.task_id, task.attempt, task.file_path, task.file_size, offset,
                               known_digest=task.file_digest,
                               fingerprint=task.file_fingerprint,
                               crc32=session.crc32_integrity)

    def transfer_failed(self, session: AgentSession, task_id: str, attempt: int,
                        message: str) -> None:
        """The hub could not read the source while streaming (called from the writer)."""
        self.spawn(self._hub_side_failure, session, task_id, attempt, message)

    # -- HTTP agent API -------------------------------------------------------------------

    async def agent_heartbeat(self, agent_id: str, report: HeartbeatReport) -> None:
        if self.state.registry.get(agent_id) is None:
            raise NotFound(f"no agent {agent_id}")
        await self._heartbeat(agent_id, report)

    async def agent_progress(self, agent_id: str, report: ProgressReport) -> None:
        """Progress of the agent's own running task; ``status`` "failed" ends the attempt."""
        state = self.state
        task = state.tasks.get(report.task_id)
        if task is None or task.agent_id != agent_id or not task.status.leased:
            raise NotFound(f"no running task {report.task_id} for this agent")
        async with state.lock:
            state.lifecycle.progress(task, agent_id, task.attempt, report.uploaded_bytes,
                                     report.speed_bps, report.eta_seconds)
            state.events.touch_task(task.task_id)
            if report.status == "failed":
                info = state.registry.get(agent_id)
                ip = info.risk_ip if info else ""
                message = str(report.error_message or "reported failed")[:1000]
                ruling = state.lifecycle.result(
                    task, agent_id, task.attempt, success=False,
                    error_kind=report.error_kind or lc.NETWORK, error_message=message,
                    ip=self.outcomes.where(task, agent_id)[0])
                if ruling.outcome is not Outcome.IGNORED:
                    await self.outcomes.note(task, agent_id, ruling, message=message)
                if info is not None and info.session is not None:
                    info.session.stop_stream(task.task_id)
                await self.outcomes.finish(task, ruling, agent_id, ip)
            elif report.status == "completed":
                raise Conflict("completion is reported over the stream, with its checksum")

    # -- handlers -------------------------------------------------------------------------

    async def _heartbeat(self, agent_id: str, report: HeartbeatReport) -> None:
        state = self.state
        info = state.registry.get(agent_id)
        was = info.status if info else None
        state.registry.heartbeat(agent_id, status=report.status,
                                 current_tasks=report.current_tasks,
                                 free_slots=report.free_slots, memory_mb=report.memory_mb,
                                 tasks_completed=report.tasks_completed)
        info = state.registry.ensure(agent_id)
        moved = self.note_reach(agent_id, report.egress_ip, report.line, report.line_bps)
        if moved:
            await state.store.set_agent_egress(agent_id, info.egress_ip)
        state.store.note_heartbeat(agent_id, info.status, last_heartbeat=info.last_heartbeat,
                                   tasks_completed=info.tasks_completed)
        state.events.touch_agent(agent_id)
        if was != info.status or moved:
            state.poke()

    def note_reach(self, agent_id: str, egress_ip: str, line: str, line_bps: float) -> bool:
        """The agent's egress as Bilibili sees it, and its line (Hello, Heartbeat).

        The risk ledger keys the agent on its egress from now on: an agent whose
        traffic now leaves through another proxy or NAT is judged by that address,
        and agents that share one egress share its pacing. True when it moved.
        """
        state = self.state
        moved = state.registry.set_reach(agent_id, egress_ip=egress_ip, line=line,
                                         line_bps=line_bps)
        if moved is None:
            return False
        old, new = moved
        state.ledger.note_agent(new, agent_id)
        state.events.touch_ips()
        log.info("agent %s: egress %s as Bilibili sees it (was keyed on %s)", agent_id, new, old)
        return True

    async def _accept(self, session: AgentSession, task: TaskRecord, msg: pb.Accept) -> None:
        state = self.state
        if task.status is not Status.ASSIGNED:
            raise _out_of_order(f"Accept for {task.task_id} which is already {task.status}")
        offset = int(msg.resume_offset)
        if not 0 <= offset <= task.file_size:
            raise _malformed(f"Accept.resume_offset {offset} outside 0..{task.file_size}")
        if msg.local_read:
            await self._local_accept(session, task, msg)
            return
        async with state.lock:
            if state.lifecycle.accepted(task, session.agent_id, msg.attempt) is Outcome.IGNORED:
                return
            await state.save(task, session.agent_id, "start",
                             f"attempt {task.attempt} accepted, streaming from byte {offset}",
                             ip=session.ip_address, part_state="uploading")
        self.start_stream(session, task, offset)

    async def _local_accept(self, session: AgentSession, task: TaskRecord,
                            msg: pb.Accept) -> None:
        """A local/hybrid agent reads the part's file itself; nothing is streamed.

        Only against a known part digest (the Offer carried it and the agent matched its
        copy by size and digest first); the Result must carry that digest, so a file that
        differs on the agent's side cannot complete the task. (A part hashed by an older
        hub may know only its MD5: then the MD5 plays the digest's part.)
        """
        state = self.state
        info = state.registry.get(session.agent_id)
        if not (task.file_digest or task.file_md5) or info is None \
                or info.storage_type not in ("local", "hybrid"):
            raise _out_of_order("Accept.local_read needs a local/hybrid agent and an Offer "
                                "with file_digest")
        async with state.lock:
            if state.lifecycle.accepted(task, session.agent_id, msg.attempt) is Outcome.IGNORED:
                return
            state.local_reads[task.task_id] = msg.attempt
            await state.save(task, session.agent_id, "start",
                             f"attempt {task.attempt} accepted, read by the agent from "
                             f"{task.file_path} (no stream)",
                             ip=session.ip_address, part_state="uploading")

    async def _reject(self, session: AgentSession, task: TaskRecord, msg: pb.Reject) -> None:
        state = self.state
        async with state.lock:
            reason = (msg.reason or "no reason")[:500]
            if state.lifecycle.rejected(task, session.agent_id, msg.attempt, reason) \
                    is Outcome.IGNORED:
                return
            session.stop_stream(task.task_id)
            await state.save(task, session.agent_id, "retry", f"rejected: {reason}",
                             ip=session.ip_address)
        state.poke()

    async def _committed(self, session: AgentSession, task: TaskRecord,
                         msg: pb.Committed) -> None:
        state = self.state
        if msg.offset < 0 or msg.offset > task.file_size:
            raise _malformed(f"Committed.offset {msg.offset} outside 0..{task.file_size}")
        async with state.lock:
            # The first part a fresh session commits shows its preupload was accepted
            # (a resumed session made none): the account ledger weighs that when it asks
            # whether later refusals are the account's.
            fresh = task.committed_attempt != msg.attempt and not task.resume_session
            before = task.uploaded_bytes
            outcome = state.lifecycle.committed(task, session.agent_id, msg.attempt,
                                                int(msg.offset), bytes(msg.session))
            if outcome is not Outcome.IGNORED:
                # A part small enough to need no Progress moves only here: count its bytes.
                self.metrics.uploaded(task, session.agent_id, session.ip_address, msg.attempt,
                                      before)
                await state.store.save_task(task)
                if fresh:
                    await self.outcomes.preupload_accepted(task, session.agent_id)

    async def _finishing(self, session: AgentSession, task: TaskRecord,
                         msg: pb.Finishing) -> None:
        """Every part is up; the agent asks to complete. Proceed only for the lease holder.

        The grant is written before Proceed is sent: if the hub then loses the agent
        (or restarts), the re-offer resumes this very session, whose parts are all done,
        so the next attempt only repeats the completion, which Bilibili answers with
        the same object. An attempt that lost its lease first is told to Cancel instead
        (see :meth:`handle`) and never completes behind the hub's back.

        On a full data directory the grant waits in the store's write-behind queue and
        Proceed goes out anyway: an upload already running finishes. Only a hub killed
        before space returns loses the grant; its restart voids the lease and re-offers
        the task from the last resume point on disk, as after any crash.
        """
        state = self.state
        if msg.offset < 0 or msg.offset > task.file_size:
            raise _malformed(f"Finishing.offset {msg.offset} outside 0..{task.file_size}")
        async with state.lock:
            info = state.registry.get(session.agent_id)
            # The address Bilibili will see the completion come from: only it can repeat
            # the completion if the answer is lost (Lifecycle.completion_ip).
            ip = info.risk_ip if info is not None else session.ip_address
            granted = task.holds(session.agent_id, msg.attempt) \
                and task.status is Status.UPLOADING
            if granted:
                if msg.session:
                    state.lifecycle.committed(task, session.agent_id, msg.attempt,
                                              int(msg.offset), bytes(msg.session))
                granted = state.lifecycle.completion_granted(task, session.agent_id,
                                                             msg.attempt, ip)
                await state.save(task, session.agent_id, "finishing",
                                 f"attempt {msg.attempt} uploaded every part: proceed to "
                                 f"complete from {ip}", ip=session.ip_address)
        if granted:
            session.send(pb.HubMessage(proceed=pb.Proceed(task_id=task.task_id,
                                                          attempt=msg.attempt)))
        else:
            session.send(pb.HubMessage(cancel=pb.Cancel(
                task_id=task.task_id, attempt=msg.attempt, reason="lease ended")))

    async def _result(self, session: AgentSession, task: TaskRecord, msg: pb.Result) -> None:
        state = self.state
        stream = session.transfer.get(task.task_id)
        md5_ok = False
        if state.local_reads.get(task.task_id) == msg.attempt:
            # Read by the agent itself: what it uploaded must have the part's digest.
            stream = None
            md5_ok = _same_file(task, msg)
        elif stream is not None:  # CRC32 or MD5 of the attempt's bytes, per the Offer
            md5_ok = stream.agent_got_it(msg.md5, msg.crc32 if msg.HasField("crc32") else None,
                                         task.file_digest)
        async with state.lock:
            learned = (
                md5_ok and msg.success and stream is not None and stream.start == 0
                and bool(stream.digest) and not task.file_digest
                and task.holds(session.agent_id, msg.attempt)
            )
            before = task.uploaded_bytes
            ruling = state.lifecycle.result(
                task, session.agent_id, msg.attempt, success=msg.success,
                filename=msg.filename, biz_id=int(msg.biz_id),
                error_kind=msg.error_kind, error_message=msg.error_message[:1000],
                md5_ok=md5_ok, ip=self.outcomes.where(task, session.agent_id)[0],
            )
            outcome = ruling.outcome
            if outcome is Outcome.IGNORED:
                return
            if outcome is Outcome.COMPLETED:
                self.metrics.uploaded(task, session.agent_id, session.ip_address, msg.attempt,
                                      before)
            retry_after = float(msg.retry_after_seconds)
            refusal = Refusal(code=int(msg.error_code), voucher=msg.voucher[:200],
                              retry_after=retry_after if 0 < retry_after < 1e9 else None)
            await self.outcomes.note(task, session.agent_id, ruling,
                                     message=msg.error_message[:1000], refusal=refusal)
            session.stop_stream(task.task_id)
            if learned and outcome is Outcome.COMPLETED and stream is not None:
                # Taken while streaming the whole file, and the agent got the same bytes:
                # that is the part's digest, without a separate pass over the file.
                await self.parts.learned_digest(task, stream.digest)
            await self.outcomes.finish(task, ruling, session.agent_id, session.ip_address)

    async def _hub_side_failure(self, session: AgentSession, task_id: str, attempt: int,
                                message: str) -> None:
        state = self.state
        async with state.lock:
            task = state.tasks.get(task_id)
            if task is None:
                return
            ruling = state.lifecycle.result(task, session.agent_id, attempt, success=False,
                                            error_kind=lc.FILE, error_message=message,
                                            ip=self.outcomes.where(task, session.agent_id)[0])
            if ruling.outcome is Outcome.IGNORED:
                return
            await self.outcomes.note(task, session.agent_id, ruling)
            await self.outcomes.finish(task, ruling, session.agent_id, session.ip_address)
        session.send(pb.HubMessage(cancel=pb.Cancel(task_id=task_id, attempt=attempt,
                                                    reason=message)))


def _same_file(task: TaskRecord, msg: pb.Result) -> bool:
    """A local read's Result names the part's digest (or, for a part an older hub hashed,
    its MD5): the agent uploaded the very file the hub has."""
    if task.file_digest:
        return bool(msg.file_digest) and hmac.compare_digest(task.file_digest,
                                                             msg.file_digest.lower())
    return bool(task.file_md5) and bool(msg.md5) and hmac.compare_digest(task.file_md5,
                                                                         msg.md5.lower())
