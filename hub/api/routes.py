"""The hub's HTTP API (DESIGN.md §5): agent routes, admin routes, health.

A thin layer over ``HubService``: it authenticates, decodes and validates the
body, calls one service method and wraps the answer in the seed's envelope
``{"code": 0, "message": "success", "data": ...}``. Errors keep the envelope
with the HTTP status as ``code`` and a message a person can act on.

Three credentials, never interchangeable:
- the PSK, only for ``POST /api/agent/register`` (checked by the service);
- an agent JWT for the other agent routes (``service.verify_agent_token``),
  which acts only as, and on the tasks of, the agent it names;
- the admin token for ``/api/manage/*``, compared in constant time.

Nothing secret is logged, and admin responses pass through a filter that
drops secret-looking fields, so a service bug cannot leak cookies over HTTP.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import PurePath
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bupmesh.logs import register_secret
from hub.accounts.check import check_account
from hub.accounts.qr_login import LoginNotFound, QrLogins, TooManyLogins
from hub.accounts.store import AccountError, AccountNotFound, DuplicateAccount
from hub.api.audit import note_targets
from hub.api.bodies import (
    AccountBody,
    AccountLoginBody,
    AgentActionBody,
    AssignBody,
    BodyError,
    CancelBody,
    HeartbeatBody,
    PartBody,
    RegisterBody,
    RetryBody,
    TaskStatusBody,
    decode_body,
)
from hub.api.server import serve_http
from hub.api.sse import event_stream_response
from hub.api.web import web_routes
from hub.config import BilibiliSettings
from hub.core.errors import AuthError, BadRequest, Conflict, NotFound
from hub.core.reports import HeartbeatReport, ProgressReport
from hub.service import HubService
from uploader.nav import NavError
from uploader.tv_login import TvLoginClient, TvLoginError

__all__ = ["MAX_JSON_BODY", "build_app", "serve_http"]

log = logging.getLogger("bupmesh.hub.http")

MAX_JSON_BODY = 1024 * 1024

# Field names that hold a secret wherever they appear in an admin response.
SECRET_FIELDS = frozenset(
    {
        "access_key",
        "access_token",
        "admin_token",
        "auth",
        "cookie",
        "cookies",
        "cookies_json",
        "credentials",
        "jwt",
        "password",
        "psk",
        "refresh_token",
        "resume_session",
        "secret",
        "secrets",
        "session",
        "token",
    }
)

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """An expected refusal: HTTP status plus a message safe to show the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def build_app(
    service: HubService, *, admin_token: str, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The hub's ASGI app. ``extra_routes`` (web UI, webhooks, metrics) are tried after ours."""
    admin_secret = admin_token.encode()

    def require_admin(request: Request) -> None:
        token = _bearer(request)
        # An empty admin token means the admin API is closed, never open.
        if not admin_secret or not hmac.compare_digest(token.encode(), admin_secret):
            _auth_failure(request, "admin")
            raise ApiError(401, "invalid admin token")

    def require_agent(request: Request) -> str:
        token = _bearer(request)
        try:
            return service.verify_agent_token(token)
        except AuthError:
            _auth_failure(request, "agent")
            raise

    # -- agent routes --------------------------------------------------------

    async def register(request: Request) -> Response:
        psk = _bearer(request)
        body = await _body(request, RegisterBody)
        capabilities = {
            "max_concurrent_uploads": body.max_concurrent_uploads,
            "bandwidth_mbps": body.bandwidth_mbps,
            "grpc_address": body.grpc_address,
            **body.capabilities,
        }
        ip_address = body.ip_address or (request.client.host if request.client else "")
        try:
            token, expires_at = await service.register_agent(
                psk,
                body.agent_id,
                body.agent_name or body.agent_id,
                ip_address,
                capabilities,
                dict(body.tags),
            )
        except AuthError:
            _auth_failure(request, "register")
            raise
        log.info("agent %s registered over HTTP from %s", body.agent_id, _client(request))
        # The one response that carries a secret: the agent's own new token.
        return _ok({"agent_id": body.agent_id, "token": token, "expires_at": expires_at})

    async def heartbeat(request: Request) -> Response:
        agent_id = require_agent(request)
        body = await _body(request, HeartbeatBody)
        if body.agent_id is not None and body.agent_id != agent_id:
            raise ApiError(403, "agent_id: does not match the token")
        await service.agent_heartbeat(agent_id, HeartbeatReport(
            status=body.status, current_tasks=body.current_tasks, free_slots=body.available_slots,
            memory_mb=int(body.memory_usage_mb), tasks_completed=body.tasks_completed))
        return _ok()

    async def task_status(request: Request) -> Response:
        agent_id = require_agent(request)
        body = await _body(request, TaskStatusBody)
        # The service refuses tasks not leased to this agent (NotFound/Conflict).
        await service.agent_progress(agent_id, ProgressReport(
            task_id=body.task_id, uploaded_bytes=body.uploaded_bytes,
            speed_bps=float(body.upload_speed), eta_seconds=float(body.eta_seconds or 0),
            status=body.status, error_kind=body.error_kind, error_message=body.error_message))
        return _ok()

    # -- admin routes --------------------------------------------------------

    async def list_agents(request: Request) -> Response:
        require_admin(request)
        return _ok({"agents": _redact(await service.list_agents())})

    async def assign_task(request: Request) -> Response:
        require_admin(request)
        body = await _body(request, AssignBody)
        task_id = await service.assign_task(body.part_id, body.agent_id, force=body.force)
        log.info("part %s assigned to agent %s as task %s%s", body.part_id, body.agent_id,
                 task_id, " (forced)" if body.force else "")
        return _ok({"task_id": task_id})

    async def retry_task(request: Request) -> Response:
        """``POST /api/manage/retry-task {task_id}``: a failed or cancelled task is queued
        again (same task id, resume point kept) -> the task (DESIGN §5 shape)."""
        require_admin(request)
        body = await _body(request, RetryBody)
        task = await service.retry_task(body.task_id)
        return _ok(_redact(task), message="Task queued again")

    async def agent_action(request: Request) -> Response:
        """``POST /api/manage/agents/{agent_id}/drain|disable|enable`` -> the agent row.

        drain: no new work, running tasks finish (optional body
        ``{"reconnect_after_seconds": n}``: the agent also closes and dials again in
        n s); disable: refused at connect, stream closed, tasks re-offered elsewhere;
        enable: undoes either.
        """
        require_admin(request)
        action = request.path_params["action"]
        seconds = 0
        raw = await _read_limited(request, MAX_JSON_BODY)
        if action == "drain" and raw.strip():
            seconds = decode_body(raw, AgentActionBody).reconnect_after_seconds
        agent = await service.set_agent_state(request.path_params["agent_id"], action,
                                              reconnect_after_seconds=seconds)
        return _ok(_redact(agent))

    async def enable_ip(request: Request) -> Response:
        """``POST /api/manage/ips/{ip}/enable`` (no body): lift the risk ledger's disable
        and cooldown of that egress IP; its history stays -> the IP's row."""
        require_admin(request)
        row = await service.reenable_ip(request.path_params["ip"])
        return _ok(_redact(row), message="IP re-enabled")

    async def cancel_task(request: Request) -> Response:
        require_admin(request)
        body = await _body(request, CancelBody)
        await service.cancel_task(body.task_id)
        log.info("task %s cancelled by admin", body.task_id)
        return _ok({"task_id": body.task_id}, message="Task cancelled")

    async def add_account(request: Request) -> Response:
        require_admin(request)
        body = await _body(request, AccountBody)
        _register_account_secrets(body)
        account_id = await service.accounts.add(
            body.name,
            cookies=body.cookies,
            cookies_json=body.cookies_json,
            access_key=body.access_key,
            mid=body.mid,
        )
        log.info("account %r added (id %s)", body.name, account_id)
        return _ok({"account_id": account_id})

    async def list_accounts(request: Request) -> Response:
        require_admin(request)
        return _ok({"accounts": _redact(await service.accounts.list())})

    # Where Bilibili's passport (QR login) and api (nav check) are; tests point them
    # at the simulator. A service without a config (test fakes) gets the real hosts.
    bili = getattr(getattr(service, "config", None), "bilibili", None) or BilibiliSettings()

    async def check(account: int | str) -> dict[str, Any]:
        try:
            return await check_account(service.accounts, account, api_url=bili.api_url)
        except NavError as exc:
            raise ApiError(502, f"validity check failed: {exc}") from None

    qr_logins = QrLogins(service.accounts, TvLoginClient(bili.passport_url), after_login=check)

    async def check_account_route(request: Request) -> Response:
        """``POST /api/manage/accounts/{account}/check`` -> the account with valid/uname/checked_at."""
        require_admin(request)
        row = await check(request.path_params["account"])
        log.info("account %r checked: %s", row["name"], "valid" if row["valid"] else "invalid")
        return _ok(_redact(row))

    async def delete_account(request: Request) -> Response:
        require_admin(request)
        row = await service.accounts.delete(request.path_params["account"])
        log.info("account %r deleted (id %s)", row["name"], row["account_id"])
        return _ok({"account_id": row["account_id"]}, message="Account deleted")

    async def start_qr_login(request: Request) -> Response:
        """``POST /api/manage/accounts/qr-login {name?}`` -> ``{login_id, url, expires_in}``."""
        require_admin(request)
        raw = await _read_limited(request, MAX_JSON_BODY)
        name = decode_body(raw, AccountLoginBody).name if raw.strip() else None
        try:
            return _ok(_redact(await qr_logins.start(name)))
        except TooManyLogins as exc:
            raise ApiError(429, str(exc)) from None
        except TvLoginError as exc:
            raise ApiError(502, f"QR login: {exc}") from None

    async def qr_login_status(request: Request) -> Response:
        """``GET /api/manage/accounts/qr-login/{login_id}`` -> state waiting|scanned|expired|done|failed."""
        require_admin(request)
        try:
            return _ok(_redact(await qr_logins.status(request.path_params["login_id"])))
        except LoginNotFound as exc:
            raise ApiError(404, str(exc)) from None

    async def create_part(request: Request) -> Response:
        require_admin(request)
        body = await _body(request, PartBody)
        if not PurePath(body.file_path).is_absolute():
            raise ApiError(400, "file_path: must be an absolute path on the hub")
        account = str(body.account) if body.account is not None else None
        result = await service.create_part(
            body.file_path, account=account, title=body.title, auto_upload=body.auto_upload
        )
        log.info("part %s created for %s", result.get("part_id"), body.file_path)
        return _ok(_redact(result))

    async def list_tasks(request: Request) -> Response:
        require_admin(request)
        return _ok({"tasks": _redact(await service.list_tasks())})

    async def get_task(request: Request) -> Response:
        require_admin(request)
        return _ok(_redact(await service.get_task(request.path_params["task_id"])))

    async def task_logs(request: Request) -> Response:
        require_admin(request)
        return _ok({"logs": _redact(await service.task_logs(request.path_params["task_id"]))})

    async def list_ips(request: Request) -> Response:
        require_admin(request)
        return _ok({"ips": _redact(await service.list_ips())})

    async def events(request: Request) -> Response:
        """``GET /api/manage/events``: live state as Server-Sent Events (hub/api/sse.py)."""
        require_admin(request)
        return event_stream_response(service, _redact)

    async def healthz(request: Request) -> Response:
        return _ok({"status": "ok"})

    routes: list[BaseRoute] = [
        Route("/healthz", _guard(healthz), methods=["GET"]),
        Route("/api/agent/register", _guard(register), methods=["POST"]),
        Route("/api/agent/heartbeat", _guard(heartbeat), methods=["POST"]),
        Route("/api/agent/task-status", _guard(task_status), methods=["POST"]),
        Route("/api/manage/agents", _guard(list_agents), methods=["GET"]),
        Route("/api/manage/assign-task", _guard(assign_task), methods=["POST"]),
        Route("/api/manage/cancel-task", _guard(cancel_task), methods=["POST"]),
        Route("/api/manage/accounts", _guard(add_account), methods=["POST"]),
        Route("/api/manage/accounts", _guard(list_accounts), methods=["GET"]),
        Route("/api/manage/accounts/qr-login", _guard(start_qr_login), methods=["POST"]),
        Route("/api/manage/accounts/qr-login/{login_id}", _guard(qr_login_status),
              methods=["GET"]),
        Route("/api/manage/accounts/{account}/check", _guard(check_account_route),
              methods=["POST"]),
        Route("/api/manage/accounts/{account}", _guard(delete_account), methods=["DELETE"]),
        Route("/api/manage/parts", _guard(create_part), methods=["POST"]),
        Route("/api/manage/tasks", _guard(list_tasks), methods=["GET"]),
        Route("/api/manage/tasks/{task_id}", _guard(get_task), methods=["GET"]),
        Route("/api/manage/tasks/{task_id}/logs", _guard(task_logs), methods=["GET"]),
        Route("/api/manage/ips", _guard(list_ips), methods=["GET"]),
        Route("/api/manage/ips/{ip}/enable", _guard(enable_ip), methods=["POST"]),
        Route("/api/manage/retry-task", _guard(retry_task), methods=["POST"]),
        Route("/api/manage/agents/{agent_id}/{action:str}", _guard(agent_action),
              methods=["POST"]),
        Route("/api/manage/events", _guard(events), methods=["GET"]),
        *web_routes(),
        *extra_routes,
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})


# -- plumbing ----------------------------------------------------------------


def _guard(handler: Handler) -> Handler:
    """Turn every failure of ``handler`` into an enveloped error response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except AuthError as exc:
            return _error(401, str(exc) or "unauthorized")
        except (NotFound, AccountNotFound, FileNotFoundError) as exc:
            return _error(404, _message(exc, "not found"))
        except (Conflict, DuplicateAccount) as exc:
            return _error(409, _message(exc, "conflict"))
        except (AccountError, BodyError, BadRequest) as exc:
            return _error(400, _message(exc, "bad request"))
        except Exception:
            # The traceback is for the operator; the client learns nothing internal.
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, "internal error; see the hub log")

    return endpoint


def _message(exc: BaseException, default: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}" if exc.filename else "no such file"
    return str(exc) or default


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown path (404) and wrong method (405) keep the envelope too."""
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail or "error", headers=exc.headers)


def _ok(data: Any = None, *, message: str = "success") -> Response:
    return _json(200, {"code": 0, "message": message, "data": data})


def _error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _json(status, {"code": status, "message": message, "data": None}, headers=headers)


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(payload),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing Authorization: Bearer header")
    return token


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _auth_failure(request: Request, kind: str) -> None:
    # Who and where, never what they sent.
    log.warning("refused %s credentials on %s from %s", kind, request.url.path, _client(request))


async def _body(request: Request, struct_type: type[T]) -> T:
    body = decode_body(await _read_limited(request, MAX_JSON_BODY), struct_type)
    note_targets(request.scope, body)  # ids the action was about, for the audit log
    return body


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    too_large = ApiError(413, f"request body too large (limit {limit} bytes)")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length: not a number") from None
        if declared > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _register_account_secrets(body: AccountBody) -> None:
    """From now on this process's logs scrub the account's cookie values and keys
    (bupmesh.logs), even where they appear bare, without their ``NAME=``."""
    public = {"DedeUserID"}  # the account's user id (mid): public, and scrubbing it would
    # blank every log number that happens to equal it
    pairs = [piece.partition("=") for piece in (body.cookies or "").split(";")]
    values = [v.strip() for k, _, v in pairs if k.strip() not in public]
    if body.cookies_json:
        info = body.cookies_json.get("cookie_info")
        for cookie in (info or {}).get("cookies", []) if isinstance(info, dict) else []:
            if (isinstance(cookie, dict) and isinstance(cookie.get("value"), str)
                    and cookie.get("name") not in public):
                values.append(cookie["value"])
        token = body.cookies_json.get("token_info")
        if isinstance(token, dict):
            values += [v for k, v in token.items() if "token" in k and isinstance(v, str)]
    for value in [*values, body.access_key]:
        register_secret(value)


def _redact(value: Any) -> Any:
    """Drop secret-named fields anywhere in ``value`` (defence in depth for admin responses)."""
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in SECRET_FIELDS:
                log.warning("dropped secret field %r from an API response", key)
                continue
            clean[key] = _redact(item)
        return clean
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value
