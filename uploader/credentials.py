"""Bilibili account credentials: web cookies and the optional app access key.

Credentials are secrets end to end: ``repr``/``str`` show which cookies are
present but never a value, and nothing here logs. The two input shapes are a
browser cookie string and biliup's ``cookies.json`` (what most recorder users
already have).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class CredentialsError(ValueError):
    """Credentials input is unusable; the message never contains a secret."""


class Credentials:
    """Cookies (``SESSDATA``, ``bili_jct``, ``DedeUserID``, ...), access key and mid."""

    __slots__ = ("cookies", "access_key", "mid")

    def __init__(
        self,
        cookies: Mapping[str, str],
        *,
        access_key: str | None = None,
        mid: int | None = None,
    ) -> None:
        self.cookies: dict[str, str] = dict(cookies)
        self.access_key: str | None = access_key or None
        if mid is None:
            mid = _parse_mid(self.cookies.get("DedeUserID"))
        self.mid: int | None = mid

    @classmethod
    def from_cookie_string(
        cls, s: str, *, access_key: str | None = None, mid: int | None = None
    ) -> Credentials:
        """Parse ``"SESSDATA=...; bili_jct=...; DedeUserID=..."`` (browser copy-paste)."""
        if not isinstance(s, str) or not s.strip():
            raise CredentialsError("cookie string is empty")
        cookies: dict[str, str] = {}
        for index, piece in enumerate(s.split(";")):
            piece = piece.strip()
            if not piece:
                continue
            name, sep, value = piece.partition("=")
            name = name.strip()
            if not sep or not name or any(ch in name for ch in " \t,\"'"):
                # Say where, not what: the text may be a secret.
                raise CredentialsError(f"cookie string: item {index + 1} is not NAME=VALUE")
            cookies[name] = value.strip()
        if not cookies:
            raise CredentialsError("cookie string has no cookies")
        return cls(cookies, access_key=access_key, mid=mid)

    @classmethod
    def from_biliup_json(cls, data: dict | str | os.PathLike) -> Credentials:
        """Import biliup's ``cookies.json`` (a path, its JSON text, or the decoded dict).

        Shape: ``{"cookie_info": {"cookies": [{"name", "value"}, ...]},
        "token_info": {"access_token", "mid", "refresh_token", "expires_in"}}``.
        """
        if isinstance(data, os.PathLike) or (
            isinstance(data, str) and not data.lstrip().startswith(("{", "["))
        ):
            path = Path(data)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CredentialsError(f"cookies file {path}: {exc.strerror or exc}") from None
            data = text
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise CredentialsError("cookies.json: not valid JSON") from None
        if not isinstance(data, dict):
            raise CredentialsError("cookies.json: top level must be an object")

        cookies: dict[str, str] = {}
        cookie_info = data.get("cookie_info")
        if cookie_info is not None:
            items = cookie_info.get("cookies") if isinstance(cookie_info, dict) else None
            if not isinstance(items, list):
                raise CredentialsError("cookies.json: cookie_info.cookies must be a list")
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    raise CredentialsError(
                        f"cookies.json: cookie_info.cookies[{index}] is not an object"
                    )
                name, value = item.get("name"), item.get("value")
                if not isinstance(name, str) or not name or not isinstance(value, str | int):
                    raise CredentialsError(
                        f"cookies.json: cookie_info.cookies[{index}] needs string name and value"
                    )
                cookies[name] = str(value)

        access_key: str | None = None
        mid: int | None = None
        token_info = data.get("token_info")
        if token_info is not None:
            if not isinstance(token_info, dict):
                raise CredentialsError("cookies.json: token_info must be an object")
            token = token_info.get("access_token")
            if token is not None and not isinstance(token, str):
                raise CredentialsError("cookies.json: token_info.access_token must be a string")
            access_key = token or None
            mid = _parse_mid(token_info.get("mid"))
        if not cookies and not access_key:
            raise CredentialsError("cookies.json: no cookies and no access token")
        return cls(cookies, access_key=access_key, mid=mid)

    def cookie_header(self) -> str:
        """The ``Cookie`` header value; only ever sent to member hosts."""
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    @property
    def csrf(self) -> str:
        """``bili_jct``, the csrf token web endpoints want next to the cookies."""
        value = self.cookies.get("bili_jct")
        if not value:
            raise CredentialsError("cookie bili_jct is missing (needed as csrf)")
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain data for encrypted storage (the caller owns the secrecy)."""
        return {"cookies": dict(self.cookies), "access_key": self.access_key, "mid": self.mid}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.cookies, self.access_key, self.mid) == (
            other.cookies,
            other.access_key,
            other.mid,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.cookies))
        key = "<set>" if self.access_key else None
        return f"Credentials(cookies=[{names}], access_key={key}, mid={self.mid})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy secrets into places (multiprocessing queues,
        # caches) nobody audits; use to_dict() deliberately instead.
        raise TypeError("Credentials cannot be pickled; use to_dict()")


def _parse_mid(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
