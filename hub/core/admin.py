"""What an admin may do to tasks, agents and IPs: assign, retry, cancel, drain, disable.

Each command checks the current state first and refuses with a domain error
(NotFound, Conflict, BadRequest) rather than half-applying, then changes the
state in the usual order: record, write, act.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hub.core.errors import BadRequest, Conflict, NotFound
from hub.core.lifecycle import Outcome, Status, TaskRecord
from hub.core.state import HubState
from hub.core.views import Views, task_row
from protocol import mesh_pb2 as pb

log = logging.getLogger("bupmesh.hub")

# Creates a part's task: (part id, pinned agent, force) -> the new task.
NewTask = Callable[[int, str | None, bool], Awaitable[TaskRecord]]


class Admin:
    def __init__(self, state: HubState, views: Views, new_task: NewTask) -> None:
        self.state = state
        self.views = views
        self.new_task = new_task

    async def assign_task(self, part_id: int, agent_id: str, *, force: bool = False) -> str:
        """Pin a part to one agent. Returns the task id.

        The pin still honours the agent's IP in the risk ledger: the task waits while
        that IP is cooling, resting or capped, unless ``force``. A disabled IP (or agent)
        is refused at once: an admin re-enables it first. The pin covers one attempt;
        if that fails the task goes back to normal scheduling.
        """
        state = self.state
        part = await state.store.get_part(int(part_id))
        if part is None:
            raise NotFound(f"no part {part_id}")
        info = state.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if not info.schedulable:
            raise Conflict(f"agent {agent_id} is {info.status}")
        ip = info.risk_ip
        if state.ledger.state(ip, state.clock()) == "disabled":
            raise Conflict(f"IP {ip} of agent {agent_id} is disabled by the risk ledger; "
                           f"re-enable it first (POST /api/manage/ips/{ip}/enable)")
        for task in state.tasks.values():
            if task.part_id == part["id"]:
                if task.status is not Status.PENDING:
                    raise Conflict(f"part {part_id} is already {task.status} as {task.task_id}")
                async with state.lock:
                    task.pinned_agent = agent_id
                    task.force = bool(force)
                    task.retry_agent = None
                    task.excluded.pop(agent_id, None)
                    task.excluded_ips.pop(ip, None)
                    task.not_before = 0.0
                    await state.save(task, agent_id, "assign",
                                     f"assigned to {agent_id}{' (forced)' if force else ''}")
                state.poke()
                return task.task_id
        if part["state"] == "uploaded":
            raise Conflict(f"part {part_id} is already uploaded")
        if part["state"] == "failed" and not (part.get("digest") or part["md5"]):
            raise Conflict(f"part {part_id} cannot be read: {part['file_path']}")
        task = await self.new_task(part["id"], agent_id, force)
        return task.task_id

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        """A failed (or cancelled) task goes back to pending, resume point kept."""
        state = self.state
        async with state.lock:
            if task_id in state.tasks:
                raise Conflict(f"task {task_id} is {state.tasks[task_id].status}, not failed")
            task = await state.store.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id}")
            if any(t.part_id == task.part_id for t in state.tasks.values()):
                raise Conflict(f"part {task.part_id} already has a live task")
            part = await state.store.get_part(task.part_id)
            if part is not None and part["state"] == "uploaded":
                raise Conflict(f"part {task.part_id} is already uploaded")
            if state.lifecycle.revive(task) is Outcome.IGNORED:
                raise Conflict(f"task {task_id} is {task.status}, not failed")
            state.tasks[task_id] = task
            await state.save(task, "", "retry", "retried by admin", part_state="queued")
        log.info("task %s retried by admin", task_id)
        state.poke()
        return task_row(task)

    async def cancel_task(self, task_id: str) -> None:
        state = self.state
        async with state.lock:
            task = state.tasks.get(task_id)
            if task is None:
                if await state.store.get_task(task_id) is None:
                    raise NotFound(f"no task {task_id}")
                raise Conflict(f"task {task_id} already ended")
            leased, agent_id, attempt = task.status.leased, task.agent_id or "", task.attempt
            state.lifecycle.cancel(task)
            await state.save(task, agent_id, "cancel", "cancelled by admin",
                             part_state="cancelled")
        info = state.registry.get(agent_id) if leased else None
        if info is not None and info.session is not None:
            info.session.stop_stream(task_id)
            info.session.send(pb.HubMessage(cancel=pb.Cancel(
                task_id=task_id, attempt=attempt, reason="cancelled by admin")))
        log.info("task %s cancelled", task_id)

    async def set_agent_state(self, agent_id: str, action: str,
                              reconnect_after_seconds: int = 0) -> dict[str, Any]:
        """``drain`` (no new work; running tasks finish), ``disable`` (refused at
        connect, its stream closed, its tasks re-offered elsewhere) or ``enable``."""
        state = self.state
        info = state.registry.get(agent_id)
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
        async with state.lock:
            await state.store.set_agent_status(agent_id, info.status)
        log.info("agent %s: %s by admin", agent_id, action)
        state.events.touch_agent(agent_id)
        state.poke()
        return self.views.agent(info)

    async def set_agent_access(self, agent_id: str, *, disabled: bool | None = None,
                               revoke_tokens: bool = False) -> None:
        """Disable/enable an agent and/or revoke every token issued to it so far."""
        state = self.state
        info = state.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if disabled is not None:
            info.disabled = disabled
        if revoke_tokens:
            info.tokens_valid_after = state.clock()
        await state.store.set_agent_access(
            agent_id, disabled=info.disabled, tokens_valid_after=info.tokens_valid_after
        )
        if info.session is not None and (info.disabled or revoke_tokens):
            info.session.close("access revoked")

    async def drain_agent(self, agent_id: str, reconnect_after_seconds: int = 0,
                          reason: str = "drain requested") -> None:
        info = self.state.registry.get(agent_id)
        if info is None or info.session is None:
            raise Conflict(f"agent {agent_id} is not connected")
        info.draining = True
        info.session.send(pb.HubMessage(drain=pb.Drain(
            reason=reason, reconnect_after_seconds=reconnect_after_seconds)))

    async def reenable_ip(self, ip: str) -> dict[str, Any]:
        """Lift an IP's disable and cooldown (its history stays, and fades)."""
        state = self.state
        if not isinstance(ip, str) or ip not in state.ledger.known_ips():
            raise NotFound(f"no IP {ip} in the risk ledger")
        async with state.lock:
            state.ledger.admin_reenable(ip, state.clock())
            await state.save_ledger()
        log.info("IP %s re-enabled by admin", ip)
        state.poke()
        return next(r for r in await self.views.list_ips() if r["ip"] == ip)
