"""Retention's tables in the hub's database: each file's state, each recording's
trigger, and the journal of actions in flight.

- ``retention_recordings``: when the hub first saw a recording reach its trigger
  (``reached_at``, the hub's clock: ``delay_days`` counts from there) and the last
  reason it gave for not acting (``note``), so a refusal is recorded once, not
  every pass.
- ``retention_files``: one row per part: the identity the file was uploaded with,
  its state (hub/retention/policy.py: waiting, done, dry_run, kept, gone), what
  was done, where it went, and why.
- ``retention_journal``: an action between its first step and its last. Written
  before the first step and updated after each, so a hub killed mid-action finds
  it on restart and finishes or rolls it back (hub/retention/executor.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.retention.policy import WAITING, Identity
from hub.store.database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS retention_recordings (
    recording_id INTEGER PRIMARY KEY,
    trigger TEXT NOT NULL,
    reached_at REAL,
    note TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retention_files (
    part_id INTEGER PRIMARY KEY,
    recording_id INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    uploaded_mtime_ns INTEGER,
    uploaded_fingerprint TEXT,
    state TEXT NOT NULL,
    action TEXT NOT NULL DEFAULT '',
    destination TEXT,
    note TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS retention_files_recording ON retention_files(recording_id);
CREATE TABLE IF NOT EXISTS retention_journal (
    part_id INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT,
    temporary TEXT,
    phase TEXT NOT NULL,
    size INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    started_at REAL NOT NULL
);
"""


class RetentionStore(Database):
    SCHEMA = SCHEMA

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db_path)
        self._clock = clock

    # -- recordings -----------------------------------------------------------------------

    async def recording(self, recording_id: int) -> dict[str, Any] | None:
        def q(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute("SELECT * FROM retention_recordings WHERE recording_id=?",
                            (recording_id,)).fetchone()
            return dict(row) if row else None

        return await self._run(q)

    async def recordings(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """Newest change first."""
        return await self._run(lambda c: [dict(r) for r in c.execute(
            "SELECT * FROM retention_recordings ORDER BY updated_at DESC LIMIT ?", (limit,))])

    async def set_recording(self, recording_id: int, *, trigger: str,
                            reached_at: float | None, note: str) -> None:
        now = self._clock()
        await self._run(lambda c: c.execute(
            """INSERT INTO retention_recordings (recording_id, trigger, reached_at, note,
               updated_at) VALUES (?,?,?,?,?) ON CONFLICT(recording_id) DO UPDATE SET
               trigger=excluded.trigger, reached_at=excluded.reached_at, note=excluded.note,
               updated_at=excluded.updated_at""",
            (recording_id, trigger, reached_at, note, now)))

    # -- files ----------------------------------------------------------------------------

    async def files(self, recording_id: int | None = None) -> list[dict[str, Any]]:
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            if recording_id is None:
                rows = c.execute("SELECT * FROM retention_files ORDER BY part_id")
            else:
                rows = c.execute("SELECT * FROM retention_files WHERE recording_id=? "
                                 "ORDER BY part_id", (recording_id,))
            return [dict(r) for r in rows]

        return await self._run(q)

    async def track(self, part_id: int, *, recording_id: int, room_id: str, path: str,
                    size: int, uploaded: Identity | None, state: str = WAITING,
                    note: str = "") -> None:
        """Start following a part's file (its identity as uploaded, when known)."""
        now = self._clock()
        await self._run(lambda c: c.execute(
            """INSERT OR IGNORE INTO retention_files (part_id, recording_id, room_id, path,
               size, uploaded_mtime_ns, uploaded_fingerprint, state, note, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?)""",
            (part_id, recording_id, room_id, path, size,
             uploaded.mtime_ns if uploaded else None,
             uploaded.fingerprint if uploaded else None, state, note, now)))

    async def set_file(self, part_id: int, *, state: str, note: str = "", action: str = "",
                       destination: str | None = None) -> None:
        now = self._clock()
        await self._run(lambda c: c.execute(
            """UPDATE retention_files SET state=?, note=?, action=?, destination=?,
               updated_at=? WHERE part_id=?""",
            (state, note, action, destination, now, part_id)))

    # -- journal --------------------------------------------------------------------------

    async def journal(self) -> list[dict[str, Any]]:
        return await self._run(lambda c: [
            dict(r) for r in c.execute("SELECT * FROM retention_journal ORDER BY part_id")])

    async def begin(self, part_id: int, *, op: str, source: str, destination: str | None,
                    temporary: str | None, size: int, fingerprint: str) -> None:
        now = self._clock()
        await self._run(lambda c: c.execute(
            """INSERT INTO retention_journal (part_id, op, source, destination, temporary,
               phase, size, fingerprint, started_at) VALUES (?,?,?,?,?,'start',?,?,?)""",
            (part_id, op, source, destination, temporary, size, fingerprint, now)))

    async def phase(self, part_id: int, phase: str) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE retention_journal SET phase=? WHERE part_id=?", (phase, part_id)))

    async def finish(self, part_id: int, *, state: str, note: str, action: str,
                     destination: str | None) -> None:
        """The action's end and the file's new state, in one transaction."""
        now = self._clock()

        def q(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM retention_journal WHERE part_id=?", (part_id,))
            c.execute("""UPDATE retention_files SET state=?, note=?, action=?, destination=?,
                         updated_at=? WHERE part_id=?""",
                      (state, note, action, destination, now, part_id))

        await self._run(q)
