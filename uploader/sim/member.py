"""The creative centre's writes: cover upload and submission, from the web and from the app.

Routes:
- ``POST /x/vu/web/cover/up``: a ``data:image/...;base64,`` cover -> its URL;
- ``POST /x/vu/web/add/v3``: a submission with cookies + ``csrf`` (``bili_jct``);
- ``POST /x/vu/app/add``: the same body, signed with an app key and an
  ``access_key`` instead of cookies.

Both submission flavours check the body as the real API does and accept only
videos this account uploaded; each accepted submission becomes an archive in
the ledger (``GET /_sim/submissions``, ``x/web/archives``). A valid submission
may still be refused by the account's limits (``submit`` in the config:
21566, 137022, the sticky 21515, 21590), whatever IP it comes from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.accounts import Account
from uploader.sim.facts import APP_KEYS, BAD_SIGN, CSRF_FAILED, SUBMIT_TOO_FAST
from uploader.sim.faults import Faults
from uploader.sim.inbound import client_ip, session_cookie
from uploader.sim.state import SimState


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let in: a JSON API code and its message (None: the usual text)."""

    code: int
    message: str | None = None


Authorize = Callable[[Request, dict[str, Any]], Awaitable[Account | Refusal]]


class Member:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/x/vu/web/cover/up", self.cover, methods=["POST"]),
            Route("/x/vu/web/add/v3", self.submit_web, methods=["POST"]),
            Route("/x/vu/app/add", self.submit_app, methods=["POST"]),
        ]

    # --- who is asking ---------------------------------------------------------

    async def web_account(self, request: Request, body: dict[str, Any]) -> Account | Refusal:
        """Cookies, and the CSRF token (query or body) that must match their ``bili_jct``."""
        account = self.state.accounts.by_cookie(session_cookie(request))
        if account is None:
            return Refusal(-101)
        csrf = request.query_params.get("csrf") or body.get("csrf")
        if csrf != account.bili_jct:
            return Refusal(-111, CSRF_FAILED)
        return account

    async def app_account(self, request: Request, body: dict[str, Any]) -> Account | Refusal:
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
        account = self.state.accounts.by_access_key(params.get("access_key"))
        if account is None:
            return Refusal(-101)
        return account

    # --- cover -------------------------------------------------------------------

    async def cover(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(
            request, "cover", state.take_rule("cover", ip), body_first=True
        )
        if injected is not None:
            return injected
        raw = await request.body()
        account = state.accounts.by_cookie(session_cookie(request))
        if account is None:
            state.record("cover", ip, status=200, code=-101)
            return replies.api_reply(-101)
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        csrf = (form.get("csrf") or [request.query_params.get("csrf", "")])[0]
        if csrf != account.bili_jct:
            state.record("cover", ip, status=200, code=-111)
            return replies.api_reply(-111, CSRF_FAILED)
        cover = (form.get("cover") or [""])[0]
        head, sep, data = cover.partition(";base64,")
        try:
            if not (sep and head.startswith("data:image/")):
                raise ValueError
            image = base64.b64decode(data, validate=True)
            if not image:
                raise ValueError
        except (ValueError, binascii.Error):
            state.record("cover", ip, status=200, code=-400)
            return replies.api_bad_request("cover must be data:image/...;base64,...")
        ext = "png" if head.endswith("png") else "jpg"
        state.record("cover", ip, status=200, code=0)
        return replies.cover_uploaded(hashlib.sha1(image).hexdigest(), ext)

    # --- submissions ---------------------------------------------------------------

    async def submit_web(self, request: Request) -> Response:
        return await self.submit(request, "web", self.web_account)

    async def submit_app(self, request: Request) -> Response:
        return await self.submit(request, "app", self.app_account)

    async def submit(self, request: Request, flavour: str, authorize: Authorize) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(
            request, "submit", state.take_rule("submit", ip), body_first=True
        )
        if injected is not None:
            return injected
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        account = await authorize(request, body if isinstance(body, dict) else {})
        if isinstance(account, Refusal):
            state.record("submit", ip, status=200, code=account.code)
            return replies.api_reply(account.code, account.message)
        if ip in state.config.risk.code_601:
            state.record("submit", ip, status=200, code=21540)
            return replies.api_reply(21540, SUBMIT_TOO_FAST)
        videos, problem = self.check_submission(body, account.mid)
        if problem is not None:
            state.record("submit", ip, status=200, code=-400)
            return replies.api_bad_request(problem)
        assert isinstance(body, dict)
        refused = state.submit_refusal(account.mid, flavour)
        if refused is not None:
            state.record("submit", ip, status=200, code=refused)
            return replies.api_reply(refused)
        state.count_submission(account.mid)
        aid, bvid = state.new_archive()
        state.submissions.append(
            {
                "aid": aid,
                "bvid": bvid,
                "flavour": flavour,
                "title": body["title"],
                "tid": body["tid"],
                "tag": body.get("tag") or "",
                "desc": body.get("desc") or "",
                "copyright": body["copyright"],
                "source": body.get("source") or "",
                "cover": body.get("cover") or "",
                "videos": videos,
                "source_ip": ip,
                "mid": account.mid,
                "time": state.wall_clock(),
            }
        )
        state.record("submit", ip, status=200, code=0)
        return replies.archive_created(aid, bvid)

    def check_submission(self, body: Any, mid: int) -> tuple[list[dict], str | None]:
        """The videos as the archive keeps them, or what is wrong with the body."""
        if not isinstance(body, dict):
            return [], "body must be a JSON object"
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            return [], "title is required"
        if len(title) > 80:
            return [], "title is longer than 80 characters"
        tid = body.get("tid")
        if not isinstance(tid, int) or isinstance(tid, bool) or tid <= 0:
            return [], "tid must be a positive integer"
        if body.get("copyright") not in (1, 2):
            return [], "copyright must be 1 or 2"
        for key in ("tag", "desc", "source", "cover", "dynamic"):
            if body.get(key) is not None and not isinstance(body.get(key), str):
                return [], f"{key} must be a string"
        videos = body.get("videos")
        if not isinstance(videos, list) or not videos:
            return [], "videos must be a non-empty list"
        checked = []
        for index, video in enumerate(videos):
            if not isinstance(video, dict) or not isinstance(video.get("filename"), str):
                return [], f"videos[{index}].filename is required"
            record = self.state.completed_upload(video["filename"])
            if record is None or record["mid"] != mid:
                return (
                    [],
                    f"videos[{index}].filename {video['filename']!r} is not an upload of this account",
                )
            cid = video.get("cid") or 0
            if not isinstance(cid, int) or (cid and cid != record["biz_id"]):
                return [], f"videos[{index}].cid {cid!r} != biz_id {record['biz_id']}"
            checked.append(
                {
                    "filename": video["filename"],
                    "title": video.get("title") or "",
                    "desc": video.get("desc") or "",
                    "cid": cid or record["biz_id"],
                }
            )
        return checked, None
