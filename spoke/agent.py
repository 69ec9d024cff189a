"""One agent identity: its credit budget, its task runners, what it says on the stream.

The :class:`~spoke.link.Link` dials and keeps a :class:`~spoke.stream.Stream`
up; the :class:`Agent` decides everything said on it. It admits offered tasks
(an upload slot free, a window of the credit budget, not draining), runs each
attempt in a :class:`~spoke.runner.TaskRunner`, routes the hub's messages to the
attempt they name (fenced by ``(task_id, attempt)``: anything for another
attempt is ignored), grants credit through the stream's pump, answers status
queries and ``Submit``, and drains on ``Drain`` or SIGTERM.

Task runners live in the agent's own task group, not the stream's, so an
attempt can outlive its stream: with ``held_grace`` > 0 an attempt still
receiving bytes is kept that long (:mod:`spoke.held`), listed in the next
``Hello.held_tasks`` and streamed on by the hub from the first byte it lacks;
every other attempt is abandoned without completing its upload (the hub
re-offers it with the resume point it holds). Needs asyncio (the link is
``grpc.aio``).

What Bilibili sees of the agent goes into every Hello and Heartbeat
(:class:`~spoke.egress.Reach`): the egress address an :class:`~spoke.egress.EgressWatch`
learns from Bilibili (asked again after any network error an upload or a
submission reports), and the line its :class:`~uploader.line_choice.LineEstimator`
rates best, kept across uploads.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from protocol import mesh_pb2 as pb
from protocol.chunks import WireChunk
from protocol.credit import CreditBudget
from spoke.backoff import Backoff
from spoke.config import AgentSettings
from spoke.egress import EgressWatch, Reach, zone_lookup
from spoke.held import HeldTasks
from spoke.link import Link
from spoke.local import DigestCache
from spoke.memory import memory_mb, release_free_heap
from spoke.reconnect import ReconnectSchedule
from spoke.runner import AGENT, TaskFailure, TaskRunner
from spoke.source import StreamSource
from spoke.stream import CreditPump, Stream
from spoke.submitter import execute, submit_time_left
from uploader.completed import CompletedUploads
from uploader.errors import ErrorKind
from uploader.line_choice import LineEstimator

STOP_WAIT = 5.0  # how long stopped runners get to unwind (they stop promptly)
EGRESS_FIRST_WAIT = 5.0  # at start, how long the first Hello waits for the egress address
DRAIN_OVERRUN = 15.0  # past the drain grace, the stream is closed whatever still hangs


class Agent:
    """One agent identity: its link, its credit budget and its running tasks."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        client_factory: Callable[..., Any] | None = None,
        uploader_factory: Callable[..., Any] | None = None,
        backoff: Backoff | None = None,
        refused_backoff: Backoff | None = None,
        egress_lookup: Callable[[], Any] | None = None,
        lines: LineEstimator | None = None,
    ) -> None:
        self.settings = settings
        self.log = logging.LoggerAdapter(
            logging.getLogger("bupmesh.agent"), {"agent": settings.agent_id}
        )
        # One chunk's worth per upload slot is always kept for the task in that slot,
        # so a stuck upload never starves the others; the rest is shared.
        self.budget = CreditBudget(
            settings.buffer_bytes,
            slots=settings.max_concurrent,
            slot_reserve=min(settings.chunk_size, settings.buffer_bytes // settings.max_concurrent),
        )
        self.runners: dict[str, TaskRunner] = {}
        self._held = HeldTasks(settings.held_grace, clock)  # runners outliving their stream
        self._late_commits: dict[str, pb.AgentMessage] = {}  # Committed while detached
        self._tasks_tg: anyio.abc.TaskGroup | None = None  # where runners run
        self._submits: set[tuple[str, int]] = set()  # Submit attempts run (never twice)
        self.digests = DigestCache()  # local reads: digest per file version, across tasks
        self.clock = clock
        self._factories: dict[str, Any] = {}
        if client_factory is not None:
            self._factories["client_factory"] = client_factory
        if uploader_factory is not None:
            self._factories["uploader_factory"] = uploader_factory
        backoff = backoff or Backoff(1.0, 60.0, rng)
        self.link = Link(settings, self, backoff=backoff, refused_backoff=refused_backoff,
                         wall_clock=wall_clock, log=self.log,
                         schedule=ReconnectSchedule(backoff, rng))
        self.credit = CreditPump(self.budget, self._attempt_of)
        self._draining = False  # no new offers
        self.tasks_completed = 0
        # What Bilibili sees of this agent (Hello, Heartbeat): its egress, its best line.
        self.egress = EgressWatch(
            settings.egress_check_interval,
            egress_lookup or zone_lookup(settings),
            on_change=self._egress_changed,
            clock=clock,
            log=self.log,
        )
        self.lines = lines or LineEstimator(rng=rng)
        # Upload sessions completed here: a re-offer of one whose Result the link or the
        # hub lost finishes without asking upos again (which may refuse it by then).
        self.completed = CompletedUploads()
        self._may_dial = anyio.Event()  # the first egress answer is in (or we stop)

    # -- public --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect, until :meth:`stop` and the drain are done."""
        async with anyio.create_task_group() as tasks:
            self._tasks_tg = tasks
            if self._held.grace > 0:
                tasks.start_soon(self._reap_held)
            tasks.start_soon(self.egress.run)
            tasks.start_soon(self._dial_when_egress_known)
            # The first Hello should carry the egress (the hub keys its IP ledger on it);
            # a slow or unreachable Bilibili only delays it a little, a stop not at all.
            with anyio.move_on_after(EGRESS_FIRST_WAIT):
                await self._may_dial.wait()
            await self.link.run()
            # Held attempts with no stream left to finish on (the drain took the others).
            for runner in list(self.runners.values()):
                runner.stop(TaskFailure(AGENT, "agent stopping"))
            with anyio.move_on_after(STOP_WAIT):
                while self.runners:
                    await next(iter(self.runners.values())).finished.wait()
            tasks.cancel_scope.cancel()
        self._tasks_tg = None
        self.log.info("agent stopped")

    def stop(self) -> None:
        """Graceful drain (SIGTERM): finish running tasks up to the grace period, then exit."""
        self._may_dial.set()  # stop waiting for the egress: there is nothing left to dial
        if self.link.stopping:
            return
        self._draining = True
        stream = self.link.stop()
        if stream is None:
            return
        self.log.info("draining: %d task(s) running", len(self.runners))
        self._send(pb.AgentMessage(heartbeat=self.heartbeat()))
        stream.start_soon(self._drain_and_close, stream, self.settings.drain_grace)

    @property
    def free_slots(self) -> int:
        return max(0, self.settings.max_concurrent - len(self.runners))

    # -- what the link asks of us (spoke.link.LinkHandler) -------------------------------------

    def capabilities(self) -> pb.Capabilities:
        s = self.settings
        return pb.Capabilities(
            max_concurrent_uploads=s.max_concurrent,
            bandwidth_mbps=s.bandwidth_mbps,
            storage_type=s.storage_type,
            buffer_bytes=s.buffer_bytes,
            finish_handshake=True,
            submit=True,  # spoke/submitter.py
            archive_operations=True,  # spoke/archive_ops.py
            crc32_integrity=s.crc32_integrity,
            reconnect_window=True,  # spoke/reconnect.py
            local_paths=list(s.local_roots) if s.storage_type in ("local", "hybrid") else [],
        )

    def held_tasks(self) -> list[pb.HeldTask]:
        """What the next Hello offers back: each held attempt and the first byte it lacks."""
        held = []
        for task_id in self._held.live():
            runner = self.runners.get(task_id)
            if runner is None or not runner.holdable:
                continue
            assert isinstance(runner.source, StreamSource)
            held.append(pb.HeldTask(task_id=task_id, attempt=runner.attempt,
                                    committed_bytes=runner.source.restart_check()))
        return held

    def reach(self) -> Reach:
        """What Bilibili sees of this agent, for Hello and Heartbeat."""
        best = self.lines.best()
        return Reach(
            egress_ip=self.egress.address,
            line=best.name if best is not None else "",
            line_bps=best.bps if best is not None else 0.0,
        )

    def heartbeat(self) -> pb.Heartbeat:
        running = len(self.runners)
        if self._draining:
            status = "draining"
        elif self.free_slots == 0:
            status = "busy"
        else:
            status = "online"
        reach = self.reach()
        return pb.Heartbeat(
            status=status,
            current_tasks=running,
            free_slots=0 if self._draining else self.free_slots,
            memory_mb=memory_mb(),
            tasks_completed=self.tasks_completed,
            egress_ip=reach.egress_ip,
            line=reach.line,
            line_bps=reach.line_bps,
        )

    async def _dial_when_egress_known(self) -> None:
        await self.egress.first_answer.wait()
        self._may_dial.set()

    def _egress_changed(self, address: str) -> None:
        """Tell the hub at once: its IP ledger must follow the address Bilibili sees."""
        if self.link.stream is not None:
            self._send(pb.AgentMessage(heartbeat=self.heartbeat()))

    def welcomed(self, stream: Stream, held: list[pb.HeldTask]) -> None:
        self._draining = self.link.stopping
        self._reattach(held)
        stream.start_soon(self.credit.run, stream)
        stream.start_soon(self._progress_ticker)
        if self.link.stopping:  # SIGTERM arrived while connecting
            stream.start_soon(self._drain_and_close, stream, self.settings.drain_grace)

    def stream_lost(self) -> list[anyio.Event]:
        """Keep the attempts that may be held; stop the others (the link awaits them)."""
        keep: list[str] = []
        stopped: list[anyio.Event] = []
        for runner in list(self.runners.values()):
            if runner.task_id in self._held:
                continue  # detached earlier (this was a failed reconnect): deadline stands
            if self._held.grace > 0 and not self.link.stopping and runner.holdable:
                if runner.task_id in self.budget:
                    # Credit granted on the dead stream will never be used: grant it anew.
                    self.budget.forget_in_flight(runner.task_id)
                keep.append(runner.task_id)
            else:
                runner.stop(TaskFailure(AGENT, "stream lost"))
                stopped.append(runner.finished)
        if keep:
            self.log.info("stream lost: holding %d task(s) for %gs", len(keep), self._held.grace)
            self._held.detach(keep)
        return stopped

    def dispatch(self, stream: Stream, message: pb.HubMessage | WireChunk) -> None:
        if isinstance(message, WireChunk):  # the hot path: no protobuf object at all
            runner = self._runner_for(message.task_id, message.attempt)
            if runner is not None:
                runner.on_chunk(message)
            return
        kind = message.WhichOneof("kind")
        if kind == "chunk":
            runner = self._runner_for(message.chunk.task_id, message.chunk.attempt)
            if runner is not None:
                runner.on_chunk(message.chunk)
        elif kind == "end_of_data":
            eod = message.end_of_data
            runner = self._runner_for(eod.task_id, eod.attempt)
            if runner is not None:
                runner.on_end_of_data(eod)
        elif kind == "offer":
            self._on_offer(stream, message.offer)
        elif kind == "proceed":
            runner = self._runner_for(message.proceed.task_id, message.proceed.attempt)
            if runner is not None:
                runner.on_proceed()
        elif kind == "cancel":
            runner = self._runner_for(message.cancel.task_id, message.cancel.attempt)
            if runner is not None:
                self.log.info("task %s: cancel (%s)", runner.task_id, message.cancel.reason)
                runner.cancel(message.cancel.reason or "cancelled by hub")
        elif kind == "status_query":
            self._send(pb.AgentMessage(status_reply=self._status_reply(message.status_query)))
        elif kind == "drain":
            self._on_drain(stream, message.drain)
        elif kind == "submit":
            stream.start_soon(self._submit, message.submit)
        elif kind == "token_refresh":
            self.link.set_token(message.token_refresh)
        elif kind == "reconnect_window":
            self.link.set_reconnect_window(message.reconnect_window.seconds)
        elif kind == "welcome":
            self.log.warning("unexpected second Welcome ignored")
        else:
            self.log.warning("unknown hub message ignored")

    # -- attempts across a lost stream (spoke/held.py) -----------------------------------------

    def _reattach(self, held: list[pb.HeldTask]) -> None:
        """Welcomed after a Hello listing ``held``: those attempts go on over this stream.

        The hub streams on from each one's offset once credit arrives (the pump grants
        it), or answers ``Cancel`` for an attempt whose lease it ended.
        """
        self._held.reattach(t.task_id for t in held)
        for t in held:
            self.log.info("task %s attempt %d: held across the reconnect, bytes from %d",
                          t.task_id, t.attempt, t.committed_bytes)
            late = self._late_commits.pop(t.task_id, None)
            if late is not None:
                self._send(late)  # the resume point the hub missed while the link was down
        self.credit.wake()

    async def _reap_held(self) -> None:
        """Stop held attempts whose grace period ran out before a Hello could list them."""
        while True:
            await anyio.sleep(0.25)
            for task_id in self._held.expired():
                runner = self.runners.get(task_id)
                if runner is not None:
                    self.log.info("task %s: not back on a stream within %gs; abandoning",
                                  task_id, self._held.grace)
                    runner.stop(TaskFailure(AGENT, "stream lost"))

    def _task_send(self, message: pb.AgentMessage) -> None:
        """A runner's message. With no stream it is dropped, but for the latest
        ``Committed``, which is sent again if the attempt is held across the reconnect."""
        self._watch_for_network_trouble(message)
        if self.link.stream is None:
            if message.WhichOneof("kind") == "committed":
                self._late_commits[message.committed.task_id] = message
            return
        self._send(message)

    def _send(self, message: pb.AgentMessage) -> None:
        self.link.send(message)

    def _watch_for_network_trouble(self, message: pb.AgentMessage) -> None:
        """A network failure may mean the route (a proxy, say) changed, and a session upos
        refused may have been refused for the address: look at the egress, so the hub
        keys what follows (and where a granted completion may be repeated) on the right IP."""
        kind = message.WhichOneof("kind")
        if kind in ("result", "submit_result"):
            reply = getattr(message, kind)
            if not reply.success and reply.error_kind in (ErrorKind.NETWORK.value,
                                                          ErrorKind.SESSION_REJECTED.value):
                self.egress.poke()

    async def _progress_ticker(self) -> None:
        while True:
            await anyio.sleep(1.0)
            for runner in list(self.runners.values()):
                runner.report_progress()

    # -- admission -----------------------------------------------------------------------------

    def _runner_for(self, task_id: str, attempt: int) -> TaskRunner | None:
        runner = self.runners.get(task_id)
        if runner is None or runner.attempt != attempt:
            return None  # fencing: not ours, or an older attempt
        return runner

    def _attempt_of(self, task_id: str) -> int | None:
        runner = self.runners.get(task_id)
        return runner.attempt if runner is not None else None

    def _reject(self, offer: pb.Offer, reason: str) -> None:
        self.log.info("task %s: reject (%s)", offer.task_id, reason)
        self._send(
            pb.AgentMessage(
                reject=pb.Reject(task_id=offer.task_id, attempt=offer.attempt, reason=reason)
            )
        )

    def _on_offer(self, stream: Stream, offer: pb.Offer) -> None:
        existing = self.runners.get(offer.task_id)
        if existing is not None:
            if existing.attempt == offer.attempt:
                return  # duplicate offer
            existing.cancel("superseded by a newer attempt")
        if self._draining:
            return self._reject(offer, "draining")
        if not offer.task_id:
            return self._reject(offer, "offer without task_id")
        if len([r for r in self.runners.values() if r.running]) >= self.settings.max_concurrent:
            return self._reject(offer, "no free upload slot")
        runner = TaskRunner(
            offer,
            settings=self.settings,
            budget=self.budget,
            send=self._task_send,
            on_space=self.credit.wake,
            clock=self.clock,
            lines=self.lines,
            completed=self.completed,
            **self._factories,
        )
        try:
            runner.prepare()
        except TaskFailure as exc:
            self.log.warning("task %s: %s", offer.task_id, exc)
            self._send(
                pb.AgentMessage(
                    result=pb.Result(
                        task_id=offer.task_id,
                        attempt=offer.attempt,
                        success=False,
                        error_kind=exc.kind,
                        error_message=exc.message,
                    )
                )
            )
            return
        if existing is not None and offer.task_id in self.budget:
            # The superseded attempt still holds its window until it unwinds.
            stream.start_soon(self._start_after, stream, existing, runner)
            return
        if not self.budget.can_admit(runner.min_window):
            return self._reject(offer, "buffer budget full")
        self._start(stream, runner)

    async def _start_after(self, stream: Stream, old: TaskRunner, new: TaskRunner) -> None:
        with anyio.move_on_after(STOP_WAIT):
            await old.finished.wait()
        if self._draining or not self.budget.can_admit(new.min_window):
            self._reject(pb.Offer(task_id=new.task_id, attempt=new.attempt), "buffer budget full")
            return
        self._start(stream, new)

    def _start(self, stream: Stream, runner: TaskRunner) -> None:
        self.runners[runner.task_id] = runner
        # Runners live in the agent's group (when run() drives it), not the stream's:
        # a held attempt outlives its stream.
        start_soon = self._tasks_tg.start_soon if self._tasks_tg is not None else stream.start_soon
        if runner.wants_local:
            # The file may be here: check it (bounded) before answering, in the task.
            start_soon(self._run_task, runner, True)
            return
        runner.accept()
        self.log.info(
            "task %s attempt %d: accepted %s (%d bytes from %d)",
            runner.task_id,
            runner.attempt,
            runner.file_name,
            runner.size,
            runner.resume_offset,
        )
        self.credit.wake()
        start_soon(self._run_task, runner)

    async def _run_task(self, runner: TaskRunner, check_local: bool = False) -> None:
        try:
            if check_local:
                local = await runner.check_local(self.digests)
                if self.link.stream is None:  # the stream went while we looked at the disk
                    runner.state.reject()
                    runner.finished.set()
                    return
                if local is None and not self.budget.can_admit(runner.min_window):
                    # Others took the buffer while we looked at the disk: as if at once.
                    runner.state.reject()
                    runner.finished.set()
                    self._reject(
                        pb.Offer(task_id=runner.task_id, attempt=runner.attempt),
                        "buffer budget full",
                    )
                    return
                runner.accept(local)
                self.log.info(
                    "task %s attempt %d: accepted %s (%d bytes from %d, %s)",
                    runner.task_id,
                    runner.attempt,
                    runner.file_name,
                    runner.size,
                    runner.resume_offset,
                    "local read" if local is not None else "streamed",
                )
                self.credit.wake()
            await runner.run()
        except Exception as exc:  # a bug must cost one task, never the agent's task group
            self.log.error("task %s: runner failed", runner.task_id, exc_info=exc)
        finally:
            if self.runners.get(runner.task_id) is runner:
                del self.runners[runner.task_id]
                self._held.forget(runner.task_id)
                self._late_commits.pop(runner.task_id, None)
            release_free_heap()  # what the task's buffers fragmented goes back to the OS
            if runner.state_name.value == "done":
                self.tasks_completed += 1

    # -- other requests ------------------------------------------------------------------------

    async def _submit(self, msg: pb.Submit) -> None:
        """Archive submission from this agent's IP; one SubmitResult per Submit."""
        key = (msg.submit_id, msg.attempt)
        if key in self._submits:
            return  # a repeated Submit: that attempt has run or is running
        self._submits.add(key)
        factory = {"client_factory": self._factories["client_factory"]} \
            if "client_factory" in self._factories else {}
        # Shielded (bounded): once sent, a submission is seen through to Bilibili's answer
        # even if the stream drops meanwhile; abandoning the request halfway would leave
        # its outcome to chance, and the hub reconciles a lost answer by looking for the
        # archive. No gRPC await is inside this scope.
        limit = submit_time_left(msg, time.time())
        if limit <= 0:
            self.log.warning("submit %s attempt %d arrived after its deadline; not submitting",
                             msg.submit_id, msg.attempt)
            self._send(pb.AgentMessage(submit_result=pb.SubmitResult(
                submit_id=msg.submit_id, attempt=msg.attempt, success=False,
                error_kind="agent", error_message="Submit arrived after its deadline")))
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(limit):
            result = await execute(msg, source_ip=self.settings.source_ip,
                                   proxy=self.settings.proxy, **factory)
            message = pb.AgentMessage(submit_result=result)
            self._watch_for_network_trouble(message)
            self._send(message)

    def _status_reply(self, query: pb.StatusQuery) -> pb.StatusReply:
        return pb.StatusReply(
            query_id=query.query_id,
            status=self.heartbeat().status,
            tasks=[r.progress_message() for r in self.runners.values()],
            memory_mb=memory_mb(),
            buffered_bytes=self.budget.outstanding,
        )

    # -- draining ------------------------------------------------------------------------------

    def _on_drain(self, stream: Stream, drain: pb.Drain) -> None:
        self.log.info("hub asks to drain (%s)", drain.reason)
        self._draining = True
        self._send(pb.AgentMessage(heartbeat=self.heartbeat()))
        if drain.reconnect_after_seconds > 0:
            self.link.reconnect_after(float(drain.reconnect_after_seconds))
            stream.start_soon(self._drain_and_close, stream, self.settings.drain_grace)

    async def _drain_and_close(self, stream: Stream, grace: float) -> None:
        """Finish running tasks up to ``grace`` s, hand back the rest, close the stream."""

        async def deadline() -> None:
            # Whatever hangs below (a half-dead transport under done_writing), the
            # stream ends in bounded time: closing it reaches every gRPC await.
            await anyio.sleep(grace + DRAIN_OVERRUN)
            self.log.warning("drain did not finish in time; closing the stream")
            stream.close()

        stream.start_soon(deadline)
        with anyio.move_on_after(grace):
            while self.runners:
                await next(iter(self.runners.values())).finished.wait()
        for runner in list(self.runners.values()):
            runner.stop(TaskFailure(AGENT, "draining"))
        with anyio.move_on_after(STOP_WAIT):
            while self.runners:
                await next(iter(self.runners.values())).finished.wait()
        await stream.flush()
        await stream.done_writing()
        # Give the hub a moment to see the half-close and end the call, then end the stream.
        with anyio.move_on_after(2):
            await stream.closed.wait()
        stream.close()
