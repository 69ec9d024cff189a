"""What the hub's parts raise when a request or a message cannot be served.

Domain errors only: the transport edges map them to their own codes (the HTTP
layer to 401/403/404/409/400, the gRPC link to status codes), so nothing below the
edges knows which transport carried the request.
"""

from __future__ import annotations

import enum


class AuthError(Exception):
    """Credentials were wrong, expired, revoked or disabled."""


class Forbidden(Exception):
    """The caller is known but may not do this: a read-only token asking for a change,
    a file outside the media roots, an agent id an admin rejected."""


class NotFound(Exception):
    """No such task, part, file, account or agent."""


class Conflict(Exception):
    """The request contradicts current state: agent offline, task terminal."""


class DuplicateAgent(Conflict):
    """Another process holds this agent id on a live stream; the message names its address."""

    def __init__(self, agent_id: str, holder_address: str) -> None:
        super().__init__(f"agent id {agent_id} is already connected from "
                         f"{holder_address or 'an unknown address'} by another agent process")
        self.agent_id = agent_id
        self.holder_address = holder_address


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
