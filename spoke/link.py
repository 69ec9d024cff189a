"""The agent's one link to the hub: register, hold the stream, dispatch, reconnect.

Conversation (docs/internals.md "Link conversation"): ``Register`` (PSK ->
JWT), ``Connect`` with ``authorization: Bearer <jwt>``, ``Hello`` ->
``Welcome``, then heartbeats at the hub's interval while the hub offers tasks
and streams their bytes within the credit this agent grants.

Everything on one stream runs as children of one task group: a reader that
dispatches hub messages without ever blocking (each task has its own queue in
its :class:`~spoke.source.StreamSource`; credit bounds their size), a writer
draining one outgoing queue, the heartbeat, the credit pump and the task
credit pump. gRPC awaits live only in those children, and the session ends by
cancelling the group (an anyio scope around a ``grpc.aio`` await does not
work). Task runners live in the agent's own group, so an attempt can outlive
its stream: with ``held_grace`` > 0 an attempt still receiving bytes is kept
that long (spoke/held.py), listed in the next ``Hello.held_tasks`` and streamed
on by the hub from the first byte it lacks; every other attempt is abandoned
without completing its upload (the hub re-offers it with the resume point it
holds). The agent reconnects after an exponential, fully jittered delay.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import grpc
import grpc.aio

from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc as pb_grpc
from protocol.chunks import WireChunk, parse_hub_message
from protocol.credit import CreditBudget
from protocol.grpc_options import channel_options
from spoke.backoff import Backoff
from spoke.config import AgentSettings
from spoke.held import HeldTasks
from spoke.local import Md5Cache
from spoke.memory import memory_mb, release_free_heap
from spoke.runner import AGENT, TaskFailure, TaskRunner
from spoke.source import StreamSource

VERSION = "bupmesh-agent/0.1"
CONNECT_METHOD = "/bupmesh.mesh.v1.AgentLink/Connect"
REGISTER_TIMEOUT = 15.0
WELCOME_TIMEOUT = 15.0
TOKEN_MARGIN = 60.0  # re-register when the JWT expires sooner than this
SUBMIT_LIMIT = 90.0  # one Submit (archive lookup + submission), whatever the stream does
SUBMIT_LIMIT_MAX = 600.0  # the most a hub's Submit.deadline_seconds may ask for


def submit_time_left(msg: pb.Submit, now: float) -> float:
    """How long this agent may spend on a Submit (<= 0: do not start it).

    The hub's deadline when it set one: it waits past it before retrying a lost
    answer, so running longer could race that retry. Counted from when the hub sent
    it (its wall clock; the hub's wait adds a margin for skew): a Submit delivered
    late, through a half-open link that healed, gets only what is left.
    """
    if msg.deadline_seconds <= 0:
        return SUBMIT_LIMIT
    limit = min(msg.deadline_seconds, SUBMIT_LIMIT_MAX)
    if msg.sent_at_unix > 0:
        limit = min(limit, msg.sent_at_unix + msg.deadline_seconds - now)
    return limit


def make_channel(settings: AgentSettings) -> grpc.aio.Channel:
    compression = grpc.Compression.Gzip if settings.compression == "gzip" else None
    if settings.insecure:
        return grpc.aio.insecure_channel(
            settings.server_url, options=channel_options(), compression=compression
        )
    root = None
    if settings.ca_file:
        with open(settings.ca_file, "rb") as fh:
            root = fh.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.aio.secure_channel(
        settings.server_url, credentials, options=channel_options(), compression=compression
    )


class _Session:
    """State of one connected stream."""

    def __init__(self, call: Any, tg: anyio.abc.TaskGroup) -> None:
        self.call = call
        self.tg = tg
        self.send_stream, self.receive_stream = anyio.create_memory_object_stream[Any](math.inf)
        self.heartbeat_interval = 30.0
        self.session_id = ""
        self.closed = anyio.Event()  # the reader saw the stream end


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
        self.md5_cache = Md5Cache()  # local reads: MD5 per file version, across tasks
        self.backoff = backoff or Backoff(1.0, 60.0, rng)
        self.clock = clock
        self.wall_clock = wall_clock
        self._factories: dict[str, Any] = {}
        if client_factory is not None:
            self._factories["client_factory"] = client_factory
        if uploader_factory is not None:
            self._factories["uploader_factory"] = uploader_factory
        self._token: str | None = None
        self._token_expires = 0.0
        self._session: _Session | None = None
        self._connect_scope: anyio.CancelScope | None = None
        self._space = anyio.Event()
        self._stopping = False  # SIGTERM: drain and exit
        self._draining = False  # no new offers
        self._reconnect_after = 0.0
        self._stop_event = anyio.Event()
        self.tasks_completed = 0
        self.connected = anyio.Event()  # set on each Welcome (tests wait on it)
        self.sessions = 0

    # -- public --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect, until :meth:`stop` and the drain are done."""
        async with anyio.create_task_group() as tasks:
            self._tasks_tg = tasks
            if self._held.grace > 0:
                tasks.start_soon(self._reap_held)
            while not self._stopping:
                welcomed = await self._one_session()
                if self._stopping:
                    break
                if welcomed:
                    self.backoff.reset()
                delay = self._reconnect_after or self.backoff.next_delay()
                self._reconnect_after = 0.0
                self.log.info("reconnecting in %.1fs", delay)
                with anyio.move_on_after(delay):
                    await self._stop_event.wait()
            # Held attempts with no stream left to finish on (the drain took the others).
            for runner in list(self.runners.values()):
                runner.stop(TaskFailure(AGENT, "agent stopping"))
            with anyio.move_on_after(5):
                while self.runners:
                    await next(iter(self.runners.values())).finished.wait()
            tasks.cancel_scope.cancel()
        self._tasks_tg = None
        self.log.info("agent stopped")

    def stop(self) -> None:
        """Graceful drain (SIGTERM): finish running tasks up to the grace period, then exit."""
        if self._stopping:
            return
        self._stopping = True
        self._draining = True
        self._stop_event.set()
        session = self._session
        if session is None:
            if self._connect_scope is not None:  # still dialling or registering: give up now
                self._connect_scope.cancel()
            return
        self.log.info("draining: %d task(s) running", len(self.runners))
        self._send(pb.AgentMessage(heartbeat=self._heartbeat()))
        session.tg.start_soon(self._drain_and_close, session, self.settings.drain_grace)

    @property
    def free_slots(self) -> int:
        return max(0, self.settings.max_concurrent - len(self.runners))

    # -- one stream ----------------------------------------------------------------------------

    async def _one_session(self) -> bool:
        """Run one stream until it ends; True if the hub welcomed us."""
        welcomed = False
        channel = make_channel(self.settings)
        try:
            async with anyio.create_task_group() as tg:
                self._connect_scope = tg.cancel_scope

                async def body() -> None:
                    nonlocal welcomed
                    welcomed = await self._serve(channel, tg)

                tg.start_soon(body)
        except Exception as exc:  # grpc errors, protocol errors: log and reconnect
            self.log.warning("link error: %s", _describe(exc))
        finally:
            self._session = None
            self._connect_scope = None
            self.connected = anyio.Event()
            stopped = self._detach_runners()
            with anyio.CancelScope(shield=True):
                await channel.close(grace=None)
                # As when they ran in the session's group: an attempt that is not held
                # is over before the agent dials again (bounded: stop() is prompt).
                with anyio.move_on_after(5):
                    for runner in stopped:
                        await runner.finished.wait()
        return welcomed

    async def _serve(self, channel: grpc.aio.Channel, tg: anyio.abc.TaskGroup) -> bool:
        stub = pb_grpc.AgentLinkStub(channel)
        try:
            token = await self._ensure_token(stub)
        except grpc.aio.AioRpcError as exc:
            self.log.warning(
                "registration refused: %s: %s", exc.code().name, exc.details() or ""
            )
            tg.cancel_scope.cancel()
            return False
        # The generated stub would decode every Chunk with two copies of its data;
        # parse_hub_message hands Chunk data over as a view of what gRPC received.
        connect = channel.stream_stream(
            CONNECT_METHOD,
            request_serializer=pb.AgentMessage.SerializeToString,
            response_deserializer=parse_hub_message,
        )
        call = connect(metadata=(("authorization", f"Bearer {token}"),))
        session = _Session(call, tg)
        welcomed = anyio.Event()

        async def watchdog() -> None:
            # Not a scope around the read: those do not work on grpc.aio awaits.
            with anyio.move_on_after(WELCOME_TIMEOUT):
                await welcomed.wait()
                return
            self.log.warning("no Welcome within %ss", WELCOME_TIMEOUT)
            tg.cancel_scope.cancel()

        tg.start_soon(watchdog)
        held = self._held_tasks()
        try:
            await call.write(pb.AgentMessage(hello=self._hello(held)))
            first = await call.read()
            welcomed.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._token = None  # register again next time
            self.log.warning("connect refused: %s: %s", exc.code().name, exc.details() or "")
            call.cancel()
            tg.cancel_scope.cancel()
            return False
        if (
            first is grpc.aio.EOF
            or isinstance(first, WireChunk)
            or first.WhichOneof("kind") != "welcome"
        ):
            self.log.warning("hub did not welcome us; closing")
            call.cancel()
            tg.cancel_scope.cancel()
            return False
        welcome = first.welcome
        if welcome.heartbeat_interval_seconds > 0:
            session.heartbeat_interval = float(welcome.heartbeat_interval_seconds)
        else:
            session.heartbeat_interval = self.settings.heartbeat_interval
        session.session_id = welcome.session_id
        if welcome.HasField("token") and welcome.token.token:
            self._set_token(welcome.token)
        self._session = session
        self._draining = self._stopping
        self.sessions += 1
        self.log.info("connected to %s (session %s)", self.settings.server_url, session.session_id)
        self._reattach(held)
        self.connected.set()
        tg.start_soon(self._writer, session)
        tg.start_soon(self._reader, session)
        tg.start_soon(self._heartbeats, session)
        tg.start_soon(self._credit_pump, session)
        tg.start_soon(self._progress_ticker)
        if self._stopping:  # SIGTERM arrived while connecting
            tg.start_soon(self._drain_and_close, session, self.settings.drain_grace)
        return True

    async def _ensure_token(self, stub: pb_grpc.AgentLinkStub) -> str:
        if self._token and self._token_expires - TOKEN_MARGIN > self.wall_clock():
            return self._token
        s = self.settings
        reply = await stub.Register(
            pb.RegisterRequest(
                psk=s.token,
                agent_id=s.agent_id,
                agent_name=s.agent_name,
                ip_address=s.reported_ip,
                capabilities=self._capabilities(),
                tags=s.tags,
            ),
            timeout=REGISTER_TIMEOUT,
        )
        self._token = reply.token
        self._token_expires = float(reply.expires_at or 0)
        return reply.token

    def _set_token(self, refresh: pb.TokenRefresh) -> None:
        self._token = refresh.token
        self._token_expires = float(refresh.expires_at or 0)

    def _capabilities(self) -> pb.Capabilities:
        s = self.settings
        return pb.Capabilities(
            max_concurrent_uploads=s.max_concurrent,
            bandwidth_mbps=s.bandwidth_mbps,
            storage_type=s.storage_type,
            buffer_bytes=s.buffer_bytes,
            finish_handshake=True,
            submit=True,  # spoke/submitter.py
            crc32_integrity=s.crc32_integrity,
            local_paths=list(s.local_roots) if s.storage_type in ("local", "hybrid") else [],
        )

    def _hello(self, held: list[pb.HeldTask] | None = None) -> pb.Hello:
        s = self.settings
        return pb.Hello(
            agent_id=s.agent_id,
            agent_name=s.agent_name,
            ip_address=s.reported_ip,
            capabilities=self._capabilities(),
            tags=s.tags,
            held_tasks=held or [],
            version=VERSION,
        )

    # -- attempts across a lost stream (spoke/held.py) -----------------------------------------

    def _detach_runners(self) -> list[TaskRunner]:
        """The stream is gone: keep the attempts that may be held, stop (and return) the others."""
        keep: list[str] = []
        stopped: list[TaskRunner] = []
        for runner in list(self.runners.values()):
            if runner.task_id in self._held:
                continue  # detached earlier (this was a failed reconnect): deadline stands
            if self._held.grace > 0 and not self._stopping and runner.holdable:
                if runner.task_id in self.budget:
                    # Credit granted on the dead stream will never be used: grant it anew.
                    self.budget.forget_in_flight(runner.task_id)
                keep.append(runner.task_id)
            else:
                runner.stop(TaskFailure(AGENT, "stream lost"))
                stopped.append(runner)
        if keep:
            self.log.info("stream lost: holding %d task(s) for %gs", len(keep), self._held.grace)
            self._held.detach(keep)
        return stopped

    def _held_tasks(self) -> list[pb.HeldTask]:
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
        self._wake_credit()

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
        if self._session is None:
            if message.WhichOneof("kind") == "committed":
                self._late_commits[message.committed.task_id] = message
            return
        self._send(message)

    def _heartbeat(self) -> pb.Heartbeat:
        running = len(self.runners)
        if self._draining:
            status = "draining"
        elif self.free_slots == 0:
            status = "busy"
        else:
            status = "online"
        return pb.Heartbeat(
            status=status,
            current_tasks=running,
            free_slots=0 if self._draining else self.free_slots,
            memory_mb=memory_mb(),
            tasks_completed=self.tasks_completed,
        )

    # -- children of the session group ---------------------------------------------------------

    def _send(self, message: pb.AgentMessage) -> None:
        session = self._session
        if session is None:
            if self._connect_scope is not None:  # still dialling or registering: give up now
                self._connect_scope.cancel()
            return  # the stream is gone; the hub learns of it from the disconnect
        try:
            session.send_stream.send_nowait(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _writer(self, session: _Session) -> None:
        async with session.receive_stream:
            async for item in session.receive_stream:
                if isinstance(item, anyio.Event):  # flush marker
                    item.set()
                    continue
                await session.call.write(item)

    async def _flush(self, session: _Session, limit: float = 5.0) -> None:
        marker = anyio.Event()
        try:
            session.send_stream.send_nowait(marker)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        with anyio.move_on_after(limit):
            await marker.wait()

    async def _reader(self, session: _Session) -> None:
        try:
            while True:
                message = await session.call.read()
                if message is grpc.aio.EOF:
                    self.log.warning("hub closed the stream")
                    break
                self._dispatch(session, message)
        except grpc.aio.AioRpcError as exc:
            if not self._stopping:
                self.log.warning("stream lost: %s: %s", exc.code().name, exc.details() or "")
        session.closed.set()
        session.tg.cancel_scope.cancel()

    async def _heartbeats(self, session: _Session) -> None:
        while True:
            await anyio.sleep(session.heartbeat_interval)
            self._send(pb.AgentMessage(heartbeat=self._heartbeat()))

    async def _credit_pump(self, session: _Session) -> None:
        while True:
            for task_id, n in self.budget.grants():
                runner = self.runners.get(task_id)
                if runner is None:
                    continue
                self._send(
                    pb.AgentMessage(
                        credit=pb.Credit(task_id=task_id, attempt=runner.attempt, bytes=n)
                    )
                )
            await self._space.wait()
            self._space = anyio.Event()

    def _wake_credit(self) -> None:
        self._space.set()

    async def _progress_ticker(self) -> None:
        while True:
            await anyio.sleep(1.0)
            if self.runners:
                release_free_heap()
            for runner in list(self.runners.values()):
                runner.report_progress()

    # -- hub messages --------------------------------------------------------------------------

    def _dispatch(self, session: _Session, message: pb.HubMessage | WireChunk) -> None:
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
            self._on_offer(session, message.offer)
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
            self._on_drain(session, message.drain)
        elif kind == "submit":
            session.tg.start_soon(self._submit, message.submit)
        elif kind == "token_refresh":
            self._set_token(message.token_refresh)
        elif kind == "welcome":
            self.log.warning("unexpected second Welcome ignored")
        else:
            self.log.warning("unknown hub message ignored")

    def _runner_for(self, task_id: str, attempt: int) -> TaskRunner | None:
        runner = self.runners.get(task_id)
        if runner is None or runner.attempt != attempt:
            return None  # fencing: not ours, or an older attempt
        return runner

    def _reject(self, offer: pb.Offer, reason: str) -> None:
        self.log.info("task %s: reject (%s)", offer.task_id, reason)
        self._send(
            pb.AgentMessage(
                reject=pb.Reject(task_id=offer.task_id, attempt=offer.attempt, reason=reason)
            )
        )

    def _on_offer(self, session: _Session, offer: pb.Offer) -> None:
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
            on_space=self._wake_credit,
            clock=self.clock,
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
            session.tg.start_soon(self._start_after, session, existing, runner)
            return
        if not self.budget.can_admit(runner.min_window):
            return self._reject(offer, "buffer budget full")
        self._start(session, runner)

    async def _start_after(self, session: _Session, old: TaskRunner, new: TaskRunner) -> None:
        with anyio.move_on_after(5):
            await old.finished.wait()
        if self._draining or not self.budget.can_admit(new.min_window):
            self._reject(pb.Offer(task_id=new.task_id, attempt=new.attempt), "buffer budget full")
            return
        self._start(session, new)

    def _start(self, session: _Session, runner: TaskRunner) -> None:
        self.runners[runner.task_id] = runner
        # Runners live in the agent's group (when run() drives it), not the session's:
        # a held attempt outlives its stream.
        group = self._tasks_tg or session.tg
        if runner.wants_local:
            # The file may be here: check it (bounded) before answering, in the task.
            group.start_soon(self._run_task, runner, True)
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
        self._wake_credit()
        group.start_soon(self._run_task, runner)

    async def _run_task(self, runner: TaskRunner, check_local: bool = False) -> None:
        try:
            if check_local:
                local = await runner.check_local(self.md5_cache)
                if self._session is None:  # the stream went while we looked at the disk
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
                self._wake_credit()
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

    async def _submit(self, msg: pb.Submit) -> None:
        """Archive submission from this agent's IP; one SubmitResult per Submit."""
        from spoke.submitter import execute

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
            self._send(pb.AgentMessage(submit_result=result))

    def _status_reply(self, query: pb.StatusQuery) -> pb.StatusReply:
        return pb.StatusReply(
            query_id=query.query_id,
            status=self._heartbeat().status,
            tasks=[r.progress_message() for r in self.runners.values()],
            memory_mb=memory_mb(),
            buffered_bytes=self.budget.outstanding,
        )

    def _on_drain(self, session: _Session, drain: pb.Drain) -> None:
        self.log.info("hub asks to drain (%s)", drain.reason)
        self._draining = True
        self._send(pb.AgentMessage(heartbeat=self._heartbeat()))
        if drain.reconnect_after_seconds > 0:
            self._reconnect_after = float(drain.reconnect_after_seconds)
            session.tg.start_soon(self._drain_and_close, session, self.settings.drain_grace)

    async def _drain_and_close(self, session: _Session, grace: float) -> None:
        """Finish running tasks up to ``grace`` s, hand back the rest, close the stream."""

        async def deadline() -> None:
            # Whatever hangs below (a half-dead transport under done_writing), the
            # session ends in bounded time: cancelling the group reaches every gRPC await.
            await anyio.sleep(grace + 15)
            self.log.warning("drain did not finish in time; closing the stream")
            session.tg.cancel_scope.cancel()

        session.tg.start_soon(deadline)
        with anyio.move_on_after(grace):
            while self.runners:
                await next(iter(self.runners.values())).finished.wait()
        for runner in list(self.runners.values()):
            runner.stop(TaskFailure(AGENT, "draining"))
        with anyio.move_on_after(5):
            while self.runners:
                await next(iter(self.runners.values())).finished.wait()
        await self._flush(session)
        try:
            await session.call.done_writing()
        except grpc.aio.AioRpcError:
            pass
        # Give the hub a moment to see the half-close and end the call, then end the session.
        with anyio.move_on_after(2):
            await session.closed.wait()
        session.tg.cancel_scope.cancel()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details() or ''}"
    return f"{type(exc).__name__}: {exc}"
