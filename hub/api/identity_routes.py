"""The admin API over who may be an agent: per-agent tokens, approval, account allowlists.

- ``GET /api/manage/whoami`` -> ``{role}``: ``admin`` or ``viewer`` (the web UI
  hides the buttons a viewer may not use).
- ``GET /api/manage/agent-tokens[?agent_id=ID]`` -> ``{tokens}``: id, agent,
  created, expires, revoked, last used, state; never the token or its hash.
- ``POST /api/manage/agent-tokens {agent_id, expires?}`` -> the new token's row
  with ``token``, shown this once (``expires``: seconds, or ``30d``, ``12h``...;
  absent: it never expires).
- ``POST /api/manage/agent-tokens/{token_id}/revoke`` -> the row: the agent's
  live stream on that token closes now and its JWTs are refused.
- ``PUT /api/manage/agents/{agent_id}/accounts {accounts: [name, ...] | null}``:
  the accounts whose credentials the agent may receive (null: every account).
- ``GET /api/manage/agent-duplicates`` -> ``{duplicates}``: agent ids a second
  process tried to claim lately, with the live and the refused address.

Approving, rejecting and clearing an agent id are actions of
``POST /api/manage/agents/{agent_id}/approve|reject|clear`` (``admin_routes``).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bupmesh.config import ConfigError, parse_duration
from hub.api.auth import Auth
from hub.api.bodies import Id, read_body
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.service import HubService


class TokenBody(Struct, forbid_unknown_fields=True):
    agent_id: Id
    expires: Annotated[str, Meta(max_length=32)] | Annotated[float, Meta(gt=0)] | None = None


class AccountsBody(Struct, forbid_unknown_fields=True):
    accounts: list[str] | None


def identity_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    async def whoami(request: Request) -> Response:
        return ok({"role": auth.require_read(request).value})

    async def list_tokens(request: Request) -> Response:
        auth.require_read(request)
        agent_id = request.query_params.get("agent_id") or None
        return ok({"tokens": redact(service.list_agent_tokens(agent_id))})

    async def create_token(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, TokenBody)
        created = await service.create_agent_token(body.agent_id, _seconds(body.expires))
        # Not redacted: the one admin response that carries a secret, the token just made
        # (only its hash is kept; it cannot be shown again).
        return ok(created, message="Agent token created; it is shown only this once")

    async def revoke_token(request: Request) -> Response:
        auth.require_admin(request)
        row = await service.revoke_agent_token(request.path_params["token_id"])
        return ok(redact(row), message="Agent token revoked")

    async def set_accounts(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, AccountsBody)
        return ok(redact(await service.set_agent_accounts(request.path_params["agent_id"],
                                                          body.accounts)))

    async def duplicates(request: Request) -> Response:
        auth.require_read(request)
        return ok({"duplicates": redact(service.agent_duplicates())})

    return [
        Route("/api/manage/whoami", guard(whoami), methods=["GET"]),
        Route("/api/manage/agent-tokens", guard(list_tokens), methods=["GET"]),
        Route("/api/manage/agent-tokens", guard(create_token), methods=["POST"]),
        Route("/api/manage/agent-tokens/{token_id}/revoke", guard(revoke_token),
              methods=["POST"]),
        Route("/api/manage/agents/{agent_id}/accounts", guard(set_accounts), methods=["PUT"]),
        Route("/api/manage/agent-duplicates", guard(duplicates), methods=["GET"]),
    ]


def _seconds(expires: Any) -> float | None:
    if expires is None or isinstance(expires, float | int):
        return expires
    try:
        return parse_duration(expires, key="expires")
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None
