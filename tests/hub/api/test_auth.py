"""The hub's HTTP credentials (hub/api/auth.py), checked on bare requests."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from starlette.requests import Request

from hub.api.auth import Auth, Role
from hub.api.envelope import ApiError

ADMIN = "admin-tok-51c2"
HOOK = "hook-secret-9e07"


def request(authorization: str | None = None, *, query: str = "",
            headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if authorization is not None:
        raw.append((b"authorization", authorization.encode()))
    return Request({"type": "http", "method": "GET", "path": "/api/manage/x",
                    "query_string": query.encode(), "headers": raw,
                    "client": ("127.0.0.9", 4000), "server": ("hub", 80), "scheme": "http"})


def verify(token: str) -> str:
    if not token.startswith("jwt."):
        raise PermissionError("invalid agent token")
    return token.removeprefix("jwt.")


def refusal(call: Callable[..., object], *args: object) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value.status, caught.value.message


def test_the_admin_role_needs_the_admin_token_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = Auth(admin_token=ADMIN, verify_agent=verify)
    assert auth.require(request(f"Bearer {ADMIN}")) is Role.ADMIN
    assert auth.require(request(f"bearer  {ADMIN} ")) is Role.ADMIN  # scheme is case-blind
    assert refusal(auth.require_admin, request()) == (401, "missing Authorization: Bearer header")
    assert refusal(auth.require_admin, request(f"Basic {ADMIN}"))[0] == 401
    for wrong in (f"{ADMIN}x", ADMIN[:-1], "jwt.agent-a"):
        with caplog.at_level(logging.WARNING, logger="bupmesh.hub.http"):
            assert refusal(auth.require_admin, request(f"Bearer {wrong}")) == (
                401, "invalid admin token")
    assert "refused admin credentials on /api/manage/x from 127.0.0.9" in caplog.text
    assert ADMIN[:-1] not in caplog.text  # who and where, never what was sent


def test_an_empty_admin_token_closes_the_admin_api() -> None:
    auth = Auth(admin_token="")
    assert auth.role_of("") is None
    assert refusal(auth.require_admin, request("Bearer x")) == (401, "invalid admin token")


def test_agent_tokens_name_their_agent() -> None:
    auth = Auth(admin_token=ADMIN, verify_agent=verify)
    assert auth.require_agent(request("Bearer jwt.agent-a")) == "agent-a"
    with pytest.raises(PermissionError):  # the verifier's own refusal, mapped by the guard
        auth.require_agent(request(f"Bearer {ADMIN}"))
    assert refusal(Auth(admin_token=ADMIN).require_agent, request("Bearer jwt.a"))[0] == 401


def test_the_webhook_secret_in_any_of_its_three_places() -> None:
    auth = Auth(admin_token=ADMIN, webhook_secret=HOOK)
    auth.require_webhook(request(query=f"secret={HOOK}"))
    auth.require_webhook(request(headers={"X-Webhook-Secret": HOOK}))
    auth.require_webhook(request(f"Bearer {HOOK}"))
    for bad in (request(), request(query="secret=no"), request(f"Bearer {ADMIN}")):
        assert refusal(auth.require_webhook, bad) == (401, "webhook secret missing or wrong")
    Auth(admin_token=ADMIN).require_webhook(request())  # no secret set: open


def test_the_actor_for_the_audit_log() -> None:
    auth = Auth(admin_token=ADMIN, verify_agent=verify)
    assert auth.actor(request(f"Bearer {ADMIN}")) == "admin"
    assert auth.actor(request("Bearer jwt.agent-a")) == "agent:agent-a"
    assert auth.actor(request("Bearer nonsense")) == "invalid-token"
    assert auth.actor(request()) == "anonymous"
    assert auth.actor(request(f"Basic {ADMIN}")) == "anonymous"
