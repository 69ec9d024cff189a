"""AccountStore: accounts round-trip, lookups, and no secret on disk in plain text."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hub.accounts.store import (
    AccountError,
    AccountNotFound,
    AccountStore,
    DuplicateAccount,
    load_or_create_key,
)

pytestmark = pytest.mark.anyio

COOKIES = "SESSDATA=sess-SECRET-abc123; bili_jct=csrf-SECRET-def456; DedeUserID=4242"
ACCESS_KEY = "ak-SECRET-789xyz"
REFRESH = "rt-SECRET-refresh000"
BILIUP_JSON = {
    "cookie_info": {
        "cookies": [
            {"name": "SESSDATA", "value": "json-sess-SECRET-111"},
            {"name": "bili_jct", "value": "json-csrf-SECRET-222"},
            {"name": "DedeUserID", "value": "777"},
        ]
    },
    "token_info": {
        "access_token": "json-ak-SECRET-333",
        "mid": 777,
        "refresh_token": REFRESH,
        "expires_in": 15552000,
    },
}
SECRETS = [
    b"sess-SECRET-abc123",
    b"csrf-SECRET-def456",
    ACCESS_KEY.encode(),
    b"json-sess-SECRET-111",
    b"json-csrf-SECRET-222",
    b"json-ak-SECRET-333",
    REFRESH.encode(),
]


OPENED: list[AccountStore] = []


def make_store(tmp_path: Path, key_dir: Path | None = None) -> AccountStore:
    """An opened store, closed when the test ends."""
    store = AccountStore(tmp_path / "bupmesh.db", (key_dir or tmp_path) / "secret.key")
    store.open_sync()
    OPENED.append(store)
    return store


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


async def test_cookie_string_round_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    account_id = await store.add("main", cookies=COOKIES, access_key=ACCESS_KEY)
    assert account_id >= 1
    creds = await store.credentials("main")
    assert creds.cookies["SESSDATA"] == "sess-SECRET-abc123"
    assert creds.csrf == "csrf-SECRET-def456"
    assert creds.access_key == ACCESS_KEY
    assert creds.mid == 4242
    # by id and as "the only account"
    assert (await store.credentials(account_id)).cookies == creds.cookies
    assert (await store.credentials(None)).cookies == creds.cookies
    assert (await store.credentials(str(account_id))).cookies == creds.cookies


async def test_biliup_json_round_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.add("json", cookies_json=BILIUP_JSON)
    creds = await store.credentials("json")
    assert creds.cookies["SESSDATA"] == "json-sess-SECRET-111"
    assert creds.access_key == "json-ak-SECRET-333"
    assert creds.mid == 777
    (row,) = await store.list()
    assert row["has_refresh_token"] is True and row["has_access_key"] is True


async def test_explicit_mid_and_access_key_win(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.add("x", cookies_json=BILIUP_JSON, access_key="other-ak", mid=5)
    creds = await store.credentials("x")
    assert creds.access_key == "other-ak" and creds.mid == 5


async def test_list_has_no_secrets(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.add("a", cookies=COOKIES, access_key=ACCESS_KEY)
    await store.add("b", cookies_json=BILIUP_JSON)
    rows = await store.list()
    assert [r["name"] for r in rows] == ["a", "b"]
    assert set(rows[0]) == {
        "account_id",
        "name",
        "mid",
        "created_at",
        "has_access_key",
        "has_refresh_token",
        "uname",
        "valid",
        "checked_at",
    }
    text = repr(rows).encode()
    for secret in SECRETS:
        assert secret not in text
    assert (await store.resolve("b"))["mid"] == 777


async def test_lookup_errors(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(AccountNotFound, match="no account configured"):
        await store.credentials(None)
    await store.add("a", cookies=COOKIES)
    await store.add("b", cookies=COOKIES)
    with pytest.raises(AccountNotFound, match="several"):
        await store.credentials(None)
    with pytest.raises(AccountNotFound):
        await store.credentials("nope")
    with pytest.raises(AccountNotFound):
        await store.credentials(99)


async def test_bad_input(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.add("dup", cookies=COOKIES)
    with pytest.raises(DuplicateAccount):
        await store.add("dup", cookies=COOKIES)
    with pytest.raises(AccountError, match="name"):
        await store.add("", cookies=COOKIES)
    with pytest.raises(AccountError, match="exactly one"):
        await store.add("n1")
    with pytest.raises(AccountError, match="exactly one"):
        await store.add("n2", cookies=COOKIES, cookies_json=BILIUP_JSON)
    with pytest.raises(AccountError, match="mid"):
        await store.add("n3", cookies=COOKIES, mid="12")  # type: ignore[arg-type]
    with pytest.raises(AccountError) as info:
        await store.add("n4", cookies_json={"cookie_info": "sess-SECRET-abc123"})
    assert "SECRET" not in str(info.value)
    assert [r["name"] for r in await store.list()] == ["dup"]


async def test_no_plaintext_secret_on_disk(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.list()  # creates the database in WAL mode
    # A connection held open keeps SQLite from checkpointing and deleting the
    # WAL, so the WAL bytes are checked too; the last connection to close removes it.
    holder = sqlite3.connect(tmp_path / "bupmesh.db")
    holder.execute("SELECT count(*) FROM accounts").fetchone()
    await store.add("a", cookies=COOKIES, access_key=ACCESS_KEY)
    await store.add("b", cookies_json=BILIUP_JSON)
    # read back through the store: the secrets are really in there, just encrypted
    assert (await store.credentials("a")).access_key == ACCESS_KEY
    names = assert_no_plaintext(tmp_path)
    assert "bupmesh.db-wal" in names, "WAL mode expected, so the WAL is checked too"
    store.close()
    holder.close()
    assert assert_no_plaintext(tmp_path) == ["bupmesh.db"]  # after the final checkpoint


def assert_no_plaintext(data_dir: Path) -> list[str]:
    """No secret in any database file; returns the file names checked."""
    files = sorted(p for p in data_dir.iterdir() if p.name.startswith("bupmesh.db"))
    for path in files:
        data = path.read_bytes()
        assert data, f"{path.name} is empty"
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} in plain text in {path.name}"
    return [p.name for p in files]


async def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.add("a", cookies=COOKIES)
    (tmp_path / "other").mkdir()
    other = make_store(tmp_path, tmp_path / "other")
    with pytest.raises(AccountError, match="secret.key"):
        await other.credentials("a")
    (row,) = await other.list()  # listing still works, without claiming anything
    assert row["name"] == "a" and row["has_access_key"] is None


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_key(data_dir)
    key_file = data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = load_or_create_key(data_dir)
    assert second.decrypt(first.encrypt(b"x")) == b"x"
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret.key"]


def test_key_creation_race_gives_one_key(tmp_path: Path) -> None:
    results: list[Fernet] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait(timeout=10)
        results.append(load_or_create_key(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    token = results[0].encrypt(b"same")
    assert len(results) == 8
    assert all(f.decrypt(token) == b"same" for f in results)


def test_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_bytes(b"not a key")
    with pytest.raises(AccountError, match="not a valid key"):
        load_or_create_key(tmp_path)


async def test_check_verdicts_and_delete(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    account_id = await store.add("a", cookies=COOKIES)
    assert (await store.resolve("a"))["valid"] is None  # never checked
    await store.record_check(account_id, valid=True, uname="up-name")
    row = await store.resolve("a")
    assert (row["valid"], row["uname"]) == (True, "up-name") and row["checked_at"] > 0
    await store.record_check(account_id, valid=False, uname=None)  # keeps the last known name
    row = await store.resolve("a")
    assert (row["valid"], row["uname"]) == (False, "up-name")
    assert (await store.delete(str(account_id)))["name"] == "a"
    with pytest.raises(AccountNotFound):
        await store.delete("a")
    assert await store.list() == []


async def test_database_from_before_the_check_columns_gains_them(tmp_path: Path) -> None:
    old = make_store(tmp_path)
    await old.add("kept", cookies=COOKIES)
    conn = sqlite3.connect(tmp_path / "bupmesh.db")
    for column in ("uname", "valid", "checked_at"):
        conn.execute(f"ALTER TABLE accounts DROP COLUMN {column}")
    conn.commit()
    conn.close()
    store = make_store(tmp_path)  # a new process opening the old file
    (row,) = await store.list()
    assert row["name"] == "kept" and row["valid"] is None
    await store.record_check(row["account_id"], valid=True, uname="n")
    assert (await store.resolve("kept"))["valid"] is True
    assert (await store.credentials("kept")).csrf == "csrf-SECRET-def456"
