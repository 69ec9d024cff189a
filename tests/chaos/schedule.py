"""The nemesis's plan: every fault of one chaos run, generated from a seed before it starts.

A campaign is only useful if a failure can be replayed, so nothing the nemesis
does is decided while it runs: :func:`generate` turns ``(seed, profile)`` into
a list of :class:`Fault` (what, to whom, when, for how long) and the parts to
upload (name, size, content seed, when it appears), and :func:`render` prints
that list for a failure message. The same seed always gives the same plan.
Timing still varies (processes start and recover at their own pace), which is
the point of running many seeds; the schedule is what a replay repeats.

Pure: no IO, no clock, no global random state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MiB = 1024 * 1024

# Fault kinds. Windowed ones are undone at ``at + duration``; the rest are instant.
KILL_AGENT = "kill_agent"  # SIGKILL agent i, start it again after `duration`
CUT_LINK = "cut_link"  # RST every connection of agent i's link (instant)
CUT_ALL_LINKS = "cut_all_links"  # RST every agent's link at once: the hub's network flaps
BLACKHOLE_LINK = "blackhole_link"  # agent i's link carries nothing, sockets stay open
LINK_LATENCY = "link_latency"  # agent i's link delays each direction by `value` s
LINK_BANDWIDTH = "link_bandwidth"  # agent i's link capped at `value` bytes/s
KILL_HUB = "kill_hub"  # SIGKILL the hub, start it again after `duration`
SIM_5XX_RATE = "sim_5xx_rate"  # the simulator answers a fraction `value` with 5xx
SIM_DELAY = "sim_delay"  # the simulator waits `value` s before each upload answer
SIM_406 = "sim_406"  # the simulator answers 406 to agent i's IP
SIM_IP_BANDWIDTH = "sim_ip_bandwidth"  # the simulator reads agent i's IP at `value` B/s
SIM_FAIL_5XX = "sim_fail_5xx"  # the next `value` requests of `op` from agent i's IP get 503
SIM_DROP_PUT = "sim_drop_put"  # the next `value` PUTs from agent i's IP are reset mid-body
SIM_STALL = "sim_stall"  # the next PUT from agent i's IP stalls `duration` s mid-body
# Bilibili as users report it (all windows, undone at their end):
SIM_CAPTCHA = "sim_captcha"  # preuploads over `value` per key (`op`: ip|account|pair) in
#   10 s get 601 with a voucher, held until solved; the window ends as an admin solves them
SIM_BINDING = "sim_binding"  # upos refuses a session from another address than its preupload's
SIM_AUTH_LIFETIME = "sim_auth_lifetime"  # upos refuses sessions older than `value` s (403)
SIM_SUBMIT_GAP = "sim_submit_gap"  # an account's submission within `value` s of its last: 21566
SIM_SUBMIT_COUNT = "sim_submit_count"  # more than `value` submissions per account in 10 s: 137022
SIM_TOOL_DISABLED = "sim_tool_disabled"  # every submission refused 21590: the hub penalises
#   the account (sticky) until the heal step's admin releases it
EGRESS_CHANGE = "egress_change"  # agent i's Bilibili traffic leaves from another address

ALL_KINDS = (
    KILL_AGENT, CUT_LINK, CUT_ALL_LINKS, BLACKHOLE_LINK, LINK_LATENCY, LINK_BANDWIDTH, KILL_HUB,
    SIM_5XX_RATE, SIM_DELAY, SIM_406, SIM_IP_BANDWIDTH, SIM_FAIL_5XX, SIM_DROP_PUT, SIM_STALL,
    SIM_CAPTCHA, SIM_BINDING, SIM_AUTH_LIFETIME, SIM_SUBMIT_GAP, SIM_SUBMIT_COUNT,
    SIM_TOOL_DISABLED, EGRESS_CHANGE,
)
# Windowed kinds hold a resource (a process, a link setting, an IP's treatment) for their
# duration; two windows on one resource would undo each other, so they never overlap.
WINDOWED = frozenset({
    KILL_AGENT, BLACKHOLE_LINK, LINK_LATENCY, LINK_BANDWIDTH, KILL_HUB, SIM_5XX_RATE,
    SIM_DELAY, SIM_406, SIM_IP_BANDWIDTH, SIM_CAPTCHA, SIM_BINDING, SIM_AUTH_LIFETIME,
    SIM_SUBMIT_GAP, SIM_SUBMIT_COUNT, SIM_TOOL_DISABLED, EGRESS_CHANGE,
})
# Kinds that share a resource: an agent's link is either blackholed or cut, not both at once.
_RESOURCE = {CUT_LINK: BLACKHOLE_LINK}
_GLOBAL = frozenset({  # no target agent
    KILL_HUB, SIM_5XX_RATE, SIM_DELAY, CUT_ALL_LINKS, SIM_CAPTCHA, SIM_BINDING,
    SIM_AUTH_LIFETIME, SIM_SUBMIT_GAP, SIM_SUBMIT_COUNT, SIM_TOOL_DISABLED,
})

# Submission limits in the second half, when recordings end and their archives go out.
_LATE = frozenset({SIM_SUBMIT_GAP, SIM_SUBMIT_COUNT, SIM_TOOL_DISABLED})

# The hub runs its default strategy on every seed: ``ip_diversity`` holds each IP to
# the rate it learned from its own answers (and every IP once three agree), which the
# heal step's admin forgets along with the faults that taught it.
STRATEGY = "ip_diversity"


@dataclass(frozen=True)
class Profile:
    """How hard one run is: how long the nemesis acts, how much, on what."""

    name: str
    agents: int = 5
    parts: int = 40
    part_min: int = MiB // 2
    part_max: int = 6 * MiB
    nemesis_seconds: float = 60.0
    faults: int = 50  # at least one of every kind, the rest drawn at random
    parts_until: float = 0.7  # parts appear during the first 70 % of the nemesis

    def __post_init__(self) -> None:
        if self.faults < len(ALL_KINDS):
            raise ValueError(f"a profile needs at least {len(ALL_KINDS)} faults (one per kind)")
        if not 0 < self.part_min <= self.part_max:
            raise ValueError("need 0 < part_min <= part_max")


SHORT = Profile("short", part_min=MiB // 2, part_max=2 * MiB, nemesis_seconds=20.0,
                faults=len(ALL_KINDS))
LONG = Profile("long")
PROFILES = {p.name: p for p in (SHORT, LONG)}


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the nemesis starts
    kind: str
    agent: int | None = None  # 1-based agent index (its link, process or IP); None = global
    duration: float = 0.0  # windowed kinds: undone after this long
    value: float = 0.0  # kind-specific amount (rate, seconds, bytes/s, count)
    op: str = ""  # SIM_FAIL_5XX: which simulator operation

    def describe(self) -> str:
        who = f"agent-{self.agent}" if self.agent is not None else "-"
        extra = []
        if self.kind in WINDOWED or self.kind == SIM_STALL:
            extra.append(f"for {self.duration:.1f}s")
        if self.value:
            extra.append(f"value={self.value:g}")
        if self.op:
            extra.append(f"op={self.op}")
        return f"{self.at:7.2f}s  {self.kind:<17} {who:<8} {' '.join(extra)}".rstrip()


@dataclass(frozen=True)
class PartPlan:
    name: str
    size: int
    content_seed: int
    at: float  # seconds after the nemesis starts
    # Handed over by a BililiveRecorder webhook as part of live session `recording`
    # (whose archive the hub submits once every part is up); None: POST /api/manage/parts.
    recording: int | None = None


RECORDING_PARTS = 5  # every other part goes to a recording of five


def recording_of(index: int) -> int | None:
    """Even-numbered parts form recordings of five (0,2,..,8 -> 0; 10,..,18 -> 1; ...).

    Derived from the index, not drawn, so adding recordings left every seed's faults
    and parts as they were.
    """
    return index // (2 * RECORDING_PARTS) if index % 2 == 0 else None


@dataclass(frozen=True)
class Plan:
    seed: int
    profile: Profile
    strategy: str
    faults: tuple[Fault, ...]
    parts: tuple[PartPlan, ...]

    def render(self) -> str:
        p = self.profile
        lines = [
            f"chaos seed {self.seed} (profile {p.name}: {p.agents} agents, {p.parts} parts "
            f"{p.part_min}-{p.part_max} B, nemesis {p.nemesis_seconds:g}s, "
            f"{len(self.faults)} faults, scheduler {self.strategy})",
            *("  " + f.describe() for f in self.faults),
            "  parts: " + ", ".join(
                f"{x.name}@{x.at:.1f}s" + (f"(rec {x.recording})" if x.recording is not None else "")
                for x in self.parts),
        ]
        return "\n".join(lines)


def generate(seed: int, profile: Profile) -> Plan:
    """The whole plan for ``seed``: deterministic, windows on one resource never overlap."""
    rng = random.Random(f"bupmesh-chaos:{seed}:{profile.name}")
    kinds = list(ALL_KINDS) + [rng.choice(ALL_KINDS) for _ in range(profile.faults - len(ALL_KINDS))]
    rng.shuffle(kinds)
    busy: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
    faults: list[Fault] = []
    for kind in kinds:
        fault = _place(rng, kind, profile, busy)
        if fault is not None:
            faults.append(fault)
    faults.sort(key=lambda f: (f.at, f.kind, f.agent or 0))
    parts = tuple(
        PartPlan(
            name=f"chaos-{seed}-{index:02d}.flv",
            size=rng.randint(profile.part_min, profile.part_max),
            content_seed=rng.getrandbits(32),
            at=round(rng.uniform(0, profile.nemesis_seconds * profile.parts_until), 2),
            recording=recording_of(index),
        )
        for index in range(profile.parts)
    )
    return Plan(seed=seed, profile=profile, strategy=STRATEGY, faults=tuple(faults),
                parts=tuple(sorted(parts, key=lambda x: (x.at, x.name))))


def _place(
    rng: random.Random, kind: str, profile: Profile,
    busy: dict[tuple[str, int | None], list[tuple[float, float]]],
) -> Fault | None:
    """Draw one fault of ``kind``; retry a bounded number of times to find a free window."""
    for _ in range(50):
        agent = None if kind in _GLOBAL else rng.randint(1, profile.agents)
        # Windows end before the nemesis does, so the heal step finds little left to undo.
        lo = profile.nemesis_seconds * 0.5 if kind in _LATE else 0.5
        at = round(rng.uniform(lo, profile.nemesis_seconds * 0.9), 2)
        duration, value, op = _shape(rng, kind)
        end = min(at + max(duration, 0.5), profile.nemesis_seconds)
        duration = round(end - at, 2) if kind in WINDOWED else duration
        key = (_RESOURCE.get(kind, kind), agent)
        if any(at < b + 0.5 and a < end + 0.5 for a, b in busy.get(key, [])):
            continue
        busy.setdefault(key, []).append((at, end))
        return Fault(at=at, kind=kind, agent=agent, duration=duration, value=value, op=op)
    return None


def _shape(rng: random.Random, kind: str) -> tuple[float, float, str]:
    """(duration, value, op) for one fault: sizes chosen to hurt without making the run slow."""
    r = lambda lo, hi: round(rng.uniform(lo, hi), 2)  # noqa: E731 - local shorthand
    if kind == KILL_AGENT:
        return r(0.5, 6.0), 0.0, ""
    if kind == BLACKHOLE_LINK:
        # Short ones heal before the hub's heartbeat timeout (5 s), long ones outlast it.
        return r(1.0, 12.0), 0.0, ""
    if kind == LINK_LATENCY:
        return r(2.0, 8.0), r(0.05, 0.4), ""
    if kind == LINK_BANDWIDTH:
        return r(2.0, 8.0), float(rng.choice((256, 512, 1024)) * 1024), ""
    if kind == KILL_HUB:
        # Long enough outages for the agents' reconnect backoff to grow past a few seconds.
        return r(0.5, 5.0), 0.0, ""
    if kind == SIM_5XX_RATE:
        return r(2.0, 6.0), r(0.1, 0.4), ""
    if kind == SIM_DELAY:
        return r(1.0, 5.0), r(0.2, 1.5), ""
    if kind == SIM_406:
        return r(1.0, 6.0), 0.0, ""
    if kind == SIM_IP_BANDWIDTH:
        return r(2.0, 8.0), float(rng.choice((256, 512, 1024)) * 1024), ""
    if kind == SIM_FAIL_5XX:
        return 0.0, float(rng.randint(1, 4)), rng.choice(("preupload", "init", "put", "complete"))
    if kind == SIM_DROP_PUT:
        return 0.0, float(rng.randint(1, 3)), ""
    if kind == SIM_STALL:
        return r(1.0, 6.0), 0.0, ""
    if kind == SIM_CAPTCHA:
        return r(3.0, 10.0), float(rng.randint(1, 3)), rng.choice(("ip", "account", "pair"))
    if kind == SIM_BINDING:
        return r(3.0, 12.0), 0.0, ""
    if kind == SIM_AUTH_LIFETIME:
        # Shorter than most parts take: sessions in flight are refused and start afresh.
        return r(2.0, 6.0), r(1.5, 4.0), ""
    if kind == SIM_SUBMIT_GAP:
        return r(3.0, 8.0), r(3.0, 10.0), ""
    if kind == SIM_SUBMIT_COUNT:
        return r(3.0, 8.0), float(rng.randint(1, 2)), ""
    if kind == SIM_TOOL_DISABLED:
        return r(2.0, 6.0), 0.0, ""
    if kind == EGRESS_CHANGE:
        # Mostly longer than the agent's egress check (10 s): the hub sees the move too.
        return r(6.0, 20.0), 0.0, ""
    if kind in (CUT_LINK, CUT_ALL_LINKS):
        return 0.0, 0.0, ""
    raise ValueError(f"unknown fault kind {kind!r}")
