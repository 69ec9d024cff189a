"""HubService: the one object the HTTP layer and the gRPC link talk to.

It glues the pure pieces together: the registry (who is connected), the task
lifecycle (what each event means) with the retry policy (what a failure leads
to), the strategy and the per-IP risk ledger (who gets a pending task, and when
an IP may upload again) and the store (what survives a restart). The order is always the same: apply the
event to the in-memory record under ``_lock``, write it to SQLite, and only then
act on it (send an Offer/Cancel, start or stop streaming), so nothing the hub
did is unknown to the database after a crash.

Active tasks live in memory (``self.tasks``); terminal ones are read back from
the store on demand.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import grpc

from hub.agents.transfer import fingerprint_of
from hub.config import HubConfig
from hub.core import lifecycle as lc
from hub.core.agent_views import AgentViewCache, agent_view
from hub.core.events import EventBus
from hub.core.held import HeldLease, HeldLeases, reattach_offset
from hub.core.lifecycle import Lifecycle, Outcome, Policy, Ruling, Status, TaskRecord
from hub.core.registry import AgentInfo, Registry
from hub.core.retry_policy import RetryRules, TaskRetryPolicy
from hub.core.risk import RiskLedger, RiskRules
from hub.core.strategies import (
    LOCAL_STORAGE,
    AgentView,
    PartView,
    Strategy,
    make_strategy,
    why_not,
)
from hub.metrics import HubMetrics
from hub.store.tasks import Store
from protocol import mesh_pb2 as pb
from protocol.credit import CreditError
from protocol.tokens import TokenError, TokenIssuer

if TYPE_CHECKING:
    from hub.agents.link import AgentSession

log = logging.getLogger("bupmesh.hub")

FINGERPRINT_MIN_AGE = 2.0  # seconds a file must be unmodified to skip re-hashing it

_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


class AuthError(Exception):
    """Credentials were wrong, expired, revoked or disabled (401 / UNAUTHENTICATED)."""


class NotFound(Exception):
    """No such task, part, file, account or agent (404)."""


class Conflict(Exception):
    """The request contradicts current state: agent offline, task terminal (409)."""


class BadRequest(ValueError):
    """The request itself is malformed (400): empty file, bad agent id, bad field."""


def _stream_error(code: grpc.StatusCode, details: str) -> Exception:
    from hub.agents.link import StreamError

    return StreamError(code, details)


class HubService:
    def __init__(
        self,
        config: HubConfig,
        *,
        store: Store,
        accounts: Any,
        tokens: TokenIssuer,
        clock: Callable[[], float] = time.time,
        strategy: Strategy | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.accounts = accounts
        self.tokens = tokens
        self.clock = clock
        self.registry = Registry(
            heartbeat_interval=config.heartbeat.interval_seconds,
            offline_after=config.heartbeat.offline_after_seconds,
            clock=clock,
        )
        self.lifecycle = Lifecycle(
            # Retry timing lives in the TaskRetryPolicy alone; Policy keeps what is lifecycle's.
            Policy(exclude_seconds=config.risk.cooldown_seconds),
            clock=clock,
            retry=TaskRetryPolicy(RetryRules.from_settings(config.retry)),
        )
        # One strategy instance for the hub's life: round robin and friends keep state.
        self.strategy = strategy or make_strategy(config.scheduler.strategy)
        # Per egress IP: what Bilibili has seen from it (persisted after every event).
        self.ledger = RiskLedger(RiskRules.from_settings(config.risk))
        self.tasks: dict[str, TaskRecord] = {}  # active (non-terminal) tasks
        self.assigned_total: dict[str, int] = {}
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._lease_session: dict[str, str] = {}  # task id -> session id carrying its lease
        # Leases of ended streams waiting for their agent to hold them again (hub/core/held.py).
        self.held = HeldLeases(config.heartbeat.held_grace_seconds, clock)
        self._hashing: set[int] = set()  # parts with an MD5 pass running
        self._views = AgentViewCache()  # the scheduler's agent views, reused across passes
        self._local_reads: dict[str, int] = {}  # task id -> attempt reading the file itself
        self._awaited: set[str] = set()  # after a restart: agents expected to dial back
        self._awaited_until = 0.0
        self.metrics = HubMetrics(self)
        self.events = EventBus()  # what changed, for the web UI's live view (hub/api/sse.py)
        # hub/submission/manager.py (set by hub/app.py): Submit/SubmitResult over the stream.
        self.submissions: Any = None

    # ======================================================================== lifecycle

    async def start(self) -> None:
        """Load agents and unfinished tasks; leases from before a restart are void."""
        for row in await self.store.load_agents():
            info = self.registry.ensure(row["agent_id"])
            info.agent_name = row["agent_name"]
            info.ip_address = row["ip_address"]
            info.max_concurrent = row["max_concurrent_uploads"] or 1
            info.bandwidth_mbps = row["bandwidth_mbps"] or 0
            info.storage_type = row["storage_type"] or "network"
            info.buffer_bytes = row["buffer_bytes"] or 0
            info.tags = row["tags"] or {}
            info.disabled = bool(row["disabled"])
            info.tokens_valid_after = row["tokens_valid_after"] or 0.0
            info.last_heartbeat = row["last_heartbeat"]
            info.tasks_completed = row["tasks_completed"] or 0
        # Agents connected when the hub stopped: give them a moment to dial back before
        # re-offering their work, so it spreads by strategy instead of going to whoever
        # reconnects first (their reconnects are jittered).
        self._awaited = {
            row["agent_id"] for row in await self.store.load_agents()
            if row["status"] != "offline" and not row["disabled"]
        }
        self._awaited_until = self.clock() + min(
            15.0, self.config.heartbeat.offline_after_seconds)
        await self.store.mark_all_agents_offline()
        saved = await self.store.load_ledger()
        if saved:
            try:
                self.ledger.restore(saved)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("risk ledger in the database is unreadable (%s): starting afresh", exc)
        for info in self.registry.agents.values():
            if info.ip_address:
                self.ledger.note_agent(info.ip_address, info.agent_id)
        # An agent abandons every attempt when its stream ends (spoke/link.py), so no lease
        # outlives the hub process that granted it: each is re-offered with its resume point
        # (an attempt the hub had let complete resumes that session, idempotently).
        for task in await self.store.load_tasks(active_only=True):
            self.tasks[task.task_id] = task
            if task.status.leased:
                agent = task.agent_id or ""
                self.lifecycle.agent_lost(task, agent, "hub restarted")
                await self.store.save_task(task, log=(agent, "", "retry", "hub restarted"))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Background loops: scheduling and the clock (liveness, offers, token refresh)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._schedule_loop)
            tg.start_soon(self._clock_loop)
            task_status.started()

    def poke(self) -> None:
        """Something changed that may let a pending task be offered."""
        self._wake.set()

    # ======================================================================== agents (auth)

    async def _persist_agent(self, info: AgentInfo) -> None:
        """Write an agent's registry entry to the store (before acting on it)."""
        await self.store.upsert_agent(
            info.agent_id,
            agent_name=info.agent_name,
            ip_address=info.ip_address,
            status=info.status,
            max_concurrent=info.max_concurrent,
            bandwidth_mbps=info.bandwidth_mbps,
            storage_type=info.storage_type,
            buffer_bytes=info.buffer_bytes,
            tags=info.tags,
        )
        self.events.touch_agent(info.agent_id)

    async def register_agent(
        self,
        psk: str,
        agent_id: str,
        agent_name: str,
        ip_address: str,
        capabilities: dict[str, Any],
        tags: dict[str, str],
    ) -> tuple[str, int]:
        if not hmac.compare_digest(
            (psk or "").encode("utf-8"), self.config.psk.encode("utf-8")
        ):
            raise AuthError("invalid pre-shared key")
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            raise BadRequest("agent_id: 1-128 letters, digits or ._:@- expected")
        info = self.registry.ensure(agent_id)
        if info.disabled:
            raise AuthError("agent is disabled")
        self._apply_capabilities(info, agent_name, ip_address, capabilities, tags)
        await self._persist_agent(info)
        token, exp = self.tokens.issue(agent_id)
        log.info("agent %s registered from %s", agent_id, ip_address or "?")
        return token, exp

    def verify_agent_token(self, token: str) -> str:
        return self.authenticate_stream(token)[0]

    def authenticate_stream(self, token: str) -> tuple[str, int]:
        """``(agent_id, token expiry)`` of a valid, unrevoked token of an enabled agent."""
        try:
            claims = self.tokens.verify(token)
        except TokenError as exc:
            raise AuthError(str(exc)) from None
        info = self.registry.get(claims.sub)
        if info is not None:
            if info.disabled:
                raise AuthError("agent is disabled")
            if claims.iat < info.tokens_valid_after:
                raise AuthError("token revoked")
        return claims.sub, claims.exp

    async def set_agent_access(self, agent_id: str, *, disabled: bool | None = None,
                               revoke_tokens: bool = False) -> None:
        """Disable/enable an agent and/or revoke every token issued to it so far."""
        info = self.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if disabled is not None:
            info.disabled = disabled
        if revoke_tokens:
            info.tokens_valid_after = self.clock()
        await self.store.set_agent_access(
            agent_id, disabled=info.disabled, tokens_valid_after=info.tokens_valid_after
        )
        if info.session is not None and (info.disabled or revoke_tokens):
            info.session.close("access revoked")

    def _apply_capabilities(
        self, info: AgentInfo, name: str, ip: str, caps: dict[str, Any], tags: dict[str, str]
    ) -> None:
        info.agent_name = (name or info.agent_name or info.agent_id)[:128]
        info.ip_address = ip or info.ip_address
        mc = int(caps.get("max_concurrent_uploads") or 0)
        info.max_concurrent = max(1, min(mc, 64)) if mc > 0 else (info.max_concurrent or 2)
        info.bandwidth_mbps = max(0, int(caps.get("bandwidth_mbps") or 0))
        info.storage_type = str(caps.get("storage_type") or "network")[:16]
        info.buffer_bytes = max(0, int(caps.get("buffer_bytes") or 0))
        info.tags = {str(k)[:64]: str(v)[:256] for k, v in (tags or {}).items()}

    # ======================================================================== stream events

    async def session_hello(self, session: AgentSession, hello: pb.Hello) -> None:
        info = self.registry.ensure(session.agent_id)
        caps = hello.capabilities
        self._apply_capabilities(
            info,
            hello.agent_name,
            session.ip_address,
            {
                "max_concurrent_uploads": caps.max_concurrent_uploads,
                "bandwidth_mbps": caps.bandwidth_mbps,
                "storage_type": caps.storage_type,
                "buffer_bytes": caps.buffer_bytes,
            },
            dict(hello.tags),
        )
        info.finish_handshake = bool(caps.finish_handshake)
        info.local_paths = tuple(str(p)[:1024] for p in caps.local_paths[:64]) \
            if info.storage_type in ("local", "hybrid") else ()
        if self.submissions is not None:
            self.submissions.on_hello(session, hello)
        async with self._lock:
            # First, before the replaced session's leases are ended below: the attempts
            # the agent still holds go on over this stream (hub/core/held.py).
            resumed = await self._reattach_held(session, hello.held_tasks)
            if info.ip_address:
                # Not saved here: start() notes every agent's persisted IP again, and a
                # full ledger snapshot per Hello made a reconnect storm O(agents^2).
                self.ledger.note_agent(info.ip_address, session.agent_id)
                self.events.touch_ips()  # the IP table lists this agent now
            old = self.registry.attach(session.agent_id, session, session.session_id)
            if old is not None and old is not session:
                old.close("replaced by a new session")
                await self._requeue_agent_tasks(session.agent_id, old.session_id,
                                                "replaced by a new session")
            await self._persist_agent(info)
        welcome = pb.Welcome(
            heartbeat_interval_seconds=max(1, round(self.config.heartbeat.interval_seconds)),
            session_id=session.session_id,
        )
        if self._needs_refresh(session):
            welcome.token.CopyFrom(self._refresh_token(session))
        session.send(pb.HubMessage(welcome=welcome))
        # Held tasks whose lease is gone (re-queued, cancelled, offered again) are told
        # to stop; the others stream on from where the agent's bytes end.
        for held in hello.held_tasks:
            if held.task_id not in resumed:
                session.send(pb.HubMessage(cancel=pb.Cancel(
                    task_id=held.task_id, attempt=held.attempt, reason="lease ended")))
        for task, offset in resumed.values():
            self._start_stream(session, task, offset)
        self.metrics.stream_connected(session)
        log.info("agent %s connected (session %s, ip %s)", session.agent_id,
                 session.session_id[:8], info.ip_address)
        self.poke()

    async def _reattach_held(self, session: AgentSession,
                             held_tasks: Any) -> dict[str, tuple[TaskRecord, int]]:
        """Move the leases the agent still holds to ``session`` (caller holds ``_lock``).

        Returns task id -> (task, offset to stream from). Leases kept for this agent
        that it no longer holds end now, as they would have without a grace period.
        """
        agent_id = session.agent_id
        resumed: dict[str, tuple[TaskRecord, int]] = {}
        for held in held_tasks:
            task = self.tasks.get(held.task_id)
            offset = reattach_offset(task, agent_id, held,
                                     local_read=held.task_id in self._local_reads)
            if task is None or offset is None or held.task_id in resumed:
                continue
            self.held.pop(task.task_id)
            self._lease_session[task.task_id] = session.session_id
            resumed[task.task_id] = (task, offset)
            await self._save(task, agent_id, "resume",
                             f"attempt {task.attempt} held across a reconnect: streaming "
                             f"on from byte {offset}", ip=session.ip_address)
        for lease in self.held.of_agent(agent_id):
            await self._end_held_lease(lease, "agent came back without it")
        return resumed

    async def _end_held_lease(self, lease: HeldLease, why: str) -> None:
        """A kept lease nobody re-attached: re-queue it as a lost stream always was."""
        task = self.tasks.get(lease.task_id)
        if (
            task is not None and task.status.leased and task.agent_id == lease.agent_id
            and self._lease_session.get(task.task_id) == lease.session_id
        ):
            reason = f"agent lost: {why}"
            self.lifecycle.agent_lost(task, lease.agent_id, reason)
            await self._save(task, lease.agent_id, "retry", reason)

    def _start_stream(self, session: AgentSession, task: TaskRecord, offset: int) -> None:
        """Stream ``task`` from ``offset`` on ``session`` (an accepted or re-attached attempt)."""
        if offset > 0 and not task.file_md5 and task.part_id not in self._hashing:
            # A resumed stream sees only the tail: the whole file's MD5 needs its own pass.
            self._hashing.add(task.part_id)
            self._spawn(self._hash_part, task.part_id)
        session.transfer.start(task.task_id, task.attempt, task.file_path, task.file_size, offset,
                               known_md5=task.file_md5, fingerprint=task.file_fingerprint,
                               crc32=session.crc32_integrity)

    def session_closed(self, session: AgentSession) -> None:
        """The stream ended (any reason). Synchronous: the handler may be being cancelled."""
        if not self.registry.detach(session.agent_id, session):
            return
        log.info("agent %s offline: %s", session.agent_id, session.close_reason or "stream ended")
        self.events.touch_agent(session.agent_id)
        self._spawn(self._agent_offline, session.agent_id, session.session_id,
                    session.close_reason or "stream ended")

    def _spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` in the service's task group; a no-op while the hub shuts down."""
        if self._tg is None or self._tg.cancel_scope.cancel_called:
            # Shutting down: what matters is on disk and start() re-queues leases. Never
            # start_soon into a cancelled group: with anyio 4.16 on asyncio such a task,
            # spawned from a gRPC handler, spins the loop forever and SIGTERM never ends.
            return
        try:
            self._tg.start_soon(fn, *args)
        except RuntimeError:  # task group already closed: shutting down, state is on disk
            pass

    async def _agent_offline(self, agent_id: str, session_id: str, reason: str) -> None:
        async with self._lock:
            await self._requeue_agent_tasks(agent_id, session_id, f"agent lost: {reason}",
                                            hold=True)
            info = self.registry.get(agent_id)
            if info is not None and info.session is None:
                await self.store.set_agent_status(agent_id, info.status)
        self.poke()

    async def _requeue_agent_tasks(self, agent_id: str, session_id: str, reason: str, *,
                                   hold: bool = False) -> None:
        """Re-queue the leases carried by one (ended) session of ``agent_id``.

        Only that session's: by the time this runs the agent may have dialled again and
        been offered new work on its new stream, which must not be taken away. With
        ``hold`` (the stream was lost, not replaced) streaming leases wait for the agent
        to dial back for ``heartbeat.held_grace_seconds`` first (hub/core/held.py).
        """
        for task in list(self.tasks.values()):
            if (
                task.status.leased
                and task.agent_id == agent_id
                and self._lease_session.get(task.task_id, session_id) == session_id
            ):
                if hold and self.held.may_keep(task,
                                               local_read=task.task_id in self._local_reads):
                    self.held.keep(task.task_id, agent_id, session_id)
                    log.info("task %s attempt %d: lease kept %.0fs for %s to dial back",
                             task.task_id, task.attempt, self.held.grace, agent_id)
                    continue
                self.lifecycle.agent_lost(task, agent_id, reason)
                await self._save(task, agent_id, "retry", reason)

    def transfer_failed(self, session: AgentSession, task_id: str, attempt: int, msg: str) -> None:
        self._spawn(self._hub_side_failure, session, task_id, attempt, msg)

    async def _hub_side_failure(self, session: AgentSession, task_id: str, attempt: int,
                                message: str) -> None:
        async with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return
            ruling = self.lifecycle.result(task, session.agent_id, attempt, success=False,
                                           error_kind=lc.FILE, error_message=message,
                                           ip=session.ip_address)
            if ruling.outcome is Outcome.IGNORED:
                return
            await self._note_outcome(session.agent_id, session.ip_address, ruling)
            await self._finish(task, ruling, session.agent_id, session.ip_address)
        session.send(pb.HubMessage(cancel=pb.Cancel(task_id=task_id, attempt=attempt,
                                                    reason=message)))

    async def handle_message(self, session: AgentSession, kind: str, msg: Any) -> None:
        """Dispatch one agent message (after Hello). Raises StreamError on violations."""
        if kind == "heartbeat":
            await self._on_heartbeat(session.agent_id, msg.status, msg.current_tasks,
                                     msg.free_slots, msg.memory_mb, msg.tasks_completed)
            return
        if kind == "submit_result":
            if self.submissions is not None:
                await self.submissions.on_result(session, msg)
            return
        if kind == "status_reply":
            return  # the hub asks no StatusQuery; an answer anyway changes nothing
        if not msg.task_id:
            raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT, f"{kind} without task_id")
        task = self.tasks.get(msg.task_id)
        current = task is not None and task.holds(session.agent_id, msg.attempt)
        if kind == "credit":
            if msg.bytes <= 0:
                raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"Credit of {msg.bytes} bytes (must be positive)")
            if not current:
                return  # fenced: late credit for an ended lease
            if task.status is not Status.UPLOADING:
                raise _stream_error(grpc.StatusCode.FAILED_PRECONDITION, "Credit before Accept")
            try:
                session.transfer.credit(msg.task_id, msg.attempt, int(msg.bytes))
            except CreditError as exc:
                raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
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
            await self._on_accept(session, task, msg)
        elif kind == "reject":
            await self._on_reject(session, task, msg)
        elif kind == "committed":
            await self._on_committed(session, task, msg)
        elif kind == "progress":
            before = task.uploaded_bytes
            self.lifecycle.progress(task, session.agent_id, msg.attempt, msg.uploaded_bytes,
                                    msg.speed_bps, msg.eta_seconds)
            self.metrics.uploaded(task, session.agent_id, session.ip_address, msg.attempt, before)
            self.events.touch_task(task.task_id)
        elif kind == "result":
            await self._on_result(session, task, msg)
        elif kind == "finishing":
            await self._on_finishing(session, task, msg)
        else:  # pragma: no cover - every oneof member is handled above
            raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind}")

    async def _on_heartbeat(self, agent_id: str, status: str, current: int, free: int,
                            memory_mb: int, completed: int) -> None:
        info = self.registry.get(agent_id)
        was = info.status if info else None
        self.registry.heartbeat(agent_id, status=status, current_tasks=current,
                                free_slots=free, memory_mb=memory_mb, tasks_completed=completed)
        info = self.registry.ensure(agent_id)
        await self.store.set_agent_status(agent_id, info.status, last_heartbeat=info.last_heartbeat,
                                          tasks_completed=info.tasks_completed)
        self.events.touch_agent(agent_id)
        if was != info.status:
            self.poke()

    async def _on_accept(self, session: AgentSession, task: TaskRecord, msg: pb.Accept) -> None:
        if task.status is not Status.ASSIGNED:
            raise _stream_error(grpc.StatusCode.FAILED_PRECONDITION,
                                f"Accept for {task.task_id} which is already {task.status}")
        offset = int(msg.resume_offset)
        if not 0 <= offset <= task.file_size:
            raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Accept.resume_offset {offset} outside 0..{task.file_size}")
        if msg.local_read:
            await self._on_local_accept(session, task, msg)
            return
        async with self._lock:
            if self.lifecycle.accepted(task, session.agent_id, msg.attempt) is Outcome.IGNORED:
                return
            await self._save(task, session.agent_id, "start",
                             f"attempt {task.attempt} accepted, streaming from byte {offset}",
                             ip=session.ip_address, part_state="uploading")
        self._start_stream(session, task, offset)

    async def _on_local_accept(self, session: AgentSession, task: TaskRecord,
                               msg: pb.Accept) -> None:
        """Item 6: a local/hybrid agent reads the part's file itself; nothing is streamed.

        Only against a known MD5 (the Offer carried it and the agent matched its copy
        by size and MD5 first); the Result must carry that MD5, so a file that differs
        on the agent's side cannot complete the task.
        """
        info = self.registry.get(session.agent_id)
        if not task.file_md5 or info is None or info.storage_type not in ("local", "hybrid"):
            raise _stream_error(grpc.StatusCode.FAILED_PRECONDITION,
                                "Accept.local_read needs a local/hybrid agent and an Offer "
                                "with file_md5")
        async with self._lock:
            if self.lifecycle.accepted(task, session.agent_id, msg.attempt) is Outcome.IGNORED:
                return
            self._local_reads[task.task_id] = msg.attempt
            await self._save(task, session.agent_id, "start",
                             f"attempt {task.attempt} accepted, read by the agent from "
                             f"{task.file_path} (no stream)",
                             ip=session.ip_address, part_state="uploading")

    async def _on_reject(self, session: AgentSession, task: TaskRecord, msg: pb.Reject) -> None:
        async with self._lock:
            reason = (msg.reason or "no reason")[:500]
            if self.lifecycle.rejected(task, session.agent_id, msg.attempt, reason) \
                    is Outcome.IGNORED:
                return
            session.transfer.stop(task.task_id)
            await self._save(task, session.agent_id, "retry", f"rejected: {reason}",
                             ip=session.ip_address)
        self.poke()

    async def _on_committed(self, session: AgentSession, task: TaskRecord,
                            msg: pb.Committed) -> None:
        if msg.offset < 0 or msg.offset > task.file_size:
            raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Committed.offset {msg.offset} outside 0..{task.file_size}")
        async with self._lock:
            outcome = self.lifecycle.committed(task, session.agent_id, msg.attempt,
                                               int(msg.offset), bytes(msg.session))
            if outcome is not Outcome.IGNORED:
                await self.store.save_task(task)

    async def _on_finishing(self, session: AgentSession, task: TaskRecord,
                            msg: pb.Finishing) -> None:
        """Every part is up; the agent asks to complete. Proceed only for the lease holder.

        The grant is written before Proceed is sent: if the hub then loses the agent
        (or restarts), the re-offer resumes this very session, whose parts are all done,
        so the next attempt only repeats the completion, which Bilibili answers with
        the same object. An attempt that lost its lease first is told to Cancel instead
        (see ``handle_message``) and never completes behind the hub's back.
        """
        if msg.offset < 0 or msg.offset > task.file_size:
            raise _stream_error(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Finishing.offset {msg.offset} outside 0..{task.file_size}")
        async with self._lock:
            if not task.holds(session.agent_id, msg.attempt) \
                    or task.status is not Status.UPLOADING:
                granted = False
            else:
                if msg.session:
                    self.lifecycle.committed(task, session.agent_id, msg.attempt,
                                             int(msg.offset), bytes(msg.session))
                task.proceed_attempt = msg.attempt
                await self._save(task, session.agent_id, "finishing",
                                 f"attempt {msg.attempt} uploaded every part: proceed to "
                                 "complete", ip=session.ip_address)
                granted = True
        if granted:
            session.send(pb.HubMessage(proceed=pb.Proceed(task_id=task.task_id,
                                                          attempt=msg.attempt)))
        else:
            session.send(pb.HubMessage(cancel=pb.Cancel(
                task_id=task.task_id, attempt=msg.attempt, reason="lease ended")))

    async def _on_result(self, session: AgentSession, task: TaskRecord, msg: pb.Result) -> None:
        stream = session.transfer.get(task.task_id)
        md5_ok = False
        if self._local_reads.get(task.task_id) == msg.attempt:
            # Read by the agent itself: what it uploaded must hash to the part's MD5.
            stream = None
            md5_ok = bool(msg.md5) and hmac.compare_digest(task.file_md5, msg.md5.lower())
        elif stream is not None:  # CRC32 or MD5 of the attempt's bytes, per the Offer
            md5_ok = stream.agent_got_it(msg.md5, msg.crc32 if msg.HasField("crc32") else None,
                                         task.file_md5)
        async with self._lock:
            learned = (
                md5_ok and msg.success and stream is not None and stream.start == 0
                and not task.file_md5 and task.holds(session.agent_id, msg.attempt)
            )
            before = task.uploaded_bytes
            ruling = self.lifecycle.result(
                task, session.agent_id, msg.attempt, success=msg.success,
                filename=msg.filename, biz_id=int(msg.biz_id),
                error_kind=msg.error_kind, error_message=msg.error_message[:1000],
                md5_ok=md5_ok, ip=session.ip_address,
            )
            outcome = ruling.outcome
            if outcome is Outcome.IGNORED:
                return
            if outcome is Outcome.COMPLETED:
                self.metrics.uploaded(task, session.agent_id, session.ip_address, msg.attempt,
                                      before)
            await self._note_outcome(session.agent_id, session.ip_address, ruling,
                                     message=msg.error_message)
            session.transfer.stop(task.task_id)
            if learned and outcome is Outcome.COMPLETED and stream is not None:
                # Hashed while streaming the whole file, and the agent got the same bytes:
                # that is the part's MD5, without a separate pass over the file.
                task.file_md5 = stream.md5 or ""
                await self.store.set_part_hash(task.part_id, md5=task.file_md5,
                                               fingerprint=task.file_fingerprint,
                                               state="uploaded")
            await self._finish(task, ruling, session.agent_id, session.ip_address)

    async def _note_outcome(self, agent_id: str, ip: str, ruling: Ruling,
                            message: str = "") -> None:
        """The end of an attempt, for the risk ledger (caller holds ``_lock``)."""
        ip = ip or "unknown"
        now = self.clock()
        success = ruling.outcome is Outcome.COMPLETED
        self.ledger.upload_finished(ip, agent_id, now, ok=success)
        decision = ruling.decision
        if not success and decision is not None and decision.record_risk_event:
            kind = "601" if "601" in (message or "") else "406"
            self.ledger.risk_event(ip, agent_id, kind, now)
            self.metrics.risk_event(ip, kind)
            log.warning("IP %s: risk event %s (agent %s): now %s", ip, kind, agent_id,
                        self.ledger.state(ip, now))
        await self._save_ledger()

    async def _finish(self, task: TaskRecord, ruling: Ruling, agent_id: str, ip: str) -> None:
        """Persist the end of an attempt (caller holds ``_lock``)."""
        outcome = ruling.outcome
        if outcome is Outcome.COMPLETED:
            await self._save(task, agent_id, "success",
                             f"uploaded as {task.filename} (biz_id {task.biz_id})", ip=ip,
                             part_state="uploaded")
            info = self.registry.get(agent_id)
            if info is not None:
                info.tasks_completed += 1
            log.info("task %s completed by %s: %s", task.task_id, agent_id, task.filename)
        elif outcome is Outcome.FAILED:
            await self._save(task, agent_id, "error",
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
            await self._save(task, agent_id, "retry", why, ip=ip)
            log.info("task %s re-queued after %s: %s", task.task_id, task.error_kind,
                     task.error_message)
        self.poke()
        if outcome is Outcome.COMPLETED and self.submissions is not None:
            self.submissions.poke()  # the recording of this part may be complete now

    async def _save(self, task: TaskRecord, agent_id: str, event: str, message: str, *,
                    ip: str | None = None, part_state: str | None = None) -> None:
        if ip is None:
            info = self.registry.get(agent_id) if agent_id else None
            ip = info.ip_address if info else ""
        await self.store.save_task(task, log=(agent_id or "", ip or "", event, message),
                                   part_state=part_state)
        if event == "retry":
            self.metrics.retry(task.error_kind)
        self.events.touch_task(task.task_id, agent_id)
        if task.status.terminal:
            self.tasks.pop(task.task_id, None)
            self._lease_session.pop(task.task_id, None)
            self._local_reads.pop(task.task_id, None)

    # ======================================================================== scheduling

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self._dispatch_pending()
            except Exception:  # never let one bad task stop scheduling for all
                log.exception("scheduling pass failed")
            with anyio.move_on_after(1.0):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _active_count(self, agent_id: str) -> int:
        return sum(1 for t in self.tasks.values() if t.status.leased and t.agent_id == agent_id)

    def _active_counts(self) -> collections.Counter[str]:
        """Leases per agent, counted once per pass (not once per agent: O(agents x tasks))."""
        return collections.Counter(t.agent_id for t in self.tasks.values()
                                   if t.status.leased and t.agent_id)

    def _agent_view(self, info: AgentInfo, active: int | None = None) -> AgentView:
        """What the strategy may know of an agent; capacity counts the hub's own leases."""
        if active is None:
            active = self._active_count(info.agent_id)
        return agent_view(info, active)

    def _part_view(self, task: TaskRecord, now: float) -> PartView:
        return PartView(
            task.part_id, task.file_size, {}, task.file_path,
            excluded_agents=frozenset(a for a, t in task.excluded.items() if t > now),
            excluded_ips=frozenset(ip for ip, t in task.excluded_ips.items() if t > now),
            pinned_agent=task.pinned_agent or task.retry_agent,
            force=task.force and task.pinned_agent is not None,
            # A network retry on the same agent continues the same upos session (no new
            # preupload), and so does a re-offer after the hub let an attempt complete.
            resuming=task.retry_agent is not None and task.pinned_agent is None,
        )

    def _restart_grace(self, now: float) -> bool:
        """True while agents that were connected before a restart may still dial back."""
        if not self._awaited:
            return False
        back = {a for a in self._awaited if (i := self.registry.get(a)) and i.session}
        if back == self._awaited or now >= self._awaited_until:
            missing = sorted(self._awaited - back)
            if missing:
                log.info("not back after the restart: %s; scheduling without them",
                         ", ".join(missing))
            self._awaited = set()
            return False
        return True

    async def _dispatch_pending(self) -> None:
        async with self._lock:
            pending = [t for t in self.tasks.values() if t.status is Status.PENDING]
            if not pending:
                return
            now = self.clock()
            if self._restart_grace(now):
                return
            for task in pending:
                # A retry pinned to an agent that is gone would wait forever: let it go.
                if task.retry_agent is not None:
                    info = self.registry.get(task.retry_agent)
                    if info is None or not info.schedulable:
                        task.retry_agent = None
            active = self._active_counts()
            views = self._views.views(self.registry.schedulable(), active)
            if not views:
                return
            position = {v.agent_id: i for i, v in enumerate(views)}
            # Only these can read a file themselves (_wait_for_local_hash asks per part).
            local_views = [v for v in views if v.storage_type in LOCAL_STORAGE]
            for task in sorted(pending, key=lambda t: t.created_at):
                if task.not_before > now or task.status is not Status.PENDING:
                    continue
                if self._wait_for_local_hash(task, local_views):
                    continue
                part = self._part_view(task, now)
                chosen = self.strategy.choose(part, views, self.ledger, now)
                self.metrics.decision(chosen is not None)
                if chosen is None:
                    continue
                info = self.registry.agents[chosen.agent_id]
                if not await self._offer(task, info):
                    continue
                if not part.resuming and task.status.leased:
                    # Before choosing for the next task: the IP now rests (min interval).
                    self.ledger.upload_started(chosen.ip, chosen.agent_id, now)
                    await self._save_ledger()
                # Only the chosen agent's view changed: not a rebuild of all N.
                i = position.get(chosen.agent_id)
                if i is not None:
                    views[i] = replace(views[i], active_tasks=views[i].active_tasks + 1)

    def _wait_for_local_hash(self, task: TaskRecord, views: list[AgentView]) -> bool:
        """Hold a part a connected local/hybrid agent could read until its MD5 is known.

        Such an agent reads the file itself only against a known MD5 (Accept.local_read);
        hashing on the hub takes a fraction of the time streaming the file would, so the
        first attempt waits for it instead of streaming a file the agent has on disk.
        """
        if task.file_md5 or not any(v.can_read(task.file_path) for v in views):
            return False
        if task.part_id not in self._hashing:
            self._hashing.add(task.part_id)
            self._spawn(self._hash_part, task.part_id)
        return True

    async def _save_ledger(self) -> None:
        """Persist the IPs the last events changed (not the whole ledger: O(IPs) each)."""
        changes = self.ledger.take_changes()
        try:
            await self.store.save_ledger_ips(changes)
        except BaseException:
            self.ledger.mark_changed(changes)
            raise
        self.events.touch_ips()

    def why_waiting(self, task: TaskRecord) -> dict[str, str]:
        """Why each connected agent cannot take a pending task now (admin UI, logs)."""
        now = self.clock()
        views = [self._agent_view(a) for a in self.registry.agents.values()
                 if a.session is not None]
        return why_not(self._part_view(task, now), views, self.ledger, now,
                       adaptive=self.strategy.adaptive)

    async def _offer(self, task: TaskRecord, agent: AgentInfo) -> bool:
        """Lease ``task`` to ``agent`` and send the Offer (caller holds ``_lock``).

        True if an Offer went out (False: the agent left, or the task failed for want
        of credentials).
        """
        session = agent.session
        if session is None:
            return False
        try:
            creds = await self.accounts.credentials(task.account)
        except Exception as exc:  # no such account, undecryptable, several and none chosen
            self.lifecycle.offer(task, agent.agent_id)
            ruling = self.lifecycle.result(task, agent.agent_id, task.attempt, success=False,
                                           error_kind=lc.AUTH,
                                           error_message=f"no credentials: {exc}")
            await self._finish(task, ruling, agent.agent_id, agent.ip_address)
            return False
        if session.closed:  # the stream ended while we looked up credentials
            return False
        attempt = self.lifecycle.offer(task, agent.agent_id)
        self._lease_session[task.task_id] = session.session_id
        self.assigned_total[agent.agent_id] = self.assigned_total.get(agent.agent_id, 0) + 1
        await self._save(task, agent.agent_id, "offer",
                         f"attempt {attempt} offered (resume at byte {task.committed_offset})",
                         ip=agent.ip_address, part_state="assigned")
        offer = pb.Offer(
            task_id=task.task_id,
            attempt=attempt,
            part_id=task.part_id,
            file_name=Path(task.file_path).name,
            file_size=task.file_size,
            file_md5=task.file_md5,
            credentials=pb.BiliCredentials(
                cookies=creds.cookie_header(),
                access_key=creds.access_key or "",
                mid=int(creds.mid or 0),
            ),
            line="auto",
            member_url=self.config.bilibili.member_url,
            resume_session=task.resume_session or b"",
            resume_offset=task.committed_offset,
            file_path=task.file_path,
            await_proceed=agent.finish_handshake,
            crc32_integrity=session.crc32_integrity,
        )
        session.send(pb.HubMessage(offer=offer))  # a no-op if it closed meanwhile: re-queued
        log.info("task %s attempt %d offered to %s", task.task_id, attempt, agent.agent_id)
        return True

    async def _clock_loop(self) -> None:
        """Liveness, offer timeouts and token refresh: everything driven by time."""
        tick = max(0.05, min(1.0, self.config.heartbeat.interval_seconds / 4))
        while True:
            await anyio.sleep(tick)
            try:
                await self._clock_pass()
            except Exception:
                log.exception("clock pass failed")

    async def _clock_pass(self) -> None:
        for info in self.registry.expired():
            log.warning("agent %s silent for %.0fs: marking offline", info.agent_id,
                        self.clock() - (info.last_heartbeat or 0))
            info.session.close("heartbeat timeout")
        for info in self.registry.agents.values():
            session = info.session
            if session is not None and session.hello is not None and self._needs_refresh(session):
                session.send(pb.HubMessage(token_refresh=self._refresh_token(session)))
        if len(self.held):
            async with self._lock:
                for lease in self.held.expired():
                    await self._end_held_lease(lease, "no reconnect within "
                                               f"{self.held.grace:g}s")
            self.poke()
        expired = [t for t in self.tasks.values() if self.lifecycle.offer_expired(t)]
        if expired:
            async with self._lock:
                for task in expired:
                    if not self.lifecycle.offer_expired(task):
                        continue
                    agent_id, attempt = task.agent_id or "", task.attempt
                    self.lifecycle.agent_lost(task, agent_id, "offer not answered in time")
                    await self._save(task, agent_id, "retry", "offer not answered in time")
                    info = self.registry.get(agent_id)
                    if info is not None and info.session is not None:
                        info.session.send(pb.HubMessage(cancel=pb.Cancel(
                            task_id=task.task_id, attempt=attempt, reason="offer timed out")))
            self.poke()

    def _needs_refresh(self, session: AgentSession) -> bool:
        margin = max(5.0, self.tokens.ttl_seconds * 0.25)
        return session.token_exp - self.clock() < margin

    def _refresh_token(self, session: AgentSession) -> pb.TokenRefresh:
        token, exp = self.tokens.issue(session.agent_id)
        session.token_exp = exp
        return pb.TokenRefresh(token=token, expires_at=exp)

    # ======================================================================== admin API

    async def agent_heartbeat(self, agent_id: str, body: dict[str, Any]) -> None:
        if not isinstance(body, dict):
            raise BadRequest("heartbeat body must be a JSON object")
        if body.get("agent_id") not in (None, agent_id):
            raise AuthError("heartbeat for another agent")
        if self.registry.get(agent_id) is None:
            raise NotFound(f"no agent {agent_id}")
        try:
            await self._on_heartbeat(
                agent_id, str(body.get("status") or ""),
                int(body.get("current_tasks") or 0),
                int(body.get("available_slots", body.get("free_slots")) or 0),
                int(body.get("memory_usage_mb", body.get("memory_mb")) or 0),
                int(body.get("tasks_completed") or 0),
            )
        except (TypeError, ValueError):
            raise BadRequest("heartbeat fields must be numbers") from None

    async def agent_task_status(self, agent_id: str, body: dict[str, Any]) -> None:
        """Seed's HTTP progress report: updates progress of the agent's own current task."""
        if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
            raise BadRequest("task_id is required")
        task = self.tasks.get(body["task_id"])
        if task is None or task.agent_id != agent_id or not task.status.leased:
            raise NotFound(f"no running task {body['task_id']} for this agent")
        try:
            uploaded = int(body.get("uploaded_bytes") or 0)
            speed = float(body.get("upload_speed") or 0)
            eta = float(body.get("eta_seconds") or 0)
        except (TypeError, ValueError):
            raise BadRequest("uploaded_bytes/upload_speed must be numbers") from None
        status = body.get("status")
        async with self._lock:
            self.lifecycle.progress(task, agent_id, task.attempt, uploaded, speed, eta)
            self.events.touch_task(task.task_id)
            if status == "failed":
                info = self.registry.get(agent_id)
                message = str(body.get("error_message") or "reported failed")[:1000]
                ruling = self.lifecycle.result(
                    task, agent_id, task.attempt, success=False,
                    error_kind=str(body.get("error_kind") or lc.NETWORK),
                    error_message=message, ip=info.ip_address if info else "")
                if ruling.outcome is not Outcome.IGNORED:
                    await self._note_outcome(agent_id, info.ip_address if info else "",
                                             ruling, message=message)
                if info is not None and info.session is not None:
                    info.session.transfer.stop(task.task_id)
                await self._finish(task, ruling, agent_id, info.ip_address if info else "")
            elif status == "completed":
                raise Conflict("completion is reported over the stream, with the MD5 check")

    async def create_part(
        self, file_path: str, *, account: str | None, title: str | None, auto_upload: bool = True
    ) -> dict[str, Any]:
        if not isinstance(file_path, str) or not file_path.strip():
            raise BadRequest("file_path is required")
        try:
            path, size, fingerprint = await anyio.to_thread.run_sync(_stat_file, file_path)
        except FileNotFoundError:
            raise NotFound(f"no such file: {file_path}") from None
        except IsADirectoryError:
            raise BadRequest(f"not a regular file: {file_path}") from None
        except OSError as exc:
            raise BadRequest(f"cannot read {file_path}: {exc.strerror or exc}") from None
        if size == 0:
            raise BadRequest(f"file is empty: {file_path}")
        account = None if account in (None, "") else str(account)
        try:
            await self.accounts.credentials(account)
        except Exception as exc:
            raise NotFound(f"account: {exc}") from None
        # No MD5 pass here: on a 50 GB recording it takes a minute (and outlasts any HTTP
        # timeout). The first attempt hashes the bytes as it streams them from byte 0, and
        # that becomes the part's MD5 once the agent confirms it got the same bytes; the
        # file's stat identity, taken now, catches a file that changes meanwhile.
        part_id = await self.store.insert_part(
            file_path=str(path), size=size, md5="", account=account, title=title,
            fingerprint=fingerprint,
        )
        task_id = None
        if auto_upload:
            task = await self._new_task(part_id)
            task_id = task.task_id
        log.info("part %d created for %s (%d bytes)", part_id, path.name, size)
        return {"part_id": part_id, "task_id": task_id}

    async def _hash_part(self, part_id: int) -> None:
        """Hash a part's file in a worker thread (needed when no attempt streamed it whole)."""
        try:
            await self._hash_part_once(part_id)
        finally:
            self._hashing.discard(part_id)

    async def _hash_part_once(self, part_id: int) -> None:
        part = await self.store.get_part(part_id)
        if part is None or part["md5"]:
            return
        try:
            md5, fingerprint = await anyio.to_thread.run_sync(
                _hash_file, part["file_path"], part["size"])
            failure = None
        except _StillChanging:
            failure = "file changed while being hashed (still being written?)"
        except OSError as exc:
            failure = f"cannot read source file: {exc.strerror or exc}"
        async with self._lock:
            tasks = [t for t in self.tasks.values() if t.part_id == part_id]
            if failure is not None:
                await self.store.set_part_hash(part_id, md5="", fingerprint="", state="failed")
                for task in tasks:
                    self.lifecycle.fail(task, lc.FILE, failure)
                    await self._save(task, "", "error", failure, part_state="failed")
                log.warning("part %d: %s", part_id, failure)
                return
            # No live task: the part may have been uploaded meanwhile (a resumed attempt
            # finishes before a 50 GB hash does); keep whatever state it has.
            await self.store.set_part_hash(part_id, md5=md5, fingerprint=fingerprint,
                                           state="queued" if tasks else None)
            for task in tasks:
                task.file_md5, task.file_fingerprint = md5, fingerprint
                await self.store.save_task(task)
        log.info("part %d hashed: md5 %s", part_id, md5)
        self.poke()

    async def _new_task(self, part_id: int, pinned: str | None = None,
                        force: bool = False) -> TaskRecord:
        async with self._lock:
            # Read the part under the lock: its MD5 may have just been filled in.
            part = await self.store.get_part(part_id)
            if part is None:
                raise NotFound(f"no part {part_id}")
            task = TaskRecord(
                task_id=f"task-{uuid.uuid4().hex[:16]}", part_id=part_id,
                file_path=part["file_path"], file_size=part["size"], file_md5=part["md5"],
                account=part["account"], pinned_agent=pinned, force=bool(force and pinned),
                file_fingerprint=part.get("fingerprint") or "", created_at=self.clock(),
            )
            await self.store.insert_task(task)
            await self.store.add_log(task.task_id, pinned or "", "", "created",
                                     f"part {part_id}", 0)
            self.tasks[task.task_id] = task
        self.events.touch_task(task.task_id)
        self.poke()
        return task

    async def assign_task(self, part_id: int, agent_id: str, *, force: bool = False) -> str:
        """Pin a part to one agent (the seed's assign-task). Returns the task id.

        The pin still honours the agent's IP in the risk ledger: the task waits while
        that IP is cooling, resting or capped, unless ``force``. A disabled IP (or agent)
        is refused at once: an admin re-enables it first. The pin covers one attempt;
        if that fails the task goes back to normal scheduling.
        """
        part = await self.store.get_part(int(part_id))
        if part is None:
            raise NotFound(f"no part {part_id}")
        info = self.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if not info.schedulable:
            raise Conflict(f"agent {agent_id} is {info.status}")
        ip = info.ip_address or "unknown"
        if self.ledger.state(ip, self.clock()) == "disabled":
            raise Conflict(f"IP {ip} of agent {agent_id} is disabled by the risk ledger; "
                           f"re-enable it first (POST /api/manage/ips/{ip}/enable)")
        for task in self.tasks.values():
            if task.part_id == part["id"]:
                if task.status is not Status.PENDING:
                    raise Conflict(f"part {part_id} is already {task.status} as {task.task_id}")
                async with self._lock:
                    task.pinned_agent = agent_id
                    task.force = bool(force)
                    task.retry_agent = None
                    task.excluded.pop(agent_id, None)
                    task.excluded_ips.pop(ip, None)
                    task.not_before = 0.0
                    await self._save(task, agent_id, "assign",
                                     f"assigned to {agent_id}{' (forced)' if force else ''}")
                self.poke()
                return task.task_id
        if part["state"] == "uploaded":
            raise Conflict(f"part {part_id} is already uploaded")
        if part["state"] == "failed" and not part["md5"]:
            raise Conflict(f"part {part_id} cannot be read: {part['file_path']}")
        task = await self._new_task(part["id"], pinned=agent_id, force=force)
        return task.task_id

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        """Admin: a failed (or cancelled) task goes back to pending, resume point kept."""
        async with self._lock:
            if task_id in self.tasks:
                raise Conflict(f"task {task_id} is {self.tasks[task_id].status}, not failed")
            task = await self.store.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id}")
            if any(t.part_id == task.part_id for t in self.tasks.values()):
                raise Conflict(f"part {task.part_id} already has a live task")
            part = await self.store.get_part(task.part_id)
            if part is not None and part["state"] == "uploaded":
                raise Conflict(f"part {task.part_id} is already uploaded")
            if self.lifecycle.revive(task) is Outcome.IGNORED:
                raise Conflict(f"task {task_id} is {task.status}, not failed")
            self.tasks[task_id] = task
            await self._save(task, "", "retry", "retried by admin", part_state="queued")
        log.info("task %s retried by admin", task_id)
        self.poke()
        return self._task_dict(task)

    async def set_agent_state(self, agent_id: str, action: str,
                              reconnect_after_seconds: int = 0) -> dict[str, Any]:
        """Admin: ``drain`` (no new work; running tasks finish), ``disable`` (refused at
        connect, its stream closed, its tasks re-offered elsewhere) or ``enable``."""
        info = self.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if action == "drain":
            # The hub stops offering it work; running tasks finish. Told nothing, the agent
            # stays as it is, so ``enable`` simply resumes offers. With
            # ``reconnect_after_seconds`` it is also sent Drain: it finishes or hands back
            # its tasks, closes and dials again later (still drained until enabled).
            info.drained_by_admin = True
            if info.session is not None and reconnect_after_seconds > 0:
                await self.drain_agent(agent_id, reconnect_after_seconds, "drained by admin")
        elif action == "disable":
            await self.set_agent_access(agent_id, disabled=True)
        elif action == "enable":
            await self.set_agent_access(agent_id, disabled=False)
            # An admin drain is undone by enable; an agent that drains itself (SIGTERM)
            # keeps saying so in its heartbeats.
            info.drained_by_admin = False
        else:
            raise BadRequest(f"unknown agent action {action!r} (drain | disable | enable)")
        async with self._lock:
            await self.store.set_agent_status(agent_id, info.status)
        log.info("agent %s: %s by admin", agent_id, action)
        self.events.touch_agent(agent_id)
        self.poke()
        return self._agent_dict(info)

    async def cancel_task(self, task_id: str) -> None:
        async with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                if await self.store.get_task(task_id) is None:
                    raise NotFound(f"no task {task_id}")
                raise Conflict(f"task {task_id} already ended")
            leased, agent_id, attempt = task.status.leased, task.agent_id or "", task.attempt
            self.lifecycle.cancel(task)
            await self._save(task, agent_id, "cancel", "cancelled by admin",
                             part_state="cancelled")
        info = self.registry.get(agent_id) if leased else None
        if info is not None and info.session is not None:
            info.session.transfer.stop(task_id)
            info.session.send(pb.HubMessage(cancel=pb.Cancel(
                task_id=task_id, attempt=attempt, reason="cancelled by admin")))
        log.info("task %s cancelled", task_id)

    async def drain_agent(self, agent_id: str, reconnect_after_seconds: int = 0,
                          reason: str = "drain requested") -> None:
        info = self.registry.get(agent_id)
        if info is None or info.session is None:
            raise Conflict(f"agent {agent_id} is not connected")
        info.draining = True
        info.session.send(pb.HubMessage(drain=pb.Drain(
            reason=reason, reconnect_after_seconds=reconnect_after_seconds)))

    async def list_agents(self) -> list[dict[str, Any]]:
        out = []
        for info in sorted(self.registry.agents.values(), key=lambda a: a.agent_id):
            out.append(self._agent_dict(info))
        return out

    def _agent_dict(self, info: AgentInfo) -> dict[str, Any]:
        active = self._active_count(info.agent_id)
        return {
            "agent_id": info.agent_id,
            "agent_name": info.agent_name,
            "ip_address": info.ip_address,
            "status": info.status,
            "current_tasks": active,
            "max_concurrent_uploads": info.max_concurrent,
            "free_slots": max(0, info.max_concurrent - active),
            "total_tasks": self.assigned_total.get(info.agent_id, 0),
            "tasks_completed": info.tasks_completed,
            "memory_usage_mb": info.memory_mb,
            "bandwidth_mbps": info.bandwidth_mbps,
            "storage_type": info.storage_type,
            "buffer_bytes": info.buffer_bytes,
            "tags": dict(info.tags),
            "disabled": info.disabled,
            "last_heartbeat": info.last_heartbeat,
            "session_id": info.session_id,
        }

    async def list_tasks(self) -> list[dict[str, Any]]:
        rows = await self.store.load_tasks()
        return [self._task_dict(self.tasks.get(t.task_id, t)) for t in rows]

    async def get_task(self, task_id: str) -> dict[str, Any]:
        task = self.tasks.get(task_id) or await self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        row = self._task_dict(task)
        if task.status is Status.PENDING:
            # For the admin: why no connected agent takes it now ("" = it can).
            row["waiting_for"] = self.why_waiting(task)
        return row

    def _task_dict(self, t: TaskRecord) -> dict[str, Any]:
        uploaded = t.file_size if t.status is Status.COMPLETED else t.uploaded_bytes
        return {
            "task_id": t.task_id,
            "part_id": t.part_id,
            "agent_id": t.agent_id,
            "status": t.status.value,
            "uploaded_bytes": uploaded,
            "total_bytes": t.file_size,
            "upload_speed": t.upload_speed,
            "eta_seconds": t.eta_seconds,
            "retry_count": t.retry_count,
            "error_message": t.error_message,
            "error_kind": t.error_kind,
            "result": {"filename": t.filename, "biz_id": t.biz_id},
            "attempt": t.attempt,
            "file_path": t.file_path,
            "file_md5": t.file_md5,
            "account": t.account,
            "progress": round(uploaded / t.file_size * 100, 2) if t.file_size else 0.0,
            "created_at": t.created_at,
            "started_at": t.started_at,
            "completed_at": t.completed_at,
        }

    async def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        if task_id not in self.tasks and await self.store.get_task(task_id) is None:
            raise NotFound(f"no task {task_id}")
        return await self.store.logs(task_id)

    async def list_ips(self) -> list[dict[str, Any]]:
        """The risk ledger's rows (``ip``, ``state``, ``events``, ``cooldown_until`` ...)
        with what the registry adds: agents now on the IP, uploads running, online."""
        now = self.clock()
        rows = {row["ip"]: row for row in self.ledger.describe(now)}
        for info in self.registry.agents.values():
            ip = info.ip_address or "unknown"
            row = rows.get(ip)
            if row is None:
                continue
            if info.agent_id not in row["agents"]:
                row["agents"] = sorted([*row["agents"], info.agent_id])
            row["active_tasks"] = row.get("active_tasks", 0) + self._active_count(info.agent_id)
            row["online"] = row.get("online", False) or info.session is not None
        for row in rows.values():
            row.setdefault("active_tasks", 0)
            row.setdefault("online", False)
            row["ip_address"] = row["ip"]
        return [rows[ip] for ip in sorted(rows)]

    async def reenable_ip(self, ip: str) -> dict[str, Any]:
        """Admin: lift an IP's disable and cooldown (its history stays, and fades)."""
        if not isinstance(ip, str) or ip not in self.ledger.known_ips():
            raise NotFound(f"no IP {ip} in the risk ledger")
        async with self._lock:
            self.ledger.admin_reenable(ip, self.clock())
            await self._save_ledger()
        log.info("IP %s re-enabled by admin", ip)
        self.poke()
        return next(r for r in await self.list_ips() if r["ip"] == ip)


class _StillChanging(Exception):
    pass


def _stat_file(file_path: str) -> tuple[Path, int, str]:
    """Resolve and check a part's file; its size and stat identity (worker thread)."""
    path = Path(file_path).expanduser().resolve(strict=True)
    if not path.is_file():
        raise IsADirectoryError(str(path))
    st = path.stat()
    return path, st.st_size, _quiet_fingerprint(st)


def _quiet_fingerprint(st: os.stat_result) -> str:
    """The stat identity, or "" for a file written to in the last seconds.

    File timestamps tick coarsely (a few ms): a write within the same tick as the last
    one would leave the identity unchanged, so only a file quiet for a while gets one
    (any later write then moves its mtime); a fresh file is always hashed when streamed.
    """
    if time.time() - st.st_mtime < FINGERPRINT_MIN_AGE:
        return ""
    return fingerprint_of(st)


def _hash_file(file_path: str, expected_size: int) -> tuple[str, str]:
    """MD5 and stat identity of a part's file (blocking: runs in a worker thread)."""
    path = Path(file_path)
    before = fingerprint_of(path.stat())
    h = hashlib.md5()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(4 << 20)
            if not block:
                break
            h.update(block)
            size += len(block)
    st = path.stat()
    if fingerprint_of(st) != before or size != expected_size:
        raise _StillChanging(str(path))
    return h.hexdigest(), _quiet_fingerprint(st)
