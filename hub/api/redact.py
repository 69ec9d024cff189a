"""Drop secret-named fields from what the admin API sends.

Defence in depth: the hub's read models hold no secrets, but a bug that put a
cookie or a token in one must not carry it over HTTP. Every admin response and
every live event passes through ``redact``; a dropped field is logged by name
so the bug is found.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("bupmesh.hub.http")

# Field names that hold a secret wherever they appear in an admin response.
SECRET_FIELDS = frozenset(
    {
        "access_key",
        "access_token",
        "admin_token",
        "auth",
        "cookie",
        "cookies",
        "cookies_json",
        "credentials",
        "jwt",
        "password",
        "psk",
        "refresh_token",
        "resume_session",
        "secret",
        "secrets",
        "session",
        "token",
    }
)


def redact(value: Any) -> Any:
    """``value`` without secret-named fields, at any depth."""
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in SECRET_FIELDS:
                log.warning("dropped secret field %r from an API response", key)
                continue
            clean[key] = redact(item)
        return clean
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
