"""The admin API over Bilibili's verdicts: accounts' standing, learned limits, captchas.

``GET /api/manage/ips`` (hub/api/admin_routes.py) shows each egress IP; these
routes show the rest of what the two risk ledgers hold and pull their levers:

* ``GET /api/manage/accounts/{account}/risk``: the account ledger's view of one
  account (pacing, cooldowns, penalty, what it learned and the evidence, open
  captchas); ``{account}`` is its id or name;
* ``POST /api/manage/accounts/{account}/risk/release``: lift a penalty and the
  cooldowns, forget what it learned (an admin vouches for it);
* ``GET /api/manage/risk/learned``: every live learned limit with its evidence;
  ``POST /api/manage/risk/forget {scope: ip|mesh|account, subject}``: forget one;
* ``GET /api/manage/captchas``; ``POST /api/manage/captchas/{voucher}/solved``:
  the captcha was solved (in a browser or the app, as that account): the
  cooldowns it caused end now.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.auth import Auth
from hub.api.bodies import ForgetBody, read_body
from hub.api.envelope import ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")


def risk_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    async def account_risk(request: Request) -> Response:
        auth.require_admin(request)
        return ok(redact(await service.account_risk(request.path_params["account"])))

    async def release_account(request: Request) -> Response:
        auth.require_admin(request)
        row = await service.release_account(request.path_params["account"])
        return ok(redact(row), message="Account released")

    async def learned(request: Request) -> Response:
        auth.require_admin(request)
        return ok({"learned": redact(service.learned_limits())})

    async def forget(request: Request) -> Response:
        auth.require_admin(request)
        body = await read_body(request, ForgetBody)
        limits = await service.forget_learned(body.scope, body.subject)
        return ok({"learned": redact(limits)}, message="Learned limit forgotten")

    async def captchas(request: Request) -> Response:
        auth.require_admin(request)
        return ok({"captchas": redact(service.list_captchas())})

    async def solve_captcha(request: Request) -> Response:
        auth.require_admin(request)
        row = await service.solve_captcha(request.path_params["voucher"])
        return ok(redact(row), message="Captcha marked solved")

    return [
        Route("/api/manage/accounts/{account}/risk", guard(account_risk), methods=["GET"]),
        Route("/api/manage/accounts/{account}/risk/release", guard(release_account),
              methods=["POST"]),
        Route("/api/manage/risk/learned", guard(learned), methods=["GET"]),
        Route("/api/manage/risk/forget", guard(forget), methods=["POST"]),
        Route("/api/manage/captchas", guard(captchas), methods=["GET"]),
        Route("/api/manage/captchas/{voucher}/solved", guard(solve_captcha), methods=["POST"]),
    ]
