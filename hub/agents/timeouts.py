"""Everything driven by time on the agent side: liveness, offers, held leases, tokens.

A few times per heartbeat interval (at least once a second) the hub closes
streams that went silent or whose per-agent token expired, sends fresh JWTs
before the old ones expire, re-queues leases kept for an agent that did not dial
back in time, and takes back offers nobody accepted.
"""

from __future__ import annotations

import logging

import anyio

from hub.agents.auth import AgentAuth
from hub.core.leases import end_held_lease
from hub.core.state import HubState
from protocol import mesh_pb2 as pb

log = logging.getLogger("bupmesh.hub")


class Timeouts:
    def __init__(self, state: HubState, auth: AgentAuth, *, heartbeat_interval: float) -> None:
        self.state = state
        self.auth = auth
        self.tick = max(0.05, min(1.0, heartbeat_interval / 4))

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.tick)
            try:
                await self.check()
            except Exception:
                log.exception("clock pass failed")

    async def check(self) -> None:
        state = self.state
        for info in state.registry.expired():
            log.warning("agent %s silent for %.0fs: marking offline", info.agent_id,
                        state.clock() - (info.last_heartbeat or 0))
            info.session.close("heartbeat timeout")
        self.auth.close_ended_credentials()
        for info in state.registry.agents.values():
            session = info.session
            if session is not None and session.hello is not None \
                    and self.auth.needs_refresh(session):
                session.send(pb.HubMessage(token_refresh=self.auth.refresh(session)))
        if len(state.held):
            async with state.lock:
                for lease in state.held.expired():
                    await end_held_lease(state, lease,
                                         f"no reconnect within {state.held.grace:g}s")
            state.poke()
        expired = [t for t in state.tasks.values() if state.lifecycle.offer_expired(t)]
        if expired:
            async with state.lock:
                for task in expired:
                    if not state.lifecycle.offer_expired(task):
                        continue
                    agent_id, attempt = task.agent_id or "", task.attempt
                    state.lifecycle.agent_lost(task, agent_id, "offer not answered in time")
                    await state.save(task, agent_id, "retry", "offer not answered in time")
                    info = state.registry.get(agent_id)
                    if info is not None and info.session is not None:
                        info.session.send(pb.HubMessage(cancel=pb.Cancel(
                            task_id=task.task_id, attempt=attempt, reason="offer timed out")))
            state.poke()
