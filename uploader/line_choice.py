"""Choosing an upload line by measured throughput (pure: the caller owns clock and rng).

The line probe times one 100 KiB request per line, which measures latency
more than bandwidth: users report a line that answers the probe last
uploading several times faster than the one that answers first. So the probe
only *seeds* the choice. Every upload through a line then feeds
:meth:`LineEstimator.observe` with the bytes it moved and the time its chunk
requests were in flight (:class:`BusyTime`), and the estimate per line is an
exponentially weighted mean of those figures. The first measurement of a
line replaces its seed (a probe time is not a throughput); later ones are
blended with weight ``weight``.

:meth:`LineEstimator.choose` takes the line with the best measured
throughput (the best seed while nothing is measured yet) and now and then,
with probability ``explore_rate``, another one: a line never measured
first, else the one measured longest ago, so a line that got faster (or a
winner that got slower) is noticed. ``needs_probe`` asks for a fresh probe
list when none was seeded or it is older than ``reprobe_seconds``.

Typical use (one estimator per agent, kept across uploads)::

    if estimator.needs_probe():
        estimator.seed(costs_by_name, probe_bytes=PROBE_BODY_SIZE, lines=lines_by_name)
    name = estimator.choose()
    ... upload, measuring with BusyTime ...
    estimator.observe(name, nbytes, busy.seconds)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Rng(Protocol):
    def random(self) -> float: ...

    def choice(self, seq: Any) -> Any: ...


@dataclass
class LineStats:
    """What is known about one line: its figure (bytes/s) and where it comes from."""

    name: str
    bps: float  # the estimate; 0.0 for a line whose probe failed and that was never measured
    measured: bool  # False: only the probe's seed
    samples: int  # measurements blended in
    updated_at: float | None  # clock time of the last measurement


# Below this many bytes a measurement says more about request overhead than the line.
MIN_BYTES = 64 * 1024


class LineEstimator:
    """Per-line throughput estimates and the choice they lead to."""

    def __init__(
        self,
        *,
        weight: float = 0.3,
        explore_rate: float = 0.1,
        reprobe_seconds: float = 6 * 3600.0,
        rng: Rng | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        if not 0 <= explore_rate <= 1:
            raise ValueError("explore_rate must be in [0, 1]")
        if reprobe_seconds <= 0:
            raise ValueError("reprobe_seconds must be positive")
        self.weight = weight
        self.explore_rate = explore_rate
        self.reprobe_seconds = reprobe_seconds
        self.rng: Rng = rng or random.Random()
        self.clock = clock
        self._stats: dict[str, LineStats] = {}
        self._payload: dict[str, Any] = {}
        self._probed_at: float | None = None

    # -- what is known ---------------------------------------------------------------

    def stats(self) -> list[LineStats]:
        return list(self._stats.values())

    def estimate(self, name: str) -> float | None:
        stats = self._stats.get(name)
        return stats.bps if stats is not None else None

    def line(self, name: str) -> Any:
        """What ``seed`` was given for this line (the uploader's ``Line``), or None."""
        return self._payload.get(name)

    def best(self) -> LineStats | None:
        """The line :meth:`choose` would take when not exploring."""
        measured = [s for s in self._stats.values() if s.measured]
        pool = measured or [s for s in self._stats.values() if s.bps > 0]
        if not pool:
            return None
        return max(pool, key=lambda s: s.bps)  # ties: the first listed

    def needs_probe(self) -> bool:
        if self._probed_at is None:
            return True
        return self.clock() - self._probed_at >= self.reprobe_seconds

    # -- learning --------------------------------------------------------------------

    def seed(
        self,
        costs: Mapping[str, float | None],
        *,
        probe_bytes: int,
        lines: Mapping[str, Any] | None = None,
    ) -> None:
        """A probe round: ``costs`` is seconds per line name (None: the probe failed).

        A line never measured gets ``probe_bytes / cost`` as its figure; a measured
        line keeps its measurements. Lines the probe no longer lists are dropped.
        """
        self._probed_at = self.clock()
        for name in [n for n in self._stats if n not in costs]:
            del self._stats[name]
            self._payload.pop(name, None)
        for name, cost in costs.items():
            if lines is not None and name in lines:
                self._payload[name] = lines[name]
            stats = self._stats.get(name)
            if stats is not None and stats.measured:
                continue
            bps = probe_bytes / max(cost, 1e-6) if cost is not None else 0.0
            self._stats[name] = LineStats(name, bps, measured=False, samples=0, updated_at=None)

    def observe(self, name: str, nbytes: int, seconds: float) -> None:
        """One upload (or part of one) moved ``nbytes`` in ``seconds`` of requests in flight."""
        if nbytes < MIN_BYTES or seconds <= 0:
            return
        figure = nbytes / max(seconds, 1e-3)
        now = self.clock()
        stats = self._stats.get(name)
        if stats is None or not stats.measured:
            self._stats[name] = LineStats(name, figure, measured=True, samples=1, updated_at=now)
            return
        stats.bps += self.weight * (figure - stats.bps)
        stats.samples += 1
        stats.updated_at = now

    # -- choosing --------------------------------------------------------------------

    def choose(self) -> str | None:
        """The line name to upload on next; None when nothing is known (let Bilibili pick)."""
        best = self.best()
        if best is None:
            return None
        # A line whose probe failed is not worth a try until a probe answers again.
        others = [
            s for s in self._stats.values() if s.name != best.name and (s.measured or s.bps > 0)
        ]
        if others and self.rng.random() < self.explore_rate:
            never = [s for s in others if not s.measured]
            if never:
                return self.rng.choice(never).name
            return min(others, key=lambda s: s.updated_at or 0.0).name
        return best.name


class BusyTime:
    """Seconds during which at least one request was in flight.

    Upload throughput is bytes over *this* time, not over the wall clock: an
    agent waiting for bytes from the hub is not measuring the line.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = 0.0
        self._in_flight = 0
        self._since = 0.0

    def start(self) -> None:
        if self._in_flight == 0:
            self._since = self.clock()
        self._in_flight += 1

    def stop(self) -> None:
        if self._in_flight <= 0:
            raise RuntimeError("BusyTime.stop without a start")
        self._in_flight -= 1
        if self._in_flight == 0:
            self.seconds += self.clock() - self._since
