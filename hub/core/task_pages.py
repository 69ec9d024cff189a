"""The task list a page at a time: filters, page size and the cursor (pure).

A hub keeps every task it ever ran (a busy one makes about 100,000 a year), so
the list is never read whole: ``GET /api/manage/tasks`` answers one page, newest
first, and a ``next_cursor`` that continues after the page's last task. The
cursor is keyset pagination on the task's row id (stable while tasks are added:
a new task lands before the first page, never in the middle of a walk) made
opaque, so clients pass it back rather than build it.

Filters narrow the walk; each is an indexed column (status, agent, account, a
recording's parts, creation time), so a page costs the same with ten tasks in
the database or a hundred thousand.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from hub.core.errors import BadRequest
from hub.core.lifecycle import Status

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR_PREFIX = "t1:"
_STATUSES = frozenset(s.value for s in Status)


@dataclass(frozen=True)
class TaskQuery:
    """One page's request: filters (None = any), where to start, how many."""

    statuses: tuple[str, ...] = ()
    agent_id: str | None = None
    account: str | None = None
    recording_id: int | None = None
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before
    before_id: int | None = None  # the cursor: rows with a smaller id
    limit: int = DEFAULT_LIMIT


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row id a cursor continues before; BadRequest for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError
        row_id = int(text[len(_CURSOR_PREFIX):])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("cursor: not a cursor this hub gave out") from None
    if row_id < 0:
        raise BadRequest("cursor: not a cursor this hub gave out")
    return row_id


def parse_query(params: Mapping[str, str]) -> TaskQuery:
    """``status`` (comma-separated), ``agent``, ``account``, ``recording``, ``since``,
    ``until``, ``cursor``, ``limit`` from a query string; BadRequest naming the bad one."""
    known = {"status", "agent", "account", "recording", "since", "until", "cursor", "limit"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown parameter (expected one of "
                         f"{', '.join(sorted(known))})")
    statuses: tuple[str, ...] = ()
    if params.get("status"):
        statuses = tuple(dict.fromkeys(s.strip() for s in params["status"].split(",")
                                       if s.strip()))
        bad = [s for s in statuses if s not in _STATUSES]
        if bad:
            raise BadRequest(f"status: {bad[0]!r} is not one of {', '.join(sorted(_STATUSES))}")
    limit = _number(params, "limit", int, DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: expected 1..{MAX_LIMIT}")
    recording = _number(params, "recording", int, None)
    return TaskQuery(
        statuses=statuses,
        agent_id=params.get("agent") or None,
        account=params.get("account") or None,
        recording_id=recording,
        since=_number(params, "since", float, None),
        until=_number(params, "until", float, None),
        before_id=decode_cursor(params["cursor"]) if params.get("cursor") else None,
        limit=limit,
    )


def _number(params: Mapping[str, str], key: str, kind: type, default: object) -> object:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{key}: expected a number, got {raw[:40]!r}") from None
    if kind is float and value != value:  # NaN
        raise BadRequest(f"{key}: expected a number, got {raw[:40]!r}")
    return value
