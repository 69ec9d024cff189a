"""The data directory's space alarm: raised by a write that found the disk full,
cleared by the hub itself once space returns (like etcd's NOSPACE alarm).

While it is raised the hub stays up and keeps its agents: it serves reads,
uploads already running go on (their state waits in the store's write-behind
queue, hub/store/writebehind.py), and new work is refused at the edges with the
directory and its free bytes (HTTP 507, ``hub.api.storage``); the alert loop
reports it (``data_dir_full``).

Every ``storage.probe_interval_seconds`` a raised alarm looks at the free space;
once at least ``storage.resume_free_mb`` is free it writes what waited, then one
real write of its own (the probe), and only when all of that succeeded is the
alarm cleared and the hub's loops woken. A write that fails again on the way
leaves it raised: nothing is lost, and nothing waits twice.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread

from hub.core.errors import StorageFull
from hub.store.database import free_bytes

log = logging.getLogger("bupmesh.hub.storage")

MiB = 1 << 20
PROBE_BYTES = 64 * 1024  # what the probe writes: a page or two more than a small update



def _probe_write(at: float) -> Callable[[sqlite3.Connection], object]:
    def q(c: sqlite3.Connection) -> None:
        c.execute("""CREATE TABLE IF NOT EXISTS space_probe (
                         id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL,
                         pad BLOB NOT NULL)""")
        c.execute("""INSERT INTO space_probe (id, at, pad) VALUES (1, ?, zeroblob(?))
                     ON CONFLICT(id) DO UPDATE SET at=excluded.at, pad=excluded.pad""",
                  (at, PROBE_BYTES))

    return q


class SpaceAlarm:
    def __init__(self, directory: str | Path, *, resume_free_bytes: int,
                 probe_interval: float, clock: Callable[[], float]) -> None:
        self.directory = str(directory)
        self.resume_free_bytes = resume_free_bytes
        self.probe_interval = probe_interval
        self.clock = clock
        self.raised = False
        self.since: float | None = None
        self.free_bytes: int | None = None
        self.trips = 0  # times it was raised in this hub's life (a metric)
        self._flushers: list[Callable[[], Awaitable[bool]]] = []
        self._waiting: list[Callable[[], int]] = []
        self._probe: Callable[[Callable[[sqlite3.Connection], object]], Awaitable[object]] | None \
            = None
        self._cleared: list[Callable[[], None]] = []

    # -- wiring ---------------------------------------------------------------------------

    def watch(self, db: object) -> None:
        """Trip on ``db``'s full-disk failures; flush its write-behind queue (if it has
        one) before clearing. The first database watched also runs the probe."""
        db.on_full = self.trip  # type: ignore[attr-defined]
        behind = getattr(db, "write_behind", None)
        if behind is not None:
            self._flushers.append(behind.flush)
            self._waiting.append(lambda: behind.waiting)
        if self._probe is None:
            self._probe = lambda fn: db._run(fn)  # type: ignore[attr-defined]

    def on_cleared(self, fn: Callable[[], None]) -> None:
        """``fn()`` when the alarm clears (wake the loops that waited for space)."""
        self._cleared.append(fn)

    @property
    def waiting_writes(self) -> int:
        return sum(count() for count in self._waiting)

    # -- events ---------------------------------------------------------------------------

    def trip(self, exc: StorageFull) -> None:
        """A write found the disk full (called by the database that failed)."""
        self.free_bytes = exc.free_bytes
        if self.raised:
            return
        self.raised = True
        self.since = self.clock()
        self.trips += 1
        log.error("%s; running uploads go on, new work is refused until at least %d MiB "
                  "are free", exc, self.resume_free_bytes // MiB)

    def refusal(self) -> StorageFull:
        """The error for a write refused while the alarm is raised."""
        return StorageFull(self.directory, self.free_bytes)

    def describe(self) -> dict[str, object]:
        """For the API, the alert loop and the metrics."""
        return {"directory": self.directory, "full": self.raised, "since": self.since,
                "free_bytes": self.free_bytes, "waiting_writes": self.waiting_writes,
                "resume_free_bytes": self.resume_free_bytes}

    # -- recovery -------------------------------------------------------------------------

    async def check(self) -> bool:
        """One look (the loop's step): True when the alarm is (now) clear."""
        if not self.raised:
            return True
        self.free_bytes = await anyio.to_thread.run_sync(free_bytes, self.directory)
        if self.free_bytes is not None and self.free_bytes < self.resume_free_bytes:
            return False
        try:
            for flush in self._flushers:
                if not await flush():
                    return False
            if self._probe is not None:
                await self._probe(_probe_write(self.clock()))
        except StorageFull as exc:
            self.free_bytes = exc.free_bytes
            return False
        since = self.since or self.clock()
        self.raised, self.since = False, None
        log.warning("data directory %s has room again (%s bytes free) after %.0f s: "
                    "writes resume", self.directory, self.free_bytes, self.clock() - since)
        for fn in self._cleared:
            fn()
        return True

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.probe_interval)
            try:
                await self.check()
            except Exception:  # the alarm must never take the hub down
                log.exception("space check failed; trying again")
