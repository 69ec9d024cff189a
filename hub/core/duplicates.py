"""Second processes claiming a live agent id: remembered so people can see them.

A copied ``agent.yml`` (or a leaked PSK) makes two processes claim one agent id.
The hub refuses the second while the first holds a live stream (the registry
says who holds it); this keeps what was refused, from where and how often, for
the agents view, the web UI and the ``agent_duplicate`` alert. A refused agent
retries only every few minutes, so a claim is forgotten once none came for
:data:`FORGET_AFTER` seconds: the second process was stopped or renamed.
Pure: the clock comes in with each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Longer than a refused agent's longest wait between tries (spoke/link.py: 10 min).
FORGET_AFTER = 900.0


@dataclass
class DuplicateClaim:
    agent_id: str
    live_address: str  # where the stream that holds the id comes from
    refused_address: str  # where the refused claim came from (the latest one)
    first_at: float
    last_at: float
    attempts: int = 1

    def row(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "live_address": self.live_address,
                "refused_address": self.refused_address, "first_at": self.first_at,
                "last_at": self.last_at, "attempts": self.attempts}


class DuplicateClaims:
    def __init__(self, forget_after: float = FORGET_AFTER) -> None:
        self.forget_after = forget_after
        self._claims: dict[str, DuplicateClaim] = {}

    def note(self, agent_id: str, live_address: str, refused_address: str,
             now: float) -> tuple[DuplicateClaim, bool]:
        """Record a refused claim; returns it and whether it is new (not a retry)."""
        claim = self.of(agent_id, now)
        if claim is None:
            claim = self._claims[agent_id] = DuplicateClaim(
                agent_id, live_address, refused_address, now, now)
            return claim, True
        claim.live_address, claim.refused_address = live_address, refused_address
        claim.last_at = now
        claim.attempts += 1
        return claim, False

    def of(self, agent_id: str, now: float) -> DuplicateClaim | None:
        claim = self._claims.get(agent_id)
        if claim is not None and now - claim.last_at > self.forget_after:
            del self._claims[agent_id]
            return None
        return claim

    def current(self, now: float) -> list[DuplicateClaim]:
        return [c for agent_id in sorted(self._claims) if (c := self.of(agent_id, now))]

    def clear(self, agent_id: str) -> None:
        self._claims.pop(agent_id, None)
