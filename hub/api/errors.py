"""Domain errors to HTTP statuses, in one table, and the guard every route runs in.

The hub's parts raise what went wrong in their own terms (``NotFound``,
``Conflict``, ``AccountError``...); only this edge knows that a missing task is
a 404. A handler that fails in an unforeseen way gets a 500 whose body says
nothing internal: the traceback goes to the operator's log, not to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from hub.accounts.qr_login import LoginNotFound, TooManyLogins
from hub.accounts.store import AccountError, AccountNotFound, DuplicateAccount
from hub.api.envelope import ApiError, error
from hub.core.errors import AuthError, BadRequest, Conflict, NotFound, StorageFull
from hub.ingest.events import IngestError
from hub.ingest.service import IngestRefused
from hub.rooms.book import RoomInvalid

log = logging.getLogger("bupmesh.hub.http")

Handler = Callable[[Request], Awaitable[Response]]

# First match wins; each with the message used when the error carries none.
STATUSES: tuple[tuple[tuple[type[BaseException], ...], int, str], ...] = (
    ((AuthError,), 401, "unauthorized"),
    ((NotFound, AccountNotFound, LoginNotFound, FileNotFoundError), 404, "not found"),
    ((Conflict, DuplicateAccount), 409, "conflict"),
    ((TooManyLogins,), 429, "too many requests"),
    ((AccountError, BadRequest, IngestError, IngestRefused, RoomInvalid), 400, "bad request"),
    # The message names the data directory and its free bytes (hub/store/space.py).
    ((StorageFull,), 507, "insufficient storage"),
)


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """``(HTTP status, message)`` for an expected error, None for anything else."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    for kinds, status, default in STATUSES:
        if isinstance(exc, kinds):
            return status, _message(exc, default)
    return None


def guard(handler: Handler) -> Handler:
    """Turn every failure of ``handler`` into an enveloped error response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            known = status_of(exc)
            if known is not None:
                return error(*known)
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "internal error; see the hub log")

    return endpoint


def _message(exc: BaseException, default: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}" if exc.filename else "no such file"
    return str(exc) or default
