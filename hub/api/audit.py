"""Audit log of admin actions: who, what, when, outcome; in the database and the log.

An ASGI middleware around the hub's HTTP app records every admin *action*
(any non-GET request under ``/api/manage/``) and every refused attempt on an
admin route (401/403, including ``GET`` and ``/metrics``): those are what an
owner asks about later ("who cancelled this task?", "who is probing the
admin API?"). Reads that succeed are not actions and are not recorded.

Each entry holds
- who: ``admin`` (the role of the token sent, ``hub.api.auth``), ``agent:<id>`` (an agent JWT presented on
  an admin route, which is always refused), ``invalid-token`` or
  ``anonymous``, plus the remote address. Never the token itself.
- what: method, the route's path template and its parameters, and the id-like
  fields of the request body (``task_id``, ``part_id``, ``agent_id``, account
  ``name``, ``file_path``, ...). Handlers hand those over with
  ``note_targets``; only the whitelisted keys below are kept, so a cookie in a
  body can never reach the audit table.
- when, and the outcome (HTTP status).

The hub's own actions on files go here too (:meth:`AuditLog.record_event`): each
file retention deletes or moves, and each time it refuses to, with actor
``retention``, the action as the method, the file as the path and the outcome
(``ok``, ``dry_run``, ``refused``, ``error``, ``rolled_back``).

It is written to the table ``audit_log`` (the newest ``KEEP_ROWS`` are kept, so
a flood of refused requests cannot fill the disk) and to the
``bupmesh.audit`` logger; ``GET /api/manage/audit`` reads it back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.auth import Auth
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.core.errors import StorageFull

log = logging.getLogger("bupmesh.audit")

KEEP_ROWS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PREFIXES = ("/api/manage/", "/metrics")
# Body fields that identify what an action was about. Nothing else is recorded.
TARGET_FIELDS = ("task_id", "part_id", "agent_id", "recording_id", "name", "account",
                 "file_path", "ip", "force", "reconnect_after_seconds", "auto_upload")
_SCOPE_KEY = "bupmesh.audit_targets"

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    path TEXT NOT NULL,
    targets TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    remote_addr: str
    method: str
    route: str
    path: str
    targets: dict[str, Any]
    status: int
    outcome: str


def note_targets(scope: Scope, body: Any) -> None:
    """Called by a handler with its decoded body: keep its id-like fields for the audit."""
    found = scope.setdefault(_SCOPE_KEY, {})
    for name in TARGET_FIELDS:
        value = body.get(name) if isinstance(body, Mapping) else getattr(body, name, None)
        if isinstance(value, str | int | float | bool):
            found[name] = value if not isinstance(value, str) else value[:512]


class AuditLog:
    """The ``audit_log`` table in the hub's database (through ``hub.store.tasks.Store.run``)."""

    def __init__(self, store: Any, *, keep_rows: int = KEEP_ROWS) -> None:
        self.store = store
        self.keep_rows = keep_rows

    async def open(self) -> None:
        await self.store.run(lambda c: c.executescript(SCHEMA))

    async def record(self, entry: AuditEntry) -> None:
        targets = " ".join(f"{k}={v}" for k, v in entry.targets.items())
        log.info("%s from %s: %s %s%s -> %s", entry.actor, entry.remote_addr, entry.method,
                 entry.path, f" [{targets}]" if targets else "", entry.status,
                 extra={"audit": asdict(entry)})

        def q(c: sqlite3.Connection) -> None:
            cur = c.execute(
                """INSERT INTO audit_log (at, actor, remote_addr, method, route, path, targets,
                   status, outcome) VALUES (?,?,?,?,?,?,?,?,?)""",
                (entry.at, entry.actor, entry.remote_addr, entry.method, entry.route,
                 entry.path, json.dumps(entry.targets, sort_keys=True), entry.status,
                 entry.outcome),
            )
            if cur.lastrowid and cur.lastrowid % 100 == 0:  # prune now and then
                c.execute("DELETE FROM audit_log WHERE id <= ?",
                          (cur.lastrowid - self.keep_rows,))

        await self.store.run(q)

    async def record_event(self, *, actor: str, action: str, subject: str,
                           targets: dict[str, Any], outcome: str) -> None:
        """Something the hub did (or refused to do) on its own, not asked over HTTP: the
        actor names the part of the hub (``retention``), ``action`` what it did, in the
        method column, and ``subject`` what it was done to (a file), in the path column."""
        await self.record(AuditEntry(
            at=time.time(), actor=actor, remote_addr="hub", method=action.upper(),
            route=actor, path=subject, targets=dict(targets), status=0, outcome=outcome))

    async def list(self, *, limit: int = 100, before_id: int | None = None) -> list[dict]:
        """Newest first; ``before_id`` pages back."""
        def q(c: sqlite3.Connection) -> list[dict]:
            rows = c.execute(
                """SELECT id, at, actor, remote_addr, method, route, path, targets, status,
                   outcome FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?""",
                (before_id if before_id is not None else 2**62, limit),
            ).fetchall()
            return [{**dict(r), "targets": json.loads(r["targets"])} for r in rows]

        return await self.store.run(q)


class AuditMiddleware:
    """Records admin actions and refused admin requests of the wrapped ASGI app."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, auth: Auth,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.audit = audit
        self._auth = auth
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(ADMIN_PREFIXES):
            await self.app(scope, receive, send)
            return
        status = 500
        at = self._clock()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            if method not in SAFE_METHODS or status in (401, 403):
                try:
                    await self.audit.record(self._entry(scope, at, status))
                except StorageFull as exc:  # the entry is in the log already (record)
                    log.warning("audit entry for %s %s is in the log only: %s", method,
                                scope["path"], exc)
                except Exception:  # auditing must not turn a done action into an error
                    log.exception("could not write the audit entry for %s %s", method,
                                  scope["path"])

    def _entry(self, scope: Scope, at: float, status: int) -> AuditEntry:
        route = scope.get("route")
        targets = {str(k): str(v) for k, v in (scope.get("path_params") or {}).items()}
        targets.update(scope.get(_SCOPE_KEY, {}))
        client = scope.get("client")
        outcome = "ok" if status < 400 else "refused" if status in (401, 403) else "error"
        return AuditEntry(
            at=at, actor=self._auth.actor(Request(scope)),
            remote_addr=client[0] if client else "?", method=scope["method"], route=getattr(route, "path", scope["path"]),
            path=scope["path"], targets=targets, status=status, outcome=outcome,
        )


def audit_route(audit: AuditLog, auth: Auth) -> Route:
    """``GET /api/manage/audit?limit=100&before_id=N`` (admin) -> entries, newest first."""

    async def endpoint(request: Request) -> Response:
        auth.require_admin(request)
        try:
            limit = int(request.query_params.get("limit", "100"))
            before = request.query_params.get("before_id")
            before_id = int(before) if before is not None else None
        except ValueError:
            raise ApiError(400, "limit, before_id: expected integers") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit: must be between 1 and 1000")
        entries = await audit.list(limit=limit, before_id=before_id)
        return ok({"entries": entries})

    return Route("/api/manage/audit", guard(endpoint), methods=["GET"])
