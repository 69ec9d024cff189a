"""The creative centre's archive list, ``GET /x/web/archives``.

Shape (as the real member API answers, reduced to what a client reads):
``{"code":0,"message":"0","data":{"arc_audits":[{"Archive":{"aid","bvid","title",
"tid","tag","desc","copyright","state":0},"Videos":[{"aid","bvid","title",
"filename","cid","index"}]}],"page":{"pn","ps","count"}}}``, newest first, only
the logged-in account's archives (cookie ``SESSDATA``), else code -101.
bupmesh reads it to find out whether a submission whose answer was lost went
through, before it submits again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.inbound import clamped_int, client_ip, session_cookie
from uploader.sim.state import SimState


class Archives:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [Route("/x/web/archives", self.archives, methods=["GET"])]

    async def archives(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        account = state.accounts.by_cookie(session_cookie(request))
        if account is None:
            state.record("archives", ip, status=200, code=-101)
            return replies.api_reply(-101)
        pn = clamped_int(request.query_params.get("pn"), 1, 1, 10_000)
        ps = clamped_int(request.query_params.get("ps"), 10, 1, 50)
        mine = [s for s in reversed(state.submissions) if s["mid"] == account.mid]
        page = mine[(pn - 1) * ps : pn * ps]
        state.record("archives", ip, status=200, code=0)
        return replies.archive_list(page, pn=pn, ps=ps, count=len(mine))
