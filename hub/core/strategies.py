"""Scheduling strategies: which agent uploads a part next (pure; the clock is an argument).

Every strategy answers ``choose(part, agents, ledger, now) -> AgentView | None``
and shares one gate, :func:`eligible`, so the rules that are not a matter of
taste hold for all of them:

* only ``online``/``busy`` agents with a free slot (``max_concurrent_uploads``
  is never exceeded; the hub passes the free slots its heartbeats report);
* never an agent or IP the part excludes (e.g. the IP that just answered 406);
* a pinned part (``assign-task``) goes to its agent or waits;
* the risk ledger's verdict: a disabled IP is never used, a cooling / resting /
  capped IP only for a forced manual assignment.

Two agents on one IP also count as one IP for the ledger, and after one of
them starts an upload the other is resting too: the gate reads the ledger
afresh on every call, so the hub must call ``ledger.upload_started`` before it
asks for the next part.

The strategies then only *rank* the eligible agents:

``round_robin``          cycle through agents by id.
``least_connections``    fewest active uploads (relative to capacity).
``weighted_round_robin`` smooth weighted round robin by ``bandwidth_mbps``.
``ip_diversity``         spread over IPs: an IP with no upload running first,
                         then the ledger's score (least recently used, fewest
                         uploads this hour, cleanest record), then bandwidth;
                         and hold every IP to the hourly rate Bilibili has
                         shown it tolerates (``adaptive``: the ledger's
                         learned cap, when below the configured one).
``locality``             agents that can read the file themselves, then tag
                         matches (e.g. region), then ``ip_diversity``'s order.

``single_ip`` is the baseline of one server uploading everything itself: it
ignores the ledger and is only for comparison (bench/schedule.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hub.core.risk import RiskLedger

USABLE_STATUSES = frozenset({"online", "busy"})
LOCAL_STORAGE = frozenset({"local", "hybrid"})


@dataclass(frozen=True)
class AgentView:
    """What a strategy may know about an agent (built by the hub from registry + heartbeat)."""

    agent_id: str
    ip: str
    status: str = "online"  # online | busy | offline | draining | disabled
    max_concurrent_uploads: int = 1
    active_tasks: int = 0  # uploads leased to it now
    bandwidth_mbps: float = 0.0  # 0: unknown
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_type: str = "network"  # local | hybrid | network
    local_paths: tuple[str, ...] = ()  # directory prefixes it can read (local/hybrid only)

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent_uploads - self.active_tasks)

    def can_read(self, path: str | None) -> bool:
        """Whether the agent can read ``path`` itself (same host or shared mount).

        A hint for ranking only: the agent still checks size and digest before it
        skips the stream, and falls back to streaming when they differ.
        """
        if not path or self.storage_type not in LOCAL_STORAGE:
            return False
        for prefix in self.local_paths:
            base = prefix.rstrip("/")
            if path == base or path.startswith(base + "/"):
                return True
        return False


@dataclass(frozen=True)
class PartView:
    """What a strategy may know about the part waiting for an upload."""

    part_id: int | str
    size: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None
    excluded_agents: frozenset[str] = frozenset()
    excluded_ips: frozenset[str] = frozenset()
    pinned_agent: str | None = None  # assign-task, or a network retry on the same agent
    force: bool = False  # assign-task with force: ignore cooldown/interval/cap (not disabled)
    # Resuming the same Bilibili session on the pinned agent (network retry): no new
    # preupload, so the IP's interval and hourly cap do not apply (cooldown still does).
    resuming: bool = False


class Strategy(Protocol):
    name: str
    adaptive: bool  # holds IPs to the hourly rate learned from 406s, not only the config

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None: ...


def eligible(
    part: PartView,
    agents: Sequence[AgentView],
    ledger: RiskLedger | None,
    now: float,
    *,
    adaptive: bool = False,
) -> list[AgentView]:
    """Agents that may take ``part`` now, by the rules every strategy shares.

    ``ledger=None`` skips the risk checks (the single-IP baseline only).
    ``adaptive``: also hold to the hourly rate learned from 406s
    (:meth:`RiskLedger.learned_hourly_cap`).
    """
    out = []
    for a in agents:
        if a.status not in USABLE_STATUSES or a.free_slots <= 0:
            continue
        if part.pinned_agent is not None and a.agent_id != part.pinned_agent:
            continue
        if a.agent_id in part.excluded_agents or a.ip in part.excluded_ips:
            continue
        if ledger is not None and not _fit(part, a, ledger, now, adaptive)[0]:
            continue
        out.append(a)
    return out


def why_not(
    part: PartView,
    agents: Sequence[AgentView],
    ledger: RiskLedger,
    now: float,
    *,
    adaptive: bool = False,
) -> dict[str, str]:
    """For the admin UI and logs: why each agent cannot take ``part`` now ("" = it can)."""
    reasons = {}
    for a in agents:
        if a.status not in USABLE_STATUSES:
            reasons[a.agent_id] = f"agent is {a.status}"
        elif a.free_slots <= 0:
            reasons[a.agent_id] = f"no free slot ({a.active_tasks}/{a.max_concurrent_uploads})"
        elif part.pinned_agent is not None and a.agent_id != part.pinned_agent:
            reasons[a.agent_id] = f"part is pinned to {part.pinned_agent}"
        elif a.agent_id in part.excluded_agents:
            reasons[a.agent_id] = "agent excluded for this part"
        elif a.ip in part.excluded_ips:
            reasons[a.agent_id] = f"IP {a.ip} excluded for this part"
        else:
            fit, reason = _fit(part, a, ledger, now, adaptive)
            reasons[a.agent_id] = "" if fit else f"IP {a.ip}: {reason}"
    return reasons


def _fit(
    part: PartView, a: AgentView, ledger: RiskLedger, now: float, adaptive: bool
) -> tuple[bool, str]:
    pinned_here = part.pinned_agent == a.agent_id
    return ledger.is_fit(
        a.ip,
        now,
        force=part.force and pinned_here,
        resuming=part.resuming and pinned_here,
        adaptive=adaptive,
    )


def next_dispatch_at(
    agents: Sequence[AgentView], ledger: RiskLedger, now: float, *, adaptive: bool = False
) -> float | None:
    """When the next usable agent's IP becomes fit (for the hub's wake-up timer).

    ``None``: no usable agent has a free slot or every such IP is disabled;
    a finishing upload or a new agent is then what changes things.
    """
    times = [
        t
        for a in agents
        if a.status in USABLE_STATUSES and a.free_slots > 0
        and (t := ledger.next_fit_at(a.ip, now, adaptive=adaptive)) is not None
    ]
    return min(times) if times else None


def _ip_load(agents: Sequence[AgentView]) -> dict[str, int]:
    """Uploads running per IP (agents sharing an IP share Bilibili's view of it)."""
    load: dict[str, int] = {}
    for a in agents:
        if a.active_tasks:  # most agents of a large mesh are idle: absent means 0
            load[a.ip] = load.get(a.ip, 0) + a.active_tasks
    return load


class RoundRobin:
    """Next agent by id after the one chosen last; robust to agents coming and going."""

    name = "round_robin"
    adaptive = False

    def __init__(self) -> None:
        self._last: str | None = None

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        cands = sorted(eligible(part, agents, ledger, now), key=lambda a: a.agent_id)
        if not cands:
            return None
        pick = cands[0]
        if self._last is not None:
            pick = next((a for a in cands if a.agent_id > self._last), cands[0])
        self._last = pick.agent_id
        return pick


class LeastConnections:
    """Fewest uploads running, relative to capacity; ties go to the least recently chosen."""

    name = "least_connections"
    adaptive = False

    def __init__(self) -> None:
        self._seq = 0
        self._chosen_at: dict[str, int] = {}

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        cands = eligible(part, agents, ledger, now)
        if not cands:
            return None
        pick = min(
            cands,
            key=lambda a: (
                a.active_tasks,
                a.active_tasks / max(1, a.max_concurrent_uploads),
                self._chosen_at.get(a.agent_id, -1),
                a.agent_id,
            ),
        )
        self._seq += 1
        self._chosen_at[pick.agent_id] = self._seq
        return pick


class WeightedRoundRobin:
    """Smooth weighted round robin (as in nginx) with ``bandwidth_mbps`` as the weight.

    Each call, every eligible agent gains its weight; the one with the most
    credit is chosen and pays the total. Over time agents are chosen in
    proportion to bandwidth, interleaved rather than in runs. Unknown
    bandwidth weighs as the slowest known one (at least 1).
    """

    name = "weighted_round_robin"
    adaptive = False

    def __init__(self) -> None:
        self._credit: dict[str, float] = {}

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        cands = sorted(eligible(part, agents, ledger, now), key=lambda a: a.agent_id)
        if not cands:
            return None
        known = [a.bandwidth_mbps for a in cands if a.bandwidth_mbps > 0]
        default = max(1.0, min(known)) if known else 1.0
        weights = {a.agent_id: a.bandwidth_mbps if a.bandwidth_mbps > 0 else default for a in cands}
        for a in cands:
            self._credit[a.agent_id] = self._credit.get(a.agent_id, 0.0) + weights[a.agent_id]
        pick = max(cands, key=lambda a: self._credit[a.agent_id])
        self._credit[pick.agent_id] -= sum(weights.values())
        return pick


def diversity_key(
    agents: Sequence[AgentView], ledger: RiskLedger, now: float
) -> Callable[[AgentView], tuple[float, ...]]:
    """Sort key (ascending = better) shared by ``ip_diversity`` and ``locality``.

    1. uploads already running on the agent's IP: a second concurrent upload on
       one IP shares that line's bandwidth, so it adds little throughput but
       doubles how often the IP starts uploads, which is what Bilibili counts;
    2. the ledger's score: least recently used, fewest uploads in the last
       hour, cleanest record (a mixed record ranks low but is never excluded);
    3. more bandwidth, then agent id (determinism).
    """
    load = _ip_load(agents)

    def key(a: AgentView) -> tuple[float, ...]:
        return (load.get(a.ip, 0), -ledger.score(a.ip, now), -a.bandwidth_mbps)

    return key


def best_diverse(
    part: PartView,
    agents: Sequence[AgentView],
    ledger: RiskLedger,
    now: float,
    *,
    adaptive: bool,
    prefix: Callable[[AgentView], tuple[object, ...]] | None = None,
) -> AgentView | None:
    """The eligible agent with the least ``(*prefix(a), *diversity_key(a), agent_id)``.

    Chooses exactly as ``min(eligible(...), key=...)`` does (the first of equal
    keys), but in one pass that asks the ledger about few agents: the ledger
    checks and scoring cost ~20-40 us an agent, and the hub asks once per part
    with every agent (bench/scale.py: 300 ms a decision at 10,000 agents).

    The shortcut: an IP's score is never above :meth:`RiskLedger.score_ceiling`,
    so the best key an agent *could* have is known from its cheap fields alone;
    an agent whose best possible key does not beat the best one found so far
    cannot be chosen, fit or not, and is skipped before the ledger is asked. Most
    agents of a large mesh hold IPs that are idle and clean, whose score is the
    ceiling itself, so after the first of them nearly everyone is skipped.
    """
    load = _ip_load(agents)
    ceiling = ledger.score_ceiling()
    pinned = part.pinned_agent
    excluded_agents, excluded_ips = part.excluded_agents, part.excluded_ips
    best: AgentView | None = None
    best_key: tuple[object, ...] | None = None
    for a in agents:
        # The cheap gates of eligible(), in its order.
        if a.status not in USABLE_STATUSES or a.max_concurrent_uploads - a.active_tasks <= 0:
            continue
        if pinned is not None and a.agent_id != pinned:
            continue
        if a.agent_id in excluded_agents or a.ip in excluded_ips:
            continue
        head = prefix(a) if prefix is not None else ()
        ip_load = load.get(a.ip, 0)
        if best_key is not None and (*head, ip_load, -ceiling, -a.bandwidth_mbps,
                                     a.agent_id) >= best_key:
            continue  # even the best score could not make it win
        if not _fit(part, a, ledger, now, adaptive)[0]:
            continue
        key = (*head, ip_load, -ledger.score(a.ip, now), -a.bandwidth_mbps, a.agent_id)
        if best_key is None or key < best_key:
            best, best_key = a, key
    return best


class IPDiversity:
    """Spread uploads over IPs by the risk ledger's record (see :func:`diversity_key`)."""

    name = "ip_diversity"
    adaptive = True

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        return best_diverse(part, agents, ledger, now, adaptive=self.adaptive)


class Locality:
    """Agents that can read the part's file themselves, then matching tags, then diversity.

    Reading locally saves the hub's uplink the whole stream; tags (e.g.
    ``region``) express where an agent is relative to the data or the upload
    line. Only fit IPs are candidates, so locality never outranks risk.
    """

    name = "locality"
    adaptive = True

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        def prefix(a: AgentView) -> tuple[object, ...]:
            local = a.can_read(part.path)
            matches = sum(1 for k, v in part.tags.items() if a.tags.get(k) == v)
            return (not local, -matches)

        return best_diverse(part, agents, ledger, now, adaptive=self.adaptive, prefix=prefix)


class SingleIP:
    """Baseline: one server uploads everything itself, knowing nothing of risk.

    Chooses ``agent_id`` (the server) whenever it has a free slot, ignoring the
    ledger, as a one-server uploader does. For comparison only; not a config choice.
    """

    name = "single_ip"
    adaptive = False

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    def choose(
        self, part: PartView, agents: Sequence[AgentView], ledger: RiskLedger, now: float
    ) -> AgentView | None:
        own = [a for a in agents if a.agent_id == self.agent_id]
        cands = eligible(part, own, None, now)
        return cands[0] if cands else None


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "least_connections": LeastConnections,
    "weighted_round_robin": WeightedRoundRobin,
    "ip_diversity": IPDiversity,
    "locality": Locality,
}


def make_strategy(name: str) -> Strategy:
    """The strategy the ``scheduler.strategy`` setting names; a fresh instance holds its own
    state (round robin's position)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise ValueError(f"unknown scheduler.strategy {name!r} (one of: {known})") from None
    return factory()
