"""One SQLite connection used from worker threads: the plumbing every hub table shares.

The hub keeps several modules' tables in one database file (``bupmesh.db``),
each module with a connection of its own. They all want the same things: WAL
(readers never wait for the writer), a schema applied on open, columns added to
an older file, one lock per connection (sqlite3 connections are not for
concurrent use), and every call in one transaction run off the event loop.

A write that finds no room on the disk raises :class:`hub.core.errors.StorageFull`
(naming the directory and its free bytes) instead of a generic database error, and
tells ``on_full`` (the hub's space alarm, hub/store/space.py), so the hub can refuse
new work and keep running instead of failing on every write.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import anyio

from hub.core.errors import StorageFull

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
        self.on_full: Callable[[StorageFull], None] | None = None  # the hub's space alarm

    def open_sync(self) -> None:
        """Open and bring the schema up to date; a disk with no room for SQLite's
        journal files raises :class:`StorageFull`."""
        try:
            self._open()
        except sqlite3.Error as exc:
            if _no_space(exc, self.db_path.parent):
                directory = str(self.db_path.parent)
                raise StorageFull(directory, free_bytes(directory)) from exc
            raise

    def _open(self) -> None:
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
                    if _no_space(exc, self.db_path.parent):
                        directory = str(self.db_path.parent)
                        raise StorageFull(directory, free_bytes(directory)) from exc
                    raise StoreError(f"database error: {exc}") from exc

        try:
            return await anyio.to_thread.run_sync(work)
        except StorageFull as exc:
            if self.on_full is not None:
                self.on_full(exc)
            raise


# Below this many free bytes a generic I/O error is taken for a full disk as well
# (SQLite reports most, not all, ENOSPC failures as SQLITE_FULL).
_NEARLY_FULL = 1 << 20


def free_bytes(directory: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer may still use under ``directory`` (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _no_space(exc: sqlite3.Error, directory: Path) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    if "database or disk is full" in str(exc):
        return True
    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        free = free_bytes(directory)
        return free is not None and free < _NEARLY_FULL
    return False
