"""The JSON envelope every hub HTTP response wears: ``{"code", "message", "data"}``.

Success is ``code`` 0 with ``data``; a refusal keeps the same shape with the HTTP
status as ``code``, ``data`` null and a message a person can act on. One shape
for every route (admin, agent, webhooks, metrics' refusals, unknown paths) means
a client parses one thing, and a 401 always says how to authenticate.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response


class ApiError(Exception):
    """An expected refusal: HTTP status plus a message safe to show the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def ok(data: Any = None, *, message: str = "success") -> Response:
    """A 200 with ``data``."""
    return _json(200, {"code": 0, "message": message, "data": data})


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Response:
    """A refusal; a 401 names the scheme to use (``WWW-Authenticate: Bearer``)."""
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _json(status, {"code": status, "message": message, "data": None}, headers=headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path 404, wrong method 405) keep the envelope too."""
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail or "error", headers=exc.headers)


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(payload),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
