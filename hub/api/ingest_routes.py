"""HTTP routes of ingestion and recordings, contributed by the recording pipeline.

- ``POST /api/webhook/bililive-recorder`` and ``POST /api/webhook/blrec``: the
  recorders' webhooks. With ``ingest.webhook_secret`` set, the caller must send
  it (``hub.api.auth.Auth.require_webhook`` says how). Replies use the hub's
  envelope; ``data.result`` is ``imported | duplicate | started | ended | noted
  | ignored``. A bad body is 400 with the field named.
- ``GET /api/manage/recordings`` (admin, viewer): recordings with parts and state.
- ``POST /api/manage/recordings/{id}/submit`` (admin): submit it once it is ready.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.auth import Auth
from hub.api.bodies import read_limited
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.ingest.events import IngestEvent, parse_bililive_recorder, parse_blrec
from hub.ingest.service import IngestService


def ingest_routes(ingest: IngestService, submissions: Any, auth: Auth) -> list[BaseRoute]:
    """The routes, checked by ``auth`` (which holds the webhook secret too)."""

    def webhook(parse: Callable[[Any], IngestEvent]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            auth.require_webhook(request)
            raw = await read_limited(request)
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                raise ApiError(400, "body: not valid JSON") from None
            # A body that does not parse, or an event the hub refuses, is a 400
            # naming the field (hub.api.errors).
            return ok(await ingest.handle(parse(body)))

        return handler

    def blrec(body: Any) -> IngestEvent:
        return parse_blrec(body, ingest.config.ingest.blrec_file_event)

    async def list_recordings(request: Request) -> Response:
        auth.require_read(request)
        return ok({"recordings": redact(await submissions.list())})

    async def submit(request: Request) -> Response:
        auth.require_admin(request)
        try:
            recording_id = int(request.path_params["recording_id"])
        except ValueError:
            raise ApiError(400, "recording id: expected a number") from None
        return ok(redact(await submissions.request(recording_id)),
                  message="Submission requested")

    return [
        Route("/api/webhook/bililive-recorder", guard(webhook(parse_bililive_recorder)),
              methods=["POST"]),
        Route("/api/webhook/blrec", guard(webhook(blrec)), methods=["POST"]),
        Route("/api/manage/recordings", guard(list_recordings), methods=["GET"]),
        Route("/api/manage/recordings/{recording_id}/submit", guard(submit), methods=["POST"]),
    ]
