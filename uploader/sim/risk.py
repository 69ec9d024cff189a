"""Risk control as the simulator models it, on a clock given to it (pure: no IO, no sleeping).

Three pieces, each keyed by whatever the caller chooses (an IP, an account,
the pair):

- :class:`SlidingBudget`: at most N events per window, the preupload budget;
- :class:`Throttles`: a key that was refused stays refused (while its window
  is full, for a set time, or until its captcha voucher is solved), and every
  refusal of one throttle carries the same voucher;
- :class:`SubmissionLimits`: the per-account submission rules behind 21566,
  137022 and the sticky 21515.

Callers pass ``now``, so tests drive them with a fake clock.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from dataclasses import dataclass


class SlidingBudget:
    """At most ``limit`` events per ``window`` seconds for each key; 0 means unlimited."""

    def __init__(self) -> None:
        self._times: dict[Hashable, collections.deque[float]] = {}

    def _prune(self, key: Hashable, *, window: float, now: float) -> collections.deque[float]:
        times = self._times.setdefault(key, collections.deque())
        horizon = now - window
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def allows(self, key: Hashable, *, limit: int, window: float, now: float) -> bool:
        """Room for one more event? An allowed event must then be :meth:`count`-ed."""
        used = len(self._prune(key, window=window, now=now))
        return limit <= 0 or used < limit

    def count(self, key: Hashable, *, now: float) -> None:
        self._times.setdefault(key, collections.deque()).append(now)

    def used(self, key: Hashable, *, window: float, now: float) -> int:
        return len(self._prune(key, window=window, now=now))

    def frees_at(self, key: Hashable, *, limit: int, window: float, now: float) -> float:
        """When the window next has room for one more event (``now`` if it has room now)."""
        times = self._prune(key, window=window, now=now)
        if limit <= 0 or len(times) < limit:
            return now
        return times[len(times) - limit] + window

    def clear(self, key: Hashable) -> None:
        self._times.pop(key, None)


@dataclass
class Throttle:
    """One key being refused: since when, until when (None: until solved), its voucher."""

    key: Hashable
    since: float
    until: float | None
    voucher: str | None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


class Throttles:
    """The keys being refused, findable by key and by captcha voucher."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, Throttle] = {}
        self._by_voucher: dict[str, Throttle] = {}

    def current(self, key: Hashable, *, now: float) -> Throttle | None:
        """The key's throttle while it lasts; an expired one is forgotten here."""
        throttle = self._by_key.get(key)
        if throttle is None:
            return None
        if throttle.active(now):
            return throttle
        self._forget(throttle)
        return None

    def start(
        self, key: Hashable, *, now: float, until: float | None, voucher: str | None
    ) -> Throttle:
        old = self._by_key.get(key)
        if old is not None:
            self._forget(old)
        throttle = Throttle(key=key, since=now, until=until, voucher=voucher)
        self._by_key[key] = throttle
        if voucher is not None:
            self._by_voucher[voucher] = throttle
        return throttle

    def solve(self, voucher: str) -> Throttle | None:
        """End the throttle this voucher belongs to (None: no such voucher, or over already)."""
        throttle = self._by_voucher.get(voucher)
        if throttle is not None:
            self._forget(throttle)
        return throttle

    def all(self, *, now: float) -> list[Throttle]:
        return [t for t in list(self._by_key.values()) if self.current(t.key, now=now)]

    def _forget(self, throttle: Throttle) -> None:
        if self._by_key.get(throttle.key) is throttle:
            del self._by_key[throttle.key]
        if throttle.voucher is not None:
            self._by_voucher.pop(throttle.voucher, None)


# Codes of the per-account submission rules (messages in uploader.sim.facts).
TOOL_DISABLED = 21590
CHEATING = 21515
TOO_SOON = 21566
TOO_MANY = 137022


@dataclass(frozen=True)
class SubmissionRules:
    """The knobs of :class:`SubmissionLimits` (zeros switch a rule off)."""

    min_gap: float = 0.0
    max_per_window: int = 0
    window: float = 3600.0
    cadence_count: int = 0
    cadence_tolerance: float = 30.0


class SubmissionLimits:
    """Per-account submission rules; the account is refused whatever IP it comes from.

    Only accepted submissions count. A regular beat (``cadence_count`` gaps in a
    row, none further than ``cadence_tolerance`` from another) marks the account
    a cheater for good: every later submission is refused with 21515.
    """

    def __init__(self) -> None:
        self._accepted: dict[Hashable, list[float]] = {}
        self._window = SlidingBudget()
        self.penalised: set[Hashable] = set()

    def refusal(self, account: Hashable, rules: SubmissionRules, *, now: float) -> int | None:
        """The code refusing this submission now, or None to accept it (then :meth:`count`)."""
        if account in self.penalised:
            return CHEATING
        times = self._accepted.get(account, [])
        if rules.cadence_count >= 2 and len(times) >= rules.cadence_count:
            recent = [*times[-rules.cadence_count :], now]
            gaps = [b - a for a, b in zip(recent, recent[1:], strict=False)]
            if max(gaps) - min(gaps) <= rules.cadence_tolerance:
                self.penalised.add(account)
                return CHEATING
        if rules.min_gap > 0 and times and now - times[-1] < rules.min_gap:
            return TOO_SOON
        if not self._window.allows(
            account, limit=rules.max_per_window, window=rules.window, now=now
        ):
            return TOO_MANY
        return None

    def count(self, account: Hashable, *, now: float) -> None:
        times = self._accepted.setdefault(account, [])
        times.append(now)
        del times[:-64]  # a cadence needs only the last few
        self._window.count(account, now=now)
