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

from hub.core.registry import BUSY, ONLINE, AgentInfo
from hub.core.strategies import AgentView

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
