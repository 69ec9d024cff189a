"""Misbehaving on purpose: the ``fail_next`` rules and the random fault rates.

Every route group asks :class:`Faults` first; a returned response replaces
the real answer. A ``fail_next`` rule is deterministic (the next N matching
requests), the rates in ``faults`` are drawn from the seeded generator, so a
test or a chaos seed replays the same misbehaviour.

Chunk PUTs apply ``drop`` and ``stall`` themselves, while reading the body:
a connection reset half-way through a chunk is the fault worth testing.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response

from uploader.sim import replies
from uploader.sim.config import FailRule
from uploader.sim.inbound import abort_connection, client_ip, drain, stall_until_disconnect
from uploader.sim.state import SimState

# Ops of the JSON API (member and web-interface routes): an injected code answers
# in its envelope.
_API_OPS = ("submit", "cover", "edit", "season", "view", "archives", "zone")
# Ops whose failures carry the JSON API envelope rather than upos' dialect.
_ENVELOPE_OPS = (*_API_OPS, "preupload", "probe")


class Faults:
    def __init__(self, state: SimState) -> None:
        self.state = state

    async def injected(
        self,
        request: Request,
        op: str,
        rule: FailRule | None,
        *,
        upload_id: str | None = None,
        part: int | None = None,
        body_first: bool = False,
    ) -> Response | None:
        """Apply a fail_next rule that replaces the reply (status, code, drop-before-body)."""
        if rule is None or rule.action == "lose_reply":
            return None  # lose_reply: see :meth:`answer`
        state = self.state
        ip = client_ip(request)
        if rule.action == "stall" and op != "put":
            if rule.seconds > 0:
                await anyio.sleep(rule.seconds)
                return None
            await stall_until_disconnect(request)
            state.record(op, ip, status=0, upload_id=upload_id, part=part)
            return replies.nobody_listening()
        if rule.action in ("stall", "drop") and op == "put":
            return None  # applied while reading the body
        if rule.action == "drop":
            state.record(op, ip, status=0, upload_id=upload_id, part=part)
            await abort_connection(request)
            return replies.nobody_listening()
        if body_first:
            await drain(request)
        if rule.action == "status":
            state.record(op, ip, status=rule.status, upload_id=upload_id, part=part)
            if op in _ENVELOPE_OPS and rule.status != 406:
                return replies.api_server_error(rule.status)
            if rule.status == 406:
                return replies.too_fast_406()
            return replies.upos_error(rule.status, "injected fault")
        # action == "code": HTTP 200 with a JSON error code
        state.record(op, ip, status=200, code=rule.code, upload_id=upload_id, part=part)
        if rule.code == 601 and op == "preupload":
            return replies.code_601()
        if op in _API_OPS:
            return replies.api_reply(rule.code)
        return replies.upos_code(rule.code)

    async def answer(self, request: Request, rule: FailRule | None, response: Response) -> Response:
        """``response``, unless a ``lose_reply`` rule resets the connection instead.

        The request has taken effect by now (an archive created, a part list
        edited): what is lost is only the answer, as when a connection drops
        or a hub dies between sending and reading.
        """
        if rule is None or rule.action != "lose_reply":
            return response
        await abort_connection(request)  # the request log keeps the outcome it had
        return replies.nobody_listening()

    async def random(
        self,
        request: Request,
        op: str,
        *,
        upload_id: str | None = None,
        part: int | None = None,
        body_first: bool = False,
    ) -> Response | None:
        """The configured rates: a random 5xx instead of the answer, or a delay before it."""
        state = self.state
        faults = state.config.faults
        if state.roll(faults.status_5xx_rate):
            status = state.random_5xx()
            if body_first:
                await drain(request)
            state.record(op, client_ip(request), status=status, upload_id=upload_id, part=part)
            return replies.upos_error(status, "simulated server error")
        if faults.delay_seconds > 0:
            await anyio.sleep(faults.delay_seconds)
        return None
