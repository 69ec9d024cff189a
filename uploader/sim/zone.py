"""``GET /x/web-interface/zone``: the caller's address as Bilibili sees it.

Bilibili's web interface answers anyone (no cookies needed)
``{"code":0,"message":"0","ttl":1,"data":{"addr","country","province","city","isp",
"latitude","longitude","zone_id","country_code"}}``. ``addr`` is the address the
request arrived from: behind a proxy, the proxy's outgoing address. Agents
ask it to learn the egress their uploads are counted under; here ``addr`` is
the socket's peer address, as the risk model sees it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.faults import Faults
from uploader.sim.inbound import client_ip
from uploader.sim.state import SimState


class Zone:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [Route("/x/web-interface/zone", self.zone, methods=["GET"])]

    async def zone(self, request: Request) -> Response:
        ip = client_ip(request)
        injected = await self.faults.injected(request, "zone", self.state.take_rule("zone", ip))
        if injected is not None:
            return injected
        self.state.record("zone", ip, status=200, code=0)
        return replies.zone(ip)
