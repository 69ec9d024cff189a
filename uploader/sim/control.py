"""The ``/_sim`` control API: what tests, the demo and benchmarks ask of the simulator.

Routes:
- ``GET|POST /_sim/config``: read it, or deep-merge a JSON change into it
  (a bad key is a 400 naming it, and nothing changes);
- ``POST /_sim/reset``: back to the startup config, empty ledgers and counters;
- ``GET|POST /_sim/accounts``: list accounts, add or update one;
- ``GET /_sim/uploads`` (completed objects), ``/_sim/sessions`` (every
  multipart upload), ``/_sim/submissions`` (archives), ``/_sim/requests``
  (the request log, filtered by ``op``, ``ip``, ``upload_id``, ``status``, ``code``);
- ``GET /_sim/risk``: throttled keys (with their vouchers) and penalised accounts;
- ``POST /_sim/captcha/{voucher}/solve``: the captcha a 601 asked for is solved
  (its throttle ends and its key's budget starts afresh); 404 for an unknown voucher.

Controls that belong to one feature (the QR login's phone) live with that
feature's routes.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bupmesh.config import ConfigError
from uploader.sim import replies
from uploader.sim.config import merge_config, to_builtins
from uploader.sim.state import SimState

_ACCOUNT_FIELDS = {"cookies", "access_key", "mid", "expired"}
_REQUEST_FILTERS = ("op", "ip", "upload_id", "status", "code")


class Control:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/config", self.get_config, methods=["GET"]),
            Route("/_sim/config", self.post_config, methods=["POST"]),
            Route("/_sim/reset", self.post_reset, methods=["POST"]),
            Route("/_sim/accounts", self.get_accounts, methods=["GET"]),
            Route("/_sim/accounts", self.post_accounts, methods=["POST"]),
            Route("/_sim/uploads", self.get_uploads, methods=["GET"]),
            Route("/_sim/sessions", self.get_sessions, methods=["GET"]),
            Route("/_sim/submissions", self.get_submissions, methods=["GET"]),
            Route("/_sim/requests", self.get_requests, methods=["GET"]),
            Route("/_sim/risk", self.get_risk, methods=["GET"]),
            Route("/_sim/captcha/{voucher}/solve", self.solve_captcha, methods=["POST"]),
        ]

    async def get_config(self, request: Request) -> Response:
        return replies.control_ok(to_builtins(self.state.config))

    async def post_config(self, request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
        except ValueError:
            return replies.control_error("body is not valid JSON")
        try:
            config = merge_config(self.state.config, changes)
        except ConfigError as exc:
            return replies.control_error(str(exc))
        self.state.set_config(config)
        return replies.control_ok(to_builtins(config))

    async def post_reset(self, request: Request) -> Response:
        self.state.reset()
        return replies.control_ok({"ok": True})

    async def get_accounts(self, request: Request) -> Response:
        return replies.control_ok({"accounts": self.state.accounts.public()})

    async def post_accounts(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return replies.control_error("body is not valid JSON")
        if not isinstance(body, dict):
            return replies.control_error("(top level): expected a JSON object")
        unknown = set(body) - _ACCOUNT_FIELDS
        if unknown:
            return replies.control_error(f"{sorted(unknown)[0]}: unknown field")
        problem = _account_field_problem(body)
        if problem is not None:
            return replies.control_error(problem)
        try:
            account = self.state.accounts.add(
                cookies=body.get("cookies"),
                access_key=body.get("access_key"),
                mid=body.get("mid"),
                expired=bool(body.get("expired", False)),
            )
        except ValueError as exc:
            return replies.control_error(str(exc))
        return replies.control_ok({"account": account.public()})

    async def get_uploads(self, request: Request) -> Response:
        return replies.control_ok({"uploads": self.state.ledger})

    async def get_sessions(self, request: Request) -> Response:
        return replies.control_ok({"sessions": [u.public() for u in self.state.uploads.values()]})

    async def get_submissions(self, request: Request) -> Response:
        return replies.control_ok({"submissions": self.state.submissions})

    async def get_requests(self, request: Request) -> Response:
        wanted = {k: v for k, v in request.query_params.items() if k in _REQUEST_FILTERS}
        entries = [
            e for e in self.state.requests if all(str(e.get(k)) == v for k, v in wanted.items())
        ]
        return replies.control_ok({"requests": entries})


    async def get_risk(self, request: Request) -> Response:
        return replies.control_ok(self.state.risk_view())

    async def solve_captcha(self, request: Request) -> Response:
        voucher = request.path_params["voucher"]
        throttle = self.state.solve_captcha(voucher)
        if throttle is None:
            return replies.control_error(f"no throttle waits on voucher {voucher!r}", 404)
        ip, mid = throttle.key  # type: ignore[misc]
        return replies.captcha_solved(voucher, {"ip": ip, "mid": mid})


def _account_field_problem(body: dict[str, Any]) -> str | None:
    for key, kind in (("cookies", str), ("access_key", str), ("mid", int), ("expired", bool)):
        value = body.get(key, False if key == "expired" else None)
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            return f"{key}: expected {kind.__name__}"
    return None
