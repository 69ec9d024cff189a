"""What the hub's core needs from the world around it, as protocols.

The core decides; the store persists, the link talks to agents, metrics count,
the recording pipeline submits. Each is handed in as an object with these
methods, so the core imports none of them (nor gRPC, SQLite or HTTP) and tests
can hand in fakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hub.core.lifecycle import TaskRecord
    from hub.core.task_pages import TaskQuery
    from protocol import mesh_pb2 as pb
    from uploader.credentials import Credentials


class AgentStream(Protocol):
    """One agent's live stream, as the core uses it."""

    agent_id: str
    session_id: str
    ip_address: str
    closed: bool

    @property
    def crc32_integrity(self) -> bool:
        """The agent checks streamed bytes with CRC32 (Offers ask for it)."""
        ...

    def send(self, msg: pb.HubMessage) -> None:
        """Queue a control message; a no-op once the stream is closed."""
        ...

    def close(self, reason: str) -> None:
        """End the stream."""
        ...

    def stop_stream(self, task_id: str) -> None:
        """Stop sending ``task_id``'s bytes (its attempt ended)."""
        ...


class HubStore(Protocol):
    """The database calls the core makes (hub/store/tasks.py implements them)."""

    async def save_task(self, task: TaskRecord, *, log: tuple[str, str, str, str] | None = None,
                        part_state: str | None = None) -> None:
        """Write the task (on a full disk the write waits for space)."""
        ...

    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    async def load_tasks(self, *, active_only: bool = False) -> list[TaskRecord]: ...

    async def page_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], int | None]: ...

    async def recent_ended_tasks(self, limit: int) -> list[TaskRecord]: ...

    async def logs(self, task_id: str) -> list[dict[str, Any]]: ...

    async def get_part(self, part_id: int) -> dict[str, Any] | None: ...

    async def load_agents(self) -> list[dict[str, Any]]: ...

    async def mark_all_agents_offline(self) -> None: ...

    async def set_agent_status(self, agent_id: str, status: str, *,
                               last_heartbeat: float | None = None,
                               tasks_completed: int | None = None) -> None: ...

    def note_heartbeat(self, agent_id: str, status: str, *, last_heartbeat: float | None,
                       tasks_completed: int | None) -> None: ...

    async def flush_heartbeats(self) -> int: ...

    async def set_agent_access(self, agent_id: str, *, disabled: bool,
                               tokens_valid_after: float) -> None: ...

    async def set_agent_egress(self, agent_id: str, egress_ip: str) -> None: ...

    async def save_ledger_ips(self, changes: dict[str, dict[str, Any]]) -> None: ...

    async def load_ledger(self) -> dict[str, Any] | None: ...

    async def save_risk_state(self, name: str, snapshot: dict[str, Any]) -> None: ...

    async def load_risk_state(self, name: str) -> dict[str, Any] | None: ...


class Accounts(Protocol):
    """Bilibili credentials by account name (None: the default account)."""

    async def credentials(self, account: str | None) -> Credentials: ...

    async def resolve(self, account: str | int | None) -> dict[str, Any]:
        """The account's public row: ``account_id``, ``name``, ``mid`` ..."""
        ...


class Counters(Protocol):
    """The metrics the core counts as things happen (hub/metrics.py)."""

    def uploaded(self, task: TaskRecord, agent_id: str, ip: str, attempt: int,
                 before: int) -> None: ...

    def risk_event(self, ip: str, kind: str) -> None: ...

    def upload_started(self, ip: str) -> None: ...

    def account_event(self, kind: str) -> None: ...

    def session_dropped(self, parts: int, size: int) -> None: ...

    def retry(self, kind: str) -> None: ...

    def decision(self, chosen: bool) -> None: ...


class Submissions(Protocol):
    """The recording pipeline's hooks into the agent stream (hub/submission/manager.py)."""

    def on_hello(self, session: Any, hello: pb.Hello) -> None: ...

    async def on_result(self, session: Any, msg: pb.SubmitResult) -> None: ...

    def poke(self) -> None: ...
