"""Bandwidth caps: a token bucket that slows body reads to a rate.

A capped source IP (or, later, line) shares one bucket across all its
concurrent requests, as a real uplink would. The burst is kept small so a
capped upload is slow from its first chunk, not after a free first second.
"""

from __future__ import annotations

import time

import anyio


class TokenBucket:
    """Bytes-per-second cap shared by every body read from one source IP."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.last = time.monotonic()

    async def consume(self, amount: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        burst = max(self.rate / 20, 65536)
        self.tokens = min(burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= amount
        if self.tokens < 0:
            await anyio.sleep(-self.tokens / self.rate)
