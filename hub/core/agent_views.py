"""The scheduler's view of each agent, kept across passes (pure: no IO, no clock).

Every scheduling pass hands the strategy one :class:`AgentView` per schedulable
agent. Building them afresh each pass cost a quarter of the hub's time when
dispatching to 5,000 agents (bench/scale.py), though between two passes only
the agents that heartbeat, took a lease or came and went differ. The cache
keeps last pass's view of each agent and reuses it while nothing it was built
from changed, so a pass yields exactly what a fresh build would. It notices
changes by itself (``AgentInfo.version`` counts assignments to the agent's
attributes) rather than being told of them, so a new place that changes an
agent cannot leave a view stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from hub.core.registry import BUSY, ONLINE, AgentInfo, Registry
from hub.core.strategies import LOCAL_STORAGE, AgentView

# Everything a view is built from except the tags (compared as a dict).
_Inputs = tuple[str, str, int, int, float, str, tuple[str, ...]]


def _inputs(info: AgentInfo, active: int) -> _Inputs:
    status = info.status
    if status == BUSY and active < info.max_concurrent:
        # "busy" from a heartbeat that predates a finished task: capacity decides.
        status = ONLINE
    return (info.risk_ip, status, max(1, info.max_concurrent), active,
            float(info.bandwidth_mbps or 0), info.storage_type or "network", info.local_paths)


def agent_view(info: AgentInfo, active: int) -> AgentView:
    """What the strategy may know of an agent; capacity counts the hub's own leases."""
    return _build(info, _inputs(info, active))


def _build(info: AgentInfo, inputs: _Inputs) -> AgentView:
    ip, status, slots, active, bandwidth, storage, paths = inputs
    return AgentView(info.agent_id, ip, status, slots, active, bandwidth, dict(info.tags),
                     storage, paths)


class AgentViewCache:
    """Last pass's views by agent id, reused while their inputs are unchanged."""

    def __init__(self) -> None:
        # agent id -> (AgentInfo.version, leases, view) when the view was built
        self._views: dict[str, tuple[int, int, AgentView]] = {}

    def views(self, infos: Iterable[AgentInfo], active: Mapping[str, int]) -> list[AgentView]:
        """One view per agent of ``infos`` (in order), ``active`` = leases per agent id.

        A view is reused when the agent was not assigned to since it was built
        (``AgentInfo.version``), holds as many leases and has equal tags (a dict
        could change in place). Agents not in ``infos`` are forgotten: the cache
        holds one pass's agents.
        """
        old: dict[str, tuple[int, int, AgentView]] = self._views
        new: dict[str, tuple[int, int, AgentView]] = {}
        out = []
        for info in infos:
            agent_id, version = info.agent_id, info.version
            leases = active.get(agent_id, 0)
            hit = old.get(agent_id)
            if (hit is not None and hit[0] == version and hit[1] == leases
                    and hit[2].tags == info.tags):
                view = hit[2]
            else:
                view = agent_view(info, leases)
            new[agent_id] = (version, leases, view)
            out.append(view)
        self._views = new
        return out


class FleetViews:
    """The schedulable agents' views, updated only where something changed.

    :class:`AgentViewCache` still asks every agent whether it changed, a walk of
    the fleet per pass (at 10,000 agents that walk, the schedulable list and the
    allowlist scan were most of a pass). Here the registry says which agents
    changed (``Registry.take_touched``: every assignment to an agent is reported,
    so no place that changes one can leave its view stale) and the leases say
    whose count moved, so a pass costs what changed since the last one. Tags are
    replaced whole when an agent says hello, never changed in place.
    """

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self._views: dict[str, AgentView] = {}
        self._leases: dict[str, int] = {}  # the counts the views were built with (not 0)
        self._local: set[str] = set()  # agents that may read files themselves
        self._stale: set[str] = set()  # views changed by a pass, not built from the agent

    def refresh(self, registry: Registry, active: Mapping[str, int]) -> dict[str, AgentView]:
        """A view of each schedulable agent by id, ``active`` = leases per agent id.

        The dict is this object's own: read it, change it only by :meth:`leased`.
        """
        touched = registry.take_touched() | self._stale
        self._stale = set()
        if registry is not self._registry:  # first use: nothing known yet
            self._registry = registry
            self._views, self._leases, self._local = {}, {}, set()
            touched = set(registry.ready)
        for agent_id, n in active.items():
            if n and self._leases.get(agent_id, 0) != n:
                touched.add(agent_id)
        for agent_id in self._leases:
            if not active.get(agent_id, 0):
                touched.add(agent_id)
        ready = registry.ready
        for agent_id in touched:
            info = ready.get(agent_id)
            leases = active.get(agent_id, 0)
            if leases:
                self._leases[agent_id] = leases
            else:
                self._leases.pop(agent_id, None)
            if info is None:
                self._views.pop(agent_id, None)
                self._local.discard(agent_id)
                continue
            view = self._views[agent_id] = agent_view(info, leases)
            if view.storage_type in LOCAL_STORAGE:
                self._local.add(agent_id)
            else:
                self._local.discard(agent_id)
        return self._views

    def local(self) -> list[AgentView]:
        """The views of agents that can read files themselves (local or hybrid)."""
        return [self._views[a] for a in self._local if a in self._views]

    def leased(self, agent_id: str) -> None:
        """The scheduler leased one more task to ``agent_id`` during its pass: count it
        for the rest of the pass; the next pass builds the view afresh."""
        view = self._views.get(agent_id)
        if view is not None:
            self._views[agent_id] = replace(view, active_tasks=view.active_tasks + 1)
            self._stale.add(agent_id)
