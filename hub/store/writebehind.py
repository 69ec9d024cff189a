"""Writes of the hub's running state that wait for disk space instead of failing.

Most of what the hub writes while agents upload is the latest state of something
that already exists: a task's row and its log lines, an agent's status, an IP's
standing. When the data directory is full, failing those writes would end agent
streams and the work running on them; refusing them is also pointless, since
the state they describe is already true in memory. So each such write goes
through :meth:`WriteBehind.write`: done at once when it can be, otherwise kept,
in order per key (``task:<id>``, ``agent:<id>``...), and written by
:meth:`flush` once space returns (hub/store/space.py calls it).

A later write of a key whose earlier writes still wait joins the queue behind
them, so a row never goes back in time. A write that only replaces a row
(``snapshot``) replaces a waiting one of the same kind, so a task reporting its
resume point every few seconds keeps one entry, not thousands.

The price, stated where it is paid: a write kept here is not on disk yet, and the
hub acts on it as if it were (an upload running when the disk filled completes).
A hub killed before space returns loses it, which the hub survives as it survives
any crash: leases from before a restart are void and their tasks are re-offered
from the last resume point on disk. At worst a part completed in that window is
uploaded again; the hub never submits what it has not recorded.

New work (a part, a task, a recording) is never kept here: it is refused with
:class:`hub.core.errors.StorageFull` so whoever asked can ask again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from hub.core.errors import StorageFull

Write = Callable[[sqlite3.Connection], object]
Runner = Callable[[Write], Awaitable[object]]


@dataclass
class _Waiting:
    fn: Write
    snapshot: bool


class WriteBehind:
    def __init__(self, run: Runner, *, on_written: Callable[[str], None] | None = None) -> None:
        self._run = run
        self._on_written = on_written  # a key's waiting writes are all on disk now
        self._waiting: dict[str, list[_Waiting]] = {}  # key -> writes, oldest first
        self._flushing: set[str] = set()  # keys whose oldest write is being written now
        self._flush_lock = anyio.Lock()  # one flush at a time: no waiting write runs twice

    @property
    def waiting(self) -> int:
        """Writes kept for later (for the space alarm's report and the metrics)."""
        return sum(len(q) for q in self._waiting.values())

    def has(self, key: str) -> bool:
        return key in self._waiting

    async def write(self, key: str, fn: Write, *, snapshot: bool = False) -> bool:
        """Write now (True) or keep it for :meth:`flush` when the disk is full (False)."""
        queue = self._waiting.get(key)
        if queue is None:
            try:
                await self._run(fn)
                return True
            except StorageFull:
                self._waiting[key] = [_Waiting(fn, snapshot)]
                return False
        if snapshot and queue[-1].snapshot and (len(queue) > 1 or key not in self._flushing):
            queue[-1] = _Waiting(fn, snapshot)  # (never the one being written right now)
        else:
            queue.append(_Waiting(fn, snapshot))
        return False

    async def flush(self) -> bool:
        """Write what waits, key by key in the order they first waited; True when
        nothing waits any more, False when the disk is still full."""
        async with self._flush_lock:
            for key in list(self._waiting):
                if not await self._flush_key(key):
                    return False
            return True

    async def _flush_key(self, key: str) -> bool:
        queue = self._waiting.get(key)
        while queue:
            self._flushing.add(key)
            try:
                await self._run(queue[0].fn)
            except StorageFull:
                return False
            finally:
                self._flushing.discard(key)
            queue.pop(0)
        if self._waiting.pop(key, None) is not None and self._on_written is not None:
            self._on_written(key)
        return True
