"""Which Bilibili account a task or a recording is for, as the account ledger keys it.

Tasks and recordings name their account as the admin gave it: a name, an id,
or nothing (the only account). Bilibili counts per *user*, so the account
ledger keys on the account's ``mid`` (two hub accounts holding one user's
cookies share a fate), else on its id. Resolving asks the account store, so
answers are kept for a minute: a scheduling pass asks for every pending task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.core.ports import Accounts

TTL_SECONDS = 60.0


def ledger_key(row: dict[str, Any]) -> str:
    """The key of an account row (``AccountStore.resolve``): its mid, else ``account-<id>``."""
    mid = row.get("mid")
    return str(mid) if mid else f"account-{row.get('account_id')}"


class AccountKeys:
    def __init__(self, accounts: Accounts, clock: Callable[[], float]) -> None:
        self.accounts = accounts
        self.clock = clock
        self._cache: dict[str | None, tuple[float, str]] = {}

    async def key(self, account: str | None) -> str:
        """The ledger key of ``account``; ``?<as given>`` when no account matches (its task
        fails for want of credentials at its offer, so nothing is paced under it)."""
        account = None if account in (None, "") else str(account)
        now = self.clock()
        hit = self._cache.get(account)
        if hit is not None and now - hit[0] < TTL_SECONDS:
            return hit[1]
        try:
            key = ledger_key(await self.accounts.resolve(account))
        except Exception:  # no such account, several and none named: not ours to judge
            key = f"?{account or ''}"
        self._cache[account] = (now, key)
        return key

    def cached(self, account: str | None) -> str | None:
        """The key last resolved for ``account`` (None: never asked): for synchronous
        readers such as the admin view of a waiting task."""
        hit = self._cache.get(None if account in (None, "") else str(account))
        return hit[1] if hit is not None else None
