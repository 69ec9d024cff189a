"""Request bodies of the hub's HTTP API: read within a limit, decoded strictly, checked.

Every body is a struct with ``forbid_unknown_fields`` so a typo in a field name
is a 400 naming that field rather than a silently ignored setting. Decoding
errors are rewritten to ``field: reason``; msgspec's messages never quote the
offending value, so a cookie sent in the wrong place is not echoed back.

The agent API's bodies end here as the hub's own report types
(``hub.core.reports``): the hub acts on checked data, never on JSON.
"""

from __future__ import annotations

import re
from contextlib import aclosing
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct, field
from starlette.requests import Request

from hub.api.audit import note_targets
from hub.api.envelope import ApiError
from hub.core.reports import HeartbeatReport, ProgressReport

T = TypeVar("T")

MAX_JSON_BODY = 1024 * 1024

# Printable text without control characters: names end up in logs and the web UI.
Text = Annotated[str, Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f\s]+$")]
Count = Annotated[int, Meta(ge=0)]
Amount = Annotated[float, Meta(ge=0)]


class BodyError(ApiError, ValueError):
    """The body is not the expected JSON (400); the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class RegisterBody(Struct, forbid_unknown_fields=True):
    """``POST /api/agent/register``; ``capabilities`` carries what the fixed fields do not."""

    agent_id: Id
    agent_name: str = ""
    ip_address: str = ""
    max_concurrent_uploads: Annotated[int, Meta(ge=1, le=1024)] = 2
    bandwidth_mbps: Amount = 0
    tags: dict[str, str] = field(default_factory=dict)
    grpc_address: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)


class HeartbeatBody(Struct, forbid_unknown_fields=True):
    """``POST /api/agent/heartbeat``; ``agent_id`` may be left out (the token names the agent)."""

    agent_id: Id | None = None
    status: Literal["online", "busy", "draining", "offline"] = "online"
    current_tasks: Count = 0
    available_slots: Count = 0
    memory_usage_mb: Amount = 0
    tasks_completed: Count = 0


class TaskStatusBody(Struct, forbid_unknown_fields=True):
    """``POST /api/agent/task-status``: progress, or a failure with its error kind."""

    task_id: Id
    status: Literal["assigned", "uploading", "completed", "failed", "cancelled"]
    attempt: Count | None = None
    uploaded_bytes: Count = 0
    total_bytes: Count = 0
    upload_speed: Amount = 0
    eta_seconds: Amount | None = None
    error_message: str | None = None
    error_kind: str | None = None
    filename: str | None = None
    biz_id: int | None = None


class AssignBody(Struct, forbid_unknown_fields=True):
    """``force``: start even if the agent's IP is cooling, resting or capped (never disabled)."""

    part_id: int
    agent_id: Id
    force: bool = False


class RetryBody(Struct, forbid_unknown_fields=True):
    task_id: Id


class ForgetBody(Struct, forbid_unknown_fields=True):
    """``POST /api/manage/risk/forget``: which learned limit to forget."""

    scope: Literal["ip", "mesh", "account"]
    subject: Text | None = None  # the IP, or the account's id or name (not for mesh)


class AgentActionBody(Struct, forbid_unknown_fields=True):
    """Optional body of ``POST /api/manage/agents/{id}/drain``."""

    reconnect_after_seconds: Annotated[int, Meta(ge=0, le=86400)] = 0


class CancelBody(Struct, forbid_unknown_fields=True):
    task_id: Id


class AccountBody(Struct, forbid_unknown_fields=True):
    """``{name, cookies, access_key?, mid?}`` or ``{name, cookies_json}`` (biliup's file)."""

    name: str
    cookies: str | None = None
    cookies_json: dict[str, Any] | None = None
    access_key: str | None = None
    mid: int | None = None


class AccountLoginBody(Struct, forbid_unknown_fields=True):
    """Optional body of ``POST /api/manage/accounts/qr-login``; no name: ``bili-{mid}``."""

    name: str | None = None


class PartBody(Struct, forbid_unknown_fields=True):
    file_path: Annotated[str, Meta(min_length=1, max_length=4096)]
    account: str | int | None = None
    title: Text | None = None
    auto_upload: bool = True


async def read_limited(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
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
    # Closed at once when refused, rather than left to the garbage collector.
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, struct_type: type[T]) -> T:
    """The body decoded into ``struct_type``; its ids are kept for the audit log."""
    body = decode_body(await read_limited(request), struct_type)
    note_targets(request.scope, body)
    return body


def heartbeat_report(body: HeartbeatBody) -> HeartbeatReport:
    return HeartbeatReport(
        status=body.status,
        current_tasks=body.current_tasks,
        free_slots=body.available_slots,
        memory_mb=int(body.memory_usage_mb),
        tasks_completed=body.tasks_completed,
    )


def progress_report(body: TaskStatusBody) -> ProgressReport:
    return ProgressReport(
        task_id=body.task_id,
        uploaded_bytes=body.uploaded_bytes,
        speed_bps=float(body.upload_speed),
        eta_seconds=float(body.eta_seconds or 0),
        status=body.status,
        error_kind=body.error_kind,
        error_message=body.error_message,
    )


def decode_body(body: bytes, struct_type: type[T]) -> T:
    """Decode a JSON object into ``struct_type`` or raise ``BodyError`` naming the field."""
    if not body.strip():
        raise BodyError("request body must be a JSON object")
    try:
        return msgspec.json.decode(body, type=struct_type)
    except msgspec.ValidationError as exc:
        raise BodyError(describe(exc)) from None
    except msgspec.DecodeError as exc:
        raise BodyError(f"invalid JSON: {exc}") from None


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def describe(exc: msgspec.ValidationError) -> str:
    """``Expected `int`, got `str` - at `$.part_id``` -> ``part_id: Expected `int`, got `str```."""
    text = str(exc)
    match = _AT.search(text)
    message, path = (text[: match.start()], match.group("path")) if match else (text, "")
    where = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    unknown = re.fullmatch(r"Object contains unknown field `(?P<f>[^`]+)`", message)
    if unknown:
        return f"{_join(where, unknown.group('f'))}: unknown field"
    missing = re.fullmatch(r"Object missing required field `(?P<f>[^`]+)`", message)
    if missing:
        return f"{_join(where, missing.group('f'))}: required field is missing"
    if not where:
        return f"request body: {message}"
    return f"{where}: {message}"


def _join(parent: str, leaf: str) -> str:
    return f"{parent}.{leaf}" if parent else leaf
