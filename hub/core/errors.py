"""What the hub's parts raise when a request or a message cannot be served.

Domain errors only: the transport edges map them to their own codes (the HTTP
layer to 401/404/409/400, the gRPC link to status codes), so nothing below the
edges knows which transport carried the request.
"""

from __future__ import annotations

import enum


class AuthError(Exception):
    """Credentials were wrong, expired, revoked or disabled."""


class NotFound(Exception):
    """No such task, part, file, account or agent."""


class Conflict(Exception):
    """The request contradicts current state: agent offline, task terminal."""


class BadRequest(ValueError):
    """The request itself is malformed: empty file, bad agent id, bad field."""


class Violation(enum.Enum):
    """How an agent broke the stream's conversation."""

    MALFORMED = "malformed"  # a message that cannot mean anything (bad field, bad bytes)
    OUT_OF_ORDER = "out_of_order"  # a valid message at the wrong moment (Credit before Accept)
    WRONG_AGENT = "wrong_agent"  # the stream speaks for another agent than its token
    SILENT = "silent"  # no Hello in time


class ProtocolViolation(Exception):
    """An agent broke the conversation on its stream; that stream ends, nothing else."""

    def __init__(self, kind: Violation, details: str) -> None:
        super().__init__(details)
        self.kind = kind
        self.details = details


class StorageFull(Exception):
    """The hub's data directory has no room for a write (SQLite's "database or disk is
    full"). Nothing was written; the hub stays up, refuses new work and tries again when
    space returns (hub/store/space.py)."""

    def __init__(self, directory: str, free_bytes: int | None) -> None:
        free = "unknown" if free_bytes is None else f"{free_bytes} bytes"
        super().__init__(f"data directory {directory} is full ({free} free): writes are "
                         "refused until space returns")
        self.directory = directory
        self.free_bytes = free_bytes
