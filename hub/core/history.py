"""Recent history for the console's charts, in fixed time buckets (sans-IO, injected clock).

The hub keeps no time series otherwise (Prometheus scrapes counters, the risk
ledger keeps the last hour of starts), yet a page opened now should draw the last
hour of each agent's throughput and the last day of each IP's uploads. So the
hub counts into rings of buckets, one ring per key:

- bytes uploaded per agent, in 1-minute buckets for 1 hour (60 numbers a key);
- upload starts per egress IP, in 10-minute buckets for 24 hours (144 a key).

Risk events need no ring: the ledger keeps each IP's events with their times
(persisted, so they survive a restart); :meth:`History.view` buckets them on
the same grid. The rings are memory only: a hub restart starts them empty.

Cost: a ring is an ``array('d')``, 8 bytes a bucket: 480 B per agent and
1,152 B per IP, about 1.6 MB for a thousand agents on a thousand IPs. A key
whose ring holds nothing inside the window is dropped when viewed, so agents
and IPs that went away cost nothing after a day.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

THROUGHPUT_BUCKET_SECONDS = 60.0
THROUGHPUT_BUCKETS = 60
IP_BUCKET_SECONDS = 600.0
IP_BUCKETS = 144


class Series:
    """Per key, the sum of what was added in each ``width``-second bucket of the last ``n``."""

    def __init__(self, width: float, n: int) -> None:
        if width <= 0 or n < 1:
            raise ValueError("a series needs a positive bucket width and at least one bucket")
        self.width = width
        self.n = n
        self._rings: dict[str, array[float]] = {}
        self._last: dict[str, int] = {}  # key -> index of the newest bucket written

    def __len__(self) -> int:
        return len(self._rings)

    def add(self, key: str, value: float, now: float) -> None:
        index = self._index(now)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = array("d", bytes(8 * self.n))
            self._last[key] = index
        last = self._last[key]
        if index > last:
            # Buckets skipped since the last write held nothing: clear their slots
            # (at most a whole ring's worth, however long the key was quiet).
            for skipped in range(last + 1, min(index, last + self.n) + 1):
                ring[skipped % self.n] = 0.0
            self._last[key] = last = index
        if index <= last - self.n:
            return  # older than the window (a clock step back): nowhere to count it
        ring[index % self.n] += value

    def window(self, now: float) -> tuple[float, dict[str, list[float]]]:
        """``(start of the oldest bucket, {key: n values, oldest first})``; keys with
        nothing in the window are forgotten."""
        current = self._index(now)
        first = current - self.n + 1
        out: dict[str, list[float]] = {}
        for key in list(self._rings):
            last = self._last[key]
            if last < first:
                del self._rings[key], self._last[key]
                continue
            ring = self._rings[key]
            out[key] = [ring[b % self.n] if last - self.n < b <= last else 0.0
                        for b in range(first, current + 1)]
        return first * self.width, out

    def _index(self, t: float) -> int:
        return math.floor(t / self.width)


def bucket_times(times: Iterable[float], width: float, n: int, now: float) -> list[float]:
    """Count ``times`` into the same grid as ``Series.window(now)``."""
    current = math.floor(now / width)
    counts = [0.0] * n
    for t in times:
        offset = math.floor(t / width) - (current - n + 1)
        if 0 <= offset < n:
            counts[offset] += 1
    return counts


class History:
    """The console's chart data: fed by the hub's metric hooks, read by the page."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.agent_bytes = Series(THROUGHPUT_BUCKET_SECONDS, THROUGHPUT_BUCKETS)
        self.ip_uploads = Series(IP_BUCKET_SECONDS, IP_BUCKETS)

    def uploaded(self, agent_id: str, nbytes: float) -> None:
        if nbytes > 0:
            self.agent_bytes.add(agent_id, nbytes, self.clock())

    def upload_started(self, ip: str) -> None:
        self.ip_uploads.add(ip or "unknown", 1, self.clock())

    def view(self, risk_events: Mapping[str, Iterable[float]]) -> dict[str, Any]:
        """``risk_events``: each IP's event times (the ledger's)."""
        now = self.clock()
        t_start, agents = self.agent_bytes.window(now)
        i_start, uploads = self.ip_uploads.window(now)
        risks = {ip: counts for ip, times in risk_events.items()
                 if any(counts := bucket_times(times, IP_BUCKET_SECONDS, IP_BUCKETS, now))}
        return {
            "server_time": now,
            "throughput": {"bucket_seconds": THROUGHPUT_BUCKET_SECONDS, "start": t_start,
                           "agents": agents},
            "ips": {"bucket_seconds": IP_BUCKET_SECONDS, "start": i_start,
                    "uploads": uploads, "risk_events": risks},
        }
