"""The ``rooms`` table: each room's settings as JSON, and where they came from.

``origin`` is ``yaml`` for a room copied from ``hub.yml`` and ``console`` for one
written through the admin API (the web UI's room form); ``hub.rooms.book`` decides
what each means at startup. The settings are stored as the JSON the API
accepted, and decoded again (with the hub's current rules) when loaded.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.store.database import Database

YAML = "yaml"
CONSOLE = "console"

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room_id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,          -- JSON object: the keys of hub.config.RoomSettings
    origin TEXT NOT NULL,            -- yaml | console
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


class RoomStore(Database):
    SCHEMA = SCHEMA

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db_path)
        self._clock = clock

    async def all(self) -> list[dict[str, Any]]:
        return await self._run(lambda c: [
            dict(r) for r in c.execute("SELECT * FROM rooms ORDER BY CAST(room_id AS INTEGER)")])

    async def put(self, room_id: str, settings: str, origin: str) -> dict[str, Any]:
        """Create or replace a room's row (its ``created_at`` survives a replace)."""
        now = self._clock()

        def q(c: sqlite3.Connection) -> dict[str, Any]:
            c.execute(
                """INSERT INTO rooms (room_id, settings, origin, created_at, updated_at)
                   VALUES (?,?,?,?,?)
                   ON CONFLICT (room_id) DO UPDATE SET settings=excluded.settings,
                   origin=excluded.origin, updated_at=excluded.updated_at""",
                (room_id, settings, origin, now, now))
            return dict(c.execute("SELECT * FROM rooms WHERE room_id=?", (room_id,)).fetchone())

        return await self._run(q)

    async def delete(self, room_id: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM rooms WHERE room_id=?", (room_id,)).rowcount > 0

        return await self._run(q)
