"""The simulator's HTTP face: Bilibili member + upos routes and the `/_sim` control API.

Real routes, all on one port:
- `GET /preupload` (`r=upos`: a ticket; `r=probe`: the line list)
- `GET|POST /OK` and `/upcdn/{line}/OK`: line probes
- `POST /{bucket}/{key}?uploads&output=json`: start a multipart upload
- `PUT /{bucket}/{key}?partNumber=..`: one chunk
- `POST /{bucket}/{key}?output=json&uploadId=..`: complete
- `POST /x/vu/web/cover/up`, `POST /x/vu/web/add/v3`, `POST /x/vu/app/add`

Status codes and reply bodies follow what real clients and issue threads show
(see `uploader.sim.facts`): member routes answer HTTP 200 with a JSON `code`;
upos answers 403 with an empty body to a bad `X-Upos-Auth`; risk control is
HTTP 406 or JSON 601 on preupload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bupmesh.config import ConfigError
from uploader.sim import archives
from uploader.sim.config import FailRule, SimConfig, merge_config, to_builtins
from uploader.sim.facts import (
    APP_KEYS,
    BAD_REQUEST,
    BAD_SIGN,
    BUCKET,
    CSRF_FAILED,
    NOT_LOGGED_IN,
    PROBE_VERSION,
    PUT_SUCCESS,
    SUBMIT_TOO_FAST,
    TOO_FAST,
    message_for,
)
from uploader.sim.passport import passport_routes
from uploader.sim.state import PartError, SimState, Upload

STALL_FOREVER = 3600.0


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def member_reply(code: int, message: str | None = None, data: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message or message_for(code), "ttl": 1}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def upos_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"OK": 0, "message": message}, status_code=status)


def too_fast_406() -> JSONResponse:
    return JSONResponse({"code": 406, "message": TOO_FAST}, status_code=406)


def code_601() -> JSONResponse:
    return JSONResponse(
        {
            "OK": 0,
            "info": TOO_FAST,
            "code": 601,
            "message": TOO_FAST,
            "detail": {"v_voucher": "voucher_00000000-0000-4000-8000-000000000000"},
        }
    )


async def abort_connection(request: Request) -> None:
    """Reset the TCP connection under this request (uvicorn: no response is sent)."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # not uvicorn's protocol: the best we can do is an exception
        raise ConnectionAbortedError("simulated connection drop")
    transport.abort()
    # Let connection_lost run so uvicorn knows the client is gone and sends nothing.
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()


async def stall_until_disconnect(request: Request) -> None:
    """Answer nothing: read and discard the rest of the body, wait for the client to go."""
    with anyio.move_on_after(STALL_FOREVER):
        try:
            async for _ in request.stream():
                pass
        except (ClientDisconnect, RuntimeError):  # gone, or the body was read already
            pass
        while (await request.receive())["type"] != "http.disconnect":
            pass


async def drain(request: Request) -> None:
    async for _ in request.stream():
        pass


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


class SimApp:
    def __init__(self, config: SimConfig) -> None:
        self.state = SimState(config)

    # --- shared fault plumbing -----------------------------------------------

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
        if rule is None:
            return None
        ip = client_ip(request)
        if rule.action == "stall" and op != "put":
            if rule.seconds > 0:
                await anyio.sleep(rule.seconds)
                return None
            await stall_until_disconnect(request)
            self.state.record(op, ip, status=0, upload_id=upload_id, part=part)
            return Response(status_code=499)
        if rule.action in ("stall", "drop") and op == "put":
            return None  # applied while reading the body
        if rule.action == "drop":
            self.state.record(op, ip, status=0, upload_id=upload_id, part=part)
            await abort_connection(request)
            return Response(status_code=499)
        if body_first:
            await drain(request)
        if rule.action == "status":
            self.state.record(op, ip, status=rule.status, upload_id=upload_id, part=part)
            if op in ("submit", "cover", "preupload", "probe") and rule.status != 406:
                return JSONResponse(
                    {"code": -500, "message": "服务器错误", "ttl": 1}, status_code=rule.status
                )
            if rule.status == 406:
                return too_fast_406()
            return upos_error(rule.status, "injected fault")
        # action == "code": HTTP 200 with a JSON error code
        self.state.record(op, ip, status=200, code=rule.code, upload_id=upload_id, part=part)
        if rule.code == 601 and op == "preupload":
            return code_601()
        if op in ("submit", "cover"):
            return member_reply(rule.code)
        return JSONResponse({"OK": 0, "code": rule.code, "message": message_for(rule.code)})

    async def random_faults(
        self,
        request: Request,
        op: str,
        *,
        upload_id: str | None = None,
        part: int | None = None,
        body_first: bool = False,
    ) -> Response | None:
        faults = self.state.config.faults
        if self.state.roll(faults.status_5xx_rate):
            status = self.state.random_5xx()
            if body_first:
                await drain(request)
            self.state.record(op, client_ip(request), status=status, upload_id=upload_id, part=part)
            return upos_error(status, "simulated server error")
        if faults.delay_seconds > 0:
            await anyio.sleep(faults.delay_seconds)
        return None

    def account(self, request: Request):
        return self.state.account_by_cookie(request.cookies.get("SESSDATA"))

    # --- member: preupload + probe -------------------------------------------

    async def preupload(self, request: Request) -> Response:
        query = request.query_params
        if query.get("r") == "probe":
            return await self.probe_list(request)
        ip = client_ip(request)
        state = self.state
        injected = await self.injected(request, "preupload", state.take_rule("preupload", ip))
        if injected is not None:
            return injected
        if ip in state.config.risk.always_406 or not state.preupload_allowed(ip):
            state.record("preupload", ip, status=406, code=406)
            return too_fast_406()
        if ip in state.config.risk.code_601:
            state.record("preupload", ip, status=200, code=601)
            return code_601()
        fault = await self.random_faults(request, "preupload")
        if fault is not None:
            return fault
        account = self.account(request)
        if account is None:
            state.record("preupload", ip, status=200, code=-101)
            return JSONResponse({"OK": 0, "code": -101, "message": NOT_LOGGED_IN})
        name = query.get("name")
        size_raw = query.get("size")
        size = _int(size_raw)
        problem = None
        if not name:
            problem = "name is required"
        elif query.get("r", "upos") != "upos":
            problem = f"unsupported r={query.get('r')!r} (only upos is simulated)"
        elif size_raw not in (None, "") and (size is None or size < 0):
            problem = f"size is not a non-negative integer: {size_raw!r}"
        if problem is not None:
            state.record("preupload", ip, status=400, code=-400)
            return JSONResponse(
                {"OK": 0, "code": -400, "message": f"{BAD_REQUEST}: {problem}"}, 400
            )
        zone = query.get("zone") or "cs"
        upcdn = query.get("upcdn") or "bda2"
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        ticket = state.new_ticket(
            name=name, size=size, mid=account.mid, ip=ip, host=host, line=f"{zone}_{upcdn}"
        )
        state.count_preupload(ip)
        state.record("preupload", ip, status=200)
        endpoint = f"//{host}"
        return JSONResponse(
            {
                "OK": 1,
                "auth": ticket.auth,
                "biz_id": ticket.biz_id,
                "chunk_retry": 10,
                "chunk_retry_delay": 3,
                "chunk_size": ticket.chunk_size,
                "endpoint": endpoint,
                "endpoints": [endpoint],
                "expose_params": None,
                "put_query": "os=upos&profile="
                + urllib.parse.quote(query.get("profile") or "ugcfx/bup", safe=""),
                "threads": state.config.threads,
                "timeout": 1200,
                "uip": ip,
                "upos_uri": f"upos://{BUCKET}/{ticket.key}",
            }
        )

    async def probe_list(self, request: Request) -> Response:
        ip = client_ip(request)
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        lines = []
        for name in self.state.config.lines:
            zone, _, upcdn = name.partition("_") if "_" in name else ("cs", "", name)
            lines.append(
                {
                    "os": "upos",
                    "probe_url": f"//{host}/upcdn/{name}/OK",
                    "query": f"upcdn={upcdn}&probe_version={PROBE_VERSION}&zone={zone}",
                    "zone": zone,
                    "upcdn": upcdn,
                    "line": name,
                }
            )
        self.state.record("probe", ip, status=200)
        # No "get" key in "probe": biliup and biliup-rs then POST 0.1 MB, as
        # bilibili-api-python always does.
        return JSONResponse({"OK": 1, "lines": lines, "probe": {}})

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
        injected = await self.injected(
            request, "probe", self.state.take_rule("probe", ip), body_first=True
        )
        if injected is not None:
            return injected
        await drain(request)
        config = self.state.config.lines.get(line or "")
        if line is not None and request.path_params.get("line") is not None and config is None:
            self.state.record("probe", ip, status=404, line=line)
            return PlainTextResponse("no such line", status_code=404)
        if config is not None and config.delay_seconds > 0:
            await anyio.sleep(config.delay_seconds)
        self.state.record("probe", ip, status=200, line=line)
        return PlainTextResponse("OK")

    # --- upos --------------------------------------------------------------

    def ticket_for(self, request: Request):
        if request.path_params["bucket"] != BUCKET:
            return None
        return self.state.tickets.get(request.path_params["key"])

    def auth_problem(self, request: Request, ticket) -> Response | None:
        if request.headers.get("x-upos-auth") != ticket.auth:
            return Response(status_code=403)
        if self.state.expired(ticket):
            age = int(time.time() - ticket.created_at)
            return Response(
                status_code=403,
                headers={"X-Upos-Auth": f"AUTH_TS_GT_TTL Now={int(time.time())} DURATION={age}"},
            )
        return None

    async def upos_post(self, request: Request) -> Response:
        if "uploads" in request.query_params:
            return await self.init(request)
        return await self.complete(request)

    async def init(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.injected(
            request, "init", state.take_rule("init", ip), body_first=True
        )
        if injected is not None:
            return injected
        fault = await self.random_faults(request, "init", body_first=True)
        if fault is not None:
            return fault
        await drain(request)
        ticket = self.ticket_for(request)
        if ticket is None:
            state.record("init", ip, status=404)
            return upos_error(404, "no such object")
        problem = self.auth_problem(request, ticket)
        if problem is not None:
            state.record("init", ip, status=403)
            return problem
        query = request.query_params
        filesize = _int(query.get("filesize"))
        partsize = _int(query.get("partsize"))
        if query.get("filesize") and (
            filesize is None or (ticket.size is not None and filesize != ticket.size)
        ):
            state.record("init", ip, status=400)
            return upos_error(
                400, f"filesize {query.get('filesize')} != preupload size {ticket.size}"
            )
        if query.get("partsize") and partsize != ticket.chunk_size:
            state.record("init", ip, status=400)
            return upos_error(
                400, f"partsize {query.get('partsize')} != chunk_size {ticket.chunk_size}"
            )
        if query.get("biz_id") and _int(query.get("biz_id")) != ticket.biz_id:
            state.record("init", ip, status=400)
            return upos_error(400, f"biz_id {query.get('biz_id')} != {ticket.biz_id}")
        upload = state.new_upload(ticket, filesize)
        state.record("init", ip, status=200, upload_id=upload.upload_id)
        return JSONResponse(
            {"OK": 1, "bucket": BUCKET, "key": f"/{ticket.key}", "upload_id": upload.upload_id}
        )

    async def put(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        query = request.query_params
        upload_id = query.get("uploadId")
        part = _int(query.get("partNumber"))
        rule = state.take_rule("put", ip)
        injected = await self.injected(
            request, "put", rule, upload_id=upload_id, part=part, body_first=True
        )
        if injected is not None:
            return injected
        if ip in state.config.risk.always_406:
            await drain(request)
            state.record("put", ip, status=406, code=406, upload_id=upload_id, part=part)
            return too_fast_406()
        fault = await self.random_faults(
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
            return reject(404, upos_error(404, "no such upload"))
        problem = self.auth_problem(request, ticket)
        if problem is not None:
            await drain(request)
            return reject(403, problem)
        if upload.completed is not None:
            await drain(request)
            return reject(400, upos_error(400, "upload already completed"))
        try:
            content_length = _int(request.headers.get("content-length"))
            size = state.check_part(upload, dict(query), content_length)
        except PartError as exc:
            await drain(request)
            return reject(400, upos_error(400, str(exc)))
        assert part is not None

        drop = (rule is not None and rule.action == "drop") or state.roll(
            state.config.faults.drop_put_rate
        )
        stall = rule is not None and rule.action == "stall"
        interrupt_at = size // 2 if (drop or stall) else -1
        bucket = state.bucket_for(ip)
        chunks: list[bytes] = []
        received = 0
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                if bucket is not None:
                    await bucket.consume(len(chunk))
                chunks.append(chunk)
                received += len(chunk)
                if 0 <= interrupt_at <= received:
                    interrupt_at = -1
                    if drop or not rule.seconds:
                        break
                    await anyio.sleep(rule.seconds)
        except ClientDisconnect:  # the client gave up mid-body
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            return Response(status_code=499)
        if drop:  # half the body read (none for a 0-byte part): reset the connection
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            await abort_connection(request)
            return Response(status_code=499)
        if stall and not rule.seconds:  # stall for good: read on, answer nothing
            chunks.clear()
            await stall_until_disconnect(request)
            state.record("put", ip, status=0, upload_id=upload_id, part=part)
            return Response(status_code=499)
        if 0 <= interrupt_at:  # a 0-byte part stalls before its (empty) body counts
            await anyio.sleep(rule.seconds)
        if received != size:
            return reject(400, upos_error(400, f"body has {received} bytes, size says {size}"))
        await state.accept_part(upload, part, chunks)
        state.record("put", ip, status=200, upload_id=upload_id, part=part)
        return Response(PUT_SUCCESS, media_type="text/plain")

    async def complete(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        query = request.query_params
        upload_id = query.get("uploadId")
        injected = await self.injected(
            request,
            "complete",
            state.take_rule("complete", ip),
            upload_id=upload_id,
            body_first=True,
        )
        if injected is not None:
            return injected
        fault = await self.random_faults(request, "complete", upload_id=upload_id, body_first=True)
        if fault is not None:
            return fault
        raw = await request.body()

        def reject(status: int, message: str) -> Response:
            state.record("complete", ip, status=status, upload_id=upload_id)
            return upos_error(status, message)

        ticket = self.ticket_for(request)
        if ticket is None:
            return reject(404, "no such object")
        problem = self.auth_problem(request, ticket)
        if problem is not None:
            state.record("complete", ip, status=403, upload_id=upload_id)
            return problem
        if not upload_id:
            return reject(400, "uploadId is required")
        upload = state.uploads.get(upload_id)
        if upload is None or upload.ticket is not ticket:
            return reject(404, "no such upload")
        if query.get("biz_id") and _int(query.get("biz_id")) != ticket.biz_id:
            return reject(400, f"biz_id {query.get('biz_id')} != {ticket.biz_id}")
        if upload.completed is not None:
            # Completing twice answers OK again and never adds a second object.
            state.record("complete", ip, status=200, upload_id=upload_id)
            return self.completion_reply(upload)
        try:
            body = json.loads(raw or b"null")
            parts = body["parts"]
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
        except (ValueError, KeyError, TypeError):
            return reject(400, 'body must be {"parts":[{"partNumber":n,"eTag":"etag"},...]}')
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
        await state.feed_ready(upload)  # waits for in-flight hashing too
        if upload.next_part != chunks + 1:
            return reject(400, f"parts not assembled: next part {upload.next_part}")
        if upload.corrupt is not None:
            return reject(400, f"upload is corrupt: {upload.corrupt}")
        state.complete(upload, query.get("name") or ticket.name, ip)
        state.record("complete", ip, status=200, upload_id=upload_id)
        return self.completion_reply(upload)

    @staticmethod
    def completion_reply(upload: Upload) -> Response:
        key = upload.ticket.key
        return JSONResponse(
            {"OK": 1, "location": f"{BUCKET}/{key}", "bucket": BUCKET, "key": f"/{key}"}
        )

    # --- member: cover + submissions -------------------------------------------

    async def cover(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.injected(
            request, "cover", state.take_rule("cover", ip), body_first=True
        )
        if injected is not None:
            return injected
        raw = await request.body()
        account = self.account(request)
        if account is None:
            state.record("cover", ip, status=200, code=-101)
            return member_reply(-101)
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        csrf = (form.get("csrf") or [request.query_params.get("csrf", "")])[0]
        if csrf != account.bili_jct:
            state.record("cover", ip, status=200, code=-111)
            return member_reply(-111, CSRF_FAILED)
        cover = (form.get("cover") or [""])[0]
        head, sep, data = cover.partition(";base64,")
        try:
            if not (sep and head.startswith("data:image/")):
                raise ValueError
            image = base64.b64decode(data, validate=True)
            if not image:
                raise ValueError
        except (ValueError, binascii.Error):
            state.record("cover", ip, status=200, code=-400)
            return member_reply(-400, f"{BAD_REQUEST}: cover must be data:image/...;base64,...")
        ext = "png" if head.endswith("png") else "jpg"
        digest = hashlib.sha1(image).hexdigest()
        state.record("cover", ip, status=200, code=0)
        return member_reply(
            0, "0", {"url": f"https://archive.biliimg.com/bfs/archive/{digest}.{ext}"}
        )

    async def submit_web(self, request: Request) -> Response:
        async def authorize(body: dict) -> tuple[Any, Response | None]:
            account = self.account(request)
            if account is None:
                return None, member_reply(-101)
            csrf = request.query_params.get("csrf") or body.get("csrf")
            if csrf != account.bili_jct:
                return None, member_reply(-111, CSRF_FAILED)
            return account, None

        return await self.submit(request, "web", authorize)

    async def submit_app(self, request: Request) -> Response:
        async def authorize(body: dict) -> tuple[Any, Response | None]:
            raw_query = request.url.query
            pieces = [p for p in raw_query.split("&") if p]
            params = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
            appsec = APP_KEYS.get(params.get("appkey", ""))
            if appsec is None:
                return None, member_reply(-1)
            signed = sorted(
                (p for p in pieces if p.split("=", 1)[0] != "sign"),
                key=lambda p: urllib.parse.unquote_plus(p.split("=", 1)[0]),
            )
            expected = hashlib.md5(("&".join(signed) + appsec).encode()).hexdigest()
            if params.get("sign", "").lower() != expected:
                return None, member_reply(-3, BAD_SIGN)
            account = self.state.account_by_access_key(params.get("access_key"))
            if account is None:
                return None, member_reply(-101)
            return account, None

        return await self.submit(request, "app", authorize)

    async def submit(
        self,
        request: Request,
        flavour: str,
        authorize: Callable[[dict], Awaitable[tuple[Any, Response | None]]],
    ) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.injected(
            request, "submit", state.take_rule("submit", ip), body_first=True
        )
        if injected is not None:
            return injected
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        account, problem = await authorize(body if isinstance(body, dict) else {})
        if problem is not None:
            state.record("submit", ip, status=200, code=json.loads(problem.body)["code"])
            return problem
        if ip in state.config.risk.code_601:
            state.record("submit", ip, status=200, code=21540)
            return member_reply(21540, SUBMIT_TOO_FAST)
        videos, problem_text = self.check_submission(body, account.mid)
        if problem_text is not None:
            state.record("submit", ip, status=200, code=-400)
            return member_reply(-400, f"{BAD_REQUEST}: {problem_text}")
        aid, bvid = state.new_archive()
        assert isinstance(body, dict)
        state.submissions.append(
            {
                "aid": aid,
                "bvid": bvid,
                "flavour": flavour,
                "title": body["title"],
                "tid": body["tid"],
                "tag": body.get("tag") or "",
                "desc": body.get("desc") or "",
                "copyright": body["copyright"],
                "source": body.get("source") or "",
                "cover": body.get("cover") or "",
                "videos": videos,
                "source_ip": ip,
                "mid": account.mid,
                "time": time.time(),
            }
        )
        state.record("submit", ip, status=200, code=0)
        return member_reply(0, "0", {"aid": aid, "bvid": bvid})

    def check_submission(self, body: Any, mid: int) -> tuple[list[dict], str | None]:
        if not isinstance(body, dict):
            return [], "body must be a JSON object"
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            return [], "title is required"
        if len(title) > 80:
            return [], "title is longer than 80 characters"
        tid = body.get("tid")
        if not isinstance(tid, int) or isinstance(tid, bool) or tid <= 0:
            return [], "tid must be a positive integer"
        if body.get("copyright") not in (1, 2):
            return [], "copyright must be 1 or 2"
        for key in ("tag", "desc", "source", "cover", "dynamic"):
            if body.get(key) is not None and not isinstance(body.get(key), str):
                return [], f"{key} must be a string"
        videos = body.get("videos")
        if not isinstance(videos, list) or not videos:
            return [], "videos must be a non-empty list"
        checked = []
        for index, video in enumerate(videos):
            if not isinstance(video, dict) or not isinstance(video.get("filename"), str):
                return [], f"videos[{index}].filename is required"
            record = self.state.completed_upload(video["filename"])
            if record is None or record["mid"] != mid:
                return (
                    [],
                    f"videos[{index}].filename {video['filename']!r} is not an upload of this account",
                )
            cid = video.get("cid") or 0
            if not isinstance(cid, int) or (cid and cid != record["biz_id"]):
                return [], f"videos[{index}].cid {cid!r} != biz_id {record['biz_id']}"
            checked.append(
                {
                    "filename": video["filename"],
                    "title": video.get("title") or "",
                    "desc": video.get("desc") or "",
                    "cid": cid or record["biz_id"],
                }
            )
        return checked, None

    # --- control API -----------------------------------------------------------

    async def get_config(self, request: Request) -> Response:
        return JSONResponse(to_builtins(self.state.config))

    async def post_config(self, request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        try:
            config = merge_config(self.state.config, changes)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.state.set_config(config)
        return JSONResponse(to_builtins(config))

    async def post_reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"ok": True})

    async def get_accounts(self, request: Request) -> Response:
        return JSONResponse({"accounts": [a.public() for a in self.state.accounts]})

    async def post_accounts(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "(top level): expected a JSON object"}, status_code=400)
        unknown = set(body) - {"cookies", "access_key", "mid", "expired"}
        if unknown:
            return JSONResponse({"error": f"{sorted(unknown)[0]}: unknown field"}, status_code=400)
        cookies, access_key, mid = body.get("cookies"), body.get("access_key"), body.get("mid")
        expired = body.get("expired", False)
        for key, value, kind in (
            ("cookies", cookies, str),
            ("access_key", access_key, str),
            ("mid", mid, int),
            ("expired", expired, bool),
        ):
            if value is not None and (
                not isinstance(value, kind) or (kind is int and isinstance(value, bool))
            ):
                return JSONResponse({"error": f"{key}: expected {kind.__name__}"}, status_code=400)
        try:
            account = self.state.add_account(
                cookies=cookies, access_key=access_key, mid=mid, expired=bool(expired)
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"account": account.public()})

    async def get_uploads(self, request: Request) -> Response:
        return JSONResponse({"uploads": self.state.ledger})

    async def get_sessions(self, request: Request) -> Response:
        return JSONResponse({"sessions": [u.public() for u in self.state.uploads.values()]})

    async def get_submissions(self, request: Request) -> Response:
        return JSONResponse({"submissions": self.state.submissions})

    async def get_requests(self, request: Request) -> Response:
        wanted = {k: v for k, v in request.query_params.items() if k in ("op", "ip", "upload_id")}
        entries = [
            e for e in self.state.requests if all(str(e.get(k)) == v for k, v in wanted.items())
        ]
        return JSONResponse({"requests": entries})


async def client_went_away(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody is left to read it


def build_app(config: SimConfig | None = None) -> Starlette:
    sim = SimApp(config or SimConfig())
    routes = [
        Route("/_sim/config", sim.get_config, methods=["GET"]),
        Route("/_sim/config", sim.post_config, methods=["POST"]),
        Route("/_sim/reset", sim.post_reset, methods=["POST"]),
        Route("/_sim/accounts", sim.get_accounts, methods=["GET"]),
        Route("/_sim/accounts", sim.post_accounts, methods=["POST"]),
        Route("/_sim/uploads", sim.get_uploads, methods=["GET"]),
        Route("/_sim/sessions", sim.get_sessions, methods=["GET"]),
        Route("/_sim/submissions", sim.get_submissions, methods=["GET"]),
        Route("/_sim/requests", sim.get_requests, methods=["GET"]),
        Route("/preupload", sim.preupload, methods=["GET"]),
        Route("/OK", sim.probe_ping, methods=["GET", "POST"]),
        Route("/upcdn/{line}/OK", sim.probe_ping, methods=["GET", "POST"]),
        Route("/x/vu/web/cover/up", sim.cover, methods=["POST"]),
        Route("/x/vu/web/add/v3", sim.submit_web, methods=["POST"]),
        Route("/x/vu/app/add", sim.submit_app, methods=["POST"]),
        *passport_routes(sim),
        Route("/x/web/archives", archives.endpoint(sim), methods=["GET"]),
        Route("/{bucket}/{key}", sim.upos_post, methods=["POST"]),
        Route("/{bucket}/{key}", sim.put, methods=["PUT"]),
    ]
    app = Starlette(routes=routes, exception_handlers={ClientDisconnect: client_went_away})
    app.state.sim = sim
    return app
