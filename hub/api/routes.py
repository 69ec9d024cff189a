"""The hub's HTTP API as one Starlette app: health, agent, admin and account routes.

A thin layer over ``HubService``: each route authenticates (``hub.api.auth``),
decodes and checks its body (``hub.api.bodies``), calls one hub method and wraps
the answer in the envelope (``hub.api.envelope``); errors keep the envelope, with
the status the hub's error maps to (``hub.api.errors``).

Nothing secret is logged, and admin responses pass through a filter that drops
secret-looking fields (``hub.api.redact``), so a hub bug cannot leak cookies over
HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.account_routes import account_routes
from hub.api.admin_routes import admin_routes
from hub.api.agent_routes import agent_routes
from hub.api.auth import Auth
from hub.api.envelope import http_exception, ok
from hub.api.errors import guard
from hub.api.risk_routes import risk_routes
from hub.api.room_routes import room_routes
from hub.api.web import web_routes
from hub.service import HubService

__all__ = ["build_app"]


def build_app(
    service: HubService, *, admin_token: str, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The hub's ASGI app. ``extra_routes`` (webhooks, metrics, audit) are tried after ours."""
    # Looked up per call: a hub without agents (a test's fake) need not verify tokens.
    auth = Auth(admin_token=admin_token,
                verify_agent=lambda token: service.verify_agent_token(token))

    async def healthz(request: Request) -> Response:
        return ok({"status": "ok"})

    routes: list[BaseRoute] = [
        Route("/healthz", guard(healthz), methods=["GET"]),
        *agent_routes(service, auth),
        *admin_routes(service, auth),
        *account_routes(service, auth),
        *risk_routes(service, auth),
        *room_routes(service, auth),
        *web_routes(),
        *extra_routes,
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_exception})
