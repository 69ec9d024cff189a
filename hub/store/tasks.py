"""The hub's SQLite database: agents, parts, tasks and their upload logs.

Tables ``agents``, ``agent_tasks`` and ``agent_upload_logs`` keep the columns
the admin API has always shown, plus the ones the mesh needs: the lease
(``agent_id`` + ``attempt``, the fencing token), the resume point
(``committed_offset`` and the uploader session, which holds upos auth and is
therefore Fernet-encrypted at rest with the key ``hub/accounts/store.py``
manages), retry bookkeeping, and the result.

sqlite3 blocks, so every call runs in a worker thread; one connection guarded by
a lock serialises them (SQLite has one writer anyway) and WAL lets the accounts
store read and write the same file beside us. Writes commit before the call
returns: the hub writes each decision here before acting on it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken

from hub.core.errors import StorageFull
from hub.core.lifecycle import Status, TaskRecord
from hub.core.task_pages import TaskQuery
from hub.store.database import Database
from hub.store.task_page_sql import page_rows, recent_ended_rows
from hub.store.writebehind import WriteBehind

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT UNIQUE NOT NULL,
    agent_name TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    status TEXT NOT NULL,
    max_concurrent_uploads INTEGER DEFAULT 2,
    bandwidth_mbps INTEGER DEFAULT 100,
    storage_type TEXT DEFAULT 'network',
    last_heartbeat REAL,
    created_at REAL NOT NULL,
    tags TEXT,
    metadata TEXT,
    buffer_bytes INTEGER DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    tokens_valid_after REAL NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL DEFAULT '',
    account TEXT,
    title TEXT,
    state TEXT NOT NULL,
    filename TEXT,
    biz_id INTEGER,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT UNIQUE NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    part_id INTEGER NOT NULL,
    file_path TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    file_md5 TEXT,
    file_fingerprint TEXT NOT NULL DEFAULT '',
    file_digest TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    progress REAL DEFAULT 0,
    upload_speed REAL DEFAULT 0,
    error_message TEXT,
    retry_count INTEGER DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    account TEXT,
    pinned_agent TEXT,
    network_failures INTEGER NOT NULL DEFAULT 0,
    excluded TEXT NOT NULL DEFAULT '{}',
    not_before REAL NOT NULL DEFAULT 0,
    committed_offset INTEGER NOT NULL DEFAULT 0,
    committed_attempt INTEGER NOT NULL DEFAULT 0,
    resume_session BLOB,
    uploaded_bytes INTEGER NOT NULL DEFAULT 0,
    eta_seconds REAL NOT NULL DEFAULT 0,
    error_kind TEXT,
    filename TEXT,
    biz_id INTEGER,
    assigned_at REAL,
    force INTEGER NOT NULL DEFAULT 0,
    retry_agent TEXT,
    retry_state TEXT NOT NULL DEFAULT '{}',
    excluded_ips TEXT NOT NULL DEFAULT '{}',
    proceed_attempt INTEGER NOT NULL DEFAULT 0,
    proceed_ip TEXT NOT NULL DEFAULT '',
    proceed_agent TEXT NOT NULL DEFAULT '',
    proceed_at REAL NOT NULL DEFAULT 0,
    FOREIGN KEY (part_id) REFERENCES parts(id)
);
CREATE INDEX IF NOT EXISTS agent_tasks_status ON agent_tasks(status);
CREATE INDEX IF NOT EXISTS agent_tasks_part ON agent_tasks(part_id);
-- The task list's filters, each walked newest first (hub/core/task_pages.py).
CREATE INDEX IF NOT EXISTS agent_tasks_status_id ON agent_tasks(status, id);
CREATE INDEX IF NOT EXISTS agent_tasks_agent_id ON agent_tasks(agent_id, id);
CREATE INDEX IF NOT EXISTS agent_tasks_account_id ON agent_tasks(account, id);
CREATE INDEX IF NOT EXISTS agent_tasks_created ON agent_tasks(created_at);
CREATE INDEX IF NOT EXISTS agent_tasks_completed ON agent_tasks(completed_at);  -- alerts
CREATE TABLE IF NOT EXISTS agent_upload_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    event_type TEXT NOT NULL,
    message TEXT,
    created_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (task_id) REFERENCES agent_tasks(task_id)
);
CREATE INDEX IF NOT EXISTS agent_upload_logs_task ON agent_upload_logs(task_id);
CREATE TABLE IF NOT EXISTS risk_ledger (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    snapshot TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- One row per egress IP, written as IPs change; overrides risk_ledger's snapshot.
CREATE TABLE IF NOT EXISTS risk_ledger_ips (
    ip TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- The account ledger and the captcha book, one JSON snapshot each.
CREATE TABLE IF NOT EXISTS risk_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

# Columns added after the first schema: a database from an older hub gains them on open.
_ADDED_COLUMNS = [
    ("agents", "egress_ip", "TEXT NOT NULL DEFAULT ''"),
    ("parts", "fingerprint", "TEXT NOT NULL DEFAULT ''"),
    ("agent_tasks", "file_fingerprint", "TEXT NOT NULL DEFAULT ''"),
    ("agent_tasks", "committed_attempt", "INTEGER NOT NULL DEFAULT 0"),
    ("agent_tasks", "force", "INTEGER NOT NULL DEFAULT 0"),
    ("agent_tasks", "retry_agent", "TEXT"),
    ("agent_tasks", "retry_state", "TEXT NOT NULL DEFAULT '{}'"),
    ("agent_tasks", "excluded_ips", "TEXT NOT NULL DEFAULT '{}'"),
    ("agent_tasks", "proceed_attempt", "INTEGER NOT NULL DEFAULT 0"),
    ("agent_tasks", "proceed_ip", "TEXT NOT NULL DEFAULT ''"),
    ("agent_tasks", "proceed_agent", "TEXT NOT NULL DEFAULT ''"),
    ("agent_tasks", "proceed_at", "REAL NOT NULL DEFAULT 0"),
    # the part digest (XXH3-128) took MD5's place; md5 columns stay for older rows
    ("parts", "digest", "TEXT NOT NULL DEFAULT ''"),
    ("agent_tasks", "file_digest", "TEXT NOT NULL DEFAULT ''"),
]

# TaskRecord field -> column; every field is a column of the same name except these.
_TASK_FIELDS = [f.name for f in fields(TaskRecord)]
_ACTIVE = tuple(s.value for s in Status if not s.terminal)


_LIVENESS_UPDATE = """UPDATE agents SET status=?, last_heartbeat=COALESCE(?, last_heartbeat),
    tasks_completed=COALESCE(?, tasks_completed) WHERE agent_id=?"""


def _liveness_write(status: str, last_heartbeat: float | None, tasks_completed: int | None,
                    agent_id: str) -> Callable[[sqlite3.Connection], object]:
    return lambda c: c.execute(_LIVENESS_UPDATE,
                               (status, last_heartbeat, tasks_completed, agent_id))


class Store(Database):
    SCHEMA = SCHEMA
    ADDED_COLUMNS = _ADDED_COLUMNS
    FOREIGN_KEYS = True

    def __init__(
        self, db_path: str | Path, cipher: Fernet, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(db_path)
        self._cipher = cipher
        self._clock = clock
        # agent id -> (status, last heartbeat, tasks completed), until the next flush
        self._liveness: dict[str, tuple[str, float | None, int | None]] = {}
        self.write_behind = WriteBehind(lambda fn: self._run(fn), on_written=self._written)
        # Tasks whose newest state waits for disk space: what reads return meanwhile.
        self._unwritten: dict[str, TaskRecord] = {}

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one transaction, for modules that keep a table of their
        own in this database (hub/api/audit.py)."""
        return await self._run(fn)

    # -- agents ---------------------------------------------------------------------------

    async def upsert_agent(
        self,
        agent_id: str,
        *,
        agent_name: str,
        ip_address: str,
        status: str,
        egress_ip: str = "",
        max_concurrent: int,
        bandwidth_mbps: int,
        storage_type: str,
        buffer_bytes: int,
        tags: dict[str, str],
    ) -> None:
        now = self._clock()

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                """INSERT INTO agents (agent_id, agent_name, ip_address, status,
                       max_concurrent_uploads, bandwidth_mbps, storage_type, buffer_bytes,
                       tags, created_at, last_heartbeat, egress_ip)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(agent_id) DO UPDATE SET agent_name=excluded.agent_name,
                       ip_address=excluded.ip_address, status=excluded.status,
                       egress_ip=excluded.egress_ip,
                       max_concurrent_uploads=excluded.max_concurrent_uploads,
                       bandwidth_mbps=excluded.bandwidth_mbps,
                       storage_type=excluded.storage_type, buffer_bytes=excluded.buffer_bytes,
                       tags=excluded.tags, last_heartbeat=excluded.last_heartbeat""",
                (agent_id, agent_name, ip_address, status, max_concurrent, bandwidth_mbps,
                 storage_type, buffer_bytes, json.dumps(tags), now, now, egress_ip),
            )

        await self.write_behind.write(f"agent:{agent_id}", q)

    async def set_agent_egress(self, agent_id: str, egress_ip: str) -> None:
        """The agent's egress as Bilibili sees it (a restart keys the ledger on it at once)."""
        await self.write_behind.write(f"agent:{agent_id}", lambda c: c.execute(
            "UPDATE agents SET egress_ip=? WHERE agent_id=?", (egress_ip, agent_id)))

    def note_heartbeat(self, agent_id: str, status: str, *, last_heartbeat: float | None,
                       tasks_completed: int | None) -> None:
        """Queue what a heartbeat says for :meth:`flush_heartbeats`.

        Ten thousand agents heartbeat 300 times a second; one transaction (and one
        worker-thread hop) each was most of a steady hub's CPU. What a heartbeat
        says is informational (a restart marks every agent offline anyway), so it
        is written in batches, a second late at most.
        """
        self._liveness[agent_id] = (status, last_heartbeat, tasks_completed)

    async def flush_heartbeats(self) -> int:
        """Write the queued heartbeats in one transaction; returns how many.

        An agent whose earlier writes wait for disk space gets this one queued behind
        them (its row never goes back in time); on a full disk the batch goes back to
        the queue, under anything newer that arrived meanwhile."""
        queued, self._liveness = self._liveness, {}
        rows = []
        for agent_id, (status, beat, done) in queued.items():
            key = f"agent:{agent_id}"
            if self.write_behind.has(key):
                await self.write_behind.write(key, _liveness_write(status, beat, done, agent_id))
            else:
                rows.append((status, beat, done, agent_id))
        if not rows:
            return 0

        def q(c: sqlite3.Connection) -> None:
            c.executemany(_LIVENESS_UPDATE, rows)

        try:
            await self._run(q)
        except StorageFull:
            for status, beat, done, agent_id in rows:
                self._liveness.setdefault(agent_id, (status, beat, done))
            return 0
        return len(rows)

    async def set_agent_status(
        self, agent_id: str, status: str, *, last_heartbeat: float | None = None,
        tasks_completed: int | None = None,
    ) -> None:
        self._liveness.pop(agent_id, None)  # older news than this: never written after it

        q = _liveness_write(status, last_heartbeat, tasks_completed, agent_id)
        # With every field given, this write says all the next one would: it may replace one.
        full = last_heartbeat is not None and tasks_completed is not None
        await self.write_behind.write(f"agent:{agent_id}", q, snapshot=full)

    async def set_agent_access(
        self, agent_id: str, *, disabled: bool, tokens_valid_after: float
    ) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE agents SET disabled=?, tokens_valid_after=? WHERE agent_id=?",
                (int(disabled), tokens_valid_after, agent_id),
            )

        await self.write_behind.write(f"agent:{agent_id}", q)

    async def load_agents(self) -> list[dict[str, Any]]:
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute("SELECT * FROM agents ORDER BY id").fetchall()
            out = []
            for r in rows:
                d = dict(r)
                d["tags"] = _loads(d.get("tags"), {})
                out.append(d)
            return out

        return await self._run(q)

    async def mark_all_agents_offline(self) -> None:
        await self.write_behind.write(
            "agents", lambda c: c.execute("UPDATE agents SET status='offline'"))

    # -- parts ----------------------------------------------------------------------------

    async def insert_part(
        self, *, file_path: str, size: int, md5: str, account: str | None, title: str | None,
        fingerprint: str = "",
    ) -> int:
        now = self._clock()

        def q(c: sqlite3.Connection) -> int:
            cur = c.execute(
                """INSERT INTO parts (file_path, size, md5, fingerprint, account, title, state,
                   created_at) VALUES (?,?,?,?,?,?,?,?)""",
                (file_path, size, md5, fingerprint, account, title, "new", now),
            )
            return int(cur.lastrowid)

        return await self._run(q)

    async def set_part_hash(self, part_id: int, *, digest: str, fingerprint: str,
                            state: str | None) -> None:
        """The part's digest and the stat identity it goes with (both "" to forget them);
        ``state=None`` keeps the part's state (e.g. uploaded before the hash finished)."""
        def q(c: sqlite3.Connection) -> None:
            c.execute("UPDATE parts SET digest=?, fingerprint=?, state=COALESCE(?, state) "
                      "WHERE id=?", (digest, fingerprint, state, part_id))

        await self.write_behind.write(f"part:{part_id}", q)

    async def get_part(self, part_id: int) -> dict[str, Any] | None:
        def q(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute("SELECT * FROM parts WHERE id=?", (part_id,)).fetchone()
            return dict(row) if row else None

        return await self._run(q)

    # -- tasks ----------------------------------------------------------------------------

    async def insert_task(self, task: TaskRecord, *, part_state: str = "queued") -> None:
        row = self._task_row(task)

        def q(c: sqlite3.Connection) -> None:
            cols = ",".join(row)
            c.execute(
                f"INSERT INTO agent_tasks ({cols}) VALUES ({','.join('?' * len(row))})",
                list(row.values()),
            )
            c.execute("UPDATE parts SET state=? WHERE id=?", (part_state, task.part_id))

        await self._run(q)

    async def save_task(
        self,
        task: TaskRecord,
        *,
        log: tuple[str, str, str, str] | None = None,
        part_state: str | None = None,
    ) -> None:
        """Write ``task`` (and optionally one log line ``(agent, ip, event, message)`` and
        the part's state/result) in one transaction; on a full disk it waits for space
        (see the module docstring)."""
        row = self._task_row(task)
        now = self._clock()

        def q(c: sqlite3.Connection) -> None:
            sets = ",".join(f"{k}=?" for k in row if k != "task_id")
            values = [v for k, v in row.items() if k != "task_id"]
            c.execute(f"UPDATE agent_tasks SET {sets} WHERE task_id=?", [*values, task.task_id])
            if log is not None:
                agent, ip, event, message = log
                c.execute(
                    """INSERT INTO agent_upload_logs
                       (task_id, agent_id, ip_address, event_type, message, created_at, attempt)
                       VALUES (?,?,?,?,?,?,?)""",
                    (task.task_id, agent, ip, event, message, now, task.attempt),
                )
            if part_state is not None:
                c.execute(
                    "UPDATE parts SET state=?, filename=?, biz_id=? WHERE id=?",
                    (part_state, task.filename, task.biz_id, task.part_id),
                )

        # A row alone replaces a waiting row alone (resume points); log lines all stay.
        if not await self.write_behind.write(f"task:{task.task_id}", q,
                                             snapshot=log is None and part_state is None):
            self._unwritten[task.task_id] = replace(task)

    def _written(self, key: str) -> None:
        if key.startswith("task:"):
            self._unwritten.pop(key.removeprefix("task:"), None)

    async def add_log(
        self, task_id: str, agent_id: str, ip: str, event: str, message: str, attempt: int
    ) -> None:
        now = self._clock()

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                """INSERT INTO agent_upload_logs
                   (task_id, agent_id, ip_address, event_type, message, created_at, attempt)
                   VALUES (?,?,?,?,?,?,?)""",
                (task_id, agent_id, ip, event, message, now, attempt),
            )

        await self._run(q)

    async def load_tasks(self, *, active_only: bool = False) -> list[TaskRecord]:
        def q(c: sqlite3.Connection) -> list[sqlite3.Row]:
            if active_only:
                marks = ",".join("?" * len(_ACTIVE))
                return c.execute(
                    f"SELECT * FROM agent_tasks WHERE status IN ({marks}) ORDER BY id", _ACTIVE
                ).fetchall()
            return c.execute("SELECT * FROM agent_tasks ORDER BY id").fetchall()

        tasks = [self._task_from_row(r) for r in await self._run(q)]
        return [self._unwritten.get(t.task_id, t) for t in tasks]

    async def page_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], int | None]:
        """One page of tasks, newest first, and the row id the next page starts before
        (None: this was the last); a page costs the same however long the history."""
        rows = await self._run(lambda c: page_rows(c, query))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_id = int(rows[-1]["id"]) if more and rows else None
        tasks = [self._task_from_row(r) for r in rows]
        return [self._unwritten.get(t.task_id, t) for t in tasks], next_id

    async def recent_ended_tasks(self, limit: int) -> list[TaskRecord]:
        """The ``limit`` newest finished tasks (the live view's recent history)."""
        tasks = [self._task_from_row(r)
                 for r in await self._run(lambda c: recent_ended_rows(c, limit))]
        return [self._unwritten.get(t.task_id, t) for t in tasks]

    async def get_task(self, task_id: str) -> TaskRecord | None:
        def q(c: sqlite3.Connection) -> sqlite3.Row | None:
            return c.execute("SELECT * FROM agent_tasks WHERE task_id=?", (task_id,)).fetchone()

        if task_id in self._unwritten:
            return replace(self._unwritten[task_id])
        row = await self._run(q)
        return self._task_from_row(row) if row is not None else None

    async def logs(self, task_id: str) -> list[dict[str, Any]]:
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute(
                """SELECT task_id, agent_id, ip_address, event_type, message, created_at, attempt
                   FROM agent_upload_logs WHERE task_id=? ORDER BY id""",
                (task_id,),
            ).fetchall()
            return [dict(r) for r in rows]

        return await self._run(q)

    async def count_tasks_by_status(self) -> dict[str, int]:
        """Every task (live or ended) by status (the metrics' task gauge)."""
        def q(c: sqlite3.Connection) -> dict[str, int]:
            rows = c.execute("SELECT status, COUNT(*) FROM agent_tasks GROUP BY status")
            return {str(status): int(n) for status, n in rows}

        return await self._run(q)

    async def count_ended_since(self, since: float) -> dict[str, int]:
        """Tasks that ended at or after ``since``, by status (the failure-rate alert)."""
        def q(c: sqlite3.Connection) -> dict[str, int]:
            rows = c.execute(
                "SELECT status, COUNT(*) FROM agent_tasks WHERE completed_at>=? GROUP BY status",
                (since,),
            ).fetchall()
            return {row[0]: row[1] for row in rows}

        return await self._run(q)

    # -- risk ledger ----------------------------------------------------------------------

    async def save_ledger(self, snapshot: dict[str, Any]) -> None:
        """The risk ledger's :meth:`~hub.core.risk.RiskLedger.snapshot` (one row, replaced)."""
        text = json.dumps(snapshot)
        now = self._clock()

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                """INSERT INTO risk_ledger (id, snapshot, updated_at) VALUES (1, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET snapshot=excluded.snapshot,
                   updated_at=excluded.updated_at""",
                (text, now),
            )

        await self.write_behind.write("ledger", q, snapshot=True)

    async def save_ledger_ips(self, changes: dict[str, dict[str, Any]]) -> None:
        """Entries of changed IPs (:meth:`~hub.core.risk.RiskLedger.take_changes`), one row each:
        the cost of a write follows what changed, not how many IPs the mesh has."""
        now = self._clock()
        rows = [(ip, json.dumps(entry), now) for ip, entry in changes.items()]

        def upsert(rows: list[tuple[str, str, float]]) -> Callable[[sqlite3.Connection], None]:
            return lambda c: c.executemany(
                """INSERT INTO risk_ledger_ips (ip, state, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT(ip) DO UPDATE SET state=excluded.state,
                   updated_at=excluded.updated_at""",
                rows,
            )

        if not rows:
            return
        if not any(self.write_behind.has(f"ip:{ip}") for ip, _, _ in rows):
            try:
                await self._run(upsert(rows))
                return
            except StorageFull:
                pass
        for row in rows:  # each IP's newest entry waits for space on its own
            await self.write_behind.write(f"ip:{row[0]}", upsert([row]), snapshot=True)

    async def load_ledger(self) -> dict[str, Any] | None:
        """The ledger snapshot: the whole-ledger row with the per-IP rows over it."""
        def q(c: sqlite3.Connection) -> tuple[str | None, list[tuple[str, str]]]:
            row = c.execute("SELECT snapshot FROM risk_ledger WHERE id=1").fetchone()
            ips = c.execute("SELECT ip, state FROM risk_ledger_ips").fetchall()
            return (row[0] if row else None), [(r[0], r[1]) for r in ips]

        text, ips = await self._run(q)
        snapshot = _loads(text, None) if text else None
        if ips:
            if not isinstance(snapshot, dict):
                snapshot = {"version": 1, "ips": {}}
            snapshot.setdefault("ips", {}).update((ip, _loads(state, {})) for ip, state in ips)
        return snapshot

    async def save_risk_state(self, name: str, snapshot: dict[str, Any]) -> None:
        """A small ledger's whole snapshot (``accounts``, ``captchas``), replaced."""
        text, now = json.dumps(snapshot), self._clock()

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                """INSERT INTO risk_state (name, state, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET state=excluded.state,
                   updated_at=excluded.updated_at""",
                (name, text, now),
            )

        await self.write_behind.write(f"risk:{name}", q, snapshot=True)

    async def load_risk_state(self, name: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda c: c.execute("SELECT state FROM risk_state WHERE name=?", (name,)).fetchone())
        return _loads(row[0], None) if row else None

    # -- row mapping ----------------------------------------------------------------------

    def _task_row(self, t: TaskRecord) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(t, name) for name in _TASK_FIELDS}
        row["status"] = t.status.value
        row["agent_id"] = t.agent_id or ""
        row["excluded"] = json.dumps(t.excluded)
        row["excluded_ips"] = json.dumps(t.excluded_ips)
        row["retry_state"] = json.dumps(t.retry_state)
        row["force"] = int(t.force)
        row["resume_session"] = (
            self._cipher.encrypt(t.resume_session) if t.resume_session else None
        )
        row["progress"] = (t.uploaded_bytes / t.file_size * 100.0) if t.file_size else 0.0
        return row

    def _task_from_row(self, r: sqlite3.Row) -> TaskRecord:
        d = dict(r)
        kwargs = {name: d[name] for name in _TASK_FIELDS if name in d}
        kwargs["status"] = Status(d["status"])
        kwargs["agent_id"] = d["agent_id"] or None
        kwargs["excluded"] = _loads(d["excluded"], {})
        kwargs["excluded_ips"] = _loads(d.get("excluded_ips"), {})
        kwargs["retry_state"] = _loads(d.get("retry_state"), {})
        kwargs["force"] = bool(d.get("force"))
        kwargs["proceed_attempt"] = int(d.get("proceed_attempt") or 0)
        kwargs["proceed_ip"] = d.get("proceed_ip") or ""
        kwargs["proceed_agent"] = d.get("proceed_agent") or ""
        kwargs["proceed_at"] = float(d.get("proceed_at") or 0.0)
        blob = d["resume_session"]
        try:
            kwargs["resume_session"] = self._cipher.decrypt(blob) if blob else None
        except InvalidToken:
            kwargs["resume_session"] = None  # key changed: lose the resume point, not the task
        for name in ("upload_speed", "eta_seconds", "not_before"):
            kwargs[name] = float(kwargs.get(name) or 0.0)
        return TaskRecord(**kwargs)


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
