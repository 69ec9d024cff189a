"""A day of recordings through the mesh, in virtual time: which strategy trips risk control?

A seeded discrete-event simulation (no sockets, no sleeps) of the hub's
scheduling loop, driving the real ``hub.core.strategies``, ``hub.core.risk.RiskLedger``
and ``hub.core.retry_policy`` with a fake clock:

* **Work**: 200 parts of 1-8 GB from 25 streams. Recorders hand over a
  stream's parts when it ends, and streams end at similar times (lunch,
  evening, late night), so parts arrive in bursts.
* **Agents**: 5 agents, 5 egress IPs: two VPSes (100 Mbit/s), two home lines
  (50) and a slow one (30); two uploads at once each, sharing the line's
  bandwidth equally. ``vps-1`` runs on the hub's host and can read the
  recordings itself (what ``locality`` prefers).
* **Bilibili's risk control** (hidden: strategies and ledger only see the 406s
  it produces). Model chosen before comparing any strategy, and not tuned
  since: Bilibili counts preupload requests per IP in a sliding hour; the fifth
  within an hour (``HIDDEN_BUDGET`` = 4 allowed) gets HTTP 406 and the IP is
  throttled for ``HIDDEN_THROTTLE`` = 2 h, during which every preupload gets
  406. Requests refused while throttled are not counted (the one change after
  the first run: when they were, the single-IP baseline retrying every 5 min
  never left its throttle and the run did not end).
  Why this shape: it is the simulator's own model (``risk: {preupload_budget,
  window_seconds: 3600}``); "上传视频过快" reports describe a per-IP rate limit
  followed by hours of throttling; and the limit is below the ledger's
  configured cap (6/h, 300 s apart) on purpose: the defaults are an operator's
  guess, and were the guess exactly right no ledger-respecting strategy would
  ever see a 406 (``--hidden-budget 6`` shows exactly that) and the bench would
  compare nothing. It measures what happens when the guess is too generous,
  the likely case with an unpublished limit. ``--hidden-budget`` and
  ``--hidden-throttle-hours`` show the sensitivity.
* **Hub behaviour**: parts are offered in arrival order at every event;
  a 406 records a risk event and re-queues the part on another IP at once;
  1% of attempts hit a network error part-way and resume on the same agent
  after the retry policy's backoff (no new preupload).
* **Admin**: an IP the ledger disabled is re-enabled ``ADMIN_DELAY`` = 6 h
  later (someone reads the alert), so every run finishes.
* **single IP**: what a one-server uploader does: all parts from the first
  VPS, two at a time, no ledger; after a 406 it retries the part 5 min later.

Columns: 406 responses, makespan (first arrival to last completion), mean and
95th-percentile wait (arrival to the start of the attempt that succeeded),
successful uploads per IP, admin re-enables needed (IPs the ledger disabled).
Target: ip_diversity has >= 5x fewer 406s than round_robin, with no
worse makespan.

Why the strategies differ: all of them respect the ledger's configured rules,
so under a backlog round robin, least connections and weighted round robin
drive every IP at the configured 6/h, trip the real limit on every IP, burn
through cooldowns and get IPs disabled. ip_diversity and locality also hold
each IP to the rate the ledger *learned* from its first 406 (a clean IP's n-th
start in an hour refused -> n-1 per hour for that IP), and every IP to it once
three IPs agree (hub/core/learning.py), so after a few trips the rest of the
mesh stays under the real limit.

    .venv/bin/python bench/schedule.py [--seed 1] [--seeds 5] [--parts 200]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.core.retry_policy import (  # noqa: E402
    NETWORK,
    RISK_CONTROL,
    Action,
    RetryState,
    TaskRetryPolicy,
)
from hub.core.risk import RiskLedger, RiskRules  # noqa: E402
from hub.core.strategies import AgentView, PartView, SingleIP, Strategy, make_strategy  # noqa: E402

GB = 1_000_000_000
HOUR = 3600.0
HIDDEN_BUDGET = 4  # preuploads allowed per IP in any hour
HIDDEN_WINDOW = HOUR
HIDDEN_THROTTLE = 2 * HOUR
NETWORK_ERROR_RATE = 0.01
SINGLE_IP_RETRY_AFTER = 300.0
ADMIN_DELAY = 6 * HOUR  # an admin notices a disabled IP and re-enables it
HUB_HOST_AGENT = "vps-1"  # runs on the hub's host: reads recordings from disk
RECORDINGS = "/srv/recordings"

AGENTS = [  # agent id, egress IP, Mbit/s, concurrent uploads
    ("vps-1", "203.0.113.10", 100.0, 2),
    ("vps-2", "203.0.113.20", 100.0, 2),
    ("home-1", "198.51.100.7", 50.0, 2),
    ("home-2", "198.51.100.9", 50.0, 2),
    ("home-3", "192.0.2.33", 30.0, 2),
]


@dataclass
class Part:
    part_id: int
    size: int
    arrival: float
    excluded_ips: dict[str, float] = field(default_factory=dict)  # ip -> until
    not_before: float = 0.0
    pinned: str | None = None  # network retry on the same agent
    resuming: bool = False
    done_bytes: float = 0.0  # committed before a network error (resume point)
    retry: RetryState = field(default_factory=RetryState)
    started: float | None = None  # start of the latest attempt
    finished: float | None = None
    ip: str | None = None


@dataclass
class Upload:
    part: Part
    remaining: float
    fail_at: float  # remaining bytes at which a network error strikes (-1: never)


@dataclass
class SimAgent:
    agent_id: str
    ip: str
    mbps: float
    slots: int
    uploads: list[Upload] = field(default_factory=list)
    sleeping: list[float] = field(default_factory=list)  # single IP: slots waiting after a 406
    updated: float = 0.0
    version: int = 0

    @property
    def bytes_per_second(self) -> float:
        return self.mbps * 1e6 / 8

    def view(self, now: float) -> AgentView:
        self.sleeping = [t for t in self.sleeping if t > now]
        busy = len(self.uploads) + len(self.sleeping)
        local = self.agent_id == HUB_HOST_AGENT
        return AgentView(self.agent_id, self.ip, "online", self.slots, busy, self.mbps,
                         storage_type="local" if local else "network",
                         local_paths=(RECORDINGS,) if local else ())

    def advance(self, now: float) -> None:
        """Processor sharing: each running upload gets an equal share of the line."""
        if self.uploads and now > self.updated:
            share = self.bytes_per_second / len(self.uploads) * (now - self.updated)
            for u in self.uploads:
                u.remaining -= share
        self.updated = now

    def next_event(self) -> float:
        if not self.uploads:
            return float("inf")
        rate = self.bytes_per_second / len(self.uploads)
        return self.updated + min(max(0.0, u.remaining - max(u.fail_at, 0.0)) / rate
                                  for u in self.uploads)


class HiddenRisk:
    """Bilibili's side (see module docstring); the scheduler never reads this."""

    def __init__(self, budget: int, throttle: float) -> None:
        self.budget, self.throttle = budget, throttle
        self.preuploads: dict[str, deque[float]] = {}
        self.throttled_until: dict[str, float] = {}
        self.responses_406 = 0

    def preupload(self, ip: str, now: float) -> bool:
        """True: accepted; False: HTTP 406."""
        if now < self.throttled_until.get(ip, -1.0):
            self.responses_406 += 1
            return False
        window = self.preuploads.setdefault(ip, deque())
        while window and window[0] <= now - HIDDEN_WINDOW:
            window.popleft()
        window.append(now)
        if len(window) > self.budget:
            self.throttled_until[ip] = now + self.throttle
            self.responses_406 += 1
            return False
        return True


def make_parts(rng: random.Random, n_parts: int, n_streams: int = 25) -> list[Part]:
    """Streams end in three clusters (12:30, 18:00, 23:30) plus a few stragglers."""
    clusters = [(12.5, 0.3), (18.0, 0.3), (23.5, 0.5)]
    ends = []
    for _ in range(n_streams):
        if rng.random() < 0.85:
            mu, sigma = rng.choice(clusters)
            ends.append(max(0.0, rng.gauss(mu, sigma)) * HOUR)
        else:
            ends.append(rng.uniform(0, 24) * HOUR)
    # split n_parts over the streams, at least one part each
    counts = [1] * n_streams
    for _ in range(n_parts - n_streams):
        counts[rng.randrange(n_streams)] += 1
    parts = []
    pid = itertools.count(1)
    for end, count in zip(ends, counts, strict=True):
        for k in range(count):
            # a recorder closes files one after another; the last when the stream ends
            parts.append(Part(next(pid), int(rng.uniform(1, 8) * GB), end + k * 5.0))
    parts.sort(key=lambda p: (p.arrival, p.part_id))
    return parts


@dataclass
class Result:
    name: str
    responses_406: int
    makespan: float
    waits: list[float]
    per_ip: dict[str, int]
    disabled: int  # admin re-enables of IPs the ledger disabled
    unfinished: int


def simulate(
    name: str,
    seed: int,
    n_parts: int = 200,
    budget: int = HIDDEN_BUDGET,
    throttle: float = HIDDEN_THROTTLE,
) -> Result:
    rng = random.Random(seed)
    parts = make_parts(rng, n_parts)
    fault_rng = random.Random(seed * 7919 + 1)
    agents = {a: SimAgent(a, ip, mbps, slots) for a, ip, mbps, slots in AGENTS}
    ledger = RiskLedger(RiskRules())
    retry = TaskRetryPolicy()
    hidden = HiddenRisk(budget, throttle)
    single = name == "single IP"
    strategy: Strategy = SingleIP("vps-1") if single else make_strategy(name)

    seq = itertools.count()
    events: list[tuple[float, int, str, object]] = []
    for p in parts:
        heapq.heappush(events, (p.arrival, next(seq), "arrive", p))
    pending: list[Part] = []
    done: list[Part] = []
    admin_reenables = [0]

    next_wake = [float("inf")]

    def wake_at(t: float) -> None:
        """One pending wake-up at a time: the earliest one (a chain per event would pile up)."""
        if t < next_wake[0] or next_wake[0] <= now:
            next_wake[0] = t
            heapq.heappush(events, (t, next(seq), "wake", t))

    def schedule_agent(agent: SimAgent) -> None:
        agent.version += 1
        t = agent.next_event()
        if t < float("inf"):
            heapq.heappush(events, (t, next(seq), "agent", (agent, agent.version)))

    def start(part: Part, agent: SimAgent, now: float) -> None:
        resuming = part.resuming
        part.pinned, part.resuming = None, False
        if not resuming:
            ledger.upload_started(agent.ip, agent.agent_id, now)
            if not hidden.preupload(agent.ip, now):
                if single:  # the uploader sleeps, then retries this part
                    part.not_before = now + SINGLE_IP_RETRY_AFTER
                    agent.sleeping.append(part.not_before)
                    pending.insert(0, part)
                    return
                d = retry.decide(RISK_CONTROL, part.retry, agent_id=agent.agent_id,
                                 ip=agent.ip, message="HTTP 406 on preupload")
                part.retry = d.state
                ledger.risk_event(agent.ip, agent.agent_id, "406", now)
                if ledger.state(agent.ip, now) == "disabled":
                    heapq.heappush(events, (now + ADMIN_DELAY, next(seq), "admin", agent.ip))
                assert d.exclude_ip is not None
                part.excluded_ips[d.exclude_ip] = now + ledger.rules.cooldown_seconds
                part.done_bytes = 0.0  # a fresh session elsewhere
                pending.insert(0, part)  # first in line for another IP
                return
        agent.advance(now)
        remaining = part.size - part.done_bytes
        fail_at = -1.0
        if fault_rng.random() < NETWORK_ERROR_RATE:
            fail_at = remaining * fault_rng.uniform(0.05, 0.95)
        part.started, part.ip = now, agent.ip
        agent.uploads.append(Upload(part, remaining, fail_at))
        schedule_agent(agent)

    def dispatch(now: float) -> None:
        views = {a.agent_id: a.view(now) for a in agents.values()}
        i = 0
        while i < len(pending):
            if not single and not any(
                v.free_slots and ledger.is_fit(v.ip, now, adaptive=strategy.adaptive)[0]
                for v in views.values()
            ) and not any(p.pinned for p in pending):
                break  # nothing can start now; skip the scan
            part = pending[i]
            if part.not_before > now:
                i += 1
                continue
            excluded = frozenset(ip for ip, until in part.excluded_ips.items() if until > now)
            view = PartView(part.part_id, part.size, path=f"{RECORDINGS}/{part.part_id}.flv",
                            excluded_ips=excluded,
                            pinned_agent=part.pinned, resuming=part.resuming)
            choice = strategy.choose(view, list(views.values()), ledger, now)
            if choice is None:
                i += 1
                continue
            pending.pop(i)
            agent = agents[choice.agent_id]
            start(part, agent, now)
            views[agent.agent_id] = agent.view(now)
            i = 0  # a 406 put the part back in front; rescan
        # wake up when something may become possible
        if pending:
            times = [p.not_before for p in pending if p.not_before > now]
            if not single:
                for a in agents.values():
                    t = ledger.next_fit_at(a.ip, now, adaptive=strategy.adaptive)
                    if t is not None and t > now:
                        times.append(t)
                for p in pending:
                    times.extend(u for u in p.excluded_ips.values() if u > now)
            if times:
                wake_at(min(times))

    now = 0.0
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "wake" and payload != next_wake[0]:
            continue  # superseded by an earlier wake-up
        if kind == "admin":
            assert isinstance(payload, str)
            ledger.admin_reenable(payload, now)
            admin_reenables[0] += 1
        elif kind == "arrive":
            assert isinstance(payload, Part)
            pending.append(payload)
        elif kind == "agent":
            agent, version = payload  # type: ignore[misc]
            if version != agent.version:
                continue
            agent.advance(now)
            for u in list(agent.uploads):
                if u.fail_at >= 0 and u.remaining <= u.fail_at + 1:
                    agent.uploads.remove(u)
                    p = u.part
                    p.done_bytes = p.size - u.remaining
                    d = retry.decide(NETWORK, p.retry, agent_id=agent.agent_id, ip=agent.ip,
                                     message="connection reset")
                    p.retry = d.state
                    ledger.upload_finished(agent.ip, agent.agent_id, now, ok=False)
                    if d.action is Action.RETRY_SAME:
                        p.pinned, p.resuming = agent.agent_id, True
                    p.not_before = now + d.delay
                    pending.insert(0, p)
                    wake_at(p.not_before)
                elif u.remaining <= 1:
                    agent.uploads.remove(u)
                    u.part.finished = now
                    done.append(u.part)
                    ledger.upload_finished(agent.ip, agent.agent_id, now)
            schedule_agent(agent)
        dispatch(now)

    per_ip = {ip: 0 for _, ip, _, _ in AGENTS}
    for p in done:
        assert p.ip is not None
        per_ip[p.ip] += 1
    first = min(p.arrival for p in parts)
    last = max((p.finished or 0.0) for p in done) if done else first
    return Result(
        name=name,
        responses_406=hidden.responses_406,
        makespan=last - first,
        waits=[(p.started or 0.0) - p.arrival for p in done],
        per_ip=per_ip,
        disabled=admin_reenables[0],
        unfinished=len(parts) - len(done),
    )


NAMES = ["single IP", "round_robin", "least_connections", "weighted_round_robin",
         "ip_diversity", "locality"]


def p95(xs: list[float]) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def table(results: list[Result]) -> str:
    head = (f"{'strategy':<21} {'406s':>5} {'makespan':>9} {'mean wait':>10} "
            f"{'p95 wait':>9} {'re-enabled':>10} {'unfinished':>10}  uploads per IP")
    lines = [head, "-" * len(head)]
    for r in results:
        per_ip = "/".join(str(n) for n in r.per_ip.values())
        mean = statistics.fmean(r.waits) if r.waits else 0.0
        lines.append(
            f"{r.name:<21} {r.responses_406:>5} {r.makespan / HOUR:>8.1f}h "
            f"{mean / 60:>8.0f}min {p95(r.waits) / 60:>6.0f}min {r.disabled:>10} "
            f"{r.unfinished:>10}  {per_ip}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="seed of the detailed table")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the summary (1..N)")
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--hidden-budget", type=int, default=HIDDEN_BUDGET,
                    help="sensitivity check: preuploads per IP per hour Bilibili allows")
    ap.add_argument("--hidden-throttle-hours", type=float, default=HIDDEN_THROTTLE / HOUR)
    args = ap.parse_args(argv)
    budget, throttle = args.hidden_budget, args.hidden_throttle_hours * HOUR
    t0 = time.perf_counter()
    print(f"{args.parts} parts of 1-8 GB in bursts, agents (id, Mbit/s): "
          + ", ".join(f"{a} {m:g}" for a, _, m, _ in AGENTS))
    r = RiskRules()
    print(f"hidden risk model: > {budget} preuploads per IP per hour -> 406, throttled "
          f"{throttle / HOUR:g} h; ledger config: {r.min_interval_seconds:g} s apart, "
          f"{r.max_uploads_per_hour}/h, cooldown {r.cooldown_seconds:g} s, "
          f"disable after {r.disable_after_events}\n")
    seeds = sorted({args.seed, *range(1, args.seeds + 1)})
    totals = {n: {s: simulate(n, s, args.parts, budget, throttle) for s in seeds}
              for n in NAMES}
    print(f"seed {args.seed}")
    print(table([totals[n][args.seed] for n in NAMES]))
    totals = {n: [by_seed[s] for s in seeds] for n, by_seed in totals.items()}
    print(f"\nseeds {seeds[0]}..{seeds[-1]}: 406s per seed, makespan per seed (h)")
    for n, rs in totals.items():
        print(f"  {n:<21} 406s {sum(r.responses_406 for r in rs):>4} "
              f"[{' '.join(str(r.responses_406) for r in rs)}]  makespan "
              f"[{' '.join(f'{r.makespan / HOUR:.1f}' for r in rs)}]")
    rr, ipd = totals["round_robin"], totals["ip_diversity"]
    rr406 = sum(r.responses_406 for r in rr)
    ipd406 = sum(r.responses_406 for r in ipd)
    worse = [s for s, a, b in zip(seeds, rr, ipd, strict=True) if b.makespan > a.makespan + 1]
    ratio = f"{rr406 / ipd406:.1f}" if ipd406 else ("n/a" if not rr406 else "inf")
    met = ipd406 * 5 <= rr406 and not worse
    print(f"\ntarget: ip_diversity 406s x5 fewer than round_robin: {ipd406} vs {rr406} "
          f"(ratio {ratio}); makespan no worse on every seed: "
          f"{'yes' if not worse else f'no (seeds {worse})'} -> {'MET' if met else 'NOT MET'}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
