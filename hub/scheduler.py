"""Which agent gets a pending task (pure: no IO, no clock).

A small interface so later strategies (round robin, IP diversity, the risk
ledger) plug in without touching the service: ``choose(task, candidates)``
returns the agent id or ``None``. The service passes only agents that are
online, not draining/disabled and allowed for this task; the strategy only
ranks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    ip_address: str
    active_tasks: int  # tasks the hub has leased to it right now
    max_concurrent: int
    total_assigned: int = 0  # leases ever given (tie-break: spread work around)

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent - self.active_tasks)


class Scheduler(Protocol):
    def choose(self, task_id: str, candidates: Sequence[Candidate]) -> str | None: ...


class LeastLoaded:
    """The online agent with a free slot and the lowest load; ties spread by history, then id."""

    def choose(self, task_id: str, candidates: Sequence[Candidate]) -> str | None:
        free = [c for c in candidates if c.free_slots > 0]
        if not free:
            return None
        best = min(
            free,
            key=lambda c: (
                c.active_tasks / max(1, c.max_concurrent),
                c.active_tasks,
                c.total_assigned,
                c.agent_id,
            ),
        )
        return best.agent_id


def make_scheduler(strategy: str) -> Scheduler:
    """Every configured strategy maps to least-loaded until the strategies issue lands."""
    return LeastLoaded()
