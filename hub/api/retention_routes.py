"""HTTP routes of retention and of a recording's history (admin), from the pipeline.

- ``GET /api/manage/retention``: the rules (global and per room), bytes waiting by
  stage (``trigger``, ``delay``, ``kept``), files by state, the newest actions and
  refusals, and the free space of every recorder directory.
- ``GET /api/manage/recordings/{id}/history``: what the hub did with a recording and
  its files, and what it refused to do, newest first.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.auth import Auth
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.core.errors import NotFound


def retention_routes(retention: Any, recordings: Any, *, admin_token: str) -> list[BaseRoute]:
    auth = Auth(admin_token=admin_token)

    async def overview(request: Request) -> Response:
        auth.require_admin(request)
        return ok(redact(await retention.overview()))

    async def history(request: Request) -> Response:
        auth.require_admin(request)
        try:
            recording_id = int(request.path_params["recording_id"])
        except ValueError:
            raise ApiError(400, "recording id: expected a number") from None
        if await recordings.get(recording_id) is None:
            raise NotFound(f"no recording {recording_id}")
        return ok({"history": redact(await recordings.history(recording_id))})

    return [
        Route("/api/manage/retention", guard(overview), methods=["GET"]),
        Route("/api/manage/recordings/{recording_id}/history", guard(history),
              methods=["GET"]),
    ]
