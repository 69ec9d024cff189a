"""The hub's QR login sessions (``hub.accounts.qr_login``) against the simulator, on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from hub.accounts.check import check_account
from hub.accounts.qr_login import QR_LIFETIME_SECONDS, LoginNotFound, QrLogins
from hub.accounts.store import AccountStore
from tests.conftest import SimServer
from uploader.tv_login import TvLoginClient

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def phone(sim: SimServer, url: str, action: str, **body: object) -> None:
    auth_code = url.rsplit("auth_code=", 1)[1]
    httpx.post(f"{sim.url}/_sim/qr/{auth_code}/{action}", json=body, timeout=10).raise_for_status()


def polls(sim: SimServer) -> int:
    return sum(1 for r in sim.requests() if r["op"] == "qr_poll")


OPENED: list[AccountStore] = []


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def make(tmp_path: Path, sim: SimServer, clock: Clock) -> tuple[AccountStore, QrLogins, list]:
    store = AccountStore(tmp_path / "bupmesh.db", tmp_path / "secret.key")
    store.open_sync()
    OPENED.append(store)
    checked: list[int] = []

    async def after_login(account_id: int) -> None:
        checked.append(account_id)
        await check_account(store, account_id, api_url=sim.url)

    logins = QrLogins(store, TvLoginClient(sim.url), after_login=after_login, clock=clock)
    return store, logins, checked


async def test_login_to_account_with_paced_polls(tmp_path: Path, sim: SimServer) -> None:
    clock = Clock()
    store, logins, checked = make(tmp_path, sim, clock)
    started = await logins.start("main")
    login_id = started["login_id"]
    assert (await logins.status(login_id))["state"] == "waiting"
    # Asked again within a second: answered from memory, the passport is not polled.
    assert (await logins.status(login_id))["state"] == "waiting"
    assert polls(sim) == 1
    phone(sim, started["url"], "scan")
    clock.now += 1
    assert (await logins.status(login_id))["state"] == "scanned"
    phone(sim, started["url"], "confirm", mid=5150, uname="qr-user")
    clock.now += 1
    # Two concurrent askers: one poll takes the login, neither sees "expired".
    results: list[dict] = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(lambda: _append(results, logins.status(login_id)))
    assert [r["state"] for r in results] == ["done", "done"]
    done = results[0]
    assert done["name"] == "main" and done["mid"] == 5150
    assert polls(sim) == 3
    creds = await store.credentials("main")
    assert creds.mid == 5150 and creds.access_key and creds.cookies["SESSDATA"]
    (row,) = await store.list()
    assert row["has_refresh_token"] and row["valid"] is True and row["uname"] == "qr-user"
    assert checked == [done["account_id"]]
    clock.now += 1000
    assert (await logins.status(login_id))["state"] == "done"  # no more polls once done
    assert polls(sim) == 3


async def _append(results: list[dict], status) -> None:
    results.append(await status)


async def test_expiry_relogin_and_conflicts(tmp_path: Path, sim: SimServer) -> None:
    clock = Clock()
    store, logins, _ = make(tmp_path, sim, clock)
    # Expires on the hub's clock without asking the passport again.
    stale = await logins.start()
    clock.now += QR_LIFETIME_SECONDS
    assert (await logins.status(stale["login_id"]))["state"] == "expired"
    assert polls(sim) == 0
    # Expires at the passport.
    gone = await logins.start()
    phone(sim, gone["url"], "expire")
    assert (await logins.status(gone["login_id"]))["state"] == "expired"

    async def login(name: str | None, mid: int) -> dict:
        started = await logins.start(name)
        phone(sim, started["url"], "scan")
        phone(sim, started["url"], "confirm", mid=mid)
        clock.now += 2
        return await logins.status(started["login_id"])

    first = await login(None, 777)
    assert first["state"] == "done" and first["name"] == "bili-777"
    old = (await store.credentials("bili-777")).cookies["SESSDATA"]
    # The same user again (cookies died): same account, fresh secrets.
    again = await login(None, 777)
    assert again["account_id"] == first["account_id"]
    assert (await store.credentials("bili-777")).cookies["SESSDATA"] != old
    # Another user under a taken name: refused, the first account untouched.
    clash = await login("bili-777", 888)
    assert clash["state"] == "failed" and "another user" in clash["message"]
    assert [r["mid"] for r in await store.list()] == [777]
    with pytest.raises(LoginNotFound):
        await logins.status("nope")
