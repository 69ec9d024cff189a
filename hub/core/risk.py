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
hour says the real limit there is about ``n - 1`` per hour. What one answer
teaches, and for how long, is :mod:`hub.core.learning`'s rule: that IP alone,
the whole mesh only when ``mesh_quorum`` IPs agree, nothing once the IP has been
clean for ``learned_clean_seconds``; ``adaptive=True`` on the queries applies it
(``ip_diversity`` and ``locality`` do). Answers the account ledger puts on the
account (the same account refused on several IPs) are taken off the IPs again
(:meth:`RiskLedger.blame_account`).

The ledger does no IO. The hub persists :meth:`snapshot` (plain dicts and
numbers, JSON-safe) and rebuilds with :meth:`restore` after a restart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

from hub.core import learning
from hub.core.learning import LearnedLimit
from hub.core.risk_records import (
    BLAME_ACCOUNT,
    BLAME_IP,
    DAY,
    HOUR,
    IPRecord,
    RiskEvent,
    RiskRules,
    event_dict,
    event_from,
    ip_dict,
)

__all__ = ["CAPPED", "COOLING", "DAY", "DISABLED", "HOUR", "OK", "RESTING", "IPRecord",
           "RiskEvent", "RiskLedger", "RiskRules"]


# States shown by GET /api/manage/ips, worst first.
DISABLED = "disabled"  # too many strikes: only an admin re-enables
COOLING = "cooling"  # recent risk event: wait out the cooldown
CAPPED = "capped"  # hourly cap reached (sliding window)
RESTING = "resting"  # started an upload less than min_interval ago
OK = "ok"

_MAX_EVENTS_KEPT = 100  # per IP; enough for any score or audit, bounded for the snapshot


class RiskLedger:
    """Per-IP upload history and risk state; see the module docstring for the rules."""

    def __init__(self, rules: RiskRules | None = None) -> None:
        self.rules = rules or RiskRules()
        self._ips: dict[str, IPRecord] = {}
        # Learned limits are asked for every IP of every scheduling decision, and
        # recomputing them from events each time made one decision O(IPs^2)
        # (bench/scale.py, 1,000 agents): each IP's own limit and its share toward the
        # mesh-wide one are kept until its events change; the mesh-wide one until an
        # event changes or one of its parts fades.
        self._own: dict[str, LearnedLimit | None] = {}
        self._shared: dict[str, LearnedLimit | None] = {}
        self._mesh: tuple[float, LearnedLimit | None] | None = None  # (valid until, limit)
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

    def risk_event(self, ip: str, agent_id: str, kind: str, now: float, *,
                   account: str = "", voucher: str = "") -> RiskEvent:
        """Bilibili answered 406 / 601 to an upload from ``ip``: cool it down (or disable it).

        An event while the IP is already cooling is recorded but is not a new
        strike: uploads that were in flight when the first 406 came belong to
        the same throttling episode, and must not escalate it to disabled.
        ``account`` (the account the upload was for) lets the account ledger's
        verdict take the event off the IP later (:meth:`blame_account`).
        """
        rec = self._record(ip)
        rec.agents.add(agent_id)
        self._prune(rec, now)
        started = len(self._window(rec, now))
        event = RiskEvent(now, agent_id, str(kind), False, started, account=account,
                          voucher=voucher)
        if rec.disabled or self._cooling(rec, now):
            self._add_event(rec, event)
            return event
        # Only a clean IP's first strike measures the rate limit: a later one may just
        # be the same throttle outlasting our cooldown. One start says nothing of rate,
        # and neither do starts Bilibili never accepted: an IP whose uploads were refused
        # from the first (a blocked IP, or two attempts refused together) shows no rate,
        # and learning "1 per hour" from it would throttle that IP for nothing.
        event.strike = True
        clean_since = now - self.rules.learned_clean_seconds
        event.evidence = event.shared = (
            not any(e.strike and e.time > clean_since for e in rec.events)
            and started >= 2
            and rec.last_ok is not None
            and rec.last_ok > now - HOUR
        )
        self._add_event(rec, event)
        self._apply_strikes(rec, now)
        event.cooldown_until = rec.cooldown_until
        return event

    def _apply_strikes(self, rec: IPRecord, now: float) -> None:
        """Cooldown (growing with strikes) or disable, from the strikes that count now."""
        strikes = self._recent_strikes(rec, now)
        r = self.rules
        if r.disable_after_events > 0 and strikes >= r.disable_after_events:
            rec.disabled = True
            rec.disabled_at = now
            rec.cooldown_until = None
            return
        cooldown = r.cooldown_seconds * r.cooldown_growth ** (max(1, strikes) - 1)
        rec.cooldown_until = now + min(cooldown, r.cooldown_max_seconds)

    def admin_reenable(self, ip: str, now: float | None = None) -> None:
        """An admin vouches for the IP: lift disable and cooldown, start counting strikes
        afresh, and forget the limit it learned (an IP vouched for is not held to it).

        The event history stays (it is the audit trail and still lowers the
        IP's rank until it fades); only strikes before ``now`` stop counting.
        """
        rec = self._record(ip)
        rec.disabled = False
        rec.disabled_at = None
        rec.cooldown_until = None
        last = max((e.time for e in rec.events), default=-math.inf)
        rec.reenabled_at = now if now is not None else last
        self.forget_ip(ip)

    def captcha_solved(self, ip: str, now: float) -> bool:
        """The throttle behind the IP's cooldown is over: an admin solved its captcha.

        The cooldown ends, and the hourly window starts afresh, as Bilibili's count
        does after a solved captcha (what the IP learned still holds: it caps the
        new window). A disabled IP stays disabled: that is an admin's separate
        decision. False for an IP the ledger does not know.
        """
        if ip not in self._ips:
            return False
        rec = self._record(ip)
        rec.cooldown_until = None
        rec.starts = [t for t in rec.starts if t > now]
        return True

    def forget_ip(self, ip: str) -> bool:
        """Admin lever: the limit ``ip`` learned is wrong. Its answers stay in the history
        and keep counting as strikes; they stop teaching, that IP and the mesh."""
        rec = self._ips.get(ip)
        if rec is None:
            return False
        for e in rec.events:
            e.evidence = e.shared = False
        self._learning_changed(ip)
        return True

    def forget_mesh(self) -> None:
        """Admin lever: the mesh-wide limit is wrong. Each IP keeps what it learned itself;
        those answers just stop counting toward a limit for every IP."""
        for ip, rec in self._ips.items():
            if any(e.shared for e in rec.events):
                for e in rec.events:
                    e.shared = False
                self._learning_changed(ip)

    def blame_account(self, account: str, since: float, now: float) -> list[str]:
        """The account ledger found ``account`` at fault for the answers since ``since``:
        take them off the IPs (no strike, no evidence), and lift the cooldowns and
        disables they alone caused. Returns the IPs that changed."""
        changed = []
        for ip, rec in self._ips.items():
            hit = [e for e in rec.events if e.account == account and e.time >= since
                   and e.blamed == BLAME_IP]
            if not hit:
                continue
            for e in hit:
                e.blamed, e.strike, e.evidence, e.shared = BLAME_ACCOUNT, False, False, False
            self._learning_changed(ip)
            self._record(ip)
            self._recompute_standing(rec, now)
            changed.append(ip)
        return changed

    def _recompute_standing(self, rec: IPRecord, now: float) -> None:
        """Cooldown and disable from the strikes left (after some were taken off)."""
        r = self.rules
        if rec.disabled and not (r.disable_after_events > 0
                                 and self._recent_strikes(rec, now) >= r.disable_after_events):
            rec.disabled, rec.disabled_at = False, None
        left = [e.cooldown_until for e in rec.events if e.strike and e.cooldown_until]
        until = max(left, default=None)
        rec.cooldown_until = until if until is not None and until > now else None

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

    def learned_limit(self, ip: str, now: float) -> LearnedLimit | None:
        """The limit ``ip`` learned from its own risk events (None: none, or it faded)."""
        if ip not in self._own:
            rec = self._ips.get(ip)
            self._own[ip] = None if rec is None else self._limit_of(rec, shared=False)
        lim = self._own[ip]
        return lim if lim is not None and lim.decays_at > now else None

    def mesh_limit(self, now: float) -> LearnedLimit | None:
        """The limit every IP is held to, once ``mesh_quorum`` IPs agree (None: no quorum)."""
        if self._mesh is not None and now < self._mesh[0]:
            return self._mesh[1]
        for ip, rec in self._ips.items():
            if ip not in self._shared:
                self._shared[ip] = self._limit_of(rec, shared=True)
        limits = [lim for lim in self._shared.values() if lim is not None]
        mesh = learning.mesh_limit(limits, self.rules.mesh_quorum, now)
        # Valid until an event changes a limit (that clears the cache) or a part fades.
        until = min((lim.decays_at for lim in limits if lim.decays_at > now), default=math.inf)
        self._mesh = (until, mesh)
        return mesh

    def learned_hourly_cap(self, now: float, ip: str | None = None) -> int | None:
        """The hourly rate Bilibili has shown it tolerates (``None``: nothing learned).

        Without ``ip``: the mesh-wide figure; with it, the lower of that IP's own and
        the mesh-wide one. See :mod:`hub.core.learning` for what counts.
        """
        caps = [lim.hourly_cap for lim in (
            self.mesh_limit(now), self.learned_limit(ip, now) if ip is not None else None)
            if lim is not None]
        return min(caps) if caps else None

    def learned_limits(self, now: float) -> list[dict[str, Any]]:
        """Every live learned limit with its evidence: each IP's, then the mesh-wide one."""
        out = [lim.to_dict() for ip in self.known_ips()
               if (lim := self.learned_limit(ip, now)) is not None]
        mesh = self.mesh_limit(now)
        if mesh is not None:
            out.append(mesh.to_dict())
        return out

    def hourly_cap(self, now: float, *, adaptive: bool = False, ip: str | None = None) -> int:
        """The cap in force: the configured one, or the learned one when lower (``adaptive``)."""
        cap = self.rules.max_uploads_per_hour
        if adaptive:
            learned = self.learned_hourly_cap(now, ip)
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
        cap = self.hourly_cap(now, adaptive=adaptive, ip=ip)
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
        """Rows for ``GET /api/manage/ips``, one per known IP, sorted by IP.

        ``learned``: the limit the IP learned itself, with its evidence;
        ``learned_hourly_cap``: the learned figure it is held to (its own or the
        mesh-wide one, the lower), applied by the adaptive strategies.
        """
        rows = []
        for ip in self.known_ips():
            rec = self._ips[ip]
            state, reason = self._state(ip, now)
            own = self.learned_limit(ip, now)
            rows.append(
                {
                    "ip": ip,
                    "agents": sorted(rec.agents),
                    "last_upload_at": rec.last_start,
                    "last_finished_at": rec.last_finish,
                    "uploads_last_hour": self.uploads_last_hour(ip, now),
                    "uploads_ok": rec.uploads_ok,
                    "uploads_failed": rec.uploads_failed,
                    "events": [event_dict(e) for e in rec.events],
                    "strikes": self._recent_strikes(rec, now),
                    "cooldown_until": rec.cooldown_until if self._cooling(rec, now) else None,
                    "disabled": rec.disabled,
                    "next_fit_at": self.next_fit_at(ip, now),
                    "score": round(self.score(ip, now), 1),
                    "state": state,
                    "reason": reason,
                    "learned_hourly_cap": self.learned_hourly_cap(now, ip),
                    "learned": own.to_dict() if own is not None else None,
                }
            )
        return rows

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain, JSON-safe state; :meth:`restore` of it gives an equivalent ledger."""
        return {"version": 1, "ips": {ip: ip_dict(rec) for ip, rec in self._ips.items()}}

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """The snapshot entries (``snapshot()["ips"][ip]``) of the IPs changed since the
        last call, and forget them: what must be written to keep the store current."""
        changes = {ip: ip_dict(self._ips[ip]) for ip in self._changed if ip in self._ips}
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
                events=[event_from(e) for e in d.get("events", ())],
                cooldown_until=d.get("cooldown_until"),
                disabled=bool(d.get("disabled", False)),
                disabled_at=d.get("disabled_at"),
                reenabled_at=d.get("reenabled_at"),
            )
        self._ips = ips
        self._own.clear()
        self._shared.clear()
        self._mesh = None
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
        self._learning_changed(rec.ip)

    def _learning_changed(self, ip: str) -> None:
        self._own.pop(ip, None)
        self._shared.pop(ip, None)
        self._mesh = None
        self._changed.add(ip)

    def _limit_of(self, rec: IPRecord, *, shared: bool) -> LearnedLimit | None:
        """The IP's limit from its events (regardless of time: callers check decays_at)."""
        events = sorted(
            ((e, e.shared if shared else e.evidence) for e in rec.events
             if e.blamed == BLAME_IP),
            key=lambda pair: pair[0].time)
        return learning.ip_limit(rec.ip, events, self.rules.learned_clean_seconds)

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
        cap = self.hourly_cap(now, adaptive=adaptive, ip=ip)
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
