"""The admin API over Bilibili accounts: add, list, delete, check, log in by QR code.

Account bodies are the one place secrets come in over HTTP: their cookie values
and keys are registered with the log scrubber before anything can log them, and
no response carries them back (``redact``; the account store only returns public
rows).
"""

from __future__ import annotations

import logging
from typing import Any

import qrcode
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bupmesh.logs import register_secret
from hub.accounts.check import check_account
from hub.accounts.qr_login import QrLogins
from hub.api.auth import Auth
from hub.api.bodies import AccountBody, AccountLoginBody, decode_body, read_body, read_limited
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.config import BilibiliSettings
from hub.service import HubService
from uploader.nav import NavError
from uploader.tv_login import TvLoginClient, TvLoginError

log = logging.getLogger("bupmesh.hub.http")


def account_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    # Where Bilibili's passport (QR login) and api (nav check) are; tests point them
    # at the simulator. A service without a config (test fakes) gets the real hosts.
    bili = getattr(getattr(service, "config", None), "bilibili", None) or BilibiliSettings()

    async def check(account: int | str) -> dict[str, Any]:
        try:
            return await check_account(service.accounts, account, api_url=bili.api_url)
        except NavError as exc:
            raise ApiError(502, f"validity check failed: {exc}") from None

    qr_logins = QrLogins(service.accounts, TvLoginClient(bili.passport_url), after_login=check)

    async def add_account(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, AccountBody)
        register_account_secrets(body)
        account_id = await service.accounts.add(
            body.name,
            cookies=body.cookies,
            cookies_json=body.cookies_json,
            access_key=body.access_key,
            mid=body.mid,
        )
        log.info("account %r added (id %s)", body.name, account_id)
        return ok({"account_id": account_id})

    async def list_accounts(request: Request) -> Response:
        auth.require_admin(request)
        return ok({"accounts": redact(await service.accounts.list())})

    async def check_account_route(request: Request) -> Response:
        """``POST /api/manage/accounts/{account}/check`` -> the account with valid/uname/checked_at."""
        auth.require_admin(request)
        row = await check(request.path_params["account"])
        log.info("account %r checked: %s", row["name"], "valid" if row["valid"] else "invalid")
        return ok(redact(row))

    async def delete_account(request: Request) -> Response:
        auth.require_admin(request)
        row = await service.accounts.delete(request.path_params["account"])
        log.info("account %r deleted (id %s)", row["name"], row["account_id"])
        return ok({"account_id": row["account_id"]}, message="Account deleted")

    async def start_qr_login(request: Request) -> Response:
        """``POST /api/manage/accounts/qr-login {name?}`` -> ``{login_id, url, expires_in,
        modules}``; ``modules`` is the QR code of ``url`` for the web console to draw."""
        auth.require_admin(request)
        raw = await read_limited(request)
        name = decode_body(raw, AccountLoginBody).name if raw.strip() else None
        try:
            started = await qr_logins.start(name)
        except TvLoginError as exc:
            raise ApiError(502, f"QR login: {exc}") from None
        return ok(redact({**started, "modules": qr_modules(started["url"])}))

    async def qr_login_status(request: Request) -> Response:
        """``GET /api/manage/accounts/qr-login/{login_id}`` -> state waiting|scanned|expired|done|failed."""
        auth.require_admin(request)
        return ok(redact(await qr_logins.status(request.path_params["login_id"])))

    return [
        Route("/api/manage/accounts", guard(add_account), methods=["POST"]),
        Route("/api/manage/accounts", guard(list_accounts), methods=["GET"]),
        Route("/api/manage/accounts/qr-login", guard(start_qr_login), methods=["POST"]),
        Route("/api/manage/accounts/qr-login/{login_id}", guard(qr_login_status),
              methods=["GET"]),
        Route("/api/manage/accounts/{account}/check", guard(check_account_route),
              methods=["POST"]),
        Route("/api/manage/accounts/{account}", guard(delete_account), methods=["DELETE"]),
    ]


def qr_modules(text: str) -> list[str]:
    """The QR code of ``text`` as rows of ``1`` (dark) and ``0``, without the quiet zone:
    the page draws it as SVG, so it needs no image and no QR library of its own."""
    qr = qrcode.QRCode(border=0)
    qr.add_data(text)
    qr.make(fit=True)
    return ["".join("1" if dark else "0" for dark in row) for row in qr.get_matrix()]


def register_account_secrets(body: AccountBody) -> None:
    """From now on this process's logs scrub the account's cookie values and keys
    (bupmesh.logs), even where they appear bare, without their ``NAME=``."""
    public = {"DedeUserID"}  # the account's user id (mid): public, and scrubbing it would
    # blank every log number that happens to equal it
    pairs = [piece.partition("=") for piece in (body.cookies or "").split(";")]
    values = [v.strip() for k, _, v in pairs if k.strip() not in public]
    if body.cookies_json:
        info = body.cookies_json.get("cookie_info")
        for cookie in (info or {}).get("cookies", []) if isinstance(info, dict) else []:
            if (isinstance(cookie, dict) and isinstance(cookie.get("value"), str)
                    and cookie.get("name") not in public):
                values.append(cookie["value"])
        token = body.cookies_json.get("token_info")
        if isinstance(token, dict):
            values += [v for k, v in token.items() if "token" in k and isinstance(v, str)]
    for value in [*values, body.access_key]:
        register_secret(value)
