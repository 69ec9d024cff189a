"""The agent API over HTTP: register, heartbeat, task progress.

Agents normally speak gRPC; these routes serve tools and agents that cannot.
``register`` trades the PSK (or a per-agent token) for the agent's own JWT, and
answers 409 naming the address while another agent process holds the id; the other two act only as,
and on the tasks of, the agent that JWT names. Bodies are checked here and
handed to the hub as ``hub.core.reports`` types, the same the stream feeds.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.auth import Auth, bearer, client_host, refused
from hub.api.bodies import (
    HeartbeatBody,
    RegisterBody,
    TaskStatusBody,
    heartbeat_report,
    progress_report,
    read_body,
)
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.core.errors import AuthError
from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")


def agent_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    async def register(request: Request) -> Response:
        psk = bearer(request)
        body = await read_body(request, RegisterBody)
        capabilities = {
            "max_concurrent_uploads": body.max_concurrent_uploads,
            "bandwidth_mbps": body.bandwidth_mbps,
            "grpc_address": body.grpc_address,
            **body.capabilities,
        }
        peer = request.client.host if request.client else ""
        ip_address = body.ip_address or peer
        try:
            token, expires_at = await service.register_agent(
                psk,
                body.agent_id,
                body.agent_name or body.agent_id,
                ip_address,
                capabilities,
                dict(body.tags),
                instance_id=body.instance_id,
                peer=peer,
            )
        except AuthError:
            refused(request, "register")
            raise
        log.info("agent %s registered over HTTP from %s", body.agent_id, client_host(request))
        # The one response that carries a secret: the agent's own new token.
        return ok({"agent_id": body.agent_id, "token": token, "expires_at": expires_at})

    async def heartbeat(request: Request) -> Response:
        agent_id = auth.require_agent(request)
        body = await read_body(request, HeartbeatBody)
        if body.agent_id is not None and body.agent_id != agent_id:
            raise ApiError(403, "agent_id: does not match the token")
        await service.agent_heartbeat(agent_id, heartbeat_report(body))
        return ok()

    async def task_status(request: Request) -> Response:
        agent_id = auth.require_agent(request)
        body = await read_body(request, TaskStatusBody)
        # The hub refuses tasks not leased to this agent (NotFound/Conflict).
        await service.agent_progress(agent_id, progress_report(body))
        return ok()

    return [
        Route("/api/agent/register", guard(register), methods=["POST"]),
        Route("/api/agent/heartbeat", guard(heartbeat), methods=["POST"]),
        Route("/api/agent/task-status", guard(task_status), methods=["POST"]),
    ]
