"""When an agent reports a task's progress to the hub: every 10% or every 10 s.

Sans-IO with the clock passed in, so the policy is tested without sleeping:
the first report, every crossing of a ``step`` boundary, the last byte, and
otherwise at least one report per ``interval`` while the task runs (so the hub
sees a stalled upload as stalled, not as silent).
"""

from __future__ import annotations


class ProgressGate:
    def __init__(self, total: int, *, now: float, step: float = 0.1, interval: float = 10.0) -> None:
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.total = total
        self.step = step
        self.interval = interval
        self._last_time: float | None = None
        self._last_bucket = -1
        self._started = now
        self._last_uploaded = -1

    def _bucket(self, uploaded: int) -> int:
        if self.total <= 0:
            return int(round(1 / self.step))
        return int(min(uploaded, self.total) / self.total / self.step + 1e-9)

    def should_report(self, uploaded: int, now: float) -> bool:
        """Whether a report with ``uploaded`` bytes done is due at ``now``; if so it is counted."""
        bucket = self._bucket(uploaded)
        due = (
            self._last_time is None
            or bucket > self._last_bucket
            or (uploaded >= self.total and self._last_uploaded < self.total)
            or now - self._last_time >= self.interval
        )
        if due:
            self._last_time = now
            self._last_bucket = max(bucket, self._last_bucket)
            self._last_uploaded = uploaded
        return due

    def next_deadline(self) -> float:
        """Clock value by which the next time-driven report is due."""
        last = self._started if self._last_time is None else self._last_time
        return last + self.interval
