"""One scheduling decision at 1,000-10,000 agents, in-process: the plain path against the fast one.

bench/scale.py measures dispatch end to end through a real hub, where the
figures include the network, the load generator and a loaded machine. This
isolates what the cached agent views and the one-pass ranking changed in the hub's scheduling pass, side by side in one
run, on a mesh shaped like bench/scale.py's (one egress IP per agent, every IP
known to the risk ledger, two slots each, each decision followed by an upload
start on the chosen IP):

  * views: building every schedulable agent's ``AgentView`` afresh (as each
    pass did) against ``AgentViewCache`` reusing the unchanged ones;
  * decision: ``ip_diversity`` as ``min(eligible(...), key=diversity_key)``
    (as it was) against ``strategies.best_diverse``; both must choose the same
    agent every time, or the bench fails.

    .venv/bin/python bench/dispatch.py [--agents 1000 5000 10000] [--decisions 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from hub.core.agent_views import AgentViewCache, agent_view
from hub.core.registry import AgentInfo
from hub.core.risk import RiskLedger, RiskRules
from hub.core.strategies import AgentView, IPDiversity, PartView, diversity_key, eligible

Choose = Callable[[PartView, Sequence[AgentView], RiskLedger, float], AgentView | None]


def plain_choose(part: PartView, agents: Sequence[AgentView], ledger: RiskLedger,
                 now: float) -> AgentView | None:
    """``ip_diversity`` as it was before the one-pass ranking: rank every eligible agent."""
    cands = eligible(part, agents, ledger, now, adaptive=True)
    if not cands:
        return None
    key = diversity_key(agents, ledger, now)
    return min(cands, key=lambda a: (*key(a), a.agent_id))


def mesh(n: int) -> tuple[list[AgentInfo], RiskLedger]:
    ledger = RiskLedger(RiskRules(min_interval_seconds=1.0, max_uploads_per_hour=0))
    infos = []
    for i in range(n):
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        info = AgentInfo(agent_id=f"agent-{i:05d}", ip_address=ip, max_concurrent=2,
                         bandwidth_mbps=100)
        info.session = object()  # connected
        ledger.note_agent(ip, info.agent_id)
        infos.append(info)
    return infos, ledger


def run(n: int, decisions: int, fast: bool) -> tuple[float, float, list[str]]:
    """Median ms of a views build and of a decision, and the agents chosen."""
    infos, ledger = mesh(n)
    cache = AgentViewCache()
    choose: Choose = IPDiversity().choose if fast else plain_choose
    t_views, t_choose, chosen = [], [], []
    now = 1_000.0
    for k in range(decisions):
        now += 0.05  # parts 50 ms apart, as bench/scale.py creates them
        t0 = time.perf_counter()
        views = cache.views(infos, {}) if fast else [agent_view(i, 0) for i in infos]
        t1 = time.perf_counter()
        pick = choose(PartView(part_id=k), views, ledger, now)
        t2 = time.perf_counter()
        assert pick is not None
        ledger.upload_started(pick.ip, pick.agent_id, now)
        t_views.append(t1 - t0)
        t_choose.append(t2 - t1)
        chosen.append(pick.agent_id)
    return statistics.median(t_views) * 1e3, statistics.median(t_choose) * 1e3, chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--decisions", type=int, default=200)
    args = ap.parse_args()
    print("agents  views plain  views cached  decision plain  decision fast  pass ratio")
    for n in args.agents:
        pv, pc, plain_chosen = run(n, args.decisions, fast=False)
        fv, fc, fast_chosen = run(n, args.decisions, fast=True)
        if plain_chosen != fast_chosen:
            raise SystemExit(f"{n} agents: the fast path chose differently")
        print(f"{n:>6}  {pv:>8.2f} ms  {fv:>9.2f} ms  {pc:>11.2f} ms  {fc:>10.2f} ms"
              f"  x{(pv + pc) / (fv + fc):.1f}", flush=True)
    print("(medians over the decisions; same agent chosen every time on both paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
