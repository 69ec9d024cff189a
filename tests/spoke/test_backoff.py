"""Reconnect delays: exponential with full jitter, capped, reset after a welcome."""

from __future__ import annotations

import random

import pytest

from spoke.backoff import Backoff


def test_backoff_full_jitter_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(7))
    caps = [backoff.cap(n) for n in range(10)]
    assert caps[:6] == [2, 4, 8, 16, 32, 60] and caps[-1] == 60
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[10:]) > 30  # full jitter reaches well into the range
    assert len({round(d, 3) for d in delays[10:]}) > 100  # and is spread, not fixed
    backoff.reset()
    assert backoff.attempt == 0 and 1.0 <= backoff.next_delay() <= 2.0
    first = [b.next_delay() for b in (Backoff(rng=random.Random(i)) for i in range(50))]
    assert all(1.0 <= d <= 2.0 for d in first)
    assert max(first) - min(first) > 0.5  # agents dropped together come back spread out
    assert backoff.cap(10_000) == 60  # no overflow after a long outage
    with pytest.raises(ValueError):
        Backoff(0, 1)
