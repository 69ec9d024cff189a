"""Starting again after a stop: agents, the risk ledgers and unfinished tasks from the store.

An agent abandons every attempt when its stream ends (unless it holds them for
its own grace period), so no lease outlives the hub process that granted it:
each is re-queued with its resume point. Agents that were connected when the
hub stopped get a moment to dial back first (:class:`RestartGrace`), so their
work spreads by strategy instead of going to whoever reconnects first.
"""

from __future__ import annotations

import logging

from hub.core.registry import Registry
from hub.core.state import HubState

log = logging.getLogger("bupmesh.hub")

MAX_RESTART_GRACE = 15.0  # seconds; never longer than the heartbeat timeout either


class RestartGrace:
    """The agents expected to dial back after a restart, until they did or time ran out."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.awaited: set[str] = set()
        self.until = 0.0

    def expect(self, agent_ids: set[str], until: float) -> None:
        self.awaited, self.until = set(agent_ids), until

    def holding(self, now: float) -> bool:
        """True while agents connected before a restart may still dial back."""
        if not self.awaited:
            return False
        back = {a for a in self.awaited if (i := self.registry.get(a)) and i.session}
        if back == self.awaited or now >= self.until:
            missing = sorted(self.awaited - back)
            if missing:
                log.info("not back after the restart: %s; scheduling without them",
                         ", ".join(missing))
            self.awaited = set()
            return False
        return True


async def recover(state: HubState, grace: RestartGrace, *, offline_after: float) -> None:
    """Load agents and unfinished tasks; leases from before a restart are void."""
    store = state.store
    rows = await store.load_agents()
    for row in rows:
        info = state.registry.ensure(row["agent_id"])
        info.agent_name = row["agent_name"]
        info.ip_address = row["ip_address"]
        info.egress_ip = row.get("egress_ip") or ""
        info.max_concurrent = row["max_concurrent_uploads"] or 1
        info.bandwidth_mbps = row["bandwidth_mbps"] or 0
        info.storage_type = row["storage_type"] or "network"
        info.buffer_bytes = row["buffer_bytes"] or 0
        info.tags = row["tags"] or {}
        info.disabled = bool(row["disabled"])
        info.tokens_valid_after = row["tokens_valid_after"] or 0.0
        info.last_heartbeat = row["last_heartbeat"]
        info.tasks_completed = row["tasks_completed"] or 0
    # Their reconnects are jittered: wait for them a little before re-offering their work.
    grace.expect({row["agent_id"] for row in rows
                  if row["status"] != "offline" and not row["disabled"]},
                 state.clock() + min(MAX_RESTART_GRACE, offline_after))
    await store.mark_all_agents_offline()
    saved = await store.load_ledger()
    if saved:
        try:
            state.ledger.restore(saved)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("risk ledger in the database is unreadable (%s): starting afresh", exc)
    for name, book in (("accounts", state.account_ledger), ("captchas", state.captchas)):
        data = await store.load_risk_state(name)
        if data:
            try:
                book.restore(data)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("%s risk state in the database is unreadable (%s): starting afresh",
                          name, exc)
    for info in state.registry.agents.values():
        if info.egress_ip or info.ip_address:
            state.ledger.note_agent(info.risk_ip, info.agent_id)
    # Each lease is re-offered with its resume point (an attempt the hub had let complete
    # resumes that session, idempotently).
    for task in await store.load_tasks(active_only=True):
        state.tasks[task.task_id] = task
        if task.status.leased:
            agent = task.agent_id or ""
            state.lifecycle.agent_lost(task, agent, "hub restarted")
            await store.save_task(task, log=(agent, "", "retry", "hub restarted"))
