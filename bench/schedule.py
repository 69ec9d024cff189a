"""A day of recordings through the mesh, in virtual time: which strategy trips risk control?

A seeded discrete-event simulation (no sockets, no sleeps) of the hub's
scheduling and submission loops, driving the real ``hub.core`` pieces with a
fake clock: the strategies, the IP ledger (``risk.RiskLedger`` with
``learning``), the account ledger (``account_risk.AccountLedger``), the
captcha book (``captchas.CaptchaBook``) and the retry policy, wired as the
hub wires them (``scheduler``, ``outcomes``, ``risk_admin``, the submission
manager's account gate).

* **Work**: 200 parts of 1-8 GB from 25 live streams of three accounts (each
  stream one account's, drawn at random). Recorders hand over a stream's parts
  when it ends, and streams end at similar times (lunch, evening, late night),
  so parts arrive in bursts. A stream is one recording: once its parts are up,
  the hub submits it as one archive for its account.
* **Agents**: 5 agents, 5 egress IPs: two VPSes (100 Mbit/s), two home lines
  (50) and a slow one (30); two uploads at once each, sharing the line's
  bandwidth equally. ``vps-1`` runs on the hub's host and can read the
  recordings itself (what ``locality`` prefers).
* **Bilibili** (hidden: bench/hidden_bilibili.py; the hub sees only answers):
  one preupload risk model per run, keyed by IP (the original model: > 4 an
  hour -> 406, throttled 2 h; and the same rate answered 601, held until its
  captcha is solved), by account (> 10 an hour -> 601, held until solved) or by
  the pair (> 3 an hour -> 601, held 1 h); and, in
  every model, per-account submission limits (21566 within 4 min of the last
  archive, 137022 past 14 a day, 21515 for good after a regular beat).
* **Hub**: parts are offered in arrival order at every event when both the
  account and an IP may (the scheduler's order); a refused preupload is a risk
  event for the IP and the account (which may put the account at fault and
  free the IPs), opens a captcha for a 601, and moves the part to another IP
  at once; 1% of attempts hit a network error part-way and resume on the same
  agent after the retry policy's backoff (no new preupload). A recording is
  submitted when its account may submit; 21566 / 137022 cool the account,
  21515 stops it (its recordings are lost: Bilibili's penalty is sticky).
* **Admin**: re-enables an IP the ledger disabled ``ADMIN_DELAY`` = 6 h later,
  and solves a captcha ``CAPTCHA_DELAY`` = 2 h after the hub raised its alert.
* **Ledgers**: ``both`` is the hub as shipped; ``ip`` turns the account
  ledger's own rules off (no pacing, no suspicion: each account answer is its
  IP's, as before the account ledger), keeping only the waits Bilibili's codes
  call for.
* **single IP**: a one-server uploader: all parts from the first VPS, two at
  a time, no ledger; after a refusal it retries the part 5 min later, and a
  throttled submission too; it submits a recording as soon as it is up.

Columns: risk events (preuploads refused), account throttles (21566 / 137022)
and penalties (21515), makespan (first arrival to the last archive),
recordings lost (never submitted), IP re-enables and captchas solved by the admin.
Target: in every model, ``ip_diversity`` with both ledgers (the default) has no
account penalty and no lost recording, >= 5x fewer risk events than
``round_robin`` (IP ledger only), and a makespan at most 10 % longer.

    .venv/bin/python bench/schedule.py [--seed 1] [--seeds 5] [--parts 200] [--model ip ...]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by a test, not run
    sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: bench/uploader.py

from hidden_bilibili import (  # noqa: E402
    MODELS,
    PENALTIES,
    THROTTLES,
    HiddenBilibili,
    RiskModel,
)
from schedule_report import markdown, table, verdict  # noqa: E402

from hub.core.account_risk import SUBMIT, AccountLedger, AccountRules  # noqa: E402
from hub.core.captchas import CaptchaBook  # noqa: E402
from hub.core.retry_policy import (  # noqa: E402
    NETWORK,
    RISK_CONTROL,
    Action,
    RetryState,
    TaskRetryPolicy,
)
from hub.core.risk import DISABLED, RiskLedger, RiskRules  # noqa: E402
from hub.core.strategies import AgentView, PartView, SingleIP, Strategy, make_strategy  # noqa: E402

GB = 1_000_000_000
HOUR = 3600.0
NETWORK_ERROR_RATE = 0.01
SINGLE_IP_RETRY_AFTER = 300.0
ADMIN_DELAY = 6 * HOUR  # an admin notices a disabled IP and re-enables it
CAPTCHA_DELAY = 2 * HOUR  # an admin reads the captcha alert and solves it
EXCLUDE_SECONDS = 3600.0  # a refused part keeps off that IP this long (lifecycle's default)
HUB_HOST_AGENT = "vps-1"  # runs on the hub's host: reads recordings from disk
RECORDINGS = "/srv/recordings"
ACCOUNTS = ("acct-a", "acct-b", "acct-c")

AGENTS = [  # agent id, egress IP, Mbit/s, concurrent uploads
    ("vps-1", "203.0.113.10", 100.0, 2),
    ("vps-2", "203.0.113.20", 100.0, 2),
    ("home-1", "198.51.100.7", 50.0, 2),
    ("home-2", "198.51.100.9", 50.0, 2),
    ("home-3", "192.0.2.33", 30.0, 2),
]


@dataclass
class Recording:
    number: int
    account: str
    parts: list[Part] = field(default_factory=list)
    not_before: float = 0.0  # single IP: a throttled submission retries after this
    submitted: float | None = None
    lost: bool = False

    @property
    def uploaded(self) -> bool:
        return all(p.finished is not None for p in self.parts)


@dataclass
class Part:
    part_id: int
    size: int
    arrival: float
    recording: Recording
    excluded_ips: dict[str, float] = field(default_factory=dict)  # ip -> until
    not_before: float = 0.0
    pinned: str | None = None  # network retry on the same agent
    resuming: bool = False
    done_bytes: float = 0.0  # committed before a network error (resume point)
    retry: RetryState = field(default_factory=RetryState)
    started: float | None = None  # start of the latest attempt
    finished: float | None = None
    ip: str | None = None

    @property
    def account(self) -> str:
        return self.recording.account


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


def make_work(rng: random.Random, n_parts: int, n_streams: int = 25
              ) -> tuple[list[Part], list[Recording]]:
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
    # Accounts from a stream of their own: the parts stay those of the original bench.
    owners = random.Random(rng.random())
    parts, recordings = [], []
    pid = itertools.count(1)
    for number, (end, count) in enumerate(zip(ends, counts, strict=True)):
        rec = Recording(number, owners.choice(ACCOUNTS))
        recordings.append(rec)
        for k in range(count):
            # a recorder closes files one after another; the last when the stream ends
            part = Part(next(pid), int(rng.uniform(1, 8) * GB), end + k * 5.0, rec)
            rec.parts.append(part)
            parts.append(part)
    parts.sort(key=lambda p: (p.arrival, p.part_id))
    return parts, recordings


@dataclass
class Result:
    name: str
    ledgers: str
    model: str
    risk_events: int  # preuploads refused (406 / 601)
    account_throttles: int  # submissions answered 21566 / 137022
    penalties: int  # submissions answered 21515
    makespan: float  # first arrival to the last archive submitted
    lost: int  # recordings never submitted
    per_ip: dict[str, int]
    reenabled: int  # admin re-enables of IPs the ledger disabled
    captchas: int  # captchas the admin solved
    unfinished: int  # parts never uploaded

    @property
    def label(self) -> str:
        return self.name if self.ledgers == "none" else f"{self.name} ({self.ledgers})"


def ledgers_for(kind: str) -> tuple[RiskLedger, AccountLedger]:
    """The hub's two ledgers at their defaults; ``ip``: the account ledger's rules off."""
    accounts = AccountRules()
    if kind == "ip":  # no pacing and no suspicion; the waits the codes call for stay
        accounts = replace(AccountRules.open(), suspect_ips=1 << 30)
    return RiskLedger(RiskRules()), AccountLedger(accounts)


def simulate(name: str, seed: int, model: RiskModel | str = "ip", *, ledgers: str = "both",
             n_parts: int = 200) -> Result:
    """One day of ``seed``'s work under ``model`` with strategy ``name`` (or "single IP")."""
    model = MODELS[model] if isinstance(model, str) else model
    rng = random.Random(seed)
    parts, recordings = make_work(rng, n_parts)
    fault_rng = random.Random(seed * 7919 + 1)
    agents = {a: SimAgent(a, ip, mbps, slots) for a, ip, mbps, slots in AGENTS}
    single = name == "single IP"
    ledgers = "none" if single else ledgers
    ledger, accounts = ledgers_for(ledgers)
    captchas = CaptchaBook()
    retry = TaskRetryPolicy()
    hidden = HiddenBilibili(model)
    strategy: Strategy = SingleIP(HUB_HOST_AGENT) if single else make_strategy(name)
    adaptive = strategy.adaptive

    seq = itertools.count()
    events: list[tuple[float, int, str, object]] = []
    for p in parts:
        heapq.heappush(events, (p.arrival, next(seq), "arrive", p))
    pending: list[Part] = []
    ready: list[Recording] = []  # uploaded, not yet submitted, in the order they got ready
    admin = {"reenabled": 0, "captchas": 0}
    reenable_due: set[str] = set()
    solve_due: set[str] = set()
    next_wake = [float("inf")]
    now = 0.0

    def wake_at(t: float) -> None:
        """One pending wake-up at a time: the earliest one (a chain per event would pile up)."""
        if t < next_wake[0] or next_wake[0] <= now:
            next_wake[0] = t
            heapq.heappush(events, (t, next(seq), "wake", t))

    def later(delay: float, kind: str, payload: object) -> None:
        heapq.heappush(events, (now + delay, next(seq), kind, payload))

    def schedule_agent(agent: SimAgent) -> None:
        agent.version += 1
        t = agent.next_event()
        if t < float("inf"):
            heapq.heappush(events, (t, next(seq), "agent", (agent, agent.version)))

    def unexclude(ips: list[str]) -> None:
        """HubState.unexclude_ips: parts the answer kept off these IPs may use them again."""
        for p in pending:
            for ip in set(ips) & set(p.excluded_ips):
                del p.excluded_ips[ip]

    def refused(part: Part, agent: SimAgent, code: int, voucher: str) -> None:
        """Outcomes._risk_control, then the retry policy's decision (scheduler order)."""
        ip, account = agent.ip, part.account
        d = retry.decide(RISK_CONTROL, part.retry, agent_id=agent.agent_id, ip=ip,
                         message=f"HTTP {code} on preupload")
        part.retry = d.state
        ledger.upload_finished(ip, agent.agent_id, now, ok=False)
        own = ledger.throttled_on_its_own(ip, now)
        ledger.risk_event(ip, agent.agent_id, str(code), now, account=account, voucher=voucher)
        if voucher:
            _, new = captchas.raised(voucher, ip=ip, account=account, agent_id=agent.agent_id,
                                     now=now)
            if new and voucher not in solve_due:
                solve_due.add(voucher)
                later(CAPTCHA_DELAY, "solve", voucher)
        verdict = accounts.risk_event(account, ip, agent.agent_id, now, code=code,
                                      voucher=voucher, ip_own=own,
                                      ip_starts=ledger.uploads_last_hour(ip, now))
        if verdict.suspected and verdict.since is not None:
            unexclude(ledger.blame_account(account, verdict.since, now))
        for known in ledger.known_ips():
            if ledger.state(known, now) == DISABLED and known not in reenable_due:
                reenable_due.add(known)
                later(ADMIN_DELAY, "reenable", known)
        assert d.exclude_ip is not None
        part.excluded_ips[d.exclude_ip] = now + EXCLUDE_SECONDS
        part.done_bytes = 0.0  # a fresh session elsewhere
        pending.insert(0, part)  # first in line for another IP

    def start(part: Part, agent: SimAgent) -> None:
        resuming = part.resuming
        part.pinned, part.resuming = None, False
        if not resuming:
            if not single:
                ledger.upload_started(agent.ip, agent.agent_id, now)
                accounts.preupload_started(part.account, now)
            answer = hidden.preupload(agent.ip, part.account, now)
            if answer is not None:
                code, voucher = answer
                if single:  # the uploader sleeps, then retries this part
                    part.not_before = now + SINGLE_IP_RETRY_AFTER
                    agent.sleeping.append(part.not_before)
                    pending.insert(0, part)
                    if voucher and voucher not in solve_due:  # its user solves it too
                        solve_due.add(voucher)
                        later(CAPTCHA_DELAY, "solve", voucher)
                    return
                refused(part, agent, code, voucher)
                return
            if not single:  # the agent's first Committed tells the hub
                accounts.preupload_accepted(part.account, now)
        agent.advance(now)
        remaining = part.size - part.done_bytes
        fail_at = -1.0
        if fault_rng.random() < NETWORK_ERROR_RATE:
            fail_at = remaining * fault_rng.uniform(0.05, 0.95)
        part.started, part.ip = now, agent.ip
        agent.uploads.append(Upload(part, remaining, fail_at))
        schedule_agent(agent)

    def dispatch() -> None:
        views = {a.agent_id: a.view(now) for a in agents.values()}
        i = 0
        while i < len(pending):
            if not single and not any(p.pinned for p in pending) and not any(
                v.free_slots and ledger.is_fit(v.ip, now, adaptive=adaptive)[0]
                for v in views.values()
            ):
                break  # nothing can start now; skip the scan
            part = pending[i]
            if part.not_before > now or (
                    not single and not part.resuming
                    and not accounts.preupload_fit(part.account, now)[0]):
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
            start(part, agent)
            views[agent.agent_id] = agent.view(now)
            i = 0  # a refusal put the part back in front; rescan

    def submit_pass() -> None:
        """The submission manager: an archive goes out when its account may submit."""
        for rec in list(ready):
            if rec.not_before > now or rec.account in hidden.penalised and single:
                continue
            if not single and not accounts.submit_fit(rec.account, now)[0]:
                continue
            accounts.submit_sent(rec.account, now)
            code = hidden.submit(rec.account, now)
            if code is None:
                accounts.submit_accepted(rec.account, now)
                rec.submitted = now
                ready.remove(rec)
            elif code in THROTTLES:
                if single:
                    rec.not_before = now + SINGLE_IP_RETRY_AFTER
                else:
                    accounts.throttled(rec.account, now, what=SUBMIT, code=code)
            elif code in PENALTIES:
                if not single:
                    accounts.penalised(rec.account, now, what=SUBMIT, code=code)
            else:
                raise AssertionError(f"unexpected submission code {code}")

    def wake_for_later() -> None:
        """Wake up when something may become possible (the hub's 1 s pass, in effect)."""
        times = [p.not_before for p in pending if p.not_before > now]
        times += [r.not_before for r in ready if r.not_before > now]
        if not single:
            for a in agents.values():
                t = ledger.next_fit_at(a.ip, now, adaptive=adaptive)
                if t is not None and t > now:
                    times.append(t)
            for p in pending:
                times.extend(u for u in p.excluded_ips.values() if u > now)
            for account in {p.account for p in pending}:
                t = accounts.preupload_next_at(account, now)
                if t is not None and t > now:
                    times.append(t)
            for account in {r.account for r in ready}:
                t = accounts.submit_next_at(account, now)
                if t is not None and t > now:
                    times.append(t)
        if times:
            wake_at(min(times))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "wake" and payload != next_wake[0]:
            continue  # superseded by an earlier wake-up
        if kind == "reenable":  # RiskAdmin / POST /api/manage/ips/{ip}/enable
            assert isinstance(payload, str)
            reenable_due.discard(payload)
            ledger.admin_reenable(payload, now)
            unexclude([payload])
            admin["reenabled"] += 1
        elif kind == "solve":  # RiskAdmin.solve_captcha, after solving it at Bilibili
            assert isinstance(payload, str)
            hidden.solve(payload)
            admin["captchas"] += 1
            captcha = captchas.solve(payload, now)
            if captcha is not None:
                ledger.captcha_solved(captcha.ip, now)
                unexclude([captcha.ip])
                if captcha.account:
                    accounts.lift_cooldown(captcha.account)
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
                elif u.remaining <= 1:
                    agent.uploads.remove(u)
                    u.part.finished = now
                    ledger.upload_finished(agent.ip, agent.agent_id, now)
                    if u.part.recording.uploaded:
                        ready.append(u.part.recording)
            schedule_agent(agent)
        dispatch()
        submit_pass()
        if pending or ready:
            wake_for_later()

    per_ip = {ip: 0 for _, ip, _, _ in AGENTS}
    for p in parts:
        if p.finished is not None and p.ip is not None:
            per_ip[p.ip] += 1
    first = min(p.arrival for p in parts)
    last = max((r.submitted for r in recordings if r.submitted is not None), default=first)
    return Result(
        name=name, ledgers=ledgers, model=model.name,
        risk_events=hidden.refusals,
        account_throttles=hidden.throttled_submits,
        penalties=hidden.penalties,
        makespan=last - first,
        lost=sum(1 for r in recordings if r.submitted is None),
        per_ip=per_ip,
        reenabled=admin["reenabled"],
        captchas=admin["captchas"],
        unfinished=sum(1 for p in parts if p.finished is None),
    )


# (strategy, ledgers) in the order of the table; the default is ip_diversity with both.
RUNS = [
    ("single IP", "none"),
    ("round_robin", "ip"), ("least_connections", "ip"), ("weighted_round_robin", "ip"),
    ("ip_diversity", "ip"),
    ("round_robin", "both"), ("least_connections", "both"), ("weighted_round_robin", "both"),
    ("ip_diversity", "both"), ("locality", "both"),
]
BASELINE = ("round_robin", "ip")
DEFAULT = ("ip_diversity", "both")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="seed of the detailed tables")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the summary (1..N)")
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--model", action="append", choices=sorted(MODELS),
                    help="hidden risk model(s) to run (default: all)")
    ap.add_argument("--markdown", action="store_true",
                    help="also print the summary over the seeds as one markdown table")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"{args.parts} parts of 1-8 GB in bursts from 25 streams of {len(ACCOUNTS)} "
          "accounts; agents (id, Mbit/s): "
          + ", ".join(f"{a} {m:g}" for a, _, m, _ in AGENTS))
    r, a = RiskRules(), AccountRules()
    print(f"IP ledger: {r.min_interval_seconds:g} s apart, {r.max_uploads_per_hour}/h, "
          f"cooldown {r.cooldown_seconds:g} s, disable after {r.disable_after_events}; "
          f"account ledger: preuploads {a.preupload_min_gap_seconds:g} s apart, "
          f"{a.preuploads_per_hour}/h; submissions {a.submit_min_gap_seconds:g} s apart "
          f"(+{a.submit_gap_jitter:.0%}), {a.submits_per_hour}/h, {a.submits_per_day}/day")
    seeds = sorted({args.seed, *range(1, args.seeds + 1)})
    all_met = True
    every: dict[str, dict[tuple[str, str], list[Result]]] = {}
    for name in args.model or list(MODELS):
        model = MODELS[name]
        runs = {run: {s: simulate(run[0], s, model, ledgers=run[1], n_parts=args.parts)
                      for s in seeds} for run in RUNS}
        print(f"\nmodel {name}: {model.describe()}\nseed {args.seed}")
        print(table([runs[run][args.seed] for run in RUNS]))
        print(f"seeds {seeds[0]}..{seeds[-1]}: risk events, penalties, lost recordings, "
              "makespan (h) per seed")
        for run in RUNS:
            rs = [runs[run][s] for s in seeds]
            print(f"  {rs[0].label:<34} risk {sum(x.risk_events for x in rs):>4} "
                  f"[{' '.join(str(x.risk_events) for x in rs)}]  penalties "
                  f"{sum(x.penalties for x in rs)}  lost {sum(x.lost for x in rs)}  "
                  f"makespan [{' '.join(f'{x.makespan / HOUR:.1f}' for x in rs)}]")
        every[name] = {run: [runs[run][s] for s in seeds] for run in RUNS}
        met, text = verdict([runs[BASELINE][s] for s in seeds], [runs[DEFAULT][s] for s in seeds])
        all_met &= met
        print(f"target ({name}): ip_diversity (both) vs round_robin (ip): {text}")
    if args.markdown:
        print(f"\nseeds {seeds[0]}..{seeds[-1]}, totals (makespan: mean)\n")
        print(markdown(every, RUNS))
    print(f"\n{'every target met' if all_met else 'a target was missed'} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
