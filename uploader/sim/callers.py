"""Who is asking: the web caller (cookies + csrf) and the app caller (signed query + access_key).

Every write route of the creative centre starts here; a :class:`Refusal` is
the JSON API code (and message) Bilibili answers a caller it does not let in.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from uploader.sim.accounts import Account
from uploader.sim.facts import APP_KEYS, BAD_SIGN, CSRF_FAILED
from uploader.sim.inbound import session_cookie
from uploader.sim.state import SimState


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let in or not taken: a JSON API code and its message (None: the usual)."""

    code: int
    message: str | None = None


def cookie_account(state: SimState, request: Request) -> Account | Refusal:
    """Reads: the ``SESSDATA`` cookie is enough."""
    account = state.accounts.by_cookie(session_cookie(request))
    return Refusal(-101) if account is None else account


def web_account(state: SimState, request: Request, body: dict[str, Any]) -> Account | Refusal:
    """Writes: cookies, and the csrf token (query or body) that must match their ``bili_jct``."""
    account = cookie_account(state, request)
    if isinstance(account, Refusal):
        return account
    csrf = request.query_params.get("csrf") or body.get("csrf")
    if csrf != account.bili_jct:
        return Refusal(-111, CSRF_FAILED)
    return account


def app_account(state: SimState, request: Request) -> Account | Refusal:
    """A known appkey, the query signed with its secret, and a live ``access_key``.

    The signature covers the raw query pieces sorted by name, as the apps
    send them, so re-encoding here would refuse what Bilibili accepts.
    """
    raw_query = request.url.query
    pieces = [p for p in raw_query.split("&") if p]
    params = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
    appsec = APP_KEYS.get(params.get("appkey", ""))
    if appsec is None:
        return Refusal(-1)
    signed = sorted(
        (p for p in pieces if p.split("=", 1)[0] != "sign"),
        key=lambda p: urllib.parse.unquote_plus(p.split("=", 1)[0]),
    )
    expected = hashlib.md5(("&".join(signed) + appsec).encode()).hexdigest()
    if params.get("sign", "").lower() != expected:
        return Refusal(-3, BAD_SIGN)
    account = state.accounts.by_access_key(params.get("access_key"))
    if account is None:
        return Refusal(-101)
    return account
