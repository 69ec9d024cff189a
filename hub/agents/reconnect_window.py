"""How wide agents should spread their reconnects (pure: clocks are injected).

After a hub restart the whole fleet dials back at once. Each agent, told a
window ``W``, dials at one random moment of each window until it gets in
(:mod:`spoke.reconnect`), so the fleet arrives at about ``fleet / W`` sessions
a second. The hub sizes ``W`` so that rate is what it can take: the fleet (the
agents it knows, all of which may come back) over the admission rate,
clamped to the configured bounds.

The admission rate is measured, not guessed: :class:`AdmissionMeter` counts the
admissions (a registration or a welcomed session: the work a returning fleet
brings) in each second and the CPU time the process used in it. A second busy
with them gives the CPU cost of one (an upper bound: whatever else the hub did
that second, heartbeats, collections, is charged to them too), and the rate is
half a core's worth of them: the hub shares its machine (its gRPC threads, the
database, often other services), and a window sized for all of a core it does
not get turns the return into a backlog of dials that time out and come back a
window later. Until a busy second has been seen, a configured or default rate
stands in.

:class:`WindowAnnouncer` decides when a changed window is worth telling the
connected agents (``ReconnectWindow``): when it moved by a quarter or more, no
more often than every few seconds, so a fleet growing from one agent to ten
thousand hears of it a few dozen times, not ten thousand; and not while most of
the fleet is away (returning after a restart, when the agents still out could
not hear it and those back need not).
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_RATE = 500.0  # sessions/s assumed before a busy second was measured
ADMISSION_SHARE = 0.5  # cores' worth of CPU for admissions while a fleet comes back
MIN_SAMPLE = 100  # admissions a second must hold to say what one costs (then they
# dominate its CPU, not the steady heartbeats of the fleet already connected)
SMOOTHING = 0.3  # weight of the newest sample in the running cost
MIN_RATE, MAX_RATE = 20.0, 20_000.0  # sane bounds for a measured rate
ANNOUNCE_CHANGE = 0.25  # tell connected agents when the window moved this much
ANNOUNCE_EVERY_SECONDS = 5.0


class AdmissionMeter:
    """Sessions per second this hub can admit, from what admitting them costs it."""

    def __init__(self, *, clock: Callable[[], float], cpu_clock: Callable[[], float],
                 fixed_rate: float = 0.0, bin_seconds: float = 1.0) -> None:
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.fixed_rate = fixed_rate  # > 0: configured, not measured
        self.bin_seconds = bin_seconds
        self.cost: float | None = None  # CPU seconds per admission, smoothed
        self._bin_start = clock()
        self._bin_cpu = cpu_clock()
        self._count = 0

    def admitted(self) -> None:
        """One admission (a registration, or a session's Welcome sent)."""
        now = self.clock()
        if now - self._bin_start >= self.bin_seconds:
            self._close_bin(now)
        self._count += 1

    def _close_bin(self, now: float) -> None:
        cpu = self.cpu_clock()
        span = now - self._bin_start
        # A bin that ran long (no admission for a while) says nothing about their cost:
        # the idle seconds' CPU would be charged to the few that came.
        if self._count >= MIN_SAMPLE and span <= 2 * self.bin_seconds:
            sample = max(cpu - self._bin_cpu, 1e-6) / self._count
            self.cost = sample if self.cost is None else (
                SMOOTHING * sample + (1 - SMOOTHING) * self.cost)
        self._bin_start, self._bin_cpu, self._count = now, cpu, 0

    def rate(self) -> float:
        """Admissions per second to plan for."""
        if self.fixed_rate > 0:
            return self.fixed_rate
        if self.cost is None:
            return DEFAULT_RATE
        return min(MAX_RATE, max(MIN_RATE, ADMISSION_SHARE / self.cost))


def window_seconds(fleet: int, rate: float, *, low: float, high: float) -> float:
    """The window over which ``fleet`` agents reconnect at ``rate`` a second, in
    ``[low, high]``; 0 when ``high`` is 0 (no advice: agents use their backoff)."""
    if high <= 0:
        return 0.0
    return min(high, max(low, fleet / max(rate, 1e-9)))


class WindowAnnouncer:
    """Whether connected agents should hear of a new window now."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.announced = 0.0  # the window connected agents were last told
        self._at = float("-inf")

    def told(self, window: float) -> None:
        """Every connected agent now knows ``window`` (set at start, or after a broadcast)."""
        self.announced = window
        self._at = self.clock()

    def due(self, window: float) -> bool:
        """True (and noted as told) when ``window`` differs enough from the last one told
        and the last announcement is old enough."""
        if window == self.announced:
            return False
        base = max(self.announced, 1e-9)
        if abs(window - self.announced) / base < ANNOUNCE_CHANGE and self.announced > 0:
            return False
        if self.clock() - self._at < ANNOUNCE_EVERY_SECONDS:
            return False
        self.told(window)
        return True
