"""The creative centre's writes: cover upload and submission, from the web and from the app.

Routes:
- ``POST /x/vu/web/cover/up``: a ``data:image/...;base64,`` cover -> its URL
  (the image is kept: ``GET /_sim/covers`` lists covers, ``/_sim/covers/{name}``
  serves one's bytes);
- ``POST /x/vu/web/add/v3``: a submission with cookies + ``csrf`` (``bili_jct``);
- ``POST /x/vu/app/add``: the same body, signed with an app key and an
  ``access_key`` instead of cookies.

Both submission flavours check the body as the real API does
(:mod:`uploader.sim.checks`) and accept only videos this account uploaded;
each accepted submission becomes an archive in the ledger
(``GET /_sim/submissions``, ``/_sim/archives``, ``x/web/archives``), pending
review as ``archive.review`` says (:mod:`uploader.sim.review`). A valid
submission may still be refused by the account's limits (``submit`` in the
config: 21566, 137022, the sticky 21515, 21590), whatever IP it comes from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies, review
from uploader.sim.accounts import Account
from uploader.sim.callers import Refusal, app_account, web_account
from uploader.sim.checks import check_archive
from uploader.sim.facts import CSRF_FAILED, SUBMIT_TOO_FAST
from uploader.sim.faults import Faults
from uploader.sim.inbound import client_ip, session_cookie
from uploader.sim.state import SimState

Authorize = Callable[[Request, dict[str, Any]], Account | Refusal]
_IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg",
                "gif": "image/gif", "webp": "image/webp"}  # fmt: skip


class Member:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/x/vu/web/cover/up", self.cover, methods=["POST"]),
            Route("/x/vu/web/add/v3", self.submit_web, methods=["POST"]),
            Route("/x/vu/app/add", self.submit_app, methods=["POST"]),
            Route("/_sim/covers", self.get_covers, methods=["GET"]),
            Route("/_sim/covers/{name}", self.get_cover, methods=["GET"]),
        ]

    # --- cover -------------------------------------------------------------------

    async def cover(self, request: Request) -> Response:
        ip = client_ip(request)
        rule = self.state.take_rule("cover", ip)
        injected = await self.faults.injected(request, "cover", rule, body_first=True)
        if injected is not None:
            return injected
        return await self.faults.answer(request, rule, await self._cover(request, ip))

    async def _cover(self, request: Request, ip: str) -> Response:
        state = self.state
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
        ext = head.removeprefix("data:image/")
        try:
            if not (sep and head.startswith("data:image/") and ext in _IMAGE_TYPES):
                raise ValueError
            image = base64.b64decode(data, validate=True)
            if not image:
                raise ValueError
        except (ValueError, binascii.Error):
            state.record("cover", ip, status=200, code=-400)
            return replies.api_bad_request("cover must be data:image/...;base64,...")
        name = f"{hashlib.sha1(image).hexdigest()}.{'jpg' if ext == 'jpeg' else ext}"
        state.covers[name] = {
            "name": name,
            "url": replies.COVER_HOST + name,
            "mime": _IMAGE_TYPES[ext],
            "size": len(image),
            "md5": hashlib.md5(image).hexdigest(),
            "mid": account.mid,
            "source_ip": ip,
            "time": state.wall_clock(),
            "image": image,
        }
        state.record("cover", ip, status=200, code=0)
        return replies.cover_uploaded(name)

    async def get_covers(self, request: Request) -> Response:
        covers = [{k: v for k, v in c.items() if k != "image"} for c in self.state.covers.values()]
        return replies.control_ok({"covers": covers})

    async def get_cover(self, request: Request) -> Response:
        cover = self.state.covers.get(request.path_params["name"])
        if cover is None:
            return replies.control_error("no such cover", 404)
        return replies.cover_image(cover["image"], cover["mime"])

    # --- submissions ---------------------------------------------------------------

    async def submit_web(self, request: Request) -> Response:
        return await self.submit(
            request, "web", lambda req, body: web_account(self.state, req, body)
        )

    async def submit_app(self, request: Request) -> Response:
        return await self.submit(request, "app", lambda req, body: app_account(self.state, req))

    async def submit(self, request: Request, flavour: str, authorize: Authorize) -> Response:
        ip = client_ip(request)
        rule = self.state.take_rule("submit", ip)
        injected = await self.faults.injected(request, "submit", rule, body_first=True)
        if injected is not None:
            return injected
        response = await self._submit(request, ip, flavour, authorize)
        return await self.faults.answer(request, rule, response)

    async def _submit(
        self, request: Request, ip: str, flavour: str, authorize: Authorize
    ) -> Response:
        state = self.state
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        account = authorize(request, body if isinstance(body, dict) else {})
        if isinstance(account, Refusal):
            state.record("submit", ip, status=200, code=account.code)
            return replies.api_reply(account.code, account.message)
        if ip in state.config.risk.code_601:
            state.record("submit", ip, status=200, code=21540)
            return replies.api_reply(21540, SUBMIT_TOO_FAST)
        now = state.wall_clock()
        archive = check_archive(
            body, mid=account.mid, uploads=state.completed_upload,
            config=state.config.archive, now=now,
        )  # fmt: skip
        if isinstance(archive, Refusal):
            state.record("submit", ip, status=200, code=archive.code)
            return replies.api_reply(archive.code, archive.message)
        refused = state.submit_refusal(account.mid, flavour)
        if refused is not None:
            state.record("submit", ip, status=200, code=refused)
            return replies.api_reply(refused)
        state.count_submission(account.mid)
        aid, bvid = state.new_archive()
        state.submissions.append({
            "aid": aid,
            "bvid": bvid,
            "flavour": flavour,
            **archive,
            "source_ip": ip,
            "mid": account.mid,
            "time": now,
            "ctime": int(now),
            "review": review.scheduled(state.config.archive.review, now),
            "season": None,
            "edits": [],
        })  # fmt: skip
        state.record("submit", ip, status=200, code=0)
        return replies.archive_created(aid, bvid)
