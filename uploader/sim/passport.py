"""The simulator's passport: TV QR login, the nav "who am I", and a phone to scan with.

Real routes (shapes from bilibili-API-collect ``docs/login/login_action/QR.md``
and ``docs/login/login_info.md``):
- ``POST /x/passport-tv-login/qrcode/auth_code`` (signed ``appkey, local_id, ts``)
- ``POST /x/passport-tv-login/qrcode/poll`` (signed ``appkey, auth_code, local_id, ts``):
  86039 not scanned, 86090 scanned, 86038 expired or already used, 0 + tokens
- ``GET /x/web-interface/nav`` with cookies: ``isLogin``, ``mid``, ``uname`` or -101

Control routes play the user's phone:
- ``POST /_sim/qr/{auth_code}/scan``, ``/confirm`` (optional body ``{mid, uname}``),
  ``/expire``; ``GET /_sim/qr`` lists the codes, their states and what each
  login handed out (so a test can look for those secrets where they must not be).

A confirmed login creates a simulator account (fresh ``SESSDATA``, ``bili_jct``
and access key), so what the login hands out really uploads and submits.
Parameters are accepted in the form body or the query (real clients send
the form; API docs show the query) and the signature is checked over both.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uploader.sim.facts import APP_KEYS, BAD_REQUEST, BAD_SIGN, NOT_LOGGED_IN

QR_TTL_SECONDS = 180.0  # 密钥超时为180秒
TOKEN_EXPIRES_IN = 15_552_000  # 180 days, what the real poll answers
FIRST_QR_MID = 20_001

WAITING, SCANNED, CONFIRMED, USED, EXPIRED = "waiting", "scanned", "confirmed", "used", "expired"
POLL_CODES = {WAITING: 86039, SCANNED: 86090, USED: 86038, EXPIRED: 86038}
POLL_MESSAGES = {86039: "二维码尚未确认", 86090: "二维码已扫码未确认", 86038: "二维码已失效"}


@dataclass
class QrSession:
    auth_code: str
    created_at: float
    state: str = WAITING
    mid: int | None = None
    uname: str | None = None
    issued: dict[str, str] | None = None  # what the login handed out, for GET /_sim/qr


def verify_sign(params: dict[str, str]) -> bool:
    """md5(sorted urlencoded params without ``sign`` + appsec) == ``sign``, for a known appkey."""
    appsec = APP_KEYS.get(params.get("appkey", ""))
    if appsec is None:
        return False
    query = urllib.parse.urlencode(sorted((k, v) for k, v in params.items() if k != "sign"))
    expected = hashlib.md5((query + appsec).encode()).hexdigest()
    return secrets.compare_digest(params.get("sign", "").lower(), expected)


class Passport:
    """QR sessions plus the routes; accounts go into the simulator's ``SimState``."""

    def __init__(self, sim: Any, *, clock: Callable[[], float] = time.time) -> None:
        self._sim = sim  # SimApp; always reach accounts through sim.state (reset renews them)
        self._clock = clock
        self.sessions: dict[str, QrSession] = {}
        self.unames: dict[int, str] = {}
        self._next_mid = FIRST_QR_MID

    # --- pure-ish state transitions (tested directly) -----------------------

    def new_session(self) -> QrSession:
        self._prune()
        session = QrSession(auth_code=secrets.token_hex(16), created_at=self._clock())
        self.sessions[session.auth_code] = session
        return session

    def current(self, auth_code: str) -> QrSession | None:
        session = self.sessions.get(auth_code)
        if session is not None and session.state in (WAITING, SCANNED, CONFIRMED):
            if self._clock() - session.created_at >= QR_TTL_SECONDS:
                session.state = EXPIRED
        return session

    def phone(self, auth_code: str, action: str, body: dict[str, Any]) -> tuple[int, str]:
        """The user's phone: scan, confirm or (for tests) expire; -> (HTTP status, error)."""
        session = self.current(auth_code)
        if session is None:
            return 404, "no such auth_code"
        if action == "expire":
            session.state = EXPIRED
            return 200, ""
        if session.state == EXPIRED:
            return 409, "the QR code has expired"
        if action == "scan":
            if session.state != WAITING:
                return 409, f"cannot scan a QR code that is {session.state}"
            session.state = SCANNED
            return 200, ""
        if action == "confirm":
            if session.state != SCANNED:
                return 409, f"cannot confirm a QR code that is {session.state} (scan first)"
            mid = body.get("mid")
            if mid is None:
                mid, self._next_mid = self._next_mid, self._next_mid + 1
            if isinstance(mid, bool) or not isinstance(mid, int) or mid <= 0:
                return 400, "mid: expected a positive integer"
            uname = body.get("uname")
            if uname is not None and not isinstance(uname, str):
                return 400, "uname: expected a string"
            session.mid, session.uname = mid, uname
            session.state = CONFIRMED
            return 200, ""
        return 404, f"unknown action {action!r}"

    def take_login(self, session: QrSession) -> dict[str, Any]:
        """Turn a confirmed session into a new simulator account; the code is used up."""
        assert session.state == CONFIRMED and session.mid is not None
        session.state = USED
        sessdata = f"qr-sess-{secrets.token_hex(12)}"
        bili_jct = secrets.token_hex(16)
        access_token = f"qr-ak-{secrets.token_hex(12)}"
        refresh_token = f"qr-rt-{secrets.token_hex(12)}"
        self._sim.state.add_account(
            cookies=f"SESSDATA={sessdata}; bili_jct={bili_jct}; DedeUserID={session.mid}",
            access_key=access_token,
            mid=session.mid,
        )
        self.unames[session.mid] = session.uname or f"sim-user-{session.mid}"
        session.issued = {
            "SESSDATA": sessdata,
            "bili_jct": bili_jct,
            "access_token": access_token,
            "refresh_token": refresh_token,
        }
        expires = int(self._clock()) + TOKEN_EXPIRES_IN
        token_info = {
            "mid": session.mid,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "expires_in": TOKEN_EXPIRES_IN,
        }
        cookies = [
            ("SESSDATA", sessdata, 1),
            ("bili_jct", bili_jct, 0),
            ("DedeUserID", str(session.mid), 0),
            ("DedeUserID__ckMd5", hashlib.md5(str(session.mid).encode()).hexdigest()[:16], 0),
            ("sid", secrets.token_hex(4), 0),
        ]
        return {
            "is_new": False,
            **token_info,
            "token_info": token_info,
            "cookie_info": {
                "cookies": [
                    {"name": n, "value": v, "http_only": h, "expires": expires, "secure": 0}
                    for n, v, h in cookies
                ],
                "domains": [".bilibili.com", ".biligame.com"],
            },
            "sso": ["https://passport.bilibili.com/api/v2/sso"],
        }

    def _prune(self) -> None:
        # Bounded memory: codes long past their TTL are forgotten.
        horizon = self._clock() - 10 * QR_TTL_SECONDS
        for code in [c for c, s in self.sessions.items() if s.created_at < horizon]:
            del self.sessions[code]

    # --- HTTP -------------------------------------------------------------------

    async def auth_code(self, request: Request) -> Response:
        params, problem = await self._signed_params(request, ("appkey", "local_id", "ts"))
        if problem is not None:
            return problem
        session = self.new_session()
        self._record(request, "qr_auth_code", 0)
        url = (
            "https://passport.bilibili.com/x/passport-tv-login/h5/qrcode/auth?auth_code="
            + session.auth_code
        )
        return _reply(0, "0", {"url": url, "auth_code": session.auth_code})

    async def poll(self, request: Request) -> Response:
        params, problem = await self._signed_params(
            request, ("appkey", "auth_code", "local_id", "ts")
        )
        if problem is not None:
            return problem
        session = self.current(params["auth_code"])
        if session is None:
            self._record(request, "qr_poll", -404)
            return _reply(-404, "啥都木有")
        if session.state == CONFIRMED:
            data = self.take_login(session)
            self._record(request, "qr_poll", 0)
            return _reply(0, "0", data)
        code = POLL_CODES[session.state]
        self._record(request, "qr_poll", code)
        return _reply(code, POLL_MESSAGES[code])

    async def nav(self, request: Request) -> Response:
        account = self._sim.state.account_by_cookie(request.cookies.get("SESSDATA"))
        if account is None:
            self._record(request, "nav", -101)
            return _reply(-101, NOT_LOGGED_IN, {"isLogin": False})
        self._record(request, "nav", 0)
        uname = self.unames.get(account.mid, f"sim-user-{account.mid}")
        return _reply(
            0, "0", {"isLogin": True, "mid": account.mid, "uname": uname, "email_verified": 1}
        )

    async def control(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "(top level): expected a JSON object"}, status_code=400)
        status, error = self.phone(
            request.path_params["auth_code"], request.path_params["action"], body
        )
        if status != 200:
            return JSONResponse({"error": error}, status_code=status)
        session = self.sessions[request.path_params["auth_code"]]
        return JSONResponse({"auth_code": session.auth_code, "state": session.state})

    async def list_sessions(self, request: Request) -> Response:
        rows = []
        for code in list(self.sessions):
            session = self.current(code)
            assert session is not None
            rows.append(
                {
                    "auth_code": code,
                    "state": session.state,
                    "mid": session.mid,
                    "issued": session.issued,
                }
            )
        return JSONResponse({"sessions": rows})

    async def _signed_params(
        self, request: Request, required: tuple[str, ...]
    ) -> tuple[dict[str, str], Response | None]:
        raw = (await request.body()).decode("utf-8", "replace")
        params = dict(urllib.parse.parse_qsl(request.url.query, keep_blank_values=True))
        params.update(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        op = "qr_poll" if "auth_code" in required else "qr_auth_code"
        missing = [key for key in (*required, "sign") if not params.get(key)]
        if missing:
            self._record(request, op, -400)
            return params, _reply(-400, f"{BAD_REQUEST}: {missing[0]} is required")
        if params["appkey"] not in APP_KEYS or not verify_sign(params):
            self._record(request, op, -3)
            return params, _reply(-3, BAD_SIGN)
        return params, None

    def _record(self, request: Request, op: str, code: int) -> None:
        ip = request.client.host if request.client else "unknown"
        self._sim.state.record(op, ip, status=200, code=code)


def _reply(code: int, message: str, data: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "ttl": 1}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def passport_routes(sim: Any) -> list[Route]:
    """The passport's routes, for ``uploader.sim.app.build_app`` to splice in."""
    passport = Passport(sim)
    sim.passport = passport
    return [
        Route("/x/passport-tv-login/qrcode/auth_code", passport.auth_code, methods=["POST"]),
        Route("/x/passport-tv-login/qrcode/poll", passport.poll, methods=["POST"]),
        Route("/x/web-interface/nav", passport.nav, methods=["GET"]),
        Route("/_sim/qr", passport.list_sessions, methods=["GET"]),
        Route("/_sim/qr/{auth_code}/{action}", passport.control, methods=["POST"]),
    ]
