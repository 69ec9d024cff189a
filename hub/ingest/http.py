"""HTTP routes of ingestion and recordings (plugged into ``hub.api.routes.build_app``).

- ``POST /api/webhook/bililive-recorder`` and ``POST /api/webhook/blrec``: the
  recorders' webhooks. With ``ingest.webhook_secret`` set, the caller must send
  it as ``?secret=...`` (what a recorder's webhook URL can carry), or as
  ``X-Webhook-Secret`` / ``Authorization: Bearer``; compared in constant time.
  Replies use the hub's envelope; ``data.result`` is ``imported | duplicate |
  started | ended | noted | ignored``. A bad body is 400 with the field named.
- ``GET /api/manage/recordings`` (admin): recordings with parts and state.
- ``POST /api/manage/recordings/{id}/submit`` (admin): submit it once it is ready.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

# The envelope, the body limit and the secret filter are the admin API's own.
from hub.api.routes import (
    MAX_JSON_BODY,
    ApiError,
    _bearer,
    _guard,
    _ok,
    _read_limited,
    _redact,
)
from hub.ingest.events import IngestError, IngestEvent, parse_bililive_recorder, parse_blrec
from hub.ingest.service import IngestRefused, IngestService

log = logging.getLogger("bupmesh.hub.ingest")


def routes(ingest: IngestService, submissions: Any, *, admin_token: str,
           webhook_secret: str | None) -> list[BaseRoute]:
    admin_secret = admin_token.encode()
    hook_secret = (webhook_secret or "").encode()

    def require_admin(request: Request) -> None:
        token = _bearer(request)
        if not admin_secret or not hmac.compare_digest(token.encode(), admin_secret):
            raise ApiError(401, "invalid admin token")

    def require_hook_secret(request: Request) -> None:
        if not hook_secret:
            return
        given = (request.query_params.get("secret")
                 or request.headers.get("x-webhook-secret") or "")
        if not given:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), hook_secret):
            log.warning("webhook %s refused: wrong or missing secret (from %s)",
                        request.url.path, request.client.host if request.client else "?")
            raise ApiError(401, "webhook secret missing or wrong")

    def webhook(parse: Callable[[Any], IngestEvent]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            require_hook_secret(request)
            raw = await _read_limited(request, MAX_JSON_BODY)
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                raise ApiError(400, "body: not valid JSON") from None
            try:
                event = parse(body)
                answer = await ingest.handle(event)
            except (IngestError, IngestRefused) as exc:
                raise ApiError(400, str(exc)) from None
            return _ok(answer)

        return handler

    def blrec(body: Any) -> IngestEvent:
        return parse_blrec(body, ingest.config.ingest.blrec_file_event)

    async def list_recordings(request: Request) -> Response:
        require_admin(request)
        return _ok({"recordings": _redact(await submissions.list())})

    async def submit(request: Request) -> Response:
        require_admin(request)
        try:
            recording_id = int(request.path_params["recording_id"])
        except ValueError:
            raise ApiError(400, "recording id: expected a number") from None
        return _ok(_redact(await submissions.request(recording_id)),
                   message="Submission requested")

    return [
        Route("/api/webhook/bililive-recorder", _guard(webhook(parse_bililive_recorder)),
              methods=["POST"]),
        Route("/api/webhook/blrec", _guard(webhook(blrec)), methods=["POST"]),
        Route("/api/manage/recordings", _guard(list_recordings), methods=["GET"]),
        Route("/api/manage/recordings/{recording_id}/submit", _guard(submit), methods=["POST"]),
    ]
