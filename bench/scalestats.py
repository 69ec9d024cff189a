"""Pure figures for ``bench/scale.py``: percentiles, reconnect curves, CPU share.

Kept apart from the process handling so they can be checked without a hub.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def per_second(times: Sequence[float], start: float, end: float | None = None) -> list[int]:
    """Counts of ``times`` in 1-second bins from ``start`` (times before it are dropped)."""
    offsets = [t - start for t in times if t >= start]
    if end is not None:
        span = max(0, math.ceil(end - start))
    else:
        span = math.floor(max(offsets)) + 1 if offsets else 0
    bins = [0] * span
    for off in offsets:
        i = int(off)
        if i < span:
            bins[i] += 1
    return bins


def storm_summary(reconnects: Sequence[float], kill_time: float) -> dict[str, float]:
    """How bursty the reconnects after a hub restart were.

    The storm runs from the first to the last reconnect (what the hub had to take);
    ``mean_per_s`` is reconnects over that span (at least one second) and ``ratio`` is
    the busiest 1-second bin over that mean: the issue's target is ratio <= 3.
    """
    if not reconnects:
        raise ValueError("no reconnects")
    first, last = min(reconnects), max(reconnects)
    bins = per_second(reconnects, first)
    span = max(1.0, last - first)
    mean = len(reconnects) / span
    return {
        "reconnects": len(reconnects),
        "first_after_kill_s": first - kill_time,
        "all_back_after_kill_s": last - kill_time,
        "span_s": span,
        "max_per_s": max(bins),
        "mean_per_s": mean,
        "ratio": max(bins) / mean,
    }


def cpu_percent(ticks_before: int, ticks_after: int, seconds: float, hz: int) -> float:
    """CPU use of one process over a window, in % of one core."""
    if seconds <= 0:
        raise ValueError("window must be positive")
    return 100.0 * (ticks_after - ticks_before) / hz / seconds
