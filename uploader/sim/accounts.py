"""The simulator's accounts: who a cookie or an access key logs in as.

Bilibili knows an account by its ``SESSDATA`` cookie (web routes, checked with
the ``bili_jct`` CSRF token) or by an app ``access_key`` (signed app routes).
One built-in account exists from the start so a fresh simulator accepts the
documented demo cookies; tests and the QR login add more.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

BUILTIN_COOKIES = "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001"
BUILTIN_ACCESS_KEY = "sim-access-key"
BUILTIN_MID = 10001


def parse_cookie_string(text: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for piece in text.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name:
            cookies[name.strip()] = value.strip()
    return cookies


def _norm(value: str) -> str:
    # Browsers and cookies.json files disagree on percent-encoding SESSDATA's commas.
    return urllib.parse.unquote(value)


@dataclass
class Account:
    mid: int
    sessdata: str | None
    bili_jct: str | None
    access_key: str | None
    expired: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "sessdata": self.sessdata,
            "bili_jct": self.bili_jct,
            "access_key": self.access_key,
            "expired": self.expired,
        }


class Accounts:
    """Every known account, in the order they were added (the control API lists them so)."""

    def __init__(self) -> None:
        self._accounts: list[Account] = []

    def public(self) -> list[dict[str, Any]]:
        return [account.public() for account in self._accounts]

    def add(
        self,
        *,
        cookies: str | None = None,
        access_key: str | None = None,
        mid: int | None = None,
        expired: bool = False,
    ) -> Account:
        """Add an account, or update the one with the same SESSDATA or access key.

        Raises ValueError naming what is missing.
        """
        parsed = parse_cookie_string(cookies or "")
        sessdata = parsed.get("SESSDATA")
        bili_jct = parsed.get("bili_jct")
        if mid is None and parsed.get("DedeUserID", "").isdigit():
            mid = int(parsed["DedeUserID"])
        if mid is None:
            raise ValueError("mid: required (or DedeUserID in cookies)")
        if sessdata is None and access_key is None:
            raise ValueError("cookies with SESSDATA, or access_key, is required")
        if sessdata is not None and bili_jct is None:
            raise ValueError("cookies: bili_jct is required with SESSDATA")
        # The same SESSDATA or access_key names the same account: update it.
        for account in self._accounts:
            same_cookie = (
                sessdata is not None
                and account.sessdata is not None
                and (_norm(account.sessdata) == _norm(sessdata))
            )
            same_key = access_key is not None and account.access_key == access_key
            if same_cookie or same_key:
                account.mid = mid
                account.expired = expired
                if sessdata is not None:
                    account.sessdata, account.bili_jct = sessdata, bili_jct
                if access_key is not None:
                    account.access_key = access_key
                return account
        account = Account(mid, sessdata, bili_jct, access_key, expired)
        self._accounts.append(account)
        return account

    def by_cookie(self, sessdata: str | None) -> Account | None:
        """The live account a SESSDATA logs in as; an expired one logs in as nobody."""
        if not sessdata:
            return None
        for account in self._accounts:
            if account.sessdata is not None and _norm(account.sessdata) == _norm(sessdata):
                return None if account.expired else account
        return None

    def by_access_key(self, access_key: str | None) -> Account | None:
        if not access_key:
            return None
        for account in self._accounts:
            if account.access_key == access_key:
                return None if account.expired else account
        return None


def with_builtin() -> Accounts:
    """A fresh registry holding only the built-in account."""
    accounts = Accounts()
    accounts.add(cookies=BUILTIN_COOKIES, access_key=BUILTIN_ACCESS_KEY, mid=BUILTIN_MID)
    return accounts
