"""Per-agent tokens: a credential an admin creates for one agent id, in place of the PSK.

A token is ``bma_<token id>_<secret>``: the id (12 hex digits) finds its row,
the secret (256 random bits) proves it. The hub keeps only the secret's SHA-256
(``hub.store.identity``), so the token is shown once, when it is created, and
a copy of the database cannot be used to register. An agent presents it exactly
as it would the PSK (``--token`` / ``AGENT_TOKEN``); it then works only for the
agent id it was created for, until it expires or is revoked.

The rows are few (one or two per agent) and checked on every stream and every
agent HTTP call, so they are held in memory and written through to the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from hub.core.errors import AuthError, BadRequest, NotFound
from hub.store.identity import IdentityStore, TokenRow

PREFIX = "bma"
_TOKEN = re.compile(rf"{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{32,}})")
MAX_EXPIRY_SECONDS = 10 * 365 * 86400


def looks_like_agent_token(credential: str) -> bool:
    """Whether ``credential`` has a per-agent token's shape (it may still be unknown)."""
    return isinstance(credential, str) and credential.startswith(f"{PREFIX}_")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint() -> tuple[str, str, str]:
    """A fresh ``(token id, secret, token)``."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{PREFIX}_{token_id}_{secret}"


class AgentTokens:
    def __init__(self, store: IdentityStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._rows: dict[str, TokenRow] = {}

    async def load(self) -> None:
        self._rows = {row.token_id: row for row in await self.store.load_tokens()}

    def __bool__(self) -> bool:
        """Whether any per-agent token was ever made (a PSK-only fleet has none)."""
        return bool(self._rows)

    async def create(self, agent_id: str, expires_in: float | None = None
                     ) -> tuple[TokenRow, str]:
        """A new token for ``agent_id``: its row and the token itself (shown once)."""
        if expires_in is not None and not 0 < expires_in <= MAX_EXPIRY_SECONDS:
            raise BadRequest(f"expires: must be between 1 second and {MAX_EXPIRY_SECONDS} "
                             "seconds (10 years)")
        token_id, secret, token = mint()
        now = self.clock()
        row = TokenRow(token_id=token_id, agent_id=agent_id, token_hash=digest(secret),
                       created_at=now,
                       expires_at=None if expires_in is None else now + expires_in)
        await self.store.insert_token(row)
        self._rows[token_id] = row
        return row, token

    def list(self, agent_id: str | None = None) -> list[dict]:
        now = self.clock()
        return [row.public(now) for row in self._rows.values()
                if agent_id is None or row.agent_id == agent_id]

    def get(self, token_id: str) -> TokenRow:
        row = self._rows.get(token_id)
        if row is None:
            raise NotFound(f"no agent token {token_id}")
        return row

    async def revoke(self, token_id: str) -> TokenRow:
        row = self.get(token_id)
        if row.revoked_at is None:
            row.revoked_at = self.clock()
            await self.store.revoke_token(token_id, row.revoked_at)
        return row

    def check(self, credential: str, agent_id: str) -> TokenRow:
        """The row of a valid token for ``agent_id``; AuthError naming why not."""
        match = _TOKEN.fullmatch(credential or "")
        row = self._rows.get(match.group(1)) if match else None
        if row is None or not hmac.compare_digest(digest(match.group(2)), row.token_hash):
            raise AuthError("unknown agent token")
        if row.agent_id != agent_id:
            raise AuthError(f"this agent token was created for another agent id, not {agent_id}")
        self._refuse_ended(row)
        return row

    def live(self, token_id: str, agent_id: str) -> TokenRow:
        """A JWT issued for this token still stands: the token is neither revoked nor expired."""
        row = self._rows.get(token_id)
        if row is None or row.agent_id != agent_id:
            raise AuthError("unknown agent token")
        self._refuse_ended(row)
        return row

    def ended(self, token_id: str) -> bool:
        row = self._rows.get(token_id)
        return row is None or row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= self.clock())

    def _refuse_ended(self, row: TokenRow) -> None:
        if row.revoked_at is not None:
            raise AuthError("agent token revoked")
        if row.expires_at is not None and row.expires_at <= self.clock():
            raise AuthError("agent token expired")

    async def used(self, row: TokenRow) -> None:
        row.last_used_at = self.clock()
        await self.store.token_used(row.token_id, row.last_used_at)
