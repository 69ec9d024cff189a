"""Bilibili's TV QR login: a phone scans a code and the "TV" gets cookies and app tokens.

The flow biliup and bilibili-api use (documented in bilibili-API-collect,
``docs/login/login_action/QR.md``, "TV端扫码登录"):

1. ``POST {passport}/x/passport-tv-login/qrcode/auth_code`` with the signed form
   ``appkey, local_id=0, ts`` -> ``{code: 0, data: {url, auth_code}}``; ``url`` is
   the QR content, the code lives 180 s.
2. ``POST {passport}/x/passport-tv-login/qrcode/poll`` with the signed form
   ``appkey, auth_code, local_id=0, ts`` -> ``code`` 86039 (not scanned yet),
   86090 (scanned, not confirmed), 86038 (expired) or 0 with
   ``data: {mid, access_token, refresh_token, expires_in, cookie_info: {cookies}}``.

The TV flow is chosen over the web one because it yields both the web cookies
(uploads, web submission) and an app ``access_token`` (app submission), the
same pair biliup stores in ``cookies.json``.

The request building and reply reading are plain functions (tested without a
network); :class:`TvLoginClient` only adds the two HTTP calls.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from uploader.submit import APP_KEY, APP_SECRET, sign_params

DEFAULT_PASSPORT_URL = "https://passport.bilibili.com"
AUTH_CODE_PATH = "/x/passport-tv-login/qrcode/auth_code"
POLL_PATH = "/x/passport-tv-login/qrcode/poll"
FORM = "application/x-www-form-urlencoded"

# Poll answers (bilibili-API-collect: 二维码尚未确认 / 已扫码未确认 / 已失效).
NOT_SCANNED = 86039
SCANNED = 86090
EXPIRED = 86038


class TvLoginError(Exception):
    """The passport refused or answered nonsense; the message carries no secret."""


class PollState(enum.Enum):
    WAITING = "waiting"
    SCANNED = "scanned"
    EXPIRED = "expired"
    DONE = "done"


@dataclass(frozen=True)
class QrCode:
    url: str  # what the QR shows; it embeds auth_code
    auth_code: str

    def __repr__(self) -> str:
        # Whoever polls with the auth code first gets the account: keep it out of logs.
        return "QrCode(url=<hidden>, auth_code=<hidden>)"


@dataclass(frozen=True)
class LoginResult:
    """What a confirmed login yields; secrets stay out of ``repr``."""

    mid: int
    access_token: str
    refresh_token: str
    expires_in: int
    cookies: dict[str, str]

    def to_biliup_json(self) -> dict[str, Any]:
        """biliup's ``cookies.json`` shape, which ``AccountStore.add(cookies_json=)`` takes."""
        return {
            "cookie_info": {
                "cookies": [{"name": name, "value": value} for name, value in self.cookies.items()]
            },
            "token_info": {
                "access_token": self.access_token,
                "mid": self.mid,
                "refresh_token": self.refresh_token,
                "expires_in": self.expires_in,
            },
        }

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.cookies))
        return f"LoginResult(mid={self.mid}, cookies=[{names}], tokens=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class PollOutcome:
    state: PollState
    result: LoginResult | None = None


def auth_code_form(now: float, *, local_id: str = "0") -> str:
    """The signed form body of step 1 (the bytes sent are the bytes signed)."""
    return sign_params(
        {"appkey": APP_KEY, "local_id": local_id, "ts": int(now)}, APP_SECRET
    )


def poll_form(auth_code: str, now: float, *, local_id: str = "0") -> str:
    """The signed form body of step 2."""
    return sign_params(
        {"appkey": APP_KEY, "auth_code": auth_code, "local_id": local_id, "ts": int(now)},
        APP_SECRET,
    )


def read_auth_code(payload: Any) -> QrCode:
    """``{code: 0, data: {url, auth_code}}`` -> :class:`QrCode`, else :class:`TvLoginError`."""
    code, data = _envelope(payload, "auth_code")
    if code != 0:
        raise TvLoginError(f"passport refused the QR request: code {code} {_message(payload)}")
    url = data.get("url") if isinstance(data, dict) else None
    auth_code = data.get("auth_code") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url or not isinstance(auth_code, str) or not auth_code:
        raise TvLoginError("passport answered the QR request without url/auth_code")
    return QrCode(url=url, auth_code=auth_code)


def read_poll(payload: Any) -> PollOutcome:
    """A poll reply -> its state, with the login when it is done."""
    code, data = _envelope(payload, "poll")
    if code == NOT_SCANNED:
        return PollOutcome(PollState.WAITING)
    if code == SCANNED:
        return PollOutcome(PollState.SCANNED)
    if code == EXPIRED:
        return PollOutcome(PollState.EXPIRED)
    if code != 0:
        raise TvLoginError(f"passport refused the poll: code {code} {_message(payload)}")
    if not isinstance(data, dict):
        raise TvLoginError("passport answered the poll with code 0 but no data")
    token_info = data.get("token_info") if isinstance(data.get("token_info"), dict) else {}
    access_token = data.get("access_token") or token_info.get("access_token")
    refresh_token = data.get("refresh_token") or token_info.get("refresh_token") or ""
    mid = data.get("mid", token_info.get("mid"))
    expires_in = data.get("expires_in", token_info.get("expires_in", 0))
    if not isinstance(access_token, str) or not access_token:
        raise TvLoginError("passport login reply has no access_token")
    if isinstance(mid, bool) or not isinstance(mid, int):
        raise TvLoginError("passport login reply has no integer mid")
    cookies: dict[str, str] = {}
    cookie_info = data.get("cookie_info")
    items = cookie_info.get("cookies") if isinstance(cookie_info, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
            cookies[item["name"]] = str(item.get("value", ""))
    return PollOutcome(
        PollState.DONE,
        LoginResult(
            mid=mid,
            access_token=access_token,
            refresh_token=refresh_token if isinstance(refresh_token, str) else "",
            expires_in=expires_in if isinstance(expires_in, int) else 0,
            cookies=cookies,
        ),
    )


def _envelope(payload: Any, step: str) -> tuple[int, Any]:
    if not isinstance(payload, dict) or isinstance(payload.get("code"), bool) or not isinstance(
        payload.get("code"), int
    ):
        raise TvLoginError(f"passport answered the {step} request with something not JSON-coded")
    return payload["code"], payload.get("data")


def _message(payload: dict[str, Any]) -> str:
    message = payload.get("message")
    return str(message)[:200] if message else ""


class TvLoginClient:
    """The two passport calls over one ``httpx.AsyncClient`` (never sends cookies)."""

    def __init__(
        self,
        passport_url: str = DEFAULT_PASSPORT_URL,
        *,
        timeout: float = 15,
        now: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = passport_url.rstrip("/")
        self._now = now
        self._timeout = timeout
        self._transport = transport

    async def request_qr(self) -> QrCode:
        return read_auth_code(await self._post(AUTH_CODE_PATH, auth_code_form(self._now())))

    async def poll(self, auth_code: str) -> PollOutcome:
        return read_poll(await self._post(POLL_PATH, poll_form(auth_code, self._now())))

    async def _post(self, path: str, form: str) -> Any:
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as http:
                response = await http.post(
                    self._base + path, content=form, headers={"Content-Type": FORM}
                )
        except httpx.HTTPError as exc:
            # Not the URL with its form: the poll form holds the auth code.
            raise TvLoginError(
                f"cannot reach the passport at {self._base}: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise TvLoginError(f"passport answered HTTP {response.status_code} to {path}")
        try:
            return response.json()
        except ValueError:
            raise TvLoginError(f"passport answered {path} with something not JSON") from None
