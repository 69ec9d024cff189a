"""Are these cookies still logged in? ``GET {api}/x/web-interface/nav`` answers.

Bilibili's navigation-bar endpoint is the cheapest "who am I": with valid
cookies it answers ``{code: 0, data: {isLogin: true, mid, uname, ...}}``, with
expired or missing ones ``{code: -101, data: {isLogin: false}}``. Cookies expire
(about six months, or when the user logs out elsewhere), so the hub checks an
account on demand and stores the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from uploader.client import DEFAULT_API_URL, USER_AGENT
from uploader.credentials import Credentials

__all__ = ["DEFAULT_API_URL", "NavError", "NavResult", "check_login", "read_nav"]
NAV_PATH = "/x/web-interface/nav"
NOT_LOGGED_IN = -101


class NavError(Exception):
    """The check could not be made (network, odd reply): validity is unknown, not false."""


@dataclass(frozen=True)
class NavResult:
    logged_in: bool
    mid: int | None = None
    uname: str | None = None


def read_nav(payload: Any) -> NavResult:
    """A nav reply -> logged in (with mid and name) or not; anything else is ``NavError``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("code"), int):
        raise NavError("nav answered something that is not a JSON envelope")
    code, data = payload["code"], payload.get("data")
    if code == NOT_LOGGED_IN:
        return NavResult(logged_in=False)
    if code != 0 or not isinstance(data, dict):
        raise NavError(f"nav answered code {code}")
    if not data.get("isLogin"):
        return NavResult(logged_in=False)
    mid = data.get("mid")
    uname = data.get("uname")
    return NavResult(
        logged_in=True,
        mid=mid if isinstance(mid, int) and not isinstance(mid, bool) else None,
        uname=uname if isinstance(uname, str) else None,
    )


async def check_login(
    credentials: Credentials,
    *,
    api_url: str = DEFAULT_API_URL,
    http_timeout: float = 15,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NavResult:
    """Ask nav whether ``credentials``' cookies are logged in."""
    if not credentials.cookies:
        raise NavError("the account has no cookies to check (app token only)")
    base = api_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=http_timeout, transport=transport) as http:
            response = await http.get(
                base + NAV_PATH,
                headers={"Cookie": credentials.cookie_header(), "User-Agent": USER_AGENT},
            )
    except httpx.HTTPError as exc:
        raise NavError(f"cannot reach {base}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise NavError(f"nav answered HTTP {response.status_code}")
    try:
        return read_nav(response.json())
    except ValueError:
        raise NavError("nav answered something that is not JSON") from None
