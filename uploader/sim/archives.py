"""The creative centre's reads: the archive list and one archive's view, and the review controls.

Routes (cookie ``SESSDATA``; only the logged-in account's archives, else -101):
- ``GET /x/web/archives?pn=&ps=``: ``{"data":{"arc_audits":[{"Archive":{"aid",
  "bvid","title",...,"state","state_desc","reject_reason","ctime"},"Videos":[...]
  | null}],"page":{"pn","ps","count"}}}``, newest first; ``Videos`` is null when
  ``archive.list_videos`` is false;
- ``GET /x/vupre/web/archive/view?aid=|bvid=``: ``{"data":{"archive":{...},
  "videos":[{"filename","cid","title",...}]}}``; -404 for an archive that is
  not there or not this account's.

Controls:
- ``GET /_sim/archives``: every archive with its cover, dtime, collection,
  edits, and its review state now;
- ``POST /_sim/archives/{aid}/review`` ``{"outcome": "approve"|"reject"|"pending",
  "reason"?, "after_seconds"?}``: decide one archive's review (after a delay).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies, review
from uploader.sim.callers import Refusal, cookie_account
from uploader.sim.faults import Faults
from uploader.sim.inbound import clamped_int, client_ip, query_int
from uploader.sim.state import SimState


class Archives:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/x/web/archives", self.archives, methods=["GET"]),
            Route("/x/vupre/web/archive/view", self.view, methods=["GET"]),
            Route("/_sim/archives", self.get_archives, methods=["GET"]),
            Route("/_sim/archives/{aid:int}/review", self.post_review, methods=["POST"]),
        ]

    def status(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        return review.status(record, now, self.state.config.archive.review.reason_field)

    async def archives(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(request, "archives", state.take_rule("archives", ip))
        if injected is not None:
            return injected
        account = cookie_account(state, request)
        if isinstance(account, Refusal):
            state.record("archives", ip, status=200, code=account.code)
            return replies.api_reply(account.code)
        pn = clamped_int(request.query_params.get("pn"), 1, 1, 10_000)
        ps = clamped_int(request.query_params.get("ps"), 10, 1, 50)
        mine = [s for s in reversed(state.submissions) if s["mid"] == account.mid]
        now = time.time()
        page = [(s, self.status(s, now)) for s in mine[(pn - 1) * ps : pn * ps]]
        state.record("archives", ip, status=200, code=0)
        return replies.archive_list(
            page, pn=pn, ps=ps, count=len(mine), with_videos=state.config.archive.list_videos
        )

    async def view(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(request, "view", state.take_rule("view", ip))
        if injected is not None:
            return injected
        account = cookie_account(state, request)
        if isinstance(account, Refusal):
            state.record("view", ip, status=200, code=account.code)
            return replies.api_reply(account.code)
        aid = query_int(request.query_params.get("aid"))
        bvid = request.query_params.get("bvid") or None
        record = state.archive(aid=aid, bvid=bvid) if (aid or bvid) else None
        if record is None or record["mid"] != account.mid:
            state.record("view", ip, status=200, code=-404)
            return replies.api_reply(-404)
        state.record("view", ip, status=200, code=0)
        return replies.archive_view(record, self.status(record, time.time()))

    async def get_archives(self, request: Request) -> Response:
        now = time.time()
        archives = [{**record, **self.status(record, now)} for record in self.state.submissions]
        return replies.control_ok({"archives": archives})

    async def post_review(self, request: Request) -> Response:
        record = self.state.archive(aid=request.path_params["aid"])
        if record is None:
            return replies.control_error("no such archive", 404)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return replies.control_error("body is not valid JSON")
        if not isinstance(body, dict):
            return replies.control_error("(top level): expected a JSON object")
        unknown = set(body) - {"outcome", "reason", "after_seconds"}
        if unknown:
            return replies.control_error(f"{sorted(unknown)[0]}: unknown field")
        outcome = body.get("outcome")
        if outcome not in review.OUTCOMES:
            return replies.control_error(f"outcome: expected one of {', '.join(review.OUTCOMES)}")
        reason = body.get("reason", record["review"]["reason"])
        after = body.get("after_seconds", 0)
        if not isinstance(reason, str):
            return replies.control_error("reason: expected str")
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            return replies.control_error("after_seconds: expected a number >= 0")
        now = time.time()
        record["review"] = {"due": now + after, "outcome": outcome, "reason": reason}
        return replies.control_ok({"archive": {**record, **self.status(record, now)}})
