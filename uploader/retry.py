"""Exponential backoff with full jitter (pure: the caller owns the clock and rng).

Full jitter (a uniform draw between 0 and the exponential ceiling) keeps many
agents that failed together from retrying together, which matters here: a
burst of synchronised retries from one IP is exactly what risk control punishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Rng(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed network request is retried.

    ``attempts`` is the number of retries after the first try, so a request
    is sent at most ``attempts + 1`` times. ``jitter`` is the fraction of the
    ceiling that is randomised: 1.0 is full jitter, 0.0 a fixed schedule.
    """

    attempts: int = 3
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError("attempts must not be negative")
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("backoff seconds must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait before retry number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        # min() before the power would overflow float for large attempts.
        exponent = min(attempt - 1, 64)
        return min(self.maximum, self.initial * (2.0**exponent))

    def delay(self, attempt: int, rng: Rng) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ceiling = self.ceiling(attempt)
        fixed = ceiling * (1.0 - self.jitter)
        return fixed + rng.uniform(0.0, ceiling * self.jitter)

    def allows(self, attempt: int) -> bool:
        """Whether retry number ``attempt`` (1-based) may happen."""
        return 1 <= attempt <= self.attempts
