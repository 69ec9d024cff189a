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

What became of a recording on Bilibili has two more homes: each part's
``archived`` flag (set when a submission or an append that carried it
succeeded; -1 for a part kept out of it; NULL on rows from before it was
tracked) and ``archive_reviews``,
the archive's review state as last read. :meth:`RecordingStore.archive_of`
reads both, for whatever acts on "submitted" or "approved" (retention).

``recording_history`` is the recording's own log: what the hub did with it and
its files, and what it refused to do (retention writes every action there).
``recording_parts.received_at`` is the hub's clock when a file was imported: the
folder watcher's quiet-room timeout counts from it, never from the files' times.

The class keeps its own connection to the same database file (as
``hub.accounts.store.AccountStore`` does), so the core ``Store`` stays untouched.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    updated_at REAL NOT NULL,
    submit_op TEXT NOT NULL DEFAULT '',   -- add | append | season: the current attempt's
    submit_parts TEXT NOT NULL DEFAULT '[]',  -- part ids the current add/append carries
    submit_first_at REAL,                 -- first add attempt sent (the lookup's "since")
    submit_batch INTEGER NOT NULL DEFAULT 0,  -- parts per request for it (0: the setting)
    season_state TEXT NOT NULL DEFAULT '',    -- '' | pending | added | failed
    season_error TEXT NOT NULL DEFAULT '',
    live_cover TEXT NOT NULL DEFAULT ''   -- the recorder's cover image of this session
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
    -- 1: in the archive; 0: not yet; -1: kept out (it arrived after the submission
    -- while appending was off); NULL: from before this was tracked
    archived INTEGER,
    received_at REAL,                     -- the hub's clock when the file was imported
    UNIQUE (path, size)
);
CREATE TABLE IF NOT EXISTS recording_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id INTEGER NOT NULL,
    at REAL NOT NULL,                     -- the hub's clock
    kind TEXT NOT NULL,                   -- e.g. retention, retention_refused
    part_id INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recording_history_recording ON recording_history(recording_id);
CREATE TABLE IF NOT EXISTS archive_reviews (
    recording_id INTEGER PRIMARY KEY REFERENCES recordings(id),
    aid INTEGER NOT NULL,
    review TEXT NOT NULL,                 -- pending | approved | rejected
    state INTEGER,                        -- Bilibili's archive.state (NULL: not read yet)
    state_desc TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    checked_at REAL,                      -- last read
    changed_at REAL NOT NULL,             -- when ``review`` last changed
    next_check_at REAL NOT NULL DEFAULT 0,
    reset_at REAL                         -- an edit sent the archive back to review
);
-- A recording's parts (its page, the task list's recording filter).
CREATE INDEX IF NOT EXISTS recording_parts_recording ON recording_parts(recording_id);
CREATE INDEX IF NOT EXISTS recordings_submit_id ON recordings(submit_id);
CREATE INDEX IF NOT EXISTS recordings_submit_state ON recordings(submit_state);
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
    "aid", "bvid", "account", "submit_op", "submit_parts", "submit_first_at", "submit_batch",
    "season_state", "season_error",
})
_JSON_FIELDS = {"submit_excluded_ips", "submit_parts"}
HISTORY_KEEP = 1000  # history rows kept per recording


@dataclass(frozen=True)
class ArchiveRecord:
    """What became of one recording on Bilibili (:meth:`RecordingStore.archive_of`).

    ``parts`` maps each part id to whether the archive holds it; ``review`` is
    ``pending | approved | rejected`` as last read (empty before any read), and
    an append sends it back to ``pending``: Bilibili reviews an edited archive again.
    """

    recording_id: int
    aid: int | None
    bvid: str
    review: str
    reason: str
    reviewed_at: float | None
    parts: dict[int, bool]

    @property
    def complete(self) -> bool:
        """The archive exists and holds every part of the recording."""
        return self.aid is not None and bool(self.parts) and all(self.parts.values())

    @property
    def approved(self) -> bool:
        """Complete, and the archive passed review since its last change."""
        return self.complete and self.review == "approved"


class RecordingStore(Database):
    SCHEMA = SCHEMA
    ADDED_COLUMNS = (
        ("recordings", "submit_op", "TEXT NOT NULL DEFAULT ''"),
        ("recordings", "submit_parts", "TEXT NOT NULL DEFAULT '[]'"),
        ("recordings", "submit_first_at", "REAL"),
        ("recordings", "submit_batch", "INTEGER NOT NULL DEFAULT 0"),
        ("recordings", "season_state", "TEXT NOT NULL DEFAULT ''"),
        ("recordings", "season_error", "TEXT NOT NULL DEFAULT ''"),
        ("recordings", "live_cover", "TEXT NOT NULL DEFAULT ''"),
        ("recording_parts", "archived", "INTEGER"),
        ("recording_parts", "received_at", "REAL"),
    )

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time,
                 on_change: Callable[[int], None] | None = None) -> None:
        super().__init__(db_path)
        self._clock = clock
        # Told the id of each recording a write changed, once it is committed (the
        # console's live view); never raises into the writer.
        self._on_change = on_change or (lambda recording_id: None)

    def notify(self, recording_id: int) -> None:
        """Something derived from the recording changed without a write (a part's upload)."""
        self._on_change(recording_id)

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

        rec = await self._run(q)
        self._on_change(rec["id"])
        return rec

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
        self._on_change(recording_id)

    async def get(self, recording_id: int) -> dict[str, Any] | None:
        def q(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute("SELECT * FROM recordings WHERE id=?", (recording_id,)).fetchone()
            return _recording(row) if row else None

        return await self._run(q)

    async def list(self, *, newest: int | None = None) -> list[dict[str, Any]]:
        """Every recording, oldest first; ``newest``: only that many of the latest."""
        if newest is None:
            return await self._run(lambda c: [
                _recording(r) for r in c.execute("SELECT * FROM recordings ORDER BY id")])
        return await self._run(lambda c: [_recording(r) for r in reversed(c.execute(
            "SELECT * FROM recordings ORDER BY id DESC LIMIT ?", (newest,)).fetchall())])

    async def with_submit_id(self, submit_id: str) -> dict[str, Any] | None:
        """The recording a Submit was sent for: an answer finds it without reading history."""
        if not submit_id:
            return None
        return await self._run(lambda c: next((_recording(r) for r in c.execute(
            "SELECT * FROM recordings WHERE submit_id=? ORDER BY id LIMIT 1", (submit_id,))),
            None))

    async def in_state(self, submit_state: str) -> list[dict[str, Any]]:
        """Recordings whose submission is in ``submit_state``, oldest first."""
        return await self._run(lambda c: [_recording(r) for r in c.execute(
            "SELECT * FROM recordings WHERE submit_state=? ORDER BY id", (submit_state,))])

    async def still_open(self, source: str) -> list[dict[str, Any]]:
        """Recordings of ``source`` that have not ended, oldest first."""
        return await self._run(lambda c: [_recording(r) for r in c.execute(
            "SELECT * FROM recordings WHERE source=? AND ended_at IS NULL ORDER BY id",
            (source,))])

    async def update_submission(self, recording_id: int, *, archived: list[int] | None = None,
                                **fields: Any) -> None:
        """Write submission fields; ``archived`` part ids are marked as in the archive in
        the same transaction (the answer that put them there is applied whole or not)."""
        unknown = set(fields) - SUBMIT_FIELDS
        if unknown:
            raise ValueError(f"not submission fields: {sorted(unknown)}")
        for key in _JSON_FIELDS & set(fields):
            fields[key] = json.dumps(fields[key])
        sets = ",".join([*(f"{k}=?" for k in fields), "updated_at=?"])
        values = [*fields.values(), self._clock(), recording_id]

        def q(c: sqlite3.Connection) -> None:
            c.execute(f"UPDATE recordings SET {sets} WHERE id=?", values)
            for part_id in archived or ():
                c.execute("UPDATE recording_parts SET archived=1 WHERE recording_id=? "
                          "AND part_id=?", (recording_id, part_id))

        await self._run(q)
        self._on_change(recording_id)

    async def set_live_cover(self, recording_id: int, path: str) -> None:
        """The recorder saved this session's live cover at ``path`` (the newest one wins)."""
        await self._run(lambda c: c.execute(
            "UPDATE recordings SET live_cover=? WHERE id=?", (path, recording_id)))

    async def open_work(self) -> list[dict[str, Any]]:
        """Recordings the submission loop has something to look at: not yet submitted or
        failed, or submitted with parts the archive lacks or a collection to join."""
        return await self._run(lambda c: [_recording(r) for r in c.execute(
            """SELECT * FROM recordings r WHERE r.submit_state NOT IN ('submitted', 'failed')
               OR (r.submit_state = 'submitted' AND (r.season_state = 'pending'
                   OR EXISTS (SELECT 1 FROM recording_parts rp
                              WHERE rp.recording_id = r.id AND rp.archived = 0)))
               ORDER BY r.id""")])

    # -- archives -------------------------------------------------------------------------

    async def archive_of(self, recording_id: int) -> ArchiveRecord | None:
        """The recording's archive, each part's place in it, and its review (None: no
        such recording). Parts from before archives were tracked count as in the archive
        once it exists, as the hub then treated them."""
        def q(c: sqlite3.Connection) -> ArchiveRecord | None:
            rec = c.execute("SELECT id, aid, bvid FROM recordings WHERE id=?",
                            (recording_id,)).fetchone()
            if rec is None:
                return None
            parts = {int(r["part_id"]): (r["archived"] == 1 or
                                         (r["archived"] is None and rec["aid"] is not None))
                     for r in c.execute("SELECT part_id, archived FROM recording_parts "
                                        "WHERE recording_id=?", (recording_id,))}
            review = c.execute("SELECT * FROM archive_reviews WHERE recording_id=?",
                               (recording_id,)).fetchone()
            return ArchiveRecord(
                recording_id=recording_id, aid=rec["aid"], bvid=rec["bvid"] or "",
                review=review["review"] if review else "",
                reason=review["reason"] if review else "",
                reviewed_at=review["checked_at"] if review else None, parts=parts)

        return await self._run(q)

    async def rejected(self) -> list[dict[str, Any]]:
        """Archives whose last read review is a rejection, with their recording's title."""
        return await self._run(lambda c: [dict(r) for r in c.execute(
            """SELECT v.recording_id, v.aid, r.bvid, r.title, r.room_id, v.reason,
                      v.state_desc, v.changed_at
               FROM archive_reviews v JOIN recordings r ON r.id = v.recording_id
               WHERE v.review = 'rejected' ORDER BY v.recording_id""")])

    async def reviews(self) -> dict[int, dict[str, Any]]:
        """Every archive's review row, by recording id."""
        return await self._run(lambda c: {
            int(r["recording_id"]): dict(r) for r in c.execute("SELECT * FROM archive_reviews")})

    async def save_review(self, recording_id: int, **fields: Any) -> None:
        """Update the review row of a recording's archive, or insert it (then ``aid``,
        ``review`` and ``changed_at`` are needed)."""
        sets = ",".join(f"{k}=?" for k in fields)
        names = ",".join(["recording_id", *fields])
        marks = ",".join("?" for _ in range(len(fields) + 1))

        def q(c: sqlite3.Connection) -> None:
            cur = c.execute(f"UPDATE archive_reviews SET {sets} WHERE recording_id=?",
                            [*fields.values(), recording_id])
            if cur.rowcount == 0:
                c.execute(f"INSERT INTO archive_reviews ({names}) VALUES ({marks})",
                          [recording_id, *fields.values()])

        await self._run(q)
        self._on_change(recording_id)  # the review shows on the console's recording row

    # -- history --------------------------------------------------------------------------

    async def add_history(self, recording_id: int, kind: str, message: str, *,
                          part_id: int | None = None) -> None:
        now = self._clock()
        await self._run(lambda c: _history(c, recording_id, now, kind, message, part_id))
        self._on_change(recording_id)  # the console reads retention again when it sees this

    async def history(self, recording_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute(
                """SELECT at, kind, part_id, message FROM recording_history
                   WHERE recording_id=? ORDER BY id DESC LIMIT ?""", (recording_id, limit))
            return [dict(r) for r in rows]

        return await self._run(q)

    # -- parts ----------------------------------------------------------------------------

    async def has_file(self, path: str, size: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return c.execute("SELECT 1 FROM recording_parts WHERE path=? AND size=?",
                             (path, size)).fetchone() is not None

        return await self._run(q)

    async def add_part(self, recording_id: int, *, part_id: int, path: str, size: int,
                       started_at: float | None, ended_at: float | None,
                       archived: int = 0) -> int:
        """Link a hub part to a recording; its index is the next one. Returns the index.
        ``archived`` -1 keeps it out of the recording's archive."""
        now = self._clock()

        def q(c: sqlite3.Connection) -> int:
            (count,) = c.execute("SELECT COUNT(*) FROM recording_parts WHERE recording_id=?",
                                 (recording_id,)).fetchone()
            c.execute(
                """INSERT INTO recording_parts (recording_id, part_id, path, size, idx,
                   started_at, ended_at, archived, received_at) VALUES (?,?,?,?,?,?,?,?,?)""",
                (recording_id, part_id, path, size, count + 1, started_at, ended_at, archived,
                 now))
            c.execute("UPDATE recordings SET updated_at=? WHERE id=?", (now, recording_id))
            return count + 1

        index = await self._run(q)
        self._on_change(recording_id)
        return index

    async def parts(self, recording_id: int) -> list[dict[str, Any]]:
        """A recording's parts in submission order (file start time, then arrival), with
        the upload state, server file name and biz_id of the hub part."""
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute(
                """SELECT rp.part_id, rp.path, rp.size, rp.idx, rp.started_at, rp.ended_at,
                          rp.archived, rp.received_at, p.state AS upload_state, p.md5, p.digest,
                          p.filename, p.biz_id, p.fingerprint AS part_fingerprint,
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


def _history(c: sqlite3.Connection, recording_id: int, at: float, kind: str, message: str,
             part_id: int | None) -> None:
    cur = c.execute("""INSERT INTO recording_history (recording_id, at, kind, part_id, message)
                       VALUES (?,?,?,?,?)""", (recording_id, at, kind, part_id, message[:2000]))
    if cur.lastrowid and cur.lastrowid % 100 == 0:  # a recording's history stays bounded
        c.execute("""DELETE FROM recording_history WHERE recording_id=? AND id <= (
                         SELECT id FROM recording_history WHERE recording_id=?
                         ORDER BY id DESC LIMIT 1 OFFSET ?)""",
                  (recording_id, recording_id, HISTORY_KEEP))


def _recording(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for key, empty in (("submit_excluded_ips", {}), ("submit_parts", [])):
        try:
            d[key] = json.loads(d.get(key) or "null") or type(empty)()
        except ValueError:
            d[key] = type(empty)()
    return d
