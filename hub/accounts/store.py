"""Bilibili accounts the hub uploads and submits as, with their secrets encrypted at rest.

An account is a name plus secrets (the cookie jar, an optional app
``access_key`` and biliup's refresh token). The secrets are one Fernet token
in the ``accounts`` table, so the database file, its WAL and any backup of
them hold no cookie in plain text; the key lives beside the database in
``secret.key`` (mode 0600). The hub core encrypts resume sessions with the
same key (``load_or_create_key``).

The table lives in the hub's database file beside the hub's own tables, with
the plumbing they share (``hub.store.database``): a connection of its own in WAL
mode, the schema applied on ``open``, and every call one transaction in a worker
thread, off the event loop.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from hub.store.database import Database
from uploader.credentials import Credentials, CredentialsError

KEY_FILE = "secret.key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    secrets BLOB NOT NULL,      -- Fernet token of {"cookies", "access_key", "refresh_token"}
    mid INTEGER,                -- the public user id, not a secret
    created_at REAL NOT NULL,
    uname TEXT,                 -- the Bilibili user name the last check saw
    valid INTEGER,              -- last validity check: 1 logged in, 0 not, NULL never checked
    checked_at REAL
)
"""

# Columns added after the first release: a database made before them gains them
# on open (ALTER TABLE ... ADD COLUMN keeps every row).
_ADDED_COLUMNS = (
    ("accounts", "uname", "TEXT"),
    ("accounts", "valid", "INTEGER"),
    ("accounts", "checked_at", "REAL"),
)
_COLUMNS = "SELECT id, name, mid, created_at, secrets, uname, valid, checked_at FROM accounts"

_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


class AccountError(ValueError):
    """Bad account input (empty name, unparsable cookies); the message never quotes secrets."""


class AccountNotFound(LookupError):
    """No account matches, or ``None`` was asked for while zero or several exist."""


class DuplicateAccount(Exception):
    """An account with this name already exists."""


def check_name(name: Any) -> str:
    """An account name, stripped; printable, 1-64 characters (it shows in logs and the UI)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name.strip()):
        raise AccountError("name: must be 1-64 printable characters")
    return name.strip()


def load_or_create_key(data_dir: str | os.PathLike[str]) -> Fernet:
    """The hub's at-rest encryption key from ``data_dir/secret.key``, created 0600 on first use."""
    return Fernet(_load_or_create_key_bytes(Path(data_dir) / KEY_FILE))


def _load_or_create_key_bytes(key_path: Path) -> bytes:
    try:
        return _read_key(key_path)
    except FileNotFoundError:
        pass
    key_path.parent.mkdir(parents=True, exist_ok=True)
    # Write the whole key to a private temp file, then hard-link it into place:
    # the link fails if another process won the race, and nobody ever reads a
    # half-written key.
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=key_path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, Fernet.generate_key())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            pass
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
    return _read_key(key_path)


def _read_key(key_path: Path) -> bytes:
    key = key_path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise AccountError(f"{key_path}: not a valid key file") from None
    return key


class AccountStore(Database):
    """The ``accounts`` table of the hub database; secrets go in and out only encrypted.

    ``open`` before use, ``close`` at the end, like the hub's other stores.
    """

    SCHEMA = _SCHEMA
    ADDED_COLUMNS = _ADDED_COLUMNS

    def __init__(self, db_path: Path, key_path: Path) -> None:
        super().__init__(db_path)
        self._fernet = Fernet(_load_or_create_key_bytes(Path(key_path)))

    async def add(
        self,
        name: str,
        *,
        cookies: str | None = None,
        cookies_json: dict[str, Any] | None = None,
        access_key: str | None = None,
        mid: int | None = None,
    ) -> int:
        """Store a new account from a cookie string or biliup's ``cookies.json``; returns its id.

        Explicit ``access_key``/``mid`` win over what the cookies carry.
        """
        name = check_name(name)
        token, mid = self._seal(cookies, cookies_json, access_key, mid)

        def insert(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO accounts (name, secrets, mid, created_at) VALUES (?, ?, ?, ?)",
                    (name, token, mid, time.time()),
                )
            except sqlite3.IntegrityError:
                raise DuplicateAccount(f"account {name!r} already exists") from None
            return int(cur.lastrowid or 0)

        return await self._run(insert)

    async def save_login(self, name: str, cookies_json: dict[str, Any]) -> tuple[int, bool]:
        """Store a fresh login (QR): a new account, or new secrets for the same user.

        A name already taken by the same ``mid`` is a re-login (the old cookies
        expired), so its secrets are replaced and its check verdict forgotten;
        taken by another user it is ``DuplicateAccount``. Returns (id, created).
        """
        name = check_name(name)
        token, mid = self._seal(None, cookies_json, None, None)

        def upsert(conn: sqlite3.Connection) -> tuple[int, bool]:
            row = conn.execute("SELECT id, mid FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO accounts (name, secrets, mid, created_at) VALUES (?, ?, ?, ?)",
                    (name, token, mid, time.time()),
                )
                return int(cur.lastrowid or 0), True
            if row[1] != mid:
                raise DuplicateAccount(f"account {name!r} already exists for another user")
            conn.execute(
                "UPDATE accounts SET secrets = ?, valid = NULL, checked_at = NULL WHERE id = ?",
                (token, row[0]),
            )
            return int(row[0]), False

        return await self._run(upsert)

    async def record_check(self, account_id: int, *, valid: bool, uname: str | None) -> None:
        """Remember a validity check; a check that saw no name keeps the last known one."""
        await self._run(
            lambda conn: conn.execute(
                "UPDATE accounts SET valid = ?, uname = COALESCE(?, uname), checked_at = ?"
                " WHERE id = ?",
                (int(valid), uname, time.time(), account_id),
            )
        )

    async def delete(self, account: int | str) -> dict[str, Any]:
        """Remove an account and its secrets; returns its public row as it was."""
        row = await self._find(account)
        await self._run(lambda conn: conn.execute("DELETE FROM accounts WHERE id = ?", (row[0],)))
        return self._public(row)

    def _seal(
        self,
        cookies: str | None,
        cookies_json: dict[str, Any] | None,
        access_key: str | None,
        mid: int | None,
    ) -> tuple[bytes, int | None]:
        """Validate the input and encrypt the secrets -> (Fernet token, mid)."""
        if (cookies is None) == (cookies_json is None):
            raise AccountError("give exactly one of cookies or cookies_json")
        refresh_token: str | None = None
        try:
            if cookies is not None:
                creds = Credentials.from_cookie_string(cookies)
            else:
                if not isinstance(cookies_json, dict):
                    raise AccountError("cookies_json: expected an object")
                creds = Credentials.from_biliup_json(cookies_json)
                token_info = cookies_json.get("token_info")
                if isinstance(token_info, dict) and isinstance(
                    token_info.get("refresh_token"), str
                ):
                    refresh_token = token_info["refresh_token"]
        except AccountError:
            raise
        except CredentialsError as exc:
            # Its messages say where the input is wrong, never what it contains.
            field = "cookies" if cookies is not None else "cookies_json"
            raise AccountError(f"{field}: {exc}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Any other parser failure may quote the input: name only the kind of failure.
            field = "cookies" if cookies is not None else "cookies_json"
            raise AccountError(f"{field}: could not be parsed ({type(exc).__name__})") from None
        if not creds.cookies and not (access_key or creds.access_key):
            raise AccountError("cookies: no cookie and no access key")
        if access_key is not None and not isinstance(access_key, str):
            raise AccountError("access_key: expected a string")
        if mid is not None and (isinstance(mid, bool) or not isinstance(mid, int)):
            raise AccountError("mid: expected an integer")
        secrets = {
            "cookies": dict(creds.cookies),
            "access_key": access_key if access_key is not None else creds.access_key,
            "refresh_token": refresh_token,
        }
        token = self._fernet.encrypt(json.dumps(secrets).encode())
        return token, (mid if mid is not None else creds.mid)

    async def list(self) -> list[dict[str, Any]]:
        """Every account without its secrets: id, name, mid, kinds of secret, last check."""
        rows = await self._run(lambda conn: conn.execute(f"{_COLUMNS} ORDER BY id").fetchall())
        return [self._public(row) for row in rows]

    async def resolve(self, account: int | str | None) -> dict[str, Any]:
        """The public row (as in ``list``) of ``account``; see ``credentials`` for the lookup."""
        return self._public(await self._find(account))

    async def credentials(self, account: int | str | None) -> Credentials:
        """Decrypted credentials of an account given by id, name, or ``None`` for the only one."""
        row = await self._find(account)
        secrets = self._decrypt(row[4])
        return _make_credentials(secrets, row[2])

    # -- internals ---------------------------------------------------------

    async def _find(self, account: int | str | None) -> tuple[Any, ...]:
        def query(conn: sqlite3.Connection) -> tuple[Any, ...]:
            cols = _COLUMNS
            if account is None:
                rows = conn.execute(f"{cols} ORDER BY id LIMIT 2").fetchall()
                if not rows:
                    raise AccountNotFound("no account configured; add one first")
                if len(rows) > 1:
                    raise AccountNotFound("several accounts exist; name one")
                return rows[0]
            if isinstance(account, bool) or not isinstance(account, int | str):
                raise AccountNotFound(f"no account {account!r}")
            if isinstance(account, int):
                row = conn.execute(f"{cols} WHERE id = ?", (account,)).fetchone()
            else:
                row = conn.execute(f"{cols} WHERE name = ?", (account.strip(),)).fetchone()
                if row is None and account.strip().isdigit():
                    row = conn.execute(f"{cols} WHERE id = ?", (int(account),)).fetchone()
            if row is None:
                raise AccountNotFound(f"no account {account!r}")
            return row

        return await self._run(query)

    def _public(self, row: tuple[Any, ...]) -> dict[str, Any]:
        try:
            secrets: dict[str, Any] | None = self._decrypt(row[4])
        except AccountError:
            secrets = None  # listing still works with a wrong key; using the account will not
        return {
            "account_id": row[0],
            "name": row[1],
            "mid": row[2],
            "created_at": row[3],
            "has_access_key": None if secrets is None else bool(secrets.get("access_key")),
            "has_refresh_token": None if secrets is None else bool(secrets.get("refresh_token")),
            "uname": row[5],
            "valid": None if row[6] is None else bool(row[6]),
            "checked_at": row[7],
        }

    def _decrypt(self, token: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise AccountError(
                "account secrets cannot be decrypted: secret.key does not match the database"
            ) from None


def _make_credentials(secrets: dict[str, Any], mid: int | None) -> Credentials:
    return Credentials(
        cookies=dict(secrets.get("cookies") or {}),
        access_key=secrets.get("access_key"),
        mid=mid,
    )
