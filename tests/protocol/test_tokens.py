"""Agent JWTs: issue, verify, and every way a token must be refused."""

from __future__ import annotations

import base64
import json
import os
import stat

import jwt
import pytest

from protocol.tokens import TokenError, TokenIssuer, load_or_create_secret

SECRET = b"s" * 40


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_issue_and_verify_roundtrip() -> None:
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_seconds=60, clock=clock)
    token, exp = issuer.issue("agent-1")
    assert exp == int(clock.now) + 60
    claims = issuer.verify(token)
    assert claims.sub == "agent-1" and claims.exp == exp and claims.jti
    assert issuer.issue("agent-1")[0] != token  # fresh jti each time


def test_expired_token_refused() -> None:
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_seconds=60, clock=clock)
    token, _ = issuer.issue("a")
    clock.now += 59
    issuer.verify(token)
    clock.now += 1
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(token)


def test_wrong_secret_refused() -> None:
    token, _ = TokenIssuer(b"x" * 40).issue("a")
    with pytest.raises(TokenError, match="signature"):
        TokenIssuer(SECRET).verify(token)


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_alg_none_refused() -> None:
    issuer = TokenIssuer(SECRET)
    claims = {"sub": "a", "exp": 2**40, "iat": 0, "jti": "x"}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(TokenError, match="algorithm"):
        issuer.verify(token)
    # Another HMAC algorithm with the right secret is refused as well.
    other = jwt.encode(claims, SECRET, algorithm="HS512")
    with pytest.raises(TokenError, match="algorithm"):
        issuer.verify(other)


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "jti"])
def test_missing_claims_refused(missing: str) -> None:
    claims = {"sub": "a", "exp": 2**40, "iat": 0, "jti": "x"}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        TokenIssuer(SECRET).verify(token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer x"])
def test_garbage_refused(token: str) -> None:
    with pytest.raises(TokenError):
        TokenIssuer(SECRET).verify(token)


def test_secret_file_created_private_and_stable(tmp_path) -> None:
    path = tmp_path / "data" / "jwt.secret"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert len(first) >= 32
