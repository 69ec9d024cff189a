"""The hub's web UI: static files served at ``/`` (no build step, no CDN).

``index.html``, ``app.js`` (``access.js``: the agent access section) and
``style.css`` ship as package data beside this
module and are read once when the app is built. The page logs in with the admin
token (kept in the tab's ``sessionStorage``, sent as ``Authorization: Bearer``,
never in a URL), reads the admin API, and follows ``GET /api/manage/events``
(Server-Sent Events, hub/api/sse.py) with ``fetch`` and a stream reader, because
``EventSource`` cannot send an ``Authorization`` header.

Every response carries a strict Content-Security-Policy: scripts and styles only
from the hub itself, nothing inline, no frames, so a string that reaches the page
(an agent name, a file name, an error message) cannot run as code; the script
also only ever writes text into the page, never HTML.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "access.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files that change with the hub's version: always revalidate.
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    here = resources.files(__name__)
    return {name: here.joinpath(name).read_bytes() for name in _FILES}


def web_routes() -> list[BaseRoute]:
    """``GET /`` (the page) and ``GET /ui/app.js``, ``/ui/access.js``, ``/ui/style.css``."""
    files = _load()

    def static(name: str) -> Route:
        body, media_type = files[name], _FILES[name]

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

        path = "/" if name == "index.html" else f"/ui/{name}"
        return Route(path, endpoint, methods=["GET", "HEAD"], name=f"web-{name}")

    return [static(name) for name in _FILES]
