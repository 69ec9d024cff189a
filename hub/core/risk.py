"""The per-egress-IP risk ledger (sans-IO: events in, answers out, injected clock).

Bilibili's risk control judges an *IP*, not an agent: two agents behind one
NAT share a fate. So the ledger is keyed by egress IP and remembers, for each:

* when uploads started there (last start, and the starts of the last hour for
  the sliding-window hourly cap), when the last one finished;
* every risk event (HTTP 406 / JSON 601) with its time and agent;
* the consequence: a cooldown that grows with repeated events, and after
  ``disable_after_events`` strikes a disabled state only an admin lifts.

The rules (the ``risk`` settings) are *hard* limits, answered by :meth:`is_fit`:
a disabled IP is never fit; a cooling IP, one that started an upload less
than ``min_interval_seconds`` ago or already started ``max_uploads_per_hour``
in the last hour is not fit (the scheduler may still override the last three
for a forced manual assignment). :meth:`score` is the *soft* preference used
to rank fit IPs: an IP with a mixed record is deprioritised, never excluded,
so it still gets work when cleaner IPs are busy, and its record fades.

Bilibili does not publish its limit, so the configured cap is a guess. The
ledger also keeps the evidence: a clean IP's first 406 after ``n`` starts in an
hour says the real limit is about ``n - 1`` per hour, for every IP.
:meth:`learned_hourly_cap` gives that figure and ``adaptive=True`` on the
queries applies it when it is lower than the config (``ip_diversity`` and
``locality`` do; see bench/schedule.py for what it is worth).

The ledger does no IO. The hub persists :meth:`snapshot` (plain dicts and
numbers, JSON-safe) and rebuilds with :meth:`restore` after a restart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
DAY = 86400.0

# States shown by GET /api/manage/ips, worst first.
DISABLED = "disabled"  # too many strikes: only an admin re-enables
COOLING = "cooling"  # recent risk event: wait out the cooldown
CAPPED = "capped"  # hourly cap reached (sliding window)
RESTING = "resting"  # started an upload less than min_interval ago
OK = "ok"

_MAX_EVENTS_KEPT = 100  # per IP; enough for any score or audit, bounded for the snapshot


@dataclass(frozen=True)
class RiskRules:
    """The limits. The first four are the public config; the rest are tuning with defaults.

    ``cooldown_growth``: each strike within ``strike_memory_seconds`` multiplies
    the cooldown (1 h, 2 h, 4 h ... by default), capped at ``cooldown_max_seconds``;
    Bilibili throttles for "hours", so an IP that is hit again right after its
    cooldown was cooled too briefly. ``record_half_life_seconds``: how fast a past
    event stops counting against an IP in :meth:`RiskLedger.score`.
    ``rate_evidence_seconds``: see :meth:`RiskLedger.learned_hourly_cap`.
    """

    min_interval_seconds: float = 300.0
    max_uploads_per_hour: int = 6
    cooldown_seconds: float = 3600.0
    disable_after_events: int = 3  # <= 0: never disable
    cooldown_growth: float = 2.0
    cooldown_max_seconds: float = DAY
    strike_memory_seconds: float = DAY
    record_half_life_seconds: float = DAY
    rate_evidence_seconds: float = 7 * DAY  # how long a 406 teaches the adaptive cap
    idle_cap_seconds: float = DAY  # idleness beyond this earns no extra preference

    @classmethod
    def from_settings(cls, settings: Any, **tuning: float) -> RiskRules:
        """Build from ``hub.config.RiskSettings`` (or anything with the same attributes)."""
        return cls(
            min_interval_seconds=float(settings.min_interval_seconds),
            max_uploads_per_hour=int(settings.max_uploads_per_hour),
            cooldown_seconds=float(settings.cooldown_seconds),
            disable_after_events=int(settings.disable_after_events),
            **tuning,
        )


@dataclass
class RiskEvent:
    time: float
    agent_id: str
    kind: str  # e.g. "406", "601", "risk_control"
    strike: bool  # False when it arrived during an ongoing cooldown (same episode)
    starts_last_hour: int = 0  # uploads the IP started in the hour up to the event
    evidence: bool = False  # first strike of a clean IP: tells us Bilibili's hourly rate


@dataclass
class IPRecord:
    ip: str
    agents: set[str] = field(default_factory=set)
    last_start: float | None = None
    last_finish: float | None = None
    last_ok: float | None = None  # last upload Bilibili accepted from this IP
    starts: list[float] = field(default_factory=list)  # sorted start times, about the last hour
    uploads_ok: int = 0
    uploads_failed: int = 0
    events: list[RiskEvent] = field(default_factory=list)
    cooldown_until: float | None = None
    disabled: bool = False
    disabled_at: float | None = None
    reenabled_at: float | None = None


class RiskLedger:
    """Per-IP upload history and risk state; see the module docstring for the rules."""

    def __init__(self, rules: RiskRules | None = None) -> None:
        self.rules = rules or RiskRules()
        self._ips: dict[str, IPRecord] = {}
        # (time, cap) of every evidence event, rebuilt only when events change: the cap
        # is asked for every IP of every scheduling decision, and scanning every IP's
        # events each time made one decision O(IPs^2) (bench/scale.py, 1,000 agents).
        self._evidence: list[tuple[float, int]] | None = None
        # IPs changed since the last take_changes(): the hub persists only those rows
        # (a whole snapshot per upload start was O(IPs) of JSON and SQLite per event).
        self._changed: set[str] = set()

    # -- events ---------------------------------------------------------------------------

    def note_agent(self, ip: str, agent_id: str) -> None:
        """An agent registered with this egress IP (so the IP is listed before it uploads)."""
        self._record(ip).agents.add(agent_id)

    def upload_started(self, ip: str, agent_id: str, now: float) -> None:
        """An upload attempt begins on ``ip`` (the preupload is what Bilibili counts)."""
        rec = self._record(ip)
        rec.agents.add(agent_id)
        rec.last_start = now if rec.last_start is None else max(rec.last_start, now)
        bisect.insort(rec.starts, now)  # events may arrive slightly out of order
        self._prune(rec, now)

    def upload_finished(self, ip: str, agent_id: str, now: float, *, ok: bool = True) -> None:
        rec = self._record(ip)
        rec.agents.add(agent_id)
        rec.last_finish = now if rec.last_finish is None else max(rec.last_finish, now)
        if ok:
            rec.uploads_ok += 1
            rec.last_ok = now if rec.last_ok is None else max(rec.last_ok, now)
        else:
            rec.uploads_failed += 1

    def risk_event(self, ip: str, agent_id: str, kind: str, now: float) -> None:
        """Bilibili answered 406 / 601 to an upload from ``ip``: cool it down (or disable it).

        An event while the IP is already cooling is recorded but is not a new
        strike: uploads that were in flight when the first 406 came belong to
        the same throttling episode, and must not escalate it to disabled.
        """
        rec = self._record(ip)
        rec.agents.add(agent_id)
        self._prune(rec, now)
        started = len(self._window(rec, now))
        if rec.disabled or self._cooling(rec, now):
            self._add_event(rec, RiskEvent(now, agent_id, str(kind), False, started))
            return
        # Only a clean IP's first strike measures the rate limit: a later one may just
        # be the same throttle outlasting our cooldown. One start says nothing of rate,
        # and neither do starts Bilibili never accepted: an IP whose uploads were refused
        # from the first (a blocked IP, or two attempts refused together) shows no rate,
        # and learning "1 per hour" from it would throttle every other IP for a week.
        evidence = (
            self._recent_strikes(rec, now) == 0
            and started >= 2
            and rec.last_ok is not None
            and rec.last_ok > now - HOUR
        )
        self._add_event(rec, RiskEvent(now, agent_id, str(kind), True, started, evidence))
        strikes = self._recent_strikes(rec, now)
        r = self.rules
        if r.disable_after_events > 0 and strikes >= r.disable_after_events:
            rec.disabled = True
            rec.disabled_at = now
            rec.cooldown_until = None
            return
        cooldown = r.cooldown_seconds * r.cooldown_growth ** (strikes - 1)
        rec.cooldown_until = now + min(cooldown, r.cooldown_max_seconds)

    def admin_reenable(self, ip: str, now: float | None = None) -> None:
        """An admin vouches for the IP: lift disable and cooldown, start counting strikes afresh.

        The event history stays (it is the audit trail and still lowers the
        IP's rank until it fades); only strikes before ``now`` stop counting.
        """
        rec = self._record(ip)
        rec.disabled = False
        rec.disabled_at = None
        rec.cooldown_until = None
        last = max((e.time for e in rec.events), default=-math.inf)
        rec.reenabled_at = now if now is not None else last

    # -- queries --------------------------------------------------------------------------

    def is_fit(
        self,
        ip: str,
        now: float,
        *,
        force: bool = False,
        resuming: bool = False,
        adaptive: bool = False,
    ) -> tuple[bool, str]:
        """Whether an upload may start from ``ip`` now, and why not.

        ``force`` (a manual assignment with force) overrides cooldown, interval
        and cap, never a disabled IP: that one needs an admin's re-enable.
        ``resuming`` (a retry continuing the same Bilibili session, so no new
        preupload) overrides interval and cap only. ``adaptive`` also applies
        :meth:`learned_hourly_cap` when it is lower than the configured cap.
        """
        state, reason = self._state(ip, now, adaptive=adaptive)
        if state == OK:
            return True, "ok"
        if force and state != DISABLED:
            return True, f"forced despite: {reason}"
        if resuming and state in (RESTING, CAPPED):
            return True, f"resuming despite: {reason}"
        return False, reason

    def state(self, ip: str, now: float, *, adaptive: bool = False) -> str:
        """``ok | resting | capped | cooling | disabled``."""
        return self._state(ip, now, adaptive=adaptive)[0]

    def learned_hourly_cap(self, now: float) -> int | None:
        """The hourly rate Bilibili has shown it tolerates, learned from 406s (``None``: no data).

        Bilibili does not publish its limit and the configured cap is a guess.
        When a clean IP gets its first 406 after starting ``n`` uploads within
        an hour, ``n - 1`` per hour is the best evidence of the real limit, and
        it very likely holds for every IP (same rule on Bilibili's side). The
        lowest such figure seen in ``rate_evidence_seconds`` is the estimate;
        older evidence expires so a one-off cannot pin the mesh down forever.
        """
        horizon = now - self.rules.rate_evidence_seconds
        if self._evidence is None:
            self._evidence = [
                (e.time, max(1, e.starts_last_hour - 1))
                for rec in self._ips.values()
                for e in rec.events
                if e.evidence
            ]
        caps = [cap for t, cap in self._evidence if t > horizon]
        return min(caps) if caps else None

    def forget_learned_cap(self) -> None:
        """Admin lever: the learned rate was wrong (e.g. a 406 that was about the account).

        The events stay in the history; they just stop counting as rate evidence.
        """
        for rec in self._ips.values():
            for e in rec.events:
                e.evidence = False
        self._evidence = None
        self._changed.update(self._ips)

    def hourly_cap(self, now: float, *, adaptive: bool = False) -> int:
        """The cap in force: the configured one, or the learned one when lower (``adaptive``)."""
        cap = self.rules.max_uploads_per_hour
        if adaptive:
            learned = self.learned_hourly_cap(now)
            if learned is not None and (cap <= 0 or learned < cap):
                cap = learned
        return cap

    def next_fit_at(self, ip: str, now: float, *, adaptive: bool = False) -> float | None:
        """Earliest time ``ip`` becomes fit if nothing else happens (``None``: disabled)."""
        rec = self._ips.get(ip)
        if rec is None:
            return now
        if rec.disabled:
            return None
        r = self.rules
        t = now
        if rec.cooldown_until is not None:
            t = max(t, rec.cooldown_until)
        if rec.last_start is not None:
            t = max(t, rec.last_start + r.min_interval_seconds)
        cap = self.hourly_cap(now, adaptive=adaptive)
        window = self._window(rec, now)
        if cap > 0 and len(window) >= cap:
            # the window must drop enough starts to get below the cap
            t = max(t, window[len(window) - cap] + HOUR)
        return t

    def uploads_last_hour(self, ip: str, now: float) -> int:
        rec = self._ips.get(ip)
        if rec is None:
            return 0
        return len(self._window(rec, now))

    def last_upload_at(self, ip: str) -> float | None:
        rec = self._ips.get(ip)
        return rec.last_start if rec else None

    def record_penalty(self, ip: str, now: float) -> float:
        """Past risk events, each weighing 1 when fresh and halving every half-life."""
        rec = self._ips.get(ip)
        if rec is None:
            return 0.0
        half = self.rules.record_half_life_seconds
        return sum(0.5 ** (max(0.0, now - e.time) / half) for e in rec.events)

    def score(self, ip: str, now: float) -> float:
        """Preference among *fit* IPs, higher is better, in seconds of "effective idleness".

        Idleness since the last upload start (capped at ``idle_cap_seconds``;
        a never-used IP counts as fully idle), minus one ``min_interval`` per
        start in the last hour, minus one ``cooldown`` per (fading) past event.
        So an IP with a mixed record ranks as if it had uploaded more recently:
        it loses to clean idle IPs but still wins over busy or unfit ones.
        """
        r = self.rules
        last = self.last_upload_at(ip)
        idle = r.idle_cap_seconds if last is None else min(max(0.0, now - last), r.idle_cap_seconds)
        return (
            idle
            - self.uploads_last_hour(ip, now) * r.min_interval_seconds
            - self.record_penalty(ip, now) * r.cooldown_seconds
        )

    def score_ceiling(self) -> float:
        """No IP's :meth:`score` is above this (an idle, clean IP's score is exactly this).

        Lets a strategy skip agents that could not win even with the best score
        before it asks the ledger about them (``strategies.best_diverse``).
        ``inf`` when odd rules (a negative or non-finite term) void the bound.
        """
        r = self.rules
        terms = (r.idle_cap_seconds, r.min_interval_seconds, r.cooldown_seconds)
        if not all(math.isfinite(t) for t in terms):
            return math.inf
        if r.min_interval_seconds < 0 or r.cooldown_seconds < 0:
            return math.inf
        return r.idle_cap_seconds

    def known_ips(self) -> list[str]:
        return sorted(self._ips)

    def event_times(self) -> dict[str, list[float]]:
        """Each IP's risk event times (the kept ones), for the console's 24-hour chart."""
        return {ip: [e.time for e in rec.events] for ip, rec in self._ips.items() if rec.events}

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Rows for ``GET /api/manage/ips``, one per known IP, sorted by IP."""
        rows = []
        learned = self.learned_hourly_cap(now)
        for ip in self.known_ips():
            rec = self._ips[ip]
            state, reason = self._state(ip, now)
            rows.append(
                {
                    "ip": ip,
                    "agents": sorted(rec.agents),
                    "last_upload_at": rec.last_start,
                    "last_finished_at": rec.last_finish,
                    "uploads_last_hour": self.uploads_last_hour(ip, now),
                    "uploads_ok": rec.uploads_ok,
                    "uploads_failed": rec.uploads_failed,
                    "events": [_event_dict(e) for e in rec.events],
                    "strikes": self._recent_strikes(rec, now),
                    "cooldown_until": rec.cooldown_until if self._cooling(rec, now) else None,
                    "disabled": rec.disabled,
                    "next_fit_at": self.next_fit_at(ip, now),
                    "score": round(self.score(ip, now), 1),
                    "state": state,
                    "reason": reason,
                    "learned_hourly_cap": learned,
                }
            )
        return rows

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain, JSON-safe state; :meth:`restore` of it gives an equivalent ledger."""
        return {"version": 1, "ips": {ip: _ip_dict(rec) for ip, rec in self._ips.items()}}

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """The snapshot entries (``snapshot()["ips"][ip]``) of the IPs changed since the
        last call, and forget them: what must be written to keep the store current."""
        changes = {ip: _ip_dict(self._ips[ip]) for ip in self._changed if ip in self._ips}
        self._changed.clear()
        return changes

    def mark_changed(self, ips: Iterable[str]) -> None:
        """Writing :meth:`take_changes` failed: offer these IPs again next time."""
        self._changed.update(ips)

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (rules stay those of this ledger)."""
        if data.get("version") != 1:
            raise ValueError(f"unknown risk ledger snapshot version {data.get('version')!r}")
        ips: dict[str, IPRecord] = {}
        for ip, d in data.get("ips", {}).items():
            ips[ip] = IPRecord(
                ip=ip,
                agents=set(d.get("agents", ())),
                last_start=d.get("last_start"),
                last_finish=d.get("last_finish"),
                last_ok=d.get("last_ok"),
                starts=sorted(float(t) for t in d.get("starts", ())),
                uploads_ok=int(d.get("uploads_ok", 0)),
                uploads_failed=int(d.get("uploads_failed", 0)),
                events=[
                    RiskEvent(
                        float(e["time"]),
                        str(e["agent_id"]),
                        str(e["kind"]),
                        bool(e.get("strike", True)),
                        int(e.get("starts_last_hour", 0)),
                        bool(e.get("evidence", False)),
                    )
                    for e in d.get("events", ())
                ],
                cooldown_until=d.get("cooldown_until"),
                disabled=bool(d.get("disabled", False)),
                disabled_at=d.get("disabled_at"),
                reenabled_at=d.get("reenabled_at"),
            )
        self._ips = ips
        self._evidence = None
        self._changed.clear()  # the state is what the store holds

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], rules: RiskRules | None = None) -> RiskLedger:
        ledger = cls(rules)
        ledger.restore(data)
        return ledger

    # -- internals ------------------------------------------------------------------------

    def _record(self, ip: str) -> IPRecord:
        """The record of ``ip`` for an event (only events call this: it marks ``ip`` changed)."""
        rec = self._ips.get(ip)
        if rec is None:
            rec = self._ips[ip] = IPRecord(ip)
        self._changed.add(ip)
        return rec

    @staticmethod
    def _prune(rec: IPRecord, now: float) -> None:
        """Forget starts that left the window (only on events: queries never mutate)."""
        cut = bisect.bisect_right(rec.starts, now - HOUR)
        if cut:
            del rec.starts[:cut]

    @staticmethod
    def _window(rec: IPRecord, now: float) -> list[float]:
        """Starts in the sliding hour ``(now - 1 h, now]``."""
        lo = bisect.bisect_right(rec.starts, now - HOUR)
        hi = bisect.bisect_right(rec.starts, now)
        return rec.starts[lo:hi]

    @staticmethod
    def _cooling(rec: IPRecord, now: float) -> bool:
        return rec.cooldown_until is not None and now < rec.cooldown_until

    def _recent_strikes(self, rec: IPRecord, now: float) -> int:
        since = now - self.rules.strike_memory_seconds
        if rec.reenabled_at is not None:
            since = max(since, rec.reenabled_at)
        return sum(1 for e in rec.events if e.strike and e.time > since)

    def _add_event(self, rec: IPRecord, event: RiskEvent) -> None:
        rec.events.append(event)
        if len(rec.events) > _MAX_EVENTS_KEPT:
            del rec.events[: len(rec.events) - _MAX_EVENTS_KEPT]
        self._evidence = None

    def _state(self, ip: str, now: float, *, adaptive: bool = False) -> tuple[str, str]:
        rec = self._ips.get(ip)
        if rec is None:
            return OK, "ok"
        if rec.disabled:
            n = self.rules.disable_after_events
            return DISABLED, f"disabled after {n} risk events; an admin must re-enable it"
        if self._cooling(rec, now):
            assert rec.cooldown_until is not None
            left = rec.cooldown_until - now
            return COOLING, f"cooling down after a risk event ({left:.0f} s left)"
        r = self.rules
        cap = self.hourly_cap(now, adaptive=adaptive)
        started = len(self._window(rec, now))
        if cap > 0 and started >= cap:
            which = "learned" if cap < r.max_uploads_per_hour or r.max_uploads_per_hour <= 0 else ""
            return CAPPED, (
                f"hourly cap{' (' + which + ')' if which else ''}: "
                f"{started} uploads started in the last hour"
            )
        if rec.last_start is not None and now - rec.last_start < r.min_interval_seconds:
            ago = now - rec.last_start
            return RESTING, (
                f"min interval: last upload started {ago:.0f} s ago "
                f"(< {r.min_interval_seconds:.0f} s)"
            )
        return OK, "ok"


def _ip_dict(rec: IPRecord) -> dict[str, Any]:
    return {
        "agents": sorted(rec.agents),
        "last_start": rec.last_start,
        "last_finish": rec.last_finish,
        "last_ok": rec.last_ok,
        "starts": list(rec.starts),
        "uploads_ok": rec.uploads_ok,
        "uploads_failed": rec.uploads_failed,
        "events": [_event_dict(e) for e in rec.events],
        "cooldown_until": rec.cooldown_until,
        "disabled": rec.disabled,
        "disabled_at": rec.disabled_at,
        "reenabled_at": rec.reenabled_at,
    }


def _event_dict(e: RiskEvent) -> dict[str, Any]:
    return {
        "time": e.time,
        "agent_id": e.agent_id,
        "kind": e.kind,
        "strike": e.strike,
        "starts_last_hour": e.starts_last_hour,
        "evidence": e.evidence,
    }
