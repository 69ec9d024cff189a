"""The whole HTTP face of one hub: the API, ``/metrics``, and the audit of admin calls.

``hub.app`` serves what this builds; routes contributed from elsewhere (the
recording pipeline's webhooks and recordings) come in as ``extra_routes``. One
:class:`~hub.api.auth.Auth` (``http_auth``) holds every credential and checks
every route, whoever contributed it.
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


def http_auth(service: HubService, config: HubConfig) -> Auth:
    """The credentials of the hub's HTTP side, from its config."""
    return Auth(admin_token=config.admin_token, viewer_token=config.viewer_token,
                verify_agent=service.verify_agent_token,
                webhook_secret=config.ingest.webhook_secret)


def build_http_app(
    service: HubService,
    config: HubConfig,
    *,
    auth: Auth | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    audit: AuditLog | None = None,
) -> ASGIApp:
    """The ASGI app ``hub.api.server.serve_http`` serves; audited when ``audit`` is given."""
    auth = auth or http_auth(service, config)
    routes: list[BaseRoute] = [metrics_route(service, auth), storage_route(service.space, auth),
                               *extra_routes]
    if audit is not None:
        routes.append(audit_route(audit, auth))
    app: ASGIApp = build_app(service, auth=auth, extra_routes=routes)
    app = StorageGate(app, space=service.space, auth=auth)
    if audit is not None:
        app = AuditMiddleware(app, audit=audit, auth=auth)
    return app
