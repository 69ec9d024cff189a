"""An agent's stream from Hello to its end: attach, re-attach held attempts, detach.

One live stream per agent id, held by one agent process: a Hello from the
process that holds it replaces the old stream (closed, its leases re-queued);
one from another process is refused while that stream lives. Attempts the agent kept running across a lost stream and
lists in ``Hello.held_tasks`` go on over the new one when the hub still holds
their lease (:mod:`hub.core.held`); the others are told to stop. When a stream
ends the agent is offline at once and its leases end, or wait a grace period
for it to dial back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio

from hub.agents.auth import AgentAuth, apply_capabilities
from hub.agents.messages import Messages
from hub.agents.reconnect_window import (
    ANNOUNCE_EVERY_SECONDS,
    AdmissionMeter,
    WindowAnnouncer,
    window_seconds,
)
from hub.core.held import reattach_offset
from hub.core.leases import end_held_lease, end_session_leases
from hub.core.lifecycle import TaskRecord
from hub.core.ports import Submissions
from hub.core.registry import PENDING, describe_address
from hub.core.spawner import Spawner
from hub.core.state import HubState
from protocol import mesh_pb2 as pb

if TYPE_CHECKING:
    from hub.agents.link import AgentSession
    from hub.config import ReconnectSettings
    from hub.metrics import HubMetrics

log = logging.getLogger("bupmesh.hub")


class Sessions:
    """The link's handler for one stream's events (see ``StreamHandler`` in the link)."""

    def __init__(self, state: HubState, *, auth: AgentAuth, messages: Messages,
                 metrics: HubMetrics, spawn: Spawner, heartbeat_interval: float,
                 reconnect: ReconnectSettings | None = None,
                 admission_meter: AdmissionMeter | None = None) -> None:
        self.state = state
        self.auth = auth
        self.messages = messages
        self.metrics = metrics
        self.spawn = spawn
        self.heartbeat_interval = heartbeat_interval
        self.submissions: Submissions | None = None  # set once the pipeline is attached
        self.window_min = reconnect.window_min_seconds if reconnect else 5.0
        self.window_max = reconnect.window_max_seconds if reconnect else 60.0
        self.admission_meter = admission_meter or AdmissionMeter(
            clock=time.monotonic, cpu_clock=time.process_time,
            fixed_rate=reconnect.admission_rate if reconnect else 0)
        self.announcer = WindowAnnouncer(time.monotonic)

    # -- the reconnect window (hub/agents/reconnect_window.py) ---------------------------

    def reconnect_window(self) -> float:
        """Seconds over which the fleet should spread its reconnects.

        The fleet is every agent the hub knows (what a restart loads), not only those
        connected now: while a fleet comes back the window stays put instead of
        growing with each return and being announced to all who are back already.
        """
        return window_seconds(len(self.state.registry.agents), self.admission_meter.rate(),
                              low=self.window_min, high=self.window_max)

    def announce_window(self) -> int:
        """Tell connected agents a window that moved enough; returns how many were told.

        Not while most of the known fleet is away (coming back after a restart): the
        agents still out would not hear it, and writing it to all who are back already
        would take the event loop from admitting the rest.
        """
        registry = self.state.registry
        if registry.connected * 2 < len(registry.agents):
            return 0
        window = self.reconnect_window()
        if not self.announcer.due(window):
            return 0
        told = 0
        msg = pb.HubMessage(reconnect_window=pb.ReconnectWindow(seconds=window))
        for info in self.state.registry.agents.values():
            session = info.session
            if session is not None and _takes_window(session):
                session.send(msg)
                told += 1
        log.info("reconnect window now %.1fs (%d agents known, %d connected, %.0f sessions/s "
                 "admissible): told %d agents", window, len(self.state.registry.agents),
                 self.state.registry.connected, self.admission_meter.rate(), told)
        return told

    async def advise_periodically(self) -> None:
        """Announce a changed window even when no agent connects to trigger it."""
        while True:
            await anyio.sleep(ANNOUNCE_EVERY_SECONDS)
            self.announce_window()

    async def hello(self, session: AgentSession, hello: pb.Hello) -> None:
        state = self.state
        async with state.lock:
            # Before anything of the Hello is applied: a second process claiming a live
            # id (a copied agent.yml, a stolen PSK) changes nothing and is refused.
            self.auth.check_claim(session.agent_id, hello.instance_id,
                                  describe_address(session.peer_ip, hello.ip_address))
            info = state.registry.ensure(session.agent_id)
            caps = hello.capabilities
            apply_capabilities(
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
            info.link_address = session.peer_ip
            self.messages.note_reach(session.agent_id, hello.egress_ip, hello.line,
                                     hello.line_bps)
            info.finish_handshake = bool(caps.finish_handshake)
            info.local_paths = tuple(str(p)[:1024] for p in caps.local_paths[:64]) \
                if info.storage_type in ("local", "hybrid") else ()
            if self.submissions is not None:
                self.submissions.on_hello(session, hello)
            # First, before the replaced session's leases are ended below: the attempts
            # the agent still holds go on over this stream.
            resumed = await self._reattach_held(session, hello.held_tasks)
            # Not saved here: a restart notes every agent's persisted IP again, and a
            # full ledger snapshot per Hello made a reconnect storm O(agents^2).
            state.ledger.note_agent(info.risk_ip, session.agent_id)
            state.events.touch_ips()  # the IP table lists this agent now
            old = state.registry.attach(session.agent_id, session, session.session_id,
                                        hello.instance_id)
            if old is not None and old is not session:
                old.close("replaced by a new session of the same agent process")
                await end_session_leases(state, session.agent_id, old.session_id,
                                         "replaced by a new session")
            await self.auth.persist(info)
        welcome = pb.Welcome(
            heartbeat_interval_seconds=max(1, round(self.heartbeat_interval)),
            session_id=session.session_id,
            approval_pending=info.approval == PENDING,
        )
        if _takes_window(session):
            welcome.reconnect_window_seconds = self.reconnect_window()
        if self.auth.needs_refresh(session):
            welcome.token.CopyFrom(self.auth.refresh(session))
        session.send(pb.HubMessage(welcome=welcome))
        self.admission_meter.admitted()
        # Held tasks whose lease is gone (re-queued, cancelled, offered again) are told
        # to stop; the others stream on from where the agent's bytes end.
        for held in hello.held_tasks:
            if held.task_id not in resumed:
                session.send(pb.HubMessage(cancel=pb.Cancel(
                    task_id=held.task_id, attempt=held.attempt, reason="lease ended")))
        for task, offset in resumed.values():
            self.messages.start_stream(session, task, offset)
        session.transfer.on_credit_stall = self.metrics.stream_connected(session.agent_id)
        log.info("agent %s connected (session %s, egress %s, link %s)", session.agent_id,
                 session.session_id[:8], info.risk_ip, info.link_address)
        self.announce_window()
        state.poke()

    async def message(self, session: AgentSession, kind: str, msg: Any) -> None:
        await self.messages.handle(session, kind, msg)

    def transfer_failed(self, session: AgentSession, task_id: str, attempt: int,
                        message: str) -> None:
        self.messages.transfer_failed(session, task_id, attempt, message)

    def closed(self, session: AgentSession) -> None:
        """The stream ended (any reason). Synchronous: the handler may be being cancelled."""
        state = self.state
        if not state.registry.detach(session.agent_id, session):
            return
        log.info("agent %s offline: %s", session.agent_id, session.close_reason or "stream ended")
        state.events.touch_agent(session.agent_id)
        self.spawn(self._agent_offline, session.agent_id, session.session_id,
                   session.close_reason or "stream ended")

    async def _agent_offline(self, agent_id: str, session_id: str, reason: str) -> None:
        state = self.state
        async with state.lock:
            await end_session_leases(state, agent_id, session_id, f"agent lost: {reason}",
                                     hold=True)
            info = state.registry.get(agent_id)
            if info is not None and info.session is None:
                await state.store.set_agent_status(agent_id, info.status)
        state.poke()

    async def _reattach_held(self, session: AgentSession, held_tasks: Iterable[pb.HeldTask]
                             ) -> dict[str, tuple[TaskRecord, int]]:
        """Move the leases the agent still holds to ``session`` (caller holds the lock).

        Returns task id -> (task, offset to stream from). Leases kept for this agent
        that it no longer holds end now, as they would have without a grace period.
        """
        state = self.state
        agent_id = session.agent_id
        resumed: dict[str, tuple[TaskRecord, int]] = {}
        for held in held_tasks:
            task = state.tasks.get(held.task_id)
            offset = reattach_offset(task, agent_id, held,
                                     local_read=held.task_id in state.local_reads)
            if task is None or offset is None or held.task_id in resumed:
                continue
            state.held.pop(task.task_id)
            state.lease_session[task.task_id] = session.session_id
            resumed[task.task_id] = (task, offset)
            await state.save(task, agent_id, "resume",
                             f"attempt {task.attempt} held across a reconnect: streaming "
                             f"on from byte {offset}", ip=session.ip_address)
        for lease in state.held.of_agent(agent_id):
            await end_held_lease(state, lease, "agent came back without it")
        return resumed


def _takes_window(session: AgentSession) -> bool:
    hello = session.hello
    return hello is not None and hello.capabilities.reconnect_window
