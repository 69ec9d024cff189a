"""Editing an archive: ``POST /x/vu/web/edit?csrf=`` with the whole archive and ``aid``.

The body is an ``add/v3`` body plus ``aid`` (and ``csrf``), checked the same
way (:mod:`uploader.sim.checks`): it replaces the archive, so a field left out
is cleared and a video left out is removed, as users of the real endpoint
report. Only the videos the archive did not hold count against
``archive.max_parts`` (21058: "videos added by one operation"); a ``dtime``
kept as it was is not checked against its window again. An archive that is
not there or not the caller's answers -404. The edit goes into the archive's
``edits`` and sends it back to review.
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies, review
from uploader.sim.callers import Refusal, web_account
from uploader.sim.checks import check_archive
from uploader.sim.faults import Faults
from uploader.sim.inbound import client_ip
from uploader.sim.state import SimState


class Edit:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [Route("/x/vu/web/edit", self.edit, methods=["POST"])]

    async def edit(self, request: Request) -> Response:
        ip = client_ip(request)
        rule = self.state.take_rule("edit", ip)
        injected = await self.faults.injected(request, "edit", rule, body_first=True)
        if injected is not None:
            return injected
        return await self.faults.answer(request, rule, await self._edit(request, ip))

    async def _edit(self, request: Request, ip: str) -> Response:
        state = self.state
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        account = web_account(state, request, body if isinstance(body, dict) else {})
        if isinstance(account, Refusal):
            state.record("edit", ip, status=200, code=account.code)
            return replies.api_reply(account.code, account.message)
        aid = body.get("aid") if isinstance(body, dict) else None
        record = state.archive(aid=aid) if isinstance(aid, int) else None
        if record is None or record["mid"] != account.mid:
            state.record("edit", ip, status=200, code=-404)
            return replies.api_reply(-404)
        now = time.time()
        archive = check_archive(
            body, mid=account.mid, uploads=state.completed_upload,
            config=state.config.archive, now=now, existing=record,
        )  # fmt: skip
        if isinstance(archive, Refusal):
            state.record("edit", ip, status=200, code=archive.code)
            return replies.api_reply(archive.code, archive.message)
        before = [v["filename"] for v in record["videos"]]
        after = [v["filename"] for v in archive["videos"]]
        record.update(archive)
        record["review"] = review.scheduled(state.config.archive.review, now)
        record["edits"].append({
            "time": now,
            "source_ip": ip,
            "added": [name for name in after if name not in before],
            "removed": [name for name in before if name not in after],
        })  # fmt: skip
        state.record("edit", ip, status=200, code=0)
        return replies.archive_edited(record["aid"], record["bvid"])
