"""Progress figures (bytes done, speed, ETA) and when to report them.

Sans-IO: the meter is fed events and a clock value; it decides whether a
report is due, so the policy (at most every ``interval`` seconds, always the
first and the last) is tested without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    uploaded: int
    total: int
    speed_bps: float  # bytes per second over the recent window
    eta_seconds: float  # float("inf") while the speed is unknown

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.uploaded / self.total)


class ProgressMeter:
    """Turns "n more bytes accepted at time t" into throttled ``Progress`` reports.

    Speed is measured over a sliding ``window`` of seconds so a stall shows
    up quickly, and bytes that were already done before a resume count as
    uploaded but not towards speed.
    """

    def __init__(
        self,
        total: int,
        *,
        start: float,
        already: int = 0,
        interval: float = 0.5,
        window: float = 10.0,
    ) -> None:
        self.total = total
        self.uploaded = already
        self.interval = interval
        self.window = window
        self._samples: deque[tuple[float, int]] = deque([(start, already)])
        self._last_report: float | None = None

    def advance(self, nbytes: int, now: float) -> Progress | None:
        """Record ``nbytes`` accepted; return a report if one is due."""
        self.uploaded += nbytes
        self._samples.append((now, self.uploaded))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        done = self.uploaded >= self.total
        if self._last_report is None or done or now - self._last_report >= self.interval:
            self._last_report = now
            return self.snapshot(now)
        return None

    def snapshot(self, now: float) -> Progress:
        first_time, first_bytes = self._samples[0]
        elapsed = now - first_time
        speed = (self.uploaded - first_bytes) / elapsed if elapsed > 0 else 0.0
        remaining = max(0, self.total - self.uploaded)
        if remaining == 0:
            eta = 0.0
        elif speed > 0:
            eta = remaining / speed
        else:
            eta = float("inf")
        return Progress(self.uploaded, self.total, speed, eta)
