"""The HTTP face of a full data directory: new work refused with 507, its state readable.

While the hub's space alarm is raised (hub/store/space.py), :class:`StorageGate`
answers every authenticated admin action (a non-GET under ``/api/manage/``) with
``507 Insufficient Storage`` naming the directory and its free bytes, before the
handler starts anything it could only half write; reads pass, and so do agents
(their writes wait for space instead) and callers without credentials (their
401 comes first: a stranger learns nothing about the disk). Webhooks are refused
by the ingest service itself, after their secret was checked.

``GET /api/manage/storage`` (admin) says whether the data directory is full, since
when, its free bytes and how many writes wait for space.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.api.auth import Auth, bearer
from hub.api.envelope import ApiError, error, ok
from hub.api.errors import guard

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INSUFFICIENT_STORAGE = 507


class StorageGate:
    def __init__(self, app: ASGIApp, *, space: Any, auth: Auth) -> None:
        self.app = app
        self.space = space
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.space.raised
                and scope["method"] not in SAFE_METHODS
                and scope["path"].startswith("/api/manage/") and self._authenticated(scope)):
            retry = max(1, round(self.space.probe_interval))
            response = error(INSUFFICIENT_STORAGE, str(self.space.refusal()),
                             headers={"Retry-After": str(retry)})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authenticated(self, scope: Scope) -> bool:
        try:
            return self.auth.role_of(bearer(Request(scope))) is not None
        except ApiError:
            return False


def storage_route(space: Any, auth: Auth) -> Route:
    async def endpoint(request: Request) -> Response:
        auth.require_admin(request)
        return ok(space.describe())

    return Route("/api/manage/storage", guard(endpoint), methods=["GET"])
