"""The hub as the admin API, the web UI and the alert rules read it: plain JSON rows.

Live tasks are read from memory (their progress moves faster than the store is
written), ended ones from the store, a page at a time (:mod:`hub.core.task_pages`):
a long history is never read whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.core.duplicates import DuplicateClaim
from hub.core.errors import NotFound
from hub.core.lifecycle import Status, TaskRecord
from hub.core.registry import AgentInfo
from hub.core.state import HubState
from hub.core.task_pages import TaskQuery, encode_cursor


def task_row(t: TaskRecord) -> dict[str, Any]:
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
        "file_digest": t.file_digest,
        "account": t.account,
        "progress": round(uploaded / t.file_size * 100, 2) if t.file_size else 0.0,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "completed_at": t.completed_at,
    }


def agent_row(info: AgentInfo, active: int, assigned_total: int,
              duplicate: DuplicateClaim | None = None) -> dict[str, Any]:
    """``active``: leases the agent holds now; ``assigned_total``: offers made to it;
    ``duplicate``: a second process lately refused the agent's id."""
    session = info.session
    return {
        "agent_id": info.agent_id,
        "agent_name": info.agent_name,
        "ip_address": info.ip_address,
        # What Bilibili sees ("" until the agent learned it), the IP the risk ledger
        # judges it by (that, else ip_address), and the address its stream comes from.
        "egress_ip": info.egress_ip,
        "risk_ip": info.risk_ip,
        "link_address": info.link_address,
        "line": info.line,
        "line_bps": info.line_bps,
        "status": info.status,
        "current_tasks": active,
        "max_concurrent_uploads": info.max_concurrent,
        "free_slots": max(0, info.max_concurrent - active),
        "total_tasks": assigned_total,
        "tasks_completed": info.tasks_completed,
        "memory_usage_mb": info.memory_mb,
        "bandwidth_mbps": info.bandwidth_mbps,
        "storage_type": info.storage_type,
        "buffer_bytes": info.buffer_bytes,
        "tags": dict(info.tags),
        "disabled": info.disabled,
        "last_heartbeat": info.last_heartbeat,
        "session_id": info.session_id,
        # Who may be this agent and what it may carry (hub/agents/admission.py).
        "approval": info.approval,
        "allowed_accounts": None if info.allowed_accounts is None
        else sorted(info.allowed_accounts),
        "accounts_from_config": info.accounts_from_config,
        "admitted_by": _admitted_by(getattr(session, "credential", "")) if session else None,
        "peer_address": getattr(session, "peer_ip", "") or None if session else None,
        "duplicate": duplicate.row() if duplicate is not None else None,
    }


def _admitted_by(credential: str) -> str:
    """``psk`` or ``token:<token id>``, the credential the live stream's JWT came from."""
    return credential or "psk"


class Views:
    """Rows of agents, tasks, task logs and IPs."""

    def __init__(self, state: HubState, why_waiting: Callable[[TaskRecord], dict[str, str]]
                 ) -> None:
        self.state = state
        self.why_waiting = why_waiting  # the scheduler's reasons a pending task waits

    def agent(self, info: AgentInfo) -> dict[str, Any]:
        state = self.state
        return agent_row(info, state.active_count(info.agent_id),
                         state.assigned_total.get(info.agent_id, 0),
                         state.registry.duplicate(info.agent_id))

    async def list_agents(self) -> list[dict[str, Any]]:
        agents = self.state.registry.agents.values()
        return [self.agent(info) for info in sorted(agents, key=lambda a: a.agent_id)]

    async def list_tasks(self, query: TaskQuery | None = None) -> dict[str, Any]:
        """One page, newest first: ``{tasks, next_cursor}`` (None after the last page)."""
        rows, next_id = await self.state.store.page_tasks(query or TaskQuery())
        return {
            "tasks": [task_row(self.state.tasks.get(t.task_id, t)) for t in rows],
            "next_cursor": encode_cursor(next_id) if next_id is not None else None,
        }

    async def live_and_recent_tasks(self, ended: int) -> list[dict[str, Any]]:
        """Every unfinished task (from memory) and the ``ended`` newest finished ones."""
        live = list(self.state.tasks.values())
        done = [t for t in await self.state.store.recent_ended_tasks(ended)
                if t.task_id not in self.state.tasks]
        return [task_row(t) for t in live + done]

    async def get_task(self, task_id: str) -> dict[str, Any]:
        task = self.state.tasks.get(task_id) or await self.state.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        row = task_row(task)
        if task.status is Status.PENDING:
            # For the admin: why no connected agent takes it now ("" = it can).
            row["waiting_for"] = self.why_waiting(task)
        return row

    async def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        if task_id not in self.state.tasks and await self.state.store.get_task(task_id) is None:
            raise NotFound(f"no task {task_id}")
        return await self.state.store.logs(task_id)

    async def list_ips(self) -> list[dict[str, Any]]:
        """The risk ledger's rows (``ip``, ``state``, ``events``, ``cooldown_until``,
        ``learned`` ...), one per egress IP as Bilibili sees it, with what the registry
        adds: the agents now behind it and the link addresses they dial the hub from,
        whether the IP is an egress the agents reported (else a fallback address),
        uploads running, online."""
        state = self.state
        rows = {row["ip"]: row for row in state.ledger.describe(state.clock())}
        for info in state.registry.agents.values():
            row = rows.get(info.risk_ip)
            if row is None:
                continue
            if info.agent_id not in row["agents"]:
                row["agents"] = sorted([*row["agents"], info.agent_id])
            row.setdefault("agents_now", []).append(info.agent_id)
            if info.link_address:
                row.setdefault("link_addresses", set()).add(info.link_address)
            row["egress_reported"] = row.get("egress_reported", False) or bool(info.egress_ip)
            row["active_tasks"] = row.get("active_tasks", 0) + state.active_count(info.agent_id)
            row["online"] = row.get("online", False) or info.session is not None
        for row in rows.values():
            row.setdefault("active_tasks", 0)
            row.setdefault("online", False)
            row.setdefault("egress_reported", False)
            row["agents_now"] = sorted(row.get("agents_now", ()))
            row["link_addresses"] = sorted(row.get("link_addresses", ()))
            row["ip_address"] = row["ip"]
        return [rows[ip] for ip in sorted(rows)]
