"""When to dial the hub again after a stream ends (pure: the clock is passed in).

Without advice from the hub an agent backs off exponentially with full jitter
(:class:`spoke.backoff.Backoff`, 1-60 s): right for one agent and a hub of
unknown size, but after a hub restart a fleet whose delays grew to 30-60 s
while the hub was down comes back in a long tail, with bursts in between.

A hub that knows its fleet names a *window* (``Welcome.reconnect_window_seconds``,
updated by ``ReconnectWindow``): the fleet divided by the sessions per second it
can admit. When a welcomed stream is lost the agent picks one random moment in
the window and dials then, and, while dials fail, at the same moment of each
following window: a fixed phase on a grid of period ``window``. Whenever the
hub starts listening again, every agent's next dial falls within one window of
it, and the phases being uniform, the fleet arrives at an even rate (what the
hub said it can take) instead of in bursts. While the hub is down the fleet
dials at that same rate, so a long outage costs no more than the return.

A ``Drain`` that asks for a delay still decides the first dial after it.
"""

from __future__ import annotations

import math
import random

from spoke.backoff import Backoff


class ReconnectSchedule:
    """The delays between the agent's dials: the hub's window when it named one,
    else :class:`Backoff`."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.window = 0.0  # seconds; 0: the hub named none
        self._rng = rng or random.Random()
        self._first_dial: float | None = None  # the grid's origin, set when a stream is lost

    def set_window(self, seconds: float) -> None:
        """The hub's advice (Welcome, ReconnectWindow); 0 or less withdraws it."""
        self.window = seconds if seconds > 0 and math.isfinite(seconds) else 0.0

    def lost(self, now: float, *, welcomed: bool) -> None:
        """A session ended at ``now``; ``welcomed``: the hub had welcomed it."""
        if welcomed:
            self.backoff.reset()
            self._first_dial = None
        if self._first_dial is None and self.window > 0:
            self._first_dial = now + self._rng.uniform(0, self.window)

    def next_delay(self, now: float) -> float:
        """Seconds from ``now`` to the next dial."""
        origin, window = self._first_dial, self.window
        if origin is None or window <= 0:
            return self.backoff.next_delay()
        if origin - now > window * 1e-6:
            return origin - now
        # The next point of the grid origin + k * window after now (a failed dial takes
        # some time: the next one keeps its phase rather than restarting the window).
        k = math.floor((now - origin) / window) + 1
        delay = origin + k * window - now
        # Rounding can leave ``now`` a hair before a grid point it has reached: never
        # dial twice at one point.
        return delay if delay > window * 1e-6 else delay + window
