"""The admin API over the hub's work: parts, tasks, agents, egress IPs, live events.

Reads need the admin or the viewer role, changes the admin role; each route
calls one hub method and answers with the envelope; what it returns passes
through ``redact`` first.
"""

from __future__ import annotations

import logging
from pathlib import PurePath

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.agents.admission import ACTIONS as APPROVAL_ACTIONS
from hub.api.auth import Auth
from hub.api.bodies import (
    AgentActionBody,
    AssignBody,
    CancelBody,
    PartBody,
    RetryBody,
    decode_body,
    read_body,
    read_limited,
)
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.api.sse import event_stream_response
from hub.core.task_pages import parse_query
from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")


def admin_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    # -- parts and tasks ---------------------------------------------------------------

    async def create_part(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, PartBody)
        if not PurePath(body.file_path).is_absolute():
            raise ApiError(400, "file_path: must be an absolute path on the hub")
        account = str(body.account) if body.account is not None else None
        result = await service.create_part(
            body.file_path, account=account, title=body.title, auto_upload=body.auto_upload
        )
        log.info("part %s created for %s", result.get("part_id"), body.file_path)
        return ok(redact(result))

    async def list_tasks(request: Request) -> Response:
        """``GET /api/manage/tasks[?status=&agent=&account=&recording=&since=&until=
        &limit=&cursor=]`` -> ``{tasks, next_cursor}``: one page, newest first."""
        auth.require_read(request)
        query = parse_query(request.query_params)
        return ok(redact(await service.list_tasks(query)))

    async def get_task(request: Request) -> Response:
        auth.require_read(request)
        return ok(redact(await service.get_task(request.path_params["task_id"])))

    async def task_logs(request: Request) -> Response:
        auth.require_read(request)
        return ok({"logs": redact(await service.task_logs(request.path_params["task_id"]))})

    async def assign_task(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, AssignBody)
        task_id = await service.assign_task(body.part_id, body.agent_id, force=body.force)
        log.info("part %s assigned to agent %s as task %s%s", body.part_id, body.agent_id,
                 task_id, " (forced)" if body.force else "")
        return ok({"task_id": task_id})

    async def cancel_task(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, CancelBody)
        await service.cancel_task(body.task_id)
        log.info("task %s cancelled by admin", body.task_id)
        return ok({"task_id": body.task_id}, message="Task cancelled")

    async def retry_task(request: Request) -> Response:
        """``POST /api/manage/retry-task {task_id}``: a failed or cancelled task is queued
        again (same task id, resume point kept) -> the task, as ``GET`` shows it."""
        auth.require_admin(request)
        body = await read_body(request, RetryBody)
        task = await service.retry_task(body.task_id)
        return ok(redact(task), message="Task queued again")

    # -- agents and IPs ----------------------------------------------------------------

    async def list_agents(request: Request) -> Response:
        auth.require_read(request)
        return ok({"agents": redact(await service.list_agents())})

    async def agent_action(request: Request) -> Response:
        """``POST /api/manage/agents/{agent_id}/drain|disable|enable|approve|reject|clear``
        -> the agent row.

        drain: no new work, running tasks finish (optional body
        ``{"reconnect_after_seconds": n}``: the agent also closes and dials again in
        n s); disable: refused at connect, stream closed, tasks re-offered elsewhere;
        enable: undoes either. approve / reject / clear: the admin's decision on an
        agent id (``hub.agents.admission``): a rejected id is refused until cleared.
        """
        auth.require_admin(request)
        action = request.path_params["action"]
        if action in APPROVAL_ACTIONS:
            agent = await service.set_agent_approval(request.path_params["agent_id"], action)
            return ok(redact(agent))
        seconds = 0
        raw = await read_limited(request)
        if action == "drain" and raw.strip():
            seconds = decode_body(raw, AgentActionBody).reconnect_after_seconds
        agent = await service.set_agent_state(request.path_params["agent_id"], action,
                                              reconnect_after_seconds=seconds)
        return ok(redact(agent))

    async def list_ips(request: Request) -> Response:
        """``GET /api/manage/ips`` -> ``{ips: [...], learned: [...]}``: each egress IP's
        standing (with the limit it learned and its evidence), and every live learned
        limit, the mesh-wide and the accounts' included."""
        auth.require_read(request)
        return ok({"ips": redact(await service.list_ips()),
                   "learned": redact(service.learned_limits())})

    async def enable_ip(request: Request) -> Response:
        """``POST /api/manage/ips/{ip}/enable`` (no body): lift the risk ledger's disable
        and cooldown of that egress IP; its history stays -> the IP's row."""
        auth.require_admin(request)
        row = await service.reenable_ip(request.path_params["ip"])
        return ok(redact(row), message="IP re-enabled")

    # -- live view -----------------------------------------------------------------------

    async def history(request: Request) -> Response:
        """``GET /api/manage/history``: the console's chart data (``hub.core.history``)."""
        auth.require_read(request)
        return ok(redact(service.chart_history()))

    async def events(request: Request) -> Response:
        """``GET /api/manage/events``: live state as Server-Sent Events (``hub.api.sse``)."""
        auth.require_read(request)
        return event_stream_response(service, redact)

    return [
        Route("/api/manage/agents", guard(list_agents), methods=["GET"]),
        Route("/api/manage/assign-task", guard(assign_task), methods=["POST"]),
        Route("/api/manage/cancel-task", guard(cancel_task), methods=["POST"]),
        Route("/api/manage/parts", guard(create_part), methods=["POST"]),
        Route("/api/manage/tasks", guard(list_tasks), methods=["GET"]),
        Route("/api/manage/tasks/{task_id}", guard(get_task), methods=["GET"]),
        Route("/api/manage/tasks/{task_id}/logs", guard(task_logs), methods=["GET"]),
        Route("/api/manage/ips", guard(list_ips), methods=["GET"]),
        Route("/api/manage/ips/{ip}/enable", guard(enable_ip), methods=["POST"]),
        Route("/api/manage/retry-task", guard(retry_task), methods=["POST"]),
        Route("/api/manage/agents/{agent_id}/{action:str}", guard(agent_action),
              methods=["POST"]),
        Route("/api/manage/events", guard(events), methods=["GET"]),
        Route("/api/manage/history", guard(history), methods=["GET"]),
    ]
