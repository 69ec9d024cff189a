"""The upload path: preupload (a ticket), then upos' multipart init, chunk PUTs, completion.

Routes:
- ``GET /preupload`` on the member host: a ticket (object key, ``X-Upos-Auth``,
  ``biz_id``, chunk size, threads); with ``r=probe`` the line list instead;
- ``POST /{bucket}/{key}?uploads&output=json``: start a multipart upload;
- ``PUT /{bucket}/{key}?partNumber=..``: one chunk;
- ``POST /{bucket}/{key}?output=json&uploadId=..``: complete.

Every request is checked the way the real service is strict (auth, sizes,
part ranges, each part once with the same bytes), so a client that passes
here is not relying on leniency. Risk control answers on preupload (a
budget per IP, account or pair: 406 or 601 with a voucher) and, for a blocked
IP, on chunk PUTs too. A session can be bound to the preupload's address and
its auth can age out: both are a 403 on any upos request. A line's bandwidth
cap slows the chunk bodies sent through it.
"""

from __future__ import annotations

import json

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies
from uploader.sim.facts import BUCKET
from uploader.sim.faults import Faults
from uploader.sim.inbound import (
    abort_connection,
    client_ip,
    drain,
    host_of,
    query_int,
    session_cookie,
    stall_until_disconnect,
)
from uploader.sim.lines import Lines
from uploader.sim.state import SimState
from uploader.sim.uploads import PartError, Ticket

_COMPLETE_BODY = 'body must be {"parts":[{"partNumber":n,"eTag":"etag"},...]}'


class Upos:
    def __init__(self, state: SimState, faults: Faults, lines: Lines) -> None:
        self.state = state
        self.faults = faults
        self.lines = lines

    def preupload_routes(self) -> list[Route]:
        return [Route("/preupload", self.preupload, methods=["GET"])]

    def object_routes(self) -> list[Route]:
        """Two-segment catch-alls: the app mounts them after every other route."""
        return [
            Route("/{bucket}/{key}", self.upos_post, methods=["POST"]),
            Route("/{bucket}/{key}", self.put, methods=["PUT"]),
        ]

    # --- preupload ---------------------------------------------------------

    async def preupload(self, request: Request) -> Response:
        query = request.query_params
        if query.get("r") == "probe":
            return await self.lines.probe_list(request)
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(
            request, "preupload", state.take_rule("preupload", ip)
        )
        if injected is not None:
            return injected
        account = state.accounts.by_cookie(session_cookie(request))
        mid = account.mid if account is not None else None
        if ip in state.config.risk.always_406:
            state.record("preupload", ip, status=406, code=406)
            return replies.too_fast_406()
        throttle = state.preupload_refusal(ip, mid)
        if throttle is not None:
            if throttle.voucher is None:
                state.record("preupload", ip, status=406, code=406)
                return replies.too_fast_406()
            status = state.config.risk.status_601
            state.record("preupload", ip, status=status, code=601)
            return replies.code_601(throttle.voucher, status)
        if ip in state.config.risk.code_601:
            state.record("preupload", ip, status=200, code=601)
            return replies.code_601()
        fault = await self.faults.random(request, "preupload")
        if fault is not None:
            return fault
        if account is None:
            state.record("preupload", ip, status=200, code=-101)
            return replies.upos_code(-101)
        name = query.get("name")
        size_raw = query.get("size")
        size = query_int(size_raw)
        problem = None
        if not name:
            problem = "name is required"
        elif query.get("r", "upos") != "upos":
            problem = f"unsupported r={query.get('r')!r} (only upos is simulated)"
        elif size_raw not in (None, "") and (size is None or size < 0):
            problem = f"size is not a non-negative integer: {size_raw!r}"
        if problem is not None:
            state.record("preupload", ip, status=400, code=-400)
            return replies.preupload_bad_request(problem)
        assert name is not None
        zone = query.get("zone") or "cs"
        upcdn = query.get("upcdn") or "bda2"
        host = host_of(request)
        ticket = state.new_ticket(
            name=name, size=size, mid=account.mid, ip=ip, host=host, line=f"{zone}_{upcdn}"
        )
        state.count_preupload(ip, account.mid)
        state.record("preupload", ip, status=200)
        return replies.preupload_ticket(
            auth=ticket.auth,
            biz_id=ticket.biz_id,
            chunk_size=ticket.chunk_size,
            host=host,
            profile=query.get("profile") or "ugcfx/bup",
            threads=state.config.threads,
            ip=ip,
            key=ticket.key,
        )

    # --- upos objects ------------------------------------------------------

    def ticket_for(self, request: Request) -> Ticket | None:
        if request.path_params["bucket"] != BUCKET:
            return None
        return self.state.tickets.get(request.path_params["key"])

    def auth_problem(
        self,
        request: Request,
        ticket: Ticket,
        op: str,
        *,
        upload_id: str | None = None,
        part: int | None = None,
    ) -> Response | None:
        """A 403 refusing the session (recorded), or None: auth, lifetime and address hold."""
        state = self.state
        ip = client_ip(request)
        reason, response = None, None
        if request.headers.get("x-upos-auth") != ticket.auth:
            reason, response = "auth", replies.auth_refused()
        elif state.auth_too_old(ticket):
            now = state.wall_clock()
            reason = "AUTH_TS_GT_5DAY"
            response = replies.auth_too_old(ticket.auth, int(now), int(now - ticket.created_at))
        elif state.expired(ticket):
            now = state.wall_clock()
            reason = "session_ttl"
            response = replies.auth_expired(int(now), int(now - ticket.created_at))
        elif state.config.upos.binding == "ip" and ip != ticket.ip:
            reason, response = "uip_mismatch", replies.wrong_address(ticket.ip, ip)
        if response is not None:
            state.record(op, ip, status=403, upload_id=upload_id, part=part, reason=reason)
        return response

    async def upos_post(self, request: Request) -> Response:
        if "uploads" in request.query_params:
            return await self.init(request)
        return await self.complete(request)

    async def init(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(
            request, "init", state.take_rule("init", ip), body_first=True
        )
        if injected is not None:
            return injected
        fault = await self.faults.random(request, "init", body_first=True)
        if fault is not None:
            return fault
        await drain(request)
        ticket = self.ticket_for(request)
        if ticket is None:
            state.record("init", ip, status=404)
            return replies.upos_error(404, "no such object")
        problem = self.auth_problem(request, ticket, "init")
        if problem is not None:
            return problem
        query = request.query_params
        filesize = query_int(query.get("filesize"))
        partsize = query_int(query.get("partsize"))
        if query.get("filesize") and (
            filesize is None or (ticket.size is not None and filesize != ticket.size)
        ):
            state.record("init", ip, status=400)
            return replies.upos_error(
                400, f"filesize {query.get('filesize')} != preupload size {ticket.size}"
            )
        if query.get("partsize") and partsize != ticket.chunk_size:
            state.record("init", ip, status=400)
            return replies.upos_error(
                400, f"partsize {query.get('partsize')} != chunk_size {ticket.chunk_size}"
            )
        if query.get("biz_id") and query_int(query.get("biz_id")) != ticket.biz_id:
            state.record("init", ip, status=400)
            return replies.upos_error(400, f"biz_id {query.get('biz_id')} != {ticket.biz_id}")
        upload = state.new_upload(ticket, filesize)
        state.record("init", ip, status=200, upload_id=upload.upload_id)
        return replies.upload_started(ticket.key, upload.upload_id)

    async def put(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        query = request.query_params
        upload_id = query.get("uploadId")
        part = query_int(query.get("partNumber"))
        rule = state.take_rule("put", ip)
        injected = await self.faults.injected(
            request, "put", rule, upload_id=upload_id, part=part, body_first=True
        )
        if injected is not None:
            return injected
        if ip in state.config.risk.always_406:
            await drain(request)
            state.record("put", ip, status=406, code=406, upload_id=upload_id, part=part)
            return replies.too_fast_406()
        fault = await self.faults.random(
            request, "put", upload_id=upload_id, part=part, body_first=True
        )
        if fault is not None:
            return fault

        def reject(status: int, response: Response) -> Response:
            state.record("put", ip, status=status, upload_id=upload_id, part=part)
            return response

        upload = state.uploads.get(upload_id or "")
        ticket = self.ticket_for(request)
        if upload is None or ticket is None or upload.ticket is not ticket:
            await drain(request)
            return reject(404, replies.upos_error(404, "no such upload"))
        problem = self.auth_problem(request, ticket, "put", upload_id=upload_id, part=part)
        if problem is not None:
            await drain(request)
            return problem
        if upload.completed is not None:
            await drain(request)
            return reject(400, replies.upos_error(400, "upload already completed"))
        try:
            content_length = query_int(request.headers.get("content-length"))
            size = upload.check_part(dict(query), content_length)
        except PartError as exc:
            await drain(request)
            return reject(400, replies.upos_error(400, str(exc)))
        assert part is not None

        drop = (rule is not None and rule.action == "drop") or state.roll(
            state.config.faults.drop_put_rate
        )
        stall = rule is not None and rule.action == "stall"
        # Only a stalling rule sets a stall length; a random drop has no rule.
        stall_seconds = rule.seconds if rule is not None else 0.0
        interrupt_at = size // 2 if (drop or stall) else -1
        buckets = [
            b for b in (state.bucket_for(ip), state.line_bucket_for(ticket.line, ip)) if b
        ]
        chunks: list[bytes] = []
        received = 0
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                for bucket in buckets:
                    await bucket.consume(len(chunk))
                chunks.append(chunk)
                received += len(chunk)
                if 0 <= interrupt_at <= received:
                    interrupt_at = -1
                    if drop or not stall_seconds:
                        break
                    await anyio.sleep(stall_seconds)
        except ClientDisconnect:  # the client gave up mid-body
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            return replies.nobody_listening()
        if drop:  # half the body read (none for a 0-byte part): reset the connection
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            await abort_connection(request)
            return replies.nobody_listening()
        if stall and not stall_seconds:  # stall for good: read on, answer nothing
            chunks.clear()
            await stall_until_disconnect(request)
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            return replies.nobody_listening()
        if 0 <= interrupt_at:  # a 0-byte part stalls before its (empty) body counts
            await anyio.sleep(stall_seconds)
        if received != size:
            return reject(
                400, replies.upos_error(400, f"body has {received} bytes, size says {size}")
            )
        await upload.accept_part(part, chunks)
        state.record("put", ip, status=200, upload_id=upload_id, part=part)
        return replies.part_stored()

    async def complete(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        query = request.query_params
        upload_id = query.get("uploadId")
        injected = await self.faults.injected(
            request,
            "complete",
            state.take_rule("complete", ip),
            upload_id=upload_id,
            body_first=True,
        )
        if injected is not None:
            return injected
        fault = await self.faults.random(request, "complete", upload_id=upload_id, body_first=True)
        if fault is not None:
            return fault
        raw = await request.body()

        def reject(status: int, message: str) -> Response:
            state.record("complete", ip, status=status, upload_id=upload_id)
            return replies.upos_error(status, message)

        ticket = self.ticket_for(request)
        if ticket is None:
            return reject(404, "no such object")
        problem = self.auth_problem(request, ticket, "complete", upload_id=upload_id)
        if problem is not None:
            return problem
        if not upload_id:
            return reject(400, "uploadId is required")
        upload = state.uploads.get(upload_id)
        if upload is None or upload.ticket is not ticket:
            return reject(404, "no such upload")
        if query.get("biz_id") and query_int(query.get("biz_id")) != ticket.biz_id:
            return reject(400, f"biz_id {query.get('biz_id')} != {ticket.biz_id}")
        if upload.completed is not None:
            # Completing twice answers OK again and never adds a second object.
            state.record("complete", ip, status=200, upload_id=upload_id)
            return replies.upload_completed(ticket.key)
        try:
            numbers = _part_numbers(json.loads(raw or b"null"))
        except (ValueError, KeyError, TypeError):
            return reject(400, _COMPLETE_BODY)
        chunks = upload.chunks
        if chunks is None:
            return reject(400, "no part was uploaded")
        if len(numbers) != len(set(numbers)):
            return reject(400, "parts list has duplicate partNumber")
        if set(numbers) != set(range(1, chunks + 1)):
            extra = sorted(set(numbers) - set(range(1, chunks + 1)))
            absent = sorted(set(range(1, chunks + 1)) - set(numbers))
            return reject(
                400,
                f"parts list does not name 1..{chunks} (missing {absent[:5]}, extra {extra[:5]})",
            )
        not_received = [n for n in range(1, chunks + 1) if n not in upload.received]
        if not_received:
            return reject(400, f"parts never uploaded: {not_received[:10]}")
        await upload.feed_ready()  # waits for in-flight hashing too
        if upload.next_part != chunks + 1:
            return reject(400, f"parts not assembled: next part {upload.next_part}")
        if upload.corrupt is not None:
            return reject(400, f"upload is corrupt: {upload.corrupt}")
        state.complete(upload, query.get("name") or ticket.name, ip)
        state.record("complete", ip, status=200, upload_id=upload_id)
        return replies.upload_completed(ticket.key)


def _part_numbers(body: object) -> list[int]:
    """The part numbers of a completion body; ValueError, KeyError or TypeError if malformed."""
    parts = body["parts"]  # type: ignore[index]
    if not isinstance(parts, list):
        raise TypeError
    numbers = []
    for item in parts:
        number = item["partNumber"]
        if not isinstance(number, int) or isinstance(number, bool):
            raise TypeError
        if not isinstance(item.get("eTag"), str):
            raise TypeError
        numbers.append(number)
    return numbers
