"""The whole HTTP face of one hub: the API, ``/metrics``, and the audit of admin calls.

``hub.app`` serves what this builds; routes contributed from elsewhere (the
recording pipeline's webhooks and recordings) come in as ``extra_routes``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from hub.api.audit import AuditLog, AuditMiddleware, audit_route
from hub.api.auth import Auth
from hub.api.metrics import metrics_route
from hub.api.routes import build_app
from hub.api.storage import StorageGate, storage_route
from hub.config import HubConfig
from hub.service import HubService


def build_http_app(
    service: HubService,
    config: HubConfig,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    audit: AuditLog | None = None,
) -> ASGIApp:
    """The ASGI app ``hub.api.server.serve_http`` serves; audited when ``audit`` is given."""
    auth = Auth(admin_token=config.admin_token, verify_agent=service.verify_agent_token)
    routes: list[BaseRoute] = [metrics_route(service, auth), storage_route(service.space, auth),
                               *extra_routes]
    if audit is not None:
        routes.append(audit_route(audit, auth))
    app: ASGIApp = build_app(service, admin_token=config.admin_token, extra_routes=routes)
    app = StorageGate(app, space=service.space, auth=auth)
    if audit is not None:
        app = AuditMiddleware(app, audit=audit, auth=auth)
    return app
