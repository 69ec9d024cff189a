"""``GET /metrics``: the hub's Prometheus figures (``hub.metrics``) for the admin and viewer roles.

Agent ids and IPs are not for everyone, so the scrape needs the admin token (or,
better for a scraper, the read-only viewer token) as a bearer token (Prometheus
sends it with ``authorization``); a refusal wears the API's envelope like any other.
"""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.api.auth import Auth
from hub.api.errors import guard
from hub.service import HubService


def metrics_route(service: HubService, auth: Auth) -> Route:
    """``GET /metrics``, Prometheus text format."""

    async def metrics(request: Request) -> Response:
        auth.require_read(request)
        body = await service.metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", guard(metrics), methods=["GET"])
