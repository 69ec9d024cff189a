"""Simulator: the creative centre's archive list, ``GET /x/web/archives``.

Shape (as the real member API answers, reduced to what a client reads):
``{"code":0,"message":"0","data":{"arc_audits":[{"Archive":{"aid","bvid","title",
"tid","tag","desc","copyright","state":0},"Videos":[{"aid","bvid","title",
"filename","cid","index"}]}],"page":{"pn","ps","count"}}}``, newest first, only
the logged-in account's archives (cookie ``SESSDATA``), else code -101.
bupmesh reads it to find out whether a submission whose answer was lost went
through, before it submits again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value))) if value else default
    except ValueError:
        return default


def endpoint(sim: Any) -> Callable[[Request], Awaitable[Response]]:
    """The route handler for ``sim`` (an ``uploader.sim.app.SimApp``)."""
    from uploader.sim.app import client_ip, member_reply

    async def archives(request: Request) -> Response:
        ip = client_ip(request)
        account = sim.account(request)
        if account is None:
            sim.state.record("archives", ip, status=200, code=-101)
            return member_reply(-101)
        pn = _int(request.query_params.get("pn"), 1, 1, 10_000)
        ps = _int(request.query_params.get("ps"), 10, 1, 50)
        mine = [s for s in reversed(sim.state.submissions) if s["mid"] == account.mid]
        page = mine[(pn - 1) * ps: pn * ps]
        audits = [
            {
                "Archive": {"aid": s["aid"], "bvid": s["bvid"], "title": s["title"],
                            "tid": s["tid"], "tag": s["tag"], "desc": s["desc"],
                            "copyright": s["copyright"], "state": 0},
                "Videos": [{"aid": s["aid"], "bvid": s["bvid"], "title": v["title"],
                            "filename": v["filename"], "cid": v["cid"], "index": i}
                           for i, v in enumerate(s["videos"], start=1)],
            }
            for s in page
        ]
        sim.state.record("archives", ip, status=200, code=0)
        return member_reply(0, "0", {"arc_audits": audits,
                                     "page": {"pn": pn, "ps": ps, "count": len(mine)}})

    return archives
