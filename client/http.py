"""A client for the hub's admin HTTP API, shared by the CLI commands that drive a hub.

``bupmesh upload``, ``bupmesh account`` and ``bupmesh recordings`` all speak the
same envelope (``{"code", "message", "data"}``) with the admin token as a bearer
token; each failure becomes one printable line (``HubError``), and a hub that did
not answer at all is told apart (``Unreachable``) so a waiting command can ride
out a hub restart.
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from bupmesh.config import ConfigError
from client.interrupt import held_during_call

DEFAULT_HUB = "http://127.0.0.1:12380"

# Where the commands that drive a hub find it without flags.
ENV_KEYS = {
    "BUPMESH_HUB_URL": "hub",
    # Preferred over --admin-token: a flag shows up in `ps` to every local user.
    "BUPMESH_ADMIN_TOKEN": "admin_token",
}


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """``--hub``, ``--admin-token``, ``--ca-file``: how a command reaches the hub."""
    parser.add_argument(
        "--hub", metavar="URL", help=f"hub HTTP API (default {DEFAULT_HUB}; env BUPMESH_HUB_URL)"
    )
    parser.add_argument(
        "--admin-token", metavar="S", help="admin token (env BUPMESH_ADMIN_TOKEN is safer)"
    )
    parser.add_argument("--ca-file", metavar="F", help="trust this CA for an https:// hub")


def check_hub_url(hub: str) -> None:
    """Refuse a ``--hub`` that is not ``http(s)://HOST[:PORT]``, in one line."""
    url = urlsplit(hub)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"--hub: expected http(s)://HOST:PORT, got {hub!r}")


class HubError(Exception):
    """The hub could not be asked or refused; the message is the one line to print."""


class Unreachable(HubError):
    """The hub did not answer at all (worth retrying while waiting)."""


def connect(hub: str, admin_token: str, ca_file: str | None = None) -> httpx.Client:
    """An httpx client for the hub's admin API (the token in every request's header)."""
    verify: ssl.SSLContext | bool = True
    if ca_file:
        try:
            verify = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"--ca-file: cannot load {ca_file}: {detail}") from None
    return httpx.Client(
        base_url=hub.rstrip("/"),
        headers={"Authorization": f"Bearer {admin_token}"},
        verify=verify,
        timeout=30.0,
    )


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One admin API call; the envelope's ``data`` or a one-line ``HubError``."""
    where = str(client.base_url)
    try:
        with held_during_call():
            response = client.request(method, path, **kwargs)
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise HubError(
                f"TLS: the hub's certificate at {where} is not trusted (use --ca-file)"
            ) from None
        reason = (
            "connection refused" if "refused" in str(exc).lower() else str(exc) or "cannot connect"
        )
        raise Unreachable(f"cannot reach the hub at {where}: {reason}") from None
    except httpx.TimeoutException:
        raise Unreachable(f"the hub at {where} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise Unreachable(f"talking to the hub at {where} failed: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    if response.status_code == 401:
        raise HubError(
            "the hub refused the admin token (401); check --admin-token or BUPMESH_ADMIN_TOKEN"
        )
    if response.status_code >= 400 or not isinstance(body, dict):
        detail = message or response.reason_phrase or "unexpected response"
        raise HubError(f"hub answered {response.status_code} to {method} {path}: {detail}")
    if body.get("code", 0) != 0:
        raise HubError(f"hub refused {method} {path}: {message or body.get('code')}")
    return body.get("data")


class HubClientSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the hub is and how to prove the caller is its admin: every command's settings
    start from these (flags, env and YAML fill them alike)."""

    hub: str = DEFAULT_HUB
    admin_token: str = ""
    ca_file: str | None = None
