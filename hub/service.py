"""HubService: the one object the HTTP layer and the gRPC link talk to.

Skeleton first (signatures are the seam in docs/internals.md); bodies follow.
"""

from __future__ import annotations

from typing import Any


class AuthError(Exception):
    """Credentials were wrong, expired, revoked or disabled (401 / UNAUTHENTICATED)."""


class NotFound(Exception):
    """No such task, part or agent (404)."""


class Conflict(Exception):
    """The request contradicts current state: agent offline, task terminal (409)."""


class HubService:
    async def register_agent(
        self,
        psk: str,
        agent_id: str,
        agent_name: str,
        ip_address: str,
        capabilities: dict[str, Any],
        tags: dict[str, str],
    ) -> tuple[str, int]:
        raise NotImplementedError

    def verify_agent_token(self, token: str) -> str:
        raise NotImplementedError

    async def agent_heartbeat(self, agent_id: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def agent_task_status(self, agent_id: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def create_part(
        self, file_path: str, *, account: str | None, title: str | None, auto_upload: bool = True
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def assign_task(self, part_id: int, agent_id: str) -> str:
        raise NotImplementedError

    async def cancel_task(self, task_id: str) -> None:
        raise NotImplementedError

    async def list_agents(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def list_tasks(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def get_task(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def list_ips(self) -> list[dict[str, Any]]:
        raise NotImplementedError
