"""Risk control as the simulator models it: sliding-window budgets, on a clock given to them.

Bilibili answers a client that starts uploads too fast with 406 (or 601 JSON)
on preupload; how many it lets through per window is a budget. The budget is
kept per key (today the source IP) so the same counter can be keyed by account
or by the pair. Pure: callers pass the time, so tests need no sleeping.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable


class SlidingBudget:
    """At most ``limit`` events per ``window`` seconds for each key; 0 means unlimited."""

    def __init__(self) -> None:
        self._times: dict[Hashable, collections.deque[float]] = {}

    def allows(self, key: Hashable, *, limit: int, window: float, now: float) -> bool:
        """Room for one more event? An allowed event must then be :meth:`count`-ed."""
        if limit <= 0:
            return True
        times = self._times.setdefault(key, collections.deque())
        horizon = now - window
        while times and times[0] <= horizon:
            times.popleft()
        return len(times) < limit

    def count(self, key: Hashable, *, now: float) -> None:
        self._times.setdefault(key, collections.deque()).append(now)
