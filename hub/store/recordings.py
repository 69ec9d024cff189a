"""Recordings (one live session each) and their parts, in the hub's SQLite file.

A recording groups the files of one live session; each file is a hub *part*
(table ``parts``, uploaded by the existing task machinery). ``recording_parts``
only links a recording to its parts with what ingestion knew (index, times,
the event that brought it); upload state, server file name and biz_id are read
from ``parts`` by a join, so they have one home and need no second write when
a task completes.

The submission fields (``submit_state``, ``submit_attempt``, ...) are written
*before* the hub acts on them (see ``hub/submission``): a recording found in
``submitting`` after a restart is a submission whose outcome is unknown.

The class keeps its own connection to the same database file (as
``hub.accounts.store.AccountStore`` does), so the core ``Store`` stays untouched.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hub.store.database import Database

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,                 -- bililive-recorder | blrec | watcher
    session_key TEXT UNIQUE NOT NULL,     -- source-specific identity of the live session
    room_id TEXT NOT NULL,
    streamer TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    area_parent TEXT NOT NULL DEFAULT '',
    area_child TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL,                        -- NULL while the session is live
    account TEXT,
    submit_state TEXT NOT NULL DEFAULT 'waiting',
    submit_requested INTEGER NOT NULL DEFAULT 0,
    submit_attempt INTEGER NOT NULL DEFAULT 0,
    submit_id TEXT NOT NULL DEFAULT '',
    submit_agent TEXT NOT NULL DEFAULT '',
    submit_ip TEXT NOT NULL DEFAULT '',
    submit_sent_at REAL,
    submit_not_before REAL NOT NULL DEFAULT 0,
    submit_excluded_ips TEXT NOT NULL DEFAULT '{}',
    submit_error TEXT NOT NULL DEFAULT '',
    aid INTEGER,
    bvid TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recording_parts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id INTEGER NOT NULL REFERENCES recordings(id),
    part_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    started_at REAL,
    ended_at REAL,
    UNIQUE (path, size)
);
-- A recording's parts (its page, the task list's recording filter).
CREATE INDEX IF NOT EXISTS recording_parts_recording ON recording_parts(recording_id);
CREATE TABLE IF NOT EXISTS ingest_events (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (source, event_id)
);
"""

# Submission-side fields a caller may update with ``update_submission``.
SUBMIT_FIELDS = frozenset({
    "submit_state", "submit_requested", "submit_attempt", "submit_id", "submit_agent",
    "submit_ip", "submit_sent_at", "submit_not_before", "submit_excluded_ips", "submit_error",
    "aid", "bvid", "account",
})


class RecordingStore(Database):
    SCHEMA = SCHEMA

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db_path)
        self._clock = clock

    # -- events ---------------------------------------------------------------------------

    async def seen_event(self, source: str, event_id: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT 1 FROM ingest_events WHERE source=? AND event_id=?",
                            (source, event_id)).fetchone()
            return row is not None

        return await self._run(q)

    async def note_event(self, source: str, event_id: str) -> None:
        now = self._clock()
        await self._run(lambda c: c.execute(
            "INSERT OR IGNORE INTO ingest_events (source, event_id, received_at) VALUES (?,?,?)",
            (source, event_id, now)))

    # -- recordings -----------------------------------------------------------------------

    async def get_or_create(self, *, source: str, session_key: str, room_id: str,
                            started_at: float, info: dict[str, str]) -> dict[str, Any]:
        """The recording of ``session_key``, created if new; non-empty ``info`` fields
        (streamer, title, area_parent, area_child) fill in what it lacked."""
        now = self._clock()

        def q(c: sqlite3.Connection) -> dict[str, Any]:
            row = c.execute("SELECT * FROM recordings WHERE session_key=?",
                            (session_key,)).fetchone()
            if row is None:
                c.execute(
                    """INSERT INTO recordings (source, session_key, room_id, streamer, title,
                       area_parent, area_child, started_at, created_at, updated_at)
                       VALUES (?,?,?,?,?,?,?,?,?,?)""",
                    (source, session_key, room_id, info.get("streamer", ""),
                     info.get("title", ""), info.get("area_parent", ""),
                     info.get("area_child", ""), started_at, now, now))
            else:
                for key in ("streamer", "title", "area_parent", "area_child"):
                    if info.get(key) and not row[key]:
                        c.execute(f"UPDATE recordings SET {key}=?, updated_at=? WHERE id=?",
                                  (info[key], now, row["id"]))
                if started_at < row["started_at"]:
                    c.execute("UPDATE recordings SET started_at=? WHERE id=?",
                              (started_at, row["id"]))
            got = c.execute("SELECT * FROM recordings WHERE session_key=?",
                            (session_key,)).fetchone()
            return dict(got)

        return await self._run(q)

    async def open_recording(self, source: str, room_id: str) -> dict[str, Any] | None:
        """The newest not-yet-ended recording of a room from ``source`` (blrec, watcher)."""
        def q(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute(
                """SELECT * FROM recordings WHERE source=? AND room_id=? AND ended_at IS NULL
                   ORDER BY id DESC LIMIT 1""", (source, room_id)).fetchone()
            return dict(row) if row else None

        return await self._run(q)

    async def end(self, recording_id: int, ended_at: float) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE recordings SET ended_at=COALESCE(ended_at, ?), updated_at=? WHERE id=?",
            (ended_at, self._clock(), recording_id)))

    async def get(self, recording_id: int) -> dict[str, Any] | None:
        def q(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute("SELECT * FROM recordings WHERE id=?", (recording_id,)).fetchone()
            return _recording(row) if row else None

        return await self._run(q)

    async def list(self) -> list[dict[str, Any]]:
        return await self._run(lambda c: [
            _recording(r) for r in c.execute("SELECT * FROM recordings ORDER BY id")])

    async def update_submission(self, recording_id: int, **fields: Any) -> None:
        unknown = set(fields) - SUBMIT_FIELDS
        if unknown:
            raise ValueError(f"not submission fields: {sorted(unknown)}")
        if "submit_excluded_ips" in fields:
            fields["submit_excluded_ips"] = json.dumps(fields["submit_excluded_ips"])
        sets = ",".join(f"{k}=?" for k in fields)
        values = [*fields.values(), self._clock(), recording_id]
        await self._run(lambda c: c.execute(
            f"UPDATE recordings SET {sets}, updated_at=? WHERE id=?", values))

    # -- parts ----------------------------------------------------------------------------

    async def has_file(self, path: str, size: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return c.execute("SELECT 1 FROM recording_parts WHERE path=? AND size=?",
                             (path, size)).fetchone() is not None

        return await self._run(q)

    async def add_part(self, recording_id: int, *, part_id: int, path: str, size: int,
                       started_at: float | None, ended_at: float | None) -> int:
        """Link a hub part to a recording; its index is the next one. Returns the index."""
        def q(c: sqlite3.Connection) -> int:
            (count,) = c.execute("SELECT COUNT(*) FROM recording_parts WHERE recording_id=?",
                                 (recording_id,)).fetchone()
            c.execute(
                """INSERT INTO recording_parts (recording_id, part_id, path, size, idx,
                   started_at, ended_at) VALUES (?,?,?,?,?,?,?)""",
                (recording_id, part_id, path, size, count + 1, started_at, ended_at))
            c.execute("UPDATE recordings SET updated_at=? WHERE id=?",
                      (self._clock(), recording_id))
            return count + 1

        return await self._run(q)

    async def parts(self, recording_id: int) -> list[dict[str, Any]]:
        """A recording's parts in submission order (file start time, then arrival), with
        the upload state, server file name and biz_id of the hub part."""
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute(
                """SELECT rp.part_id, rp.path, rp.size, rp.idx, rp.started_at, rp.ended_at,
                          p.state AS upload_state, p.md5, p.filename, p.biz_id,
                          (SELECT t.task_id FROM agent_tasks t WHERE t.part_id=rp.part_id
                           ORDER BY t.id DESC LIMIT 1) AS task_id,
                          (SELECT t.agent_id FROM agent_tasks t WHERE t.part_id=rp.part_id
                           AND t.status='completed' ORDER BY t.id DESC LIMIT 1) AS agent_id
                   FROM recording_parts rp LEFT JOIN parts p ON p.id = rp.part_id
                   WHERE rp.recording_id=?
                   ORDER BY COALESCE(rp.started_at, 0), rp.idx""",
                (recording_id,)).fetchall()
            return [dict(r) for r in rows]

        return await self._run(q)


def _recording(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    try:
        d["submit_excluded_ips"] = json.loads(d.get("submit_excluded_ips") or "{}")
    except ValueError:
        d["submit_excluded_ips"] = {}
    return d
