"""The per-account risk ledger (sans-IO: events in, answers out, injected clock).

Bilibili judges an *account* as well as an IP. Users report submission
throttles that follow the account whatever the IP (21566 "投稿过于频繁",
137022 after about 15 submissions 10 minutes apart), a penalty for a machine's
regular cadence (21515 "批量作弊投稿"), a closed submission route (21590
"投稿工具已停用"), and preupload throttling that some see per account. More
IPs do not protect an account, so beside the per-IP ledger (hub/core/risk.py)
the hub keeps this one, keyed by account, and an upload or a submission goes
out only when both fit.

Per account it keeps:

* **pacing**: a minimum gap between preuploads and between submissions, and
  sliding hourly and daily caps of each (the ``risk.account`` settings; 0
  turns one off). The gap before a submission is stretched by a varying
  fraction (``submit_gap_jitter``) so a backlog never goes out on a regular
  beat, which is what 21515 punishes;
* **cooldowns**: after 21566 / 137022 the account submits nothing until the
  wait Bilibili named (``retry_after``) or, when it named none, a wait that
  doubles with each repeat; an account found at fault for preupload
  throttling (below) uploads nothing for ``cooldown_seconds``;
* **penalised**: 21515 / 21590 stop the account, uploads and submissions,
  until an admin releases it. Sticky on purpose: Bilibili's penalty is.
* **suspicion and learning**: a risk-control answer to a preupload is the
  IP's fault by default. When answers to the same account come from
  ``suspect_ips`` different IPs within ``suspect_window_seconds``, the evidence
  points at the account: it cools down, learns an hourly preupload cap
  (:mod:`hub.core.learning`, faded after the same clean period as the IPs'),
  and the :class:`Verdict` tells the hub to take those answers off the IPs
  (``RiskLedger.blame_account``).

The ledger does no IO; the hub persists :meth:`snapshot` and restores it after a
restart. :meth:`describe` is ``GET /api/manage/accounts/{id}/risk``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from hub.core import learning
from hub.core.account_records import (
    PREUPLOAD,
    SUBMIT,
    AccountEvent,
    AccountRecord,
    event_dict,
    record_dict,
    record_from,
)
from hub.core.learning import LearnedLimit

HOUR = 3600.0
DAY = 86400.0
GOLDEN = (math.sqrt(5) - 1) / 2

# States shown by the account view, worst first.
PENALISED = "penalised"  # 21515 / 21590: only an admin releases it
COOLING = "cooling"  # a throttle or a fault found: wait it out
PACED = "paced"  # a gap or a cap holds the next preupload or submission back
OK = "ok"

RISK_CONTROL = "risk_control"
ACCOUNT_THROTTLE = "account_throttle"
ACCOUNT_PENALTY = "account_penalty"

_MAX_EVENTS_KEPT = 100


@dataclass(frozen=True)
class AccountRules:
    preupload_min_gap_seconds: float = 10.0
    preuploads_per_hour: int = 20
    preuploads_per_day: int = 300
    submit_min_gap_seconds: float = 600.0
    submit_gap_jitter: float = 0.5
    submits_per_hour: int = 4
    submits_per_day: int = 12
    throttle_cooldown_seconds: float = 1800.0
    throttle_cooldown_max_seconds: float = DAY
    suspect_ips: int = 2
    suspect_window_seconds: float = HOUR
    cooldown_seconds: float = HOUR
    learned_clean_seconds: float = DAY

    @classmethod
    def from_settings(cls, risk: Any) -> AccountRules:
        """From ``hub.config.RiskSettings`` (its ``account`` part and the clean period)."""
        account = risk.account
        fields = {name: getattr(account, name) for name in cls.__dataclass_fields__
                  if name != "learned_clean_seconds"}
        return cls(**fields, learned_clean_seconds=float(risk.learned_clean_seconds))

    @classmethod
    def open(cls) -> AccountRules:
        """No pacing at all (tests, benchmarks against the simulator)."""
        return cls(preupload_min_gap_seconds=0, preuploads_per_hour=0, preuploads_per_day=0,
                   submit_min_gap_seconds=0, submit_gap_jitter=0, submits_per_hour=0,
                   submits_per_day=0)


@dataclass(frozen=True)
class Verdict:
    """What a risk-control answer meant for the account (for the hub to act on)."""

    suspected: bool  # the account, not the IPs, is at fault
    since: float | None = None  # take the account's answers since then off the IPs
    ips: tuple[str, ...] = ()


class AccountLedger:
    """Per-account pacing, cooldowns and penalties; see the module docstring."""

    def __init__(self, rules: AccountRules | None = None) -> None:
        self.rules = rules or AccountRules()
        self._accounts: dict[str, AccountRecord] = {}
        self._changed = False

    # -- events ---------------------------------------------------------------------------

    def preupload_started(self, account: str, now: float) -> None:
        """An upload of ``account`` starts from some IP (a preupload: what Bilibili counts)."""
        rec = self._record(account)
        bisect.insort(rec.preuploads, now)
        _prune(rec.preuploads, now)

    def submit_sent(self, account: str, now: float) -> None:
        rec = self._record(account)
        bisect.insort(rec.submits, now)
        rec.submits_total += 1
        _prune(rec.submits, now)

    def submit_accepted(self, account: str, now: float) -> None:
        """Bilibili took a submission: the throttle backoff starts afresh."""
        rec = self._record(account)
        rec.throttle_streak = 0

    def risk_event(self, account: str, ip: str, agent_id: str, now: float, *, code: int = 0,
                   voucher: str = "", retry_after: float | None = None, ip_starts: int = 0,
                   ip_own: bool = False) -> Verdict:
        """Risk control answered a preupload of ``account`` from ``ip``: is it the account?

        The IP ledger records the answer as the IP's; here it is the account's only
        when the answers point at it (:func:`_points_at_account`), or when it is the same
        episode: the account is cooling down at fault (answers to uploads that were in
        flight then), or the answer carries the voucher of a captcha already found to be
        the account's (its throttle outlasted the cooldown: no IP is to blame for it). ``ip_starts``: the IP's upload starts in the hour
        up to the answer; ``ip_own``: the IP was already throttled on its own (the IP
        ledger's word: a strike of its own in its clean period).
        """
        rec = self._record(account)
        r = self.rules
        event = AccountEvent(now, RISK_CONTROL, PREUPLOAD, ip, agent_id, code, retry_after,
                             voucher, self._count(rec.preuploads, now, HOUR),
                             ip_starts=ip_starts, ip_own=ip_own)
        self._add_event(rec, event)
        since = now - r.suspect_window_seconds
        for after in (rec.released_at, rec.accepted_at):
            if after is not None:
                since = max(since, after)
        window = [e for e in rec.events if e.kind == RISK_CONTROL and e.time > since]
        # The same episode: the account is cooling down at fault, or the answer carries
        # the voucher of a captcha already found to be the account's (not yet solved).
        already = (_after(rec.preupload_cooldown_until, now) and any(e.blamed for e in window)
                   ) or bool(voucher) and any(e.blamed and e.voucher == voucher
                                              for e in rec.events if e is not event)
        ips = _points_at_account(window, r.suspect_ips)
        if not ips and not already:
            return Verdict(False)
        streak_new = not any(e.blamed for e in window)
        for e in window:
            e.blamed = True
        if streak_new:
            first = min(window, key=lambda e: e.time)
            first.evidence = first.starts_last_hour >= 2
        wait = max(r.cooldown_seconds, retry_after or 0.0)
        until = now + wait
        if rec.preupload_cooldown_until is None or rec.preupload_cooldown_until < until:
            rec.preupload_cooldown_until = until
        start = min(e.time for e in window)
        return Verdict(True, start, tuple(sorted({e.ip for e in window if e.ip})))

    def preupload_accepted(self, account: str, started: float) -> None:
        """Bilibili accepted a preupload of ``account`` made at ``started``: the account
        could upload then, so answers refused before it do not add up with later ones
        to put the account at fault (they were the IPs')."""
        rec = self._accounts.get(account)
        if rec is None or (rec.accepted_at is not None and rec.accepted_at >= started):
            return
        self._record(account).accepted_at = started

    def throttled(self, account: str, now: float, *, what: str = SUBMIT, code: int = 0,
                  retry_after: float | None = None, ip: str = "", agent_id: str = "",
                  message: str = "") -> float:
        """21566 / 137022: the account goes too fast. Returns when it may try again.

        Bilibili's named wait is honoured as it is; without one the wait doubles with
        each throttle since the last accepted submission (21566 is reported not to
        clear by itself: the growing wait keeps asking rarely, and the alert asks an
        admin to look).
        """
        rec = self._record(account)
        r = self.rules
        self._add_event(rec, AccountEvent(now, ACCOUNT_THROTTLE, what, ip, agent_id, code,
                                          retry_after, "", 0, message=message[:200]))
        rec.throttle_streak += 1
        if retry_after is not None and retry_after > 0:
            wait = float(retry_after)
        else:
            wait = min(r.throttle_cooldown_seconds * 2.0 ** min(rec.throttle_streak - 1, 30),
                       r.throttle_cooldown_max_seconds)
        until = now + wait
        if what == PREUPLOAD:
            rec.preupload_cooldown_until = max(rec.preupload_cooldown_until or 0.0, until)
        else:
            rec.submit_cooldown_until = max(rec.submit_cooldown_until or 0.0, until)
        return until

    def penalised(self, account: str, now: float, *, what: str = SUBMIT, code: int = 0,
                  ip: str = "", agent_id: str = "", message: str = "") -> None:
        """21515 / 21590: the account is stopped until an admin releases it."""
        rec = self._record(account)
        self._add_event(rec, AccountEvent(now, ACCOUNT_PENALTY, what, ip, agent_id, code,
                                          None, "", 0, message=message[:200]))
        if not rec.penalised:
            rec.penalised, rec.penalised_at = True, now
        rec.penalty = f"code {code}: {message}"[:200] if code else message[:200]

    def admin_release(self, account: str, now: float) -> bool:
        """An admin vouches for the account: penalty and cooldowns lifted, earlier answers
        stop counting toward suspicion, and the limit it learned is forgotten."""
        rec = self._accounts.get(account)
        if rec is None:
            return False
        rec = self._record(account)
        rec.penalised, rec.penalised_at, rec.penalty = False, None, ""
        rec.preupload_cooldown_until = rec.submit_cooldown_until = None
        rec.throttle_streak = 0
        rec.released_at = now
        self.forget(account)
        return True

    def lift_cooldown(self, account: str) -> bool:
        """The captcha behind the account's preupload cooldown was solved."""
        rec = self._accounts.get(account)
        if rec is None or rec.preupload_cooldown_until is None:
            return False
        self._record(account).preupload_cooldown_until = None
        return True

    def forget(self, account: str) -> bool:
        """Admin lever: what the account learned is wrong. The history stays."""
        rec = self._accounts.get(account)
        if rec is None:
            return False
        for e in rec.events:
            e.blamed = e.evidence = False
        self._changed = True
        return True

    # -- queries --------------------------------------------------------------------------

    def preupload_fit(self, account: str, now: float, *, force: bool = False
                      ) -> tuple[bool, str]:
        """Whether an upload of ``account`` may start now (from any fit IP), and why not.

        ``force`` (an admin's forced assignment) overrides gaps, caps and cooldowns,
        never a penalty.
        """
        reason = self._preupload_reason(account, now)
        if not reason:
            return True, "ok"
        rec = self._accounts[account]
        if force and not rec.penalised:
            return True, f"forced despite: {reason}"
        return False, reason

    def submit_fit(self, account: str, now: float) -> tuple[bool, str]:
        reason = self._submit_reason(account, now)
        return (True, "ok") if not reason else (False, reason)

    def preupload_next_at(self, account: str, now: float) -> float | None:
        """Earliest time the account may preupload if nothing else happens (None: penalised)."""
        rec = self._accounts.get(account)
        if rec is None:
            return now
        if rec.penalised:
            return None
        r = self.rules
        t = max(now, rec.preupload_cooldown_until or now)
        if rec.preuploads and r.preupload_min_gap_seconds > 0:
            t = max(t, rec.preuploads[-1] + r.preupload_min_gap_seconds)
        cap = self.preupload_hourly_cap(account, now)
        t = max(t, _cap_free_at(rec.preuploads, now, cap, HOUR))
        return max(t, _cap_free_at(rec.preuploads, now, r.preuploads_per_day, DAY))

    def submit_next_at(self, account: str, now: float) -> float | None:
        """Earliest time the account may submit if nothing else happens (None: penalised)."""
        rec = self._accounts.get(account)
        if rec is None:
            return now
        if rec.penalised:
            return None
        r = self.rules
        t = max(now, rec.submit_cooldown_until or now)
        if rec.submits and r.submit_min_gap_seconds > 0:
            t = max(t, rec.submits[-1] + self.submit_gap(rec))
        t = max(t, _cap_free_at(rec.submits, now, r.submits_per_hour, HOUR))
        return max(t, _cap_free_at(rec.submits, now, r.submits_per_day, DAY))

    def submit_gap(self, rec: AccountRecord) -> float:
        """The gap before the account's next submission: the minimum, stretched by a
        fraction that changes every time (the golden-ratio sequence: consecutive gaps
        differ by at least 38 % of the stretch), so a backlog has no regular beat."""
        r = self.rules
        stretch = math.modf(rec.submits_total * GOLDEN)[0]
        return r.submit_min_gap_seconds * (1.0 + r.submit_gap_jitter * stretch)

    def suspected(self, account: str, now: float) -> bool:
        """Whether risk control was found to be the account's fault, and it has not been
        clean (no answer blamed on it) for ``learned_clean_seconds`` since."""
        rec = self._accounts.get(account)
        if rec is None:
            return False
        last = max((e.time for e in rec.events if e.blamed), default=None)
        return last is not None and now - last < self.rules.learned_clean_seconds

    def learned_limit(self, account: str, now: float) -> LearnedLimit | None:
        """The hourly preupload cap the account learned once found at fault (faded after
        ``learned_clean_seconds`` without an answer blamed on it)."""
        rec = self._accounts.get(account)
        if rec is None:
            return None
        blamed = [(e, e.evidence, e.ip) for e in rec.events if e.blamed]
        lim = learning.limit_of(learning.ACCOUNT, account, blamed,
                                self.rules.learned_clean_seconds)
        return lim if lim is not None and lim.decays_at > now else None

    def preupload_hourly_cap(self, account: str, now: float) -> int:
        cap = self.rules.preuploads_per_hour
        lim = self.learned_limit(account, now)
        if lim is not None and (cap <= 0 or lim.hourly_cap < cap):
            cap = lim.hourly_cap
        return cap

    def state(self, account: str, now: float) -> str:
        rec = self._accounts.get(account)
        if rec is None:
            return OK
        if rec.penalised:
            return PENALISED
        if _after(rec.preupload_cooldown_until, now) or _after(rec.submit_cooldown_until, now):
            return COOLING
        if self._preupload_reason(account, now) or self._submit_reason(account, now):
            return PACED
        return OK

    def known(self) -> list[str]:
        return sorted(self._accounts)

    def describe(self, account: str, now: float) -> dict[str, Any]:
        """The account's standing for ``GET /api/manage/accounts/{id}/risk``."""
        rec = self._accounts.get(account) or AccountRecord(account)
        lim = self.learned_limit(account, now)
        r = self.rules
        return {
            "account": account,
            "state": self.state(account, now),
            "penalised": rec.penalised,
            "penalised_at": rec.penalised_at,
            "penalty": rec.penalty,
            "preupload": {
                "fit": not self._preupload_reason(account, now),
                "reason": self._preupload_reason(account, now) or "ok",
                "next_at": self.preupload_next_at(account, now),
                "last_at": rec.preuploads[-1] if rec.preuploads else None,
                "last_accepted_at": rec.accepted_at,
                "last_hour": self._count(rec.preuploads, now, HOUR),
                "last_day": self._count(rec.preuploads, now, DAY),
                "hourly_cap": self.preupload_hourly_cap(account, now),
                "daily_cap": r.preuploads_per_day,
                "cooldown_until": rec.preupload_cooldown_until
                if _after(rec.preupload_cooldown_until, now) else None,
            },
            "submit": {
                "fit": not self._submit_reason(account, now),
                "reason": self._submit_reason(account, now) or "ok",
                "next_at": self.submit_next_at(account, now),
                "last_at": rec.submits[-1] if rec.submits else None,
                "last_hour": self._count(rec.submits, now, HOUR),
                "last_day": self._count(rec.submits, now, DAY),
                "hourly_cap": r.submits_per_hour,
                "daily_cap": r.submits_per_day,
                "cooldown_until": rec.submit_cooldown_until
                if _after(rec.submit_cooldown_until, now) else None,
                "throttles_in_a_row": rec.throttle_streak,
            },
            "suspected": self.suspected(account, now),
            "learned": lim.to_dict() if lim is not None else None,
            "events": [event_dict(e) for e in rec.events],
            "released_at": rec.released_at,
        }

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1,
                "accounts": {a: record_dict(rec) for a, rec in self._accounts.items()}}

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != 1:
            raise ValueError(f"unknown account ledger snapshot version {data.get('version')!r}")
        self._accounts = {str(a): record_from(str(a), d)
                          for a, d in (data.get("accounts") or {}).items()}
        self._changed = False

    def take_changed(self) -> bool:
        """Whether an event changed the ledger since the last call (then: save it)."""
        changed, self._changed = self._changed, False
        return changed

    def mark_changed(self) -> None:
        self._changed = True

    # -- internals ------------------------------------------------------------------------

    def _record(self, account: str) -> AccountRecord:
        rec = self._accounts.get(account)
        if rec is None:
            rec = self._accounts[account] = AccountRecord(account)
        self._changed = True
        return rec

    def _add_event(self, rec: AccountRecord, event: AccountEvent) -> None:
        rec.events.append(event)
        if len(rec.events) > _MAX_EVENTS_KEPT:
            del rec.events[: len(rec.events) - _MAX_EVENTS_KEPT]

    @staticmethod
    def _count(times: list[float], now: float, span: float) -> int:
        return bisect.bisect_right(times, now) - bisect.bisect_right(times, now - span)

    def _preupload_reason(self, account: str, now: float) -> str:
        rec = self._accounts.get(account)
        if rec is None:
            return ""
        r = self.rules
        who = f"account {account}"
        if rec.penalised:
            return f"{who} is penalised ({rec.penalty}); an admin must release it"
        if _after(rec.preupload_cooldown_until, now):
            left = (rec.preupload_cooldown_until or now) - now
            return f"{who} cooling down after risk control ({left:.0f} s left)"
        last_hour = self._count(rec.preuploads, now, HOUR)
        cap = self.preupload_hourly_cap(account, now)
        if cap > 0 and last_hour >= cap:
            which = " (learned)" if cap < r.preuploads_per_hour or r.preuploads_per_hour <= 0 \
                else ""
            return f"{who}: hourly preupload cap{which}: {last_hour} in the last hour"
        last_day = self._count(rec.preuploads, now, DAY)
        if r.preuploads_per_day > 0 and last_day >= r.preuploads_per_day:
            return f"{who}: daily preupload cap: {last_day} in the last day"
        last = rec.preuploads[-1] if rec.preuploads else None
        if last is not None and now < last + r.preupload_min_gap_seconds:
            return (f"{who}: last preupload {now - last:.0f} s ago "
                    f"(< {r.preupload_min_gap_seconds:.0f} s)")
        return ""

    def _submit_reason(self, account: str, now: float) -> str:
        rec = self._accounts.get(account)
        if rec is None:
            return ""
        r = self.rules
        who = f"account {account}"
        if rec.penalised:
            return f"{who} is penalised ({rec.penalty}); an admin must release it"
        if _after(rec.submit_cooldown_until, now):
            left = (rec.submit_cooldown_until or now) - now
            return f"{who} throttled by Bilibili ({left:.0f} s left)"
        last_hour = self._count(rec.submits, now, HOUR)
        if r.submits_per_hour > 0 and last_hour >= r.submits_per_hour:
            return f"{who}: hourly submission cap: {last_hour} in the last hour"
        last_day = self._count(rec.submits, now, DAY)
        if r.submits_per_day > 0 and last_day >= r.submits_per_day:
            return f"{who}: daily submission cap: {last_day} in the last day"
        last = rec.submits[-1] if rec.submits else None
        gap = self.submit_gap(rec)
        if last is not None and r.submit_min_gap_seconds > 0 and now < last + gap:
            return f"{who}: last submission {now - last:.0f} s ago (< {gap:.0f} s)"
        return ""


def _points_at_account(window: list[AccountEvent], quorum: int) -> list[str]:
    """The IPs whose answers, together, show the *account* throttled ([] when they do not).

    ``window`` holds only answers with no preupload of the account accepted in
    between: once an IP accepted it, the account was not the one throttled. Then:

    * a 601's voucher names one throttle: the same voucher from ``quorum`` IPs is
      one throttle over several addresses, which only the account explains;
      different vouchers are different throttles (each IP's, or each pair's) and
      do not add up;
    * an answer without a voucher (406) names no throttle and sides with any, but
      not when its IP explains it: the IP was already throttled on its own, or
      every IP refused at the same number of its own starts in the hour (two or
      more), which one per-IP rate explains as well as an account would.
    """
    loose = [e for e in window if e.ip and not e.voucher and not e.ip_own]
    throttles: dict[str, list[AccountEvent]] = {}
    for e in window:
        if e.ip and e.voucher:
            throttles.setdefault(e.voucher, []).append(e)
    for answers in [[], *throttles.values()]:
        ips = {e.ip for e in answers}
        if len(ips) >= quorum:
            return sorted(ips)
        together = loose + answers
        ips |= {e.ip for e in loose}
        counts = {e.ip_starts for e in together}
        if len(ips) >= quorum and not (len(counts) == 1 and min(counts) >= 2):
            return sorted(ips)
    return []


def _after(until: float | None, now: float) -> bool:
    return until is not None and now < until


def _prune(times: list[float], now: float) -> None:
    """Drop what left the longest window (a day); only events call this."""
    cut = bisect.bisect_right(times, now - DAY)
    if cut:
        del times[:cut]


def _cap_free_at(times: list[float], now: float, cap: int, span: float) -> float:
    """When the sliding ``span`` holds fewer than ``cap`` of ``times`` again (now if it does)."""
    if cap <= 0:
        return now
    lo = bisect.bisect_right(times, now - span)
    hi = bisect.bisect_right(times, now)
    window = times[lo:hi]
    if len(window) < cap:
        return now
    return window[len(window) - cap] + span
