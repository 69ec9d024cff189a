"""Agents the hub knows and the live session of each (pure; injected clock).

One live session per agent id, held by one agent process (its instance id).
The same instance dialling again replaces its session (the newest dial wins,
e.g. after a NAT rebinding left a half-open stream behind): attaching returns
the old session so the caller can close it. Another instance is refused while
the session lives (``holder``), and the refusal is remembered
(``duplicates``). An agent is online while its session lives and heartbeats
arrive; ``expired()`` names sessions silent for longer than ``offline_after``
and ``detach()`` marks the agent offline at once when its stream drops, which
also frees the id for any process.

An agent id is ``approved`` unless the hub admits new ids only after an admin's
approval (``pending``) or an admin turned it away (``rejected``); only approved
agents get work, and only for the accounts they may use (``allowed_accounts``,
None: all).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hub.core.duplicates import DuplicateClaim, DuplicateClaims

ONLINE, BUSY, OFFLINE, DRAINING, DISABLED = "online", "busy", "offline", "draining", "disabled"
APPROVED, PENDING, REJECTED = "approved", "pending", "rejected"


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
    approval: str = APPROVED  # APPROVED | PENDING | REJECTED
    allowed_accounts: frozenset[str] | None = None  # account names or ids; None: every one
    accounts_from_config: bool = False  # the allowlist is hub.yml's (the API may not change it)
    # live state (not persisted beyond last_heartbeat/status)
    session: Any = None  # the live stream, an AgentStream (hub/core/ports.py)
    session_id: str | None = None
    instance_id: str = ""  # the agent process that holds the live session
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
    # Told of every assignment, likewise (not a field): the registry that holds the agent
    # keeps its indexes of schedulable agents with it (Registry._changed).
    _on_change: ClassVar[Callable[[AgentInfo], None] | None] = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "version", self.version + 1)
        if self._on_change is not None:
            self._on_change(self)

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
        if self.approval != APPROVED:
            return self.approval
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
                and not self.drained_by_admin and self.approval == APPROVED)

    def may_use(self, *account: str | None) -> bool:
        """Whether this agent may carry an account's credentials; ``account`` is every
        name the account goes by (its name, its id): one listed is enough."""
        allowed = self.allowed_accounts
        return allowed is None or any(a is not None and str(a) in allowed for a in account)


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
        self.connected = 0  # agents with a live session, kept as they attach and detach
        self.duplicates = DuplicateClaims()
        # Kept as agents change (each assignment to one reports here), so a scheduling pass
        # reads them instead of walking the fleet: the schedulable agents, those of them
        # with an allowlist, and the ids changed since the scheduler last took them.
        self._ready: dict[str, AgentInfo] = {}
        self._restricted: dict[str, AgentInfo] = {}
        self._touched: set[str] = set()

    def get(self, agent_id: str) -> AgentInfo | None:
        return self.agents.get(agent_id)

    def ensure(self, agent_id: str) -> AgentInfo:
        info = self.agents.get(agent_id)
        if info is None:
            info = self.agents[agent_id] = AgentInfo(agent_id=agent_id)
            object.__setattr__(info, "_on_change", self._changed)
            self._changed(info)
        return info

    def _changed(self, info: AgentInfo) -> None:
        agent_id = info.agent_id
        self._touched.add(agent_id)
        if info.schedulable:
            self._ready[agent_id] = info
            if info.allowed_accounts is not None:
                self._restricted[agent_id] = info
            else:
                self._restricted.pop(agent_id, None)
        else:
            self._ready.pop(agent_id, None)
            self._restricted.pop(agent_id, None)

    def holder(self, agent_id: str, instance_id: str) -> AgentInfo | None:
        """The agent, if a live session of another process holds its id (so a claim by
        ``instance_id`` must be refused). An empty instance id matches no session: a
        claim that does not say which process it is cannot replace a live one."""
        info = self.agents.get(agent_id)
        if info is None or info.session is None or getattr(info.session, "closed", False):
            return None
        if instance_id and instance_id == info.instance_id:
            return None
        return info

    def refuse_claim(self, holder: AgentInfo, refused_address: str) -> tuple[DuplicateClaim, bool]:
        """Remember a refused claim on ``holder``'s id; returns it and whether it is new."""
        return self.duplicates.note(holder.agent_id, live_address(holder), refused_address,
                                    self.clock())

    def duplicate(self, agent_id: str) -> DuplicateClaim | None:
        return self.duplicates.of(agent_id, self.clock())

    def attach(self, agent_id: str, session: Any, session_id: str,
               instance_id: str = "") -> Any:
        """Make ``session`` the agent's live one; returns the session it replaced, if any."""
        info = self.ensure(agent_id)
        old = info.session
        if old is None:
            self.connected += 1
        info.session, info.session_id = session, session_id
        info.instance_id = instance_id
        info.draining = False
        info.reported_status = ""
        info.last_heartbeat = self.clock()
        return old

    def detach(self, agent_id: str, session: Any) -> bool:
        """The stream of ``session`` ended. True if it was the live one (agent now offline)."""
        info = self.agents.get(agent_id)
        if info is None or info.session is not session:
            return False
        self.connected -= 1
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
        return list(self._ready.values())

    @property
    def ready(self) -> Mapping[str, AgentInfo]:
        """The schedulable agents by id, kept as they change (read-only; copy to keep)."""
        return self._ready

    def restricted(self) -> dict[str, AgentInfo]:
        """The schedulable agents that may use only some accounts, by id (a copy)."""
        return dict(self._restricted)

    def take_touched(self) -> set[str]:
        """Ids of the agents changed (any attribute) since the last call.

        For one consumer, the scheduler's :class:`hub.core.agent_views.FleetViews`."""
        touched, self._touched = self._touched, set()
        return touched


def live_address(info: AgentInfo) -> str:
    """Where the agent's live stream comes from, as :func:`describe_address` puts it."""
    return describe_address(getattr(info.session, "peer_ip", ""), info.ip_address)


def describe_address(peer: str, reported: str) -> str:
    """The address the hub sees a connection from, and the one the agent reports for
    itself when that differs (behind NAT, or several agents on one host)."""
    if not peer or not reported or peer == reported:
        return peer or reported
    return f"{peer} (reports {reported})"
def egress_address(value: str) -> str:
    """An IP address in its normal form, or "" for anything else (the agent's word is
    checked: it becomes a ledger key and a column in the admin UI)."""
    if not value or len(value) > 64:
        return ""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return ""
