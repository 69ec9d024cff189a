"""Upload lines: the probe list ``preupload?r=probe`` hands out and each line's probe URL.

A line is a ``zone_upcdn`` name; clients time a small request to each probe
URL and upload through the fastest. Each line's configured delay slows its
probe answer, which is how tests make one line the fastest.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.faults import Faults
from uploader.sim.inbound import client_ip, drain, host_of
from uploader.sim.state import SimState


class Lines:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/OK", self.probe_ping, methods=["GET", "POST"]),
            Route("/upcdn/{line}/OK", self.probe_ping, methods=["GET", "POST"]),
        ]

    async def probe_list(self, request: Request) -> Response:
        """``GET /preupload?r=probe`` (routed here by the preupload handler)."""
        self.state.record("probe", client_ip(request), status=200)
        return replies.probe_list(host_of(request), self.state.config.lines)

    async def probe_ping(self, request: Request) -> Response:
        ip = client_ip(request)
        line = request.path_params.get("line")
        if line is None:
            # Plain /OK: the line is in the Host name when a client reached us
            # under a real upos name (upos-cs-upcdnbda2.bilivideo.com).
            host = (request.headers.get("host") or "").split(":")[0]
            if host.startswith("upos-") and "-upcdn" in host:
                zone = host[len("upos-") :].split("-upcdn")[0]
                upcdn = host.split("-upcdn", 1)[1].split(".")[0]
                line = f"{zone}_{upcdn}"
        injected = await self.faults.injected(
            request, "probe", self.state.take_rule("probe", ip), body_first=True
        )
        if injected is not None:
            return injected
        await drain(request)
        config = self.state.config.lines.get(line or "")
        if line is not None and request.path_params.get("line") is not None and config is None:
            self.state.record("probe", ip, status=404, line=line)
            return replies.no_such_line()
        if config is not None and config.delay_seconds > 0:
            await anyio.sleep(config.delay_seconds)
        self.state.record("probe", ip, status=200, line=line)
        return replies.probe_ok()
