"""What an agent reports over the HTTP agent API, as plain data.

The HTTP layer decodes and checks the JSON bodies; the hub acts on these, so
the stream and the HTTP API feed the same handlers with the same types.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeartbeatReport:
    """An agent's liveness and load (``POST /api/agent/heartbeat``)."""

    status: str = ""
    current_tasks: int = 0
    free_slots: int = 0
    memory_mb: int = 0
    tasks_completed: int = 0
    egress_ip: str = ""  # "" = unchanged / not known
    line: str = ""
    line_bps: float = 0.0


@dataclass(frozen=True)
class ProgressReport:
    """Progress of an agent's own running task (``POST /api/agent/task-status``).

    ``status`` "failed" ends the attempt with ``error_kind``/``error_message``;
    completion is reported only over the stream, where the bytes are checked.
    """

    task_id: str
    uploaded_bytes: int = 0
    speed_bps: float = 0.0
    eta_seconds: float = 0.0
    status: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
