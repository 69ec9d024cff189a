"""Is an account still logged in? Ask Bilibili's nav with its cookies and remember the verdict.

Cookies die silently (expiry, a logout elsewhere, a password change), and an
upload with dead cookies fails only at preupload, on an agent, minutes later.
A check makes that visible up front: the verdict, the user name Bilibili shows
and the time are stored with the account and listed by the API.
"""

from __future__ import annotations

from typing import Any

import httpx

from hub.accounts.store import AccountError, AccountStore
from uploader.nav import check_login


async def check_account(
    store: AccountStore,
    account: int | str,
    *,
    api_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Check ``account`` (id or name) and return its public row with the new verdict.

    Valid means logged in as the account's own user: cookies that log in as
    someone else are not this account any more. ``uploader.nav.NavError`` (no
    answer, odd answer) propagates and stores nothing: unknown is not invalid.
    """
    row = await store.resolve(account)
    credentials = await store.credentials(row["account_id"])
    if not credentials.cookies:
        # nav is a web endpoint; an app-token-only account has nothing it can check.
        raise AccountError(f"account {row['name']!r} has no cookies; only cookies can be checked")
    result = await check_login(credentials, api_url=api_url, transport=transport)
    same_user = row["mid"] is None or result.mid is None or result.mid == row["mid"]
    valid = result.logged_in and same_user
    await store.record_check(
        row["account_id"], valid=valid, uname=result.uname if result.logged_in else None
    )
    return await store.resolve(row["account_id"])
