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

:class:`QrLogins` is the pure part (codes and their states on a given clock);
:class:`Passport` is the HTTP face. A confirmed login creates a simulator
account (fresh ``SESSDATA``, ``bili_jct`` and access key), so what the login
hands out really uploads and submits.
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
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.facts import APP_KEYS, BAD_SIGN
from uploader.sim.inbound import client_ip, session_cookie
from uploader.sim.state import SimState

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


@dataclass(frozen=True)
class Login:
    """What one confirmed QR login hands out."""

    mid: int
    sessdata: str
    bili_jct: str
    access_token: str
    refresh_token: str


class QrLogins:
    """QR codes, their states and the names confirmed with them; no HTTP, no accounts."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.sessions: dict[str, QrSession] = {}
        self.unames: dict[int, str] = {}
        self._next_mid = FIRST_QR_MID

    def new_session(self) -> QrSession:
        self._prune()
        session = QrSession(auth_code=secrets.token_hex(16), created_at=self.clock())
        self.sessions[session.auth_code] = session
        return session

    def current(self, auth_code: str) -> QrSession | None:
        session = self.sessions.get(auth_code)
        if session is not None and session.state in (WAITING, SCANNED, CONFIRMED):
            if self.clock() - session.created_at >= QR_TTL_SECONDS:
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

    def take_login(self, session: QrSession) -> Login:
        """Mint the secrets of a confirmed session; the code is used up."""
        assert session.state == CONFIRMED and session.mid is not None
        session.state = USED
        login = Login(
            mid=session.mid,
            sessdata=f"qr-sess-{secrets.token_hex(12)}",
            bili_jct=secrets.token_hex(16),
            access_token=f"qr-ak-{secrets.token_hex(12)}",
            refresh_token=f"qr-rt-{secrets.token_hex(12)}",
        )
        self.unames[session.mid] = session.uname or f"sim-user-{session.mid}"
        session.issued = {
            "SESSDATA": login.sessdata,
            "bili_jct": login.bili_jct,
            "access_token": login.access_token,
            "refresh_token": login.refresh_token,
        }
        return login

    def uname(self, mid: int) -> str:
        return self.unames.get(mid, f"sim-user-{mid}")

    def _prune(self) -> None:
        # Bounded memory: codes long past their TTL are forgotten.
        horizon = self.clock() - 10 * QR_TTL_SECONDS
        for code in [c for c, s in self.sessions.items() if s.created_at < horizon]:
            del self.sessions[code]


class Passport:
    """The passport's routes over :class:`QrLogins`; logins become accounts in ``SimState``.

    QR codes outlive ``/_sim/reset`` (a reset renews the simulator's data, not
    the phone in a tester's hand); the accounts they created do not.
    """

    def __init__(self, state: SimState, logins: QrLogins | None = None) -> None:
        self.state = state
        self.logins = logins or QrLogins()

    def routes(self) -> list[Route]:
        return [
            Route("/x/passport-tv-login/qrcode/auth_code", self.auth_code, methods=["POST"]),
            Route("/x/passport-tv-login/qrcode/poll", self.poll, methods=["POST"]),
            Route("/x/web-interface/nav", self.nav, methods=["GET"]),
            Route("/_sim/qr", self.list_sessions, methods=["GET"]),
            Route("/_sim/qr/{auth_code}/{action}", self.control, methods=["POST"]),
        ]

    async def auth_code(self, request: Request) -> Response:
        params, problem = await self._signed_params(request, ("appkey", "local_id", "ts"))
        if problem is not None:
            return problem
        session = self.logins.new_session()
        self._record(request, "qr_auth_code", 0)
        return replies.qr_code(session.auth_code)

    async def poll(self, request: Request) -> Response:
        params, problem = await self._signed_params(
            request, ("appkey", "auth_code", "local_id", "ts")
        )
        if problem is not None:
            return problem
        session = self.logins.current(params["auth_code"])
        if session is None:
            self._record(request, "qr_poll", -404)
            return replies.api_reply(-404, "啥都木有")
        if session.state == CONFIRMED:
            login = self.logins.take_login(session)
            self.state.accounts.add(
                cookies=f"SESSDATA={login.sessdata}; bili_jct={login.bili_jct}; "
                f"DedeUserID={login.mid}",
                access_key=login.access_token,
                mid=login.mid,
            )
            self._record(request, "qr_poll", 0)
            return replies.qr_login(
                mid=login.mid,
                sessdata=login.sessdata,
                bili_jct=login.bili_jct,
                access_token=login.access_token,
                refresh_token=login.refresh_token,
                sid=secrets.token_hex(4),
                expires_in=TOKEN_EXPIRES_IN,
                now=self.logins.clock(),
            )
        code = POLL_CODES[session.state]
        self._record(request, "qr_poll", code)
        return replies.api_reply(code, POLL_MESSAGES[code])

    async def nav(self, request: Request) -> Response:
        account = self.state.accounts.by_cookie(session_cookie(request))
        if account is None:
            self._record(request, "nav", -101)
            return replies.nav_logged_out()
        self._record(request, "nav", 0)
        return replies.nav_logged_in(account.mid, self.logins.uname(account.mid))

    async def control(self, request: Request) -> Response:
        """The phone: ``POST /_sim/qr/{auth_code}/{scan|confirm|expire}``."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return replies.control_error("body is not valid JSON")
        if not isinstance(body, dict):
            return replies.control_error("(top level): expected a JSON object")
        auth_code = request.path_params["auth_code"]
        status, error = self.logins.phone(auth_code, request.path_params["action"], body)
        if status != 200:
            return replies.control_error(error, status)
        session = self.logins.sessions[auth_code]
        return replies.control_ok({"auth_code": session.auth_code, "state": session.state})

    async def list_sessions(self, request: Request) -> Response:
        rows = []
        for code in list(self.logins.sessions):
            session = self.logins.current(code)
            assert session is not None
            rows.append(
                {
                    "auth_code": code,
                    "state": session.state,
                    "mid": session.mid,
                    "issued": session.issued,
                }
            )
        return replies.control_ok({"sessions": rows})

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
            return params, replies.api_bad_request(f"{missing[0]} is required")
        if params["appkey"] not in APP_KEYS or not verify_sign(params):
            self._record(request, op, -3)
            return params, replies.api_reply(-3, BAD_SIGN)
        return params, None

    def _record(self, request: Request, op: str, code: int) -> None:
        self.state.record(op, client_ip(request), status=200, code=code)
