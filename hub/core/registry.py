"""Agents the hub knows and the live session of each (pure; injected clock).

One live session per agent id: attaching a new session returns the old one so
the caller can close it (the newest dial wins, e.g. after a NAT rebinding left a
half-open stream behind). An agent is online while its session lives and
heartbeats arrive; ``expired()`` names sessions silent for longer than
``offline_after`` and ``detach()`` marks the agent offline at once when its
stream drops.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ONLINE, BUSY, OFFLINE, DRAINING, DISABLED = "online", "busy", "offline", "draining", "disabled"


@dataclass
class AgentInfo:
    agent_id: str
    agent_name: str = ""
    ip_address: str = ""  # what the agent reports (its configured address), else its link's
    # What Bilibili sees of the agent: the address its own Bilibili client leaves from,
    # proxy included (x/web-interface/zone); "" until the agent has learned it.
    egress_ip: str = ""
    link_address: str = ""  # the peer address of its stream, as the hub sees it
    line: str = ""  # the upload line it uses now, and its throughput estimate (bytes/s)
    line_bps: float = 0.0
    max_concurrent: int = 2
    bandwidth_mbps: int = 0
    storage_type: str = "network"
    buffer_bytes: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    finish_handshake: bool = False  # asks (Finishing) before completing; from Hello
    local_paths: tuple[str, ...] = ()  # local/hybrid: hub path prefixes it reads itself
    disabled: bool = False
    tokens_valid_after: float = 0.0  # tokens issued before this are revoked
    # live state (not persisted beyond last_heartbeat/status)
    session: Any = None  # the live stream, an AgentStream (hub/core/ports.py)
    session_id: str | None = None
    draining: bool = False
    drained_by_admin: bool = False  # until an admin enables it again (heartbeats cannot undo it)
    last_heartbeat: float | None = None
    reported_status: str = ""
    free_slots: int = 0
    current_tasks: int = 0
    memory_mb: int = 0
    tasks_completed: int = 0

    # Bumped by every attribute assignment (not a dataclass field): lets the scheduler's
    # view cache (hub/core/agent_views.py) tell an unchanged agent in O(1), without each
    # place that changes an agent having to report it.
    version = 0

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "version", self.version + 1)

    @property
    def connected(self) -> bool:
        return self.session is not None

    @property
    def risk_ip(self) -> str:
        """The IP the risk ledger judges this agent by: its egress as Bilibili sees it,
        until that is known the address it reports (or its link's). Agents sharing an
        egress (one NAT, one proxy) share this, and so one ledger entry."""
        return self.egress_ip or self.ip_address or "unknown"

    @property
    def status(self) -> str:
        if self.disabled:
            return DISABLED
        if self.session is None:
            return OFFLINE
        if self.draining or self.drained_by_admin:
            return DRAINING
        if self.reported_status == BUSY or (self.current_tasks and self.free_slots <= 0):
            return BUSY
        return ONLINE

    @property
    def schedulable(self) -> bool:
        return (self.session is not None and not self.disabled and not self.draining
                and not self.drained_by_admin)


class Registry:
    def __init__(
        self,
        *,
        heartbeat_interval: float = 30.0,
        offline_after: float = 90.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.offline_after = offline_after
        self.clock = clock
        self.agents: dict[str, AgentInfo] = {}

    def get(self, agent_id: str) -> AgentInfo | None:
        return self.agents.get(agent_id)

    def ensure(self, agent_id: str) -> AgentInfo:
        info = self.agents.get(agent_id)
        if info is None:
            info = self.agents[agent_id] = AgentInfo(agent_id=agent_id)
        return info

    def attach(self, agent_id: str, session: Any, session_id: str) -> Any:
        """Make ``session`` the agent's live one; returns the session it replaced, if any."""
        info = self.ensure(agent_id)
        old = info.session
        info.session, info.session_id = session, session_id
        info.draining = False
        info.reported_status = ""
        info.last_heartbeat = self.clock()
        return old

    def detach(self, agent_id: str, session: Any) -> bool:
        """The stream of ``session`` ended. True if it was the live one (agent now offline)."""
        info = self.agents.get(agent_id)
        if info is None or info.session is not session:
            return False
        info.session = info.session_id = None
        info.draining = False
        return True

    def heartbeat(
        self,
        agent_id: str,
        *,
        status: str = "",
        current_tasks: int = 0,
        free_slots: int = 0,
        memory_mb: int = 0,
        tasks_completed: int = 0,
    ) -> None:
        info = self.ensure(agent_id)
        info.last_heartbeat = self.clock()
        info.reported_status = status
        info.draining = status == DRAINING
        info.current_tasks = max(0, current_tasks)
        info.free_slots = max(0, free_slots)
        info.memory_mb = max(0, memory_mb)
        info.tasks_completed = max(info.tasks_completed, tasks_completed)

    def set_reach(self, agent_id: str, *, egress_ip: str = "", line: str = "",
                  line_bps: float = 0.0) -> tuple[str, str] | None:
        """What the agent reports of its way to Bilibili (Hello, Heartbeat): its egress
        address, its upload line and that line's estimated throughput. Empty or
        malformed values change nothing. Returns ``(old, new)`` risk IP when the
        egress moved the agent to another ledger entry, else None."""
        info = self.ensure(agent_id)
        if line:
            info.line = line[:64]
        if line_bps and math.isfinite(line_bps) and line_bps > 0:
            info.line_bps = float(line_bps)
        egress = egress_address(egress_ip)
        if not egress or egress == info.egress_ip:
            return None
        old = info.risk_ip
        info.egress_ip = egress
        return (old, info.risk_ip) if old != info.risk_ip else None

    def expired(self) -> list[AgentInfo]:
        """Connected agents silent for longer than ``offline_after``."""
        now = self.clock()
        return [
            a
            for a in self.agents.values()
            if a.session is not None
            and a.last_heartbeat is not None
            and now - a.last_heartbeat > self.offline_after
        ]

    def schedulable(self) -> list[AgentInfo]:
        return [a for a in self.agents.values() if a.schedulable]


def egress_address(value: str) -> str:
    """An IP address in its normal form, or "" for anything else (the agent's word is
    checked: it becomes a ledger key and a column in the admin UI)."""
    if not value or len(value) > 64:
        return ""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return ""
