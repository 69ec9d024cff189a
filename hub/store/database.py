"""One SQLite connection used from worker threads: the plumbing every hub table shares.

The hub keeps several modules' tables in one database file (``bupmesh.db``),
each module with a connection of its own. They all want the same things: WAL
(readers never wait for the writer), a schema applied on open, columns added to
an older file, one lock per connection (sqlite3 connections are not for
concurrent use), and every call in one transaction run off the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import anyio

T = TypeVar("T")


class StoreError(Exception):
    """The database is unusable (locked for too long, unreadable, key mismatch)."""


class Database:
    """Subclasses set ``SCHEMA`` (and ``ADDED_COLUMNS`` for files from older versions)."""

    SCHEMA: ClassVar[str] = ""
    ADDED_COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # (table, column, ddl)
    FOREIGN_KEYS: ClassVar[bool] = False

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def open_sync(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if self.FOREIGN_KEYS:
            conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(self.SCHEMA)
        for table, column, ddl in self.ADDED_COLUMNS:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        conn.commit()
        self._conn = conn

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self.open_sync)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            with self._lock:
                if self._conn is None:
                    raise StoreError("database is closed")
                try:
                    with self._conn:  # one transaction: commit or roll back
                        return fn(self._conn)
                except sqlite3.Error as exc:
                    raise StoreError(f"database error: {exc}") from exc

        return await anyio.to_thread.run_sync(work)
