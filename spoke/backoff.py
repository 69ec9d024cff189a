"""Reconnect delays: exponential backoff with full jitter (pure, seeded in tests).

Many agents lose the hub at the same moment when it restarts; full jitter
(a uniform delay between ``initial`` and the exponential cap) spreads their
reconnects so the hub is not hit by a thundering herd.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay before reconnect attempt ``n`` (0-based): uniform in
    ``[initial, min(maximum, initial * 2**(n + 1))]``.

    Even the first delay is spread (1-2 s by default), so agents dropped together by
    a hub restart do not all come back in the same instant.
    """

    def __init__(
        self, initial: float = 1.0, maximum: float = 60.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def cap(self, attempt: int) -> float:
        # min() before the power would overflow for long outages.
        return min(self.maximum, self.initial * 2 ** min(attempt + 1, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call widens the range up to ``maximum``."""
        delay = self._rng.uniform(self.initial, self.cap(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A session got through (Welcome received): start again from ``initial``."""
        self.attempt = 0
