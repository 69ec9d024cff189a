"""Who may be an agent, in the hub's database: per-agent tokens and each id's admission.

- ``agent_tokens``: one row per token an admin created for one agent id. Only
  the SHA-256 of the token's secret is kept (the token is a random 256-bit value,
  so a fast hash is enough to make the column useless to a thief), with its
  expiry and when it was revoked.
- ``agent_admission``: per agent id, whether it is ``approved``, ``pending``
  (first seen through the PSK while the hub wants approval) or ``rejected``, and
  the accounts it may carry credentials of (JSON list; NULL: every account).
  An agent without a row is approved and may use every account.

The tables live in ``bupmesh.db`` beside the hub's own, with a connection of
their own (``hub.store.database``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.store.database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_tokens (
    token_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL
);
CREATE INDEX IF NOT EXISTS agent_tokens_agent ON agent_tokens(agent_id);
CREATE TABLE IF NOT EXISTS agent_admission (
    agent_id TEXT PRIMARY KEY,
    approval TEXT NOT NULL DEFAULT 'approved',
    allowed_accounts TEXT,
    updated_at REAL NOT NULL
);
"""


@dataclass
class TokenRow:
    token_id: str
    agent_id: str
    token_hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def public(self, now: float) -> dict[str, Any]:
        """What the admin API shows of a token: everything but its hash."""
        if self.revoked_at is not None:
            state = "revoked"
        elif self.expires_at is not None and self.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        return {"token_id": self.token_id, "agent_id": self.agent_id,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "last_used_at": self.last_used_at,
                "state": state}


class IdentityStore(Database):
    SCHEMA = SCHEMA

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db_path)
        self._clock = clock

    # -- tokens ---------------------------------------------------------------------------

    async def load_tokens(self) -> list[TokenRow]:
        def q(c: sqlite3.Connection) -> list[TokenRow]:
            rows = c.execute("SELECT token_id, agent_id, token_hash, created_at, expires_at, "
                             "revoked_at, last_used_at FROM agent_tokens ORDER BY created_at")
            return [TokenRow(*row) for row in rows]

        return await self._run(q)

    async def insert_token(self, row: TokenRow) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO agent_tokens (token_id, agent_id, token_hash, created_at, "
                      "expires_at) VALUES (?,?,?,?,?)",
                      (row.token_id, row.agent_id, row.token_hash, row.created_at,
                       row.expires_at))

        await self._run(q)

    async def revoke_token(self, token_id: str, at: float) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE agent_tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE token_id=?",
            (at, token_id)))

    async def token_used(self, token_id: str, at: float) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE agent_tokens SET last_used_at=? WHERE token_id=?", (at, token_id)))

    # -- admission ------------------------------------------------------------------------

    async def load_admission(self) -> dict[str, tuple[str, list[str] | None]]:
        """agent id -> (approval, allowed accounts or None)."""
        def q(c: sqlite3.Connection) -> dict[str, tuple[str, list[str] | None]]:
            out = {}
            for agent_id, approval, accounts in c.execute(
                    "SELECT agent_id, approval, allowed_accounts FROM agent_admission"):
                out[agent_id] = (approval, _accounts(accounts))
            return out

        return await self._run(q)

    async def set_approval(self, agent_id: str, approval: str) -> None:
        now = self._clock()
        await self._run(lambda c: c.execute(
            """INSERT INTO agent_admission (agent_id, approval, updated_at) VALUES (?,?,?)
               ON CONFLICT(agent_id) DO UPDATE SET approval=excluded.approval,
               updated_at=excluded.updated_at""", (agent_id, approval, now)))

    async def set_allowed_accounts(self, agent_id: str, accounts: list[str] | None) -> None:
        now = self._clock()
        text = None if accounts is None else json.dumps(accounts)
        await self._run(lambda c: c.execute(
            """INSERT INTO agent_admission (agent_id, allowed_accounts, updated_at)
               VALUES (?,?,?) ON CONFLICT(agent_id) DO UPDATE SET
               allowed_accounts=excluded.allowed_accounts, updated_at=excluded.updated_at""",
            (agent_id, text, now)))


def _accounts(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return []  # unreadable: the narrowest reading, never "every account"
    return [str(v) for v in value] if isinstance(value, list) else []
