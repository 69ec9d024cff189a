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

It also times the hub's whole scheduling pass (``Scheduler.dispatch_pending``,
the real one, on in-memory fakes of the store and the accounts): one new part
per pass, parts 50 ms apart, a heartbeat from 17 agents between two passes
(10,000 agents heartbeating every 30 s), each lease ending 2 s after its offer.
To time another tree's hub with the same bench, put that tree first on
``PYTHONPATH``.

    .venv/bin/python bench/dispatch.py [--agents 1000 5000 10000] [--decisions 200]
                                       [--pass-only]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable, Sequence

import anyio

from hub.core.agent_views import AgentViewCache, agent_view
from hub.core.events import EventBus
from hub.core.held import HeldLeases
from hub.core.lifecycle import Lifecycle, Status, TaskRecord
from hub.core.recovery import RestartGrace
from hub.core.registry import AgentInfo, Registry
from hub.core.risk import RiskLedger, RiskRules
from hub.core.scheduler import Scheduler
from hub.core.state import HubState
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


class _Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


class _Session:
    closed = False
    crc32_integrity = False

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.sent = 0

    def send(self, message: object) -> None:
        self.sent += 1


class _Store:
    async def save_task(self, *args: object, **kw: object) -> None: ...
    async def save_ledger_ips(self, *args: object) -> None: ...
    async def save_risk_state(self, *args: object) -> None: ...


class _Counters:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kw: None


class _Creds:
    mid = 42

    def cookie_header(self) -> str:
        return "SESSDATA=x"


class _Accounts:
    """Each part under its own account, so the account ledger's gaps never hold one."""

    async def resolve(self, account: str | int | None) -> dict[str, object]:
        n = int(str(account).rsplit("-", 1)[-1])
        return {"name": str(account), "account_id": n, "mid": 100_000 + n}

    async def credentials(self, account: str | None) -> _Creds:
        return _Creds()


async def _passes(n: int, decisions: int) -> tuple[list[float], str]:
    clock = _Clock()
    registry = Registry(clock=clock)
    ledger = RiskLedger(RiskRules(min_interval_seconds=1.0, max_uploads_per_hour=0))
    state = HubState(registry=registry, lifecycle=Lifecycle(clock=clock), ledger=ledger,
                     held=HeldLeases(0, clock), store=_Store(), events=EventBus(),
                     counters=_Counters(), clock=clock)  # type: ignore[arg-type]
    ids = []
    for i in range(n):
        agent_id = f"agent-{i:05d}"
        info = registry.ensure(agent_id)
        info.ip_address = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        info.max_concurrent, info.bandwidth_mbps = 2, 100
        registry.attach(agent_id, _Session(f"s{i}"), f"s{i}", instance_id=f"p{i}")
        ledger.note_agent(info.ip_address, agent_id)
        ids.append(agent_id)
    sched = Scheduler(state, strategy=IPDiversity(), accounts=_Accounts(),  # type: ignore[arg-type]
                      outcomes=None, restart=RestartGrace(registry),  # type: ignore[arg-type]
                      request_hash=lambda part: None, member_url="http://sim")
    await sched.dispatch_pending()
    times, offered, beat, chosen = [], [], 0, []
    for k in range(decisions):
        clock.now += 0.05
        for _ in range(17):
            beat = (beat + 7919) % n
            registry.heartbeat(ids[beat], status="online", free_slots=2)
        while offered and offered[0][0] <= clock.now:
            state.tasks.pop(offered.pop(0)[1], None)  # the upload ended
        task = TaskRecord(f"t{k}", k, f"/rec/{k}.flv", 10, "", account=f"acct-{k}",
                          file_digest="d", created_at=clock.now)
        state.tasks[task.task_id] = task
        t0 = time.perf_counter()
        await sched.dispatch_pending()
        times.append(time.perf_counter() - t0)
        if task.status is not Status.ASSIGNED:
            raise SystemExit(f"{n} agents: part {k} was not offered")
        offered.append((clock.now + 2.0, task.task_id))
        chosen.append(task.agent_id or "")
    return times, hashlib.sha1(" ".join(chosen).encode()).hexdigest()[:10]


def run_pass(n: int, decisions: int) -> tuple[float, float, str]:
    """Median and 99th percentile ms of a whole scheduling pass, and a digest of the
    agents chosen (two trees that choose alike print the same)."""
    times, chosen = anyio.run(_passes, n, decisions)
    times.sort()
    return (statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3,
            chosen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--decisions", type=int, default=200)
    ap.add_argument("--pass-only", action="store_true",
                    help="only the whole pass (not the views and decision columns)")
    args = ap.parse_args()
    print("agents  pass p50    pass p99   agents chosen")
    for n in args.agents:
        p50, p99, chosen = run_pass(n, args.decisions)
        print(f"{n:>6}  {p50:>6.2f} ms  {p99:>6.2f} ms  {chosen}", flush=True)
    if args.pass_only:
        return 0
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
