"""Agent tokens: HS256 JWTs the hub issues to an agent that registered.

Claims: ``sub`` (agent id), ``iat``, ``exp`` (unix seconds), ``jti`` (unique id,
so a single token can be revoked), and ``cred``: what the agent registered with,
``psk`` or ``token:<id>`` of a per-agent token, so the hub can refuse the JWTs of
a credential it no longer accepts (a revoked token, the PSK switched off). A JWT
without ``cred`` came from a hub that knew only the PSK. Expiry is checked against an injected clock
rather than pyjwt's own, so tests drive time without sleeping. Only HS256 is
accepted: ``alg: none`` and every other algorithm are refused before any claim
is looked at.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "exp", "iat", "jti")


class TokenError(Exception):
    """The token is not one we issued, or no longer valid. The message names why."""


@dataclass(frozen=True)
class Claims:
    sub: str
    iat: float
    exp: int
    jti: str
    cred: str = "psk"


class TokenIssuer:
    """Issue and verify agent JWTs with one hub secret."""

    def __init__(
        self, secret: bytes, *, ttl_seconds: float = 86400, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, agent_id: str, *, cred: str = "psk",
              not_after: float | None = None) -> tuple[str, int]:
        """A fresh token for ``agent_id`` and its expiry (unix seconds), never later than
        ``not_after`` (the expiry of the credential it was issued for)."""
        now = self._clock()
        exp = int(now) + max(1, int(self.ttl_seconds))
        if not_after is not None:
            exp = min(exp, int(not_after))
        # iat keeps milliseconds (NumericDate allows fractions) so "revoke every token
        # issued before now" does not also refuse a token issued later in the same second.
        claims = {"sub": agent_id, "iat": round(now, 3), "exp": exp, "jti": uuid.uuid4().hex,
                  "cred": cred}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), exp

    def verify(self, token: str) -> Claims:
        """Claims of a valid token; raises :class:`TokenError` otherwise."""
        if not isinstance(token, str) or not token:
            raise TokenError("missing token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("token algorithm not accepted")
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                         "verify_iat": False},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token lacks claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature invalid") from None
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        sub, exp, iat, jti = data["sub"], data["exp"], data["iat"], data["jti"]
        cred = data.get("cred", "psk")
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti \
                or not isinstance(cred, str):
            raise TokenError("token claims malformed")
        if not isinstance(exp, int) or isinstance(iat, bool) or not isinstance(iat, int | float):
            raise TokenError("token claims malformed")
        if exp <= self._clock():
            raise TokenError("token expired")
        return Claims(sub=sub, iat=iat, exp=exp, jti=jti, cred=cred)


def load_or_create_secret(path: str | os.PathLike[str]) -> bytes:
    """The hub's signing secret, created (0600) on first start.

    Kept in the data dir so tokens survive a hub restart; created with
    O_EXCL so two processes racing on first start cannot both write one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_secret(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return data
    data = data.strip()
    if len(data) < 32:
        raise ValueError(f"{path}: token secret too short (delete it to create a new one)")
    return data
