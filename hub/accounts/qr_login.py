"""QR logins run by the hub: the admin shows a QR code, the user scans it, an account appears.

``start`` asks Bilibili's passport for a TV login code and hands back a
``login_id`` and the QR content. ``status`` reports waiting | scanned |
expired | done | failed; while a login is open each ``status`` call polls the
passport (at most once per ``min_poll_interval``, so a busy web UI or several
CLIs cannot hammer it), and the poll that sees the confirmation stores the
account. There is no background task: a login nobody asks about simply
expires with its code (180 s), and nothing outlives the hub's request handling.

Logins live in memory only (a QR code is worthless after three minutes, so a
hub restart loses nothing worth keeping) and are bounded in number and age.
The auth code inside the QR content is a secret of sorts (whoever polls with
it first gets the account) and is never logged.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from hub.accounts.store import AccountStore, DuplicateAccount, check_name
from hub.core.errors import StorageFull
from uploader.tv_login import PollState, QrCode, TvLoginClient, TvLoginError

log = logging.getLogger("bupmesh.hub.qr_login")

QR_LIFETIME_SECONDS = 180.0  # the passport's own TTL for an auth code
KEEP_SECONDS = 600.0  # how long a finished login can still be asked about
MAX_OPEN_LOGINS = 16


class LoginNotFound(LookupError):
    """No login with this id (never started, or forgotten after ``KEEP_SECONDS``)."""


class TooManyLogins(Exception):
    """``MAX_OPEN_LOGINS`` logins are open; finish or let some expire first."""


@dataclass
class _Login:
    login_id: str
    name: str | None
    qr: QrCode
    started: float
    state: str = "waiting"
    account_id: int | None = None
    account_name: str | None = None
    mid: int | None = None
    message: str | None = None
    last_poll: float = float("-inf")
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def open(self) -> bool:
        return self.state in ("waiting", "scanned")


class QrLogins:
    """The hub's open QR logins; ``after_login`` runs on each new account (e.g. a check)."""

    def __init__(
        self,
        accounts: AccountStore,
        client: TvLoginClient,
        *,
        after_login: Callable[[int], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_poll_interval: float = 1.0,
    ) -> None:
        self._accounts = accounts
        self._client = client
        self._after_login = after_login
        self._clock = clock
        self._min_poll_interval = min_poll_interval
        self._logins: dict[str, _Login] = {}

    async def start(self, name: str | None = None) -> dict[str, Any]:
        """Ask the passport for a QR code -> ``{login_id, url, expires_in}``."""
        if name is not None:
            name = check_name(name)
        self._forget_old()
        if sum(login.open for login in self._logins.values()) >= MAX_OPEN_LOGINS:
            raise TooManyLogins(
                f"{MAX_OPEN_LOGINS} QR logins are already open; let one finish or expire"
            )
        qr = await self._client.request_qr()  # TvLoginError propagates
        login = _Login(login_id=secrets.token_urlsafe(12), name=name, qr=qr, started=self._clock())
        self._logins[login.login_id] = login
        log.info("QR login %s started%s", login.login_id, f" for {name!r}" if name else "")
        return {"login_id": login.login_id, "url": qr.url, "expires_in": QR_LIFETIME_SECONDS}

    async def status(self, login_id: str) -> dict[str, Any]:
        """The login's state, polling the passport first if it is still open."""
        login = self._logins.get(login_id)
        if login is None:
            raise LoginNotFound(f"no QR login {login_id!r} (finished logins are kept 10 minutes)")
        # One poll at a time per login: two concurrent polls could see "confirmed"
        # and then "already used", and the second must not overwrite the first.
        async with login.lock:
            await self._advance(login)
        return self._view(login)

    async def _advance(self, login: _Login) -> None:
        if not login.open:
            return
        now = self._clock()
        if now - login.started >= QR_LIFETIME_SECONDS:
            login.state = "expired"
            return
        if now - login.last_poll < self._min_poll_interval:
            return
        login.last_poll = now
        try:
            outcome = await self._client.poll(login.qr.auth_code)
        except TvLoginError as exc:
            # Transient as far as we know: keep the state, say why, poll again next time.
            login.message = f"last poll failed: {exc}"
            log.warning("QR login %s: %s", login.login_id, exc)
            return
        login.message = None
        if outcome.state is PollState.WAITING:
            return
        if outcome.state is PollState.SCANNED:
            login.state = "scanned"
            return
        if outcome.state is PollState.EXPIRED:
            login.state = "expired"
            log.info("QR login %s expired", login.login_id)
            return
        assert outcome.result is not None
        result = outcome.result
        name = login.name or f"bili-{result.mid}"
        try:
            account_id, created = await self._accounts.save_login(name, result.to_biliup_json())
        except (DuplicateAccount, StorageFull) as exc:
            # A full data directory too: the confirmation is single-use, so say plainly
            # that this login is lost and another scan is needed once space returns.
            login.state, login.message = "failed", str(exc)
            log.warning("QR login %s confirmed but not stored: %s", login.login_id, exc)
            return
        login.state, login.account_id, login.account_name = "done", account_id, name
        login.mid = result.mid
        log.info("QR login %s done: account %r (id %s, mid %s) %s", login.login_id, name,
                 account_id, result.mid, "added" if created else "logged in again")
        if self._after_login is not None:
            try:
                await self._after_login(account_id)
            except Exception as exc:  # a failed check must not undo a good login
                log.warning("check after QR login %s failed: %s", login.login_id,
                            type(exc).__name__)

    def _view(self, login: _Login) -> dict[str, Any]:
        view: dict[str, Any] = {"login_id": login.login_id, "state": login.state}
        if login.state == "done":
            view.update(account_id=login.account_id, name=login.account_name, mid=login.mid)
        if login.open:
            view["expires_in"] = max(0.0, QR_LIFETIME_SECONDS - (self._clock() - login.started))
        if login.message:
            view["message"] = login.message
        return view

    def _forget_old(self) -> None:
        horizon = self._clock() - KEEP_SECONDS
        for login_id in [i for i, x in self._logins.items() if x.started < horizon]:
            del self._logins[login_id]
