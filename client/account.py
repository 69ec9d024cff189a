"""``bupmesh account add|list|check|delete``: manage the hub's Bilibili accounts over its admin API.

Like ``bupmesh upload`` this is a thin client (same ``--hub``, ``--admin-token``,
``--ca-file`` and environment). Secrets go from here to the hub only:

- ``add --cookies-file F``: biliup's ``cookies.json`` or a file holding a cookie string;
- ``add --cookies S``, or ``BUPMESH_BILI_COOKIES`` in the environment, which keeps
  the cookies out of ``ps`` and shell history;
- ``add --qr``: the hub starts a TV QR login, this prints the QR code (and its
  URL) on stderr and polls until the phone confirms or the code expires.

stdout carries only results (``--json`` makes them one JSON value); progress
and errors go to stderr. Exit 0 on success, 1 when the hub refused or the QR
login expired, 2 for bad input (one line naming the flag).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from bupmesh.config import ConfigError, load_config
from client.http import ENV_KEYS as HUB_ENV_KEYS
from client.http import (
    HubClientSettings,
    HubError,
    add_hub_arguments,
    check_hub_url,
    connect,
    request,
)
from uploader.credentials import Credentials, CredentialsError

QR_GRACE_SECONDS = 10.0  # poll a little past the code's lifetime: the hub has the last word


class AccountSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    action: str
    name: str | None = None
    account: str | None = None
    cookies: str | None = None
    cookies_file: str | None = None
    qr: bool = False
    json: bool = False
    poll_interval: float = 1.0


ENV_KEYS = {
    **HUB_ENV_KEYS,
    # Preferred over --cookies: a flag shows up in `ps` to every local user.
    "BUPMESH_BILI_COOKIES": "cookies",
}


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="add an account (cookies, cookies.json or QR login)")
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--cookies-file", metavar="F", help="biliup cookies.json, or a file with a cookie string"
    )
    source.add_argument(
        "--cookies", metavar="S", help="cookie string (env BUPMESH_BILI_COOKIES is safer)"
    )
    source.add_argument(
        "--qr", action="store_true", default=None, help="log in by scanning a QR code"
    )
    add.add_argument("--name", metavar="N", help="account name (default bili-<mid>)")
    add.add_argument("--poll-interval", type=float, help=argparse.SUPPRESS)
    listing = actions.add_parser("list", help="list accounts (never their secrets)")
    check = actions.add_parser("check", help="ask Bilibili whether an account is logged in")
    check.add_argument("account", metavar="ACCOUNT", help="account name or id")
    delete = actions.add_parser("delete", help="delete an account and its secrets")
    delete.add_argument("account", metavar="ACCOUNT", help="account name or id")
    for sub in (add, listing, check, delete):
        add_hub_arguments(sub)
        sub.add_argument("--json", action="store_true", default=None, help="print JSON")


def settings_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> AccountSettings:
    flags = {
        "action": args.action,
        "hub": args.hub,
        "admin_token": args.admin_token,
        "ca_file": args.ca_file,
        "json": args.json,
        "name": getattr(args, "name", None),
        "account": getattr(args, "account", None),
        "cookies": getattr(args, "cookies", None),
        "cookies_file": getattr(args, "cookies_file", None),
        "qr": getattr(args, "qr", None),
        "poll_interval": getattr(args, "poll_interval", None),
    }
    settings = load_config(AccountSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    if not 0 < settings.poll_interval <= 60:
        raise ConfigError("--poll-interval: must be between 0 and 60 seconds")
    if settings.action == "add" and (settings.cookies_file or settings.qr):
        settings.cookies = None  # a flag beats BUPMESH_BILI_COOKIES from the environment
    if settings.action == "add" and not (settings.cookies_file or settings.cookies or settings.qr):
        raise ConfigError(
            "account add: give --cookies-file F, --cookies S (or BUPMESH_BILI_COOKIES), or --qr"
        )
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # Read and check local input before talking to the hub: bad input is exit 2.
    body = _add_body(settings) if settings.action == "add" and not settings.qr else None
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            if settings.action == "list":
                return _list(request(client, "GET", "/api/manage/accounts"), settings.json)
            if settings.action == "check":
                row = request(client, "POST", f"/api/manage/accounts/{_path(settings)}/check")
                _print_row(row, settings.json)
                return 0 if row.get("valid") else 1
            if settings.action == "delete":
                data = request(client, "DELETE", f"/api/manage/accounts/{_path(settings)}")
                _out(data, settings.json, f"deleted account {data.get('account_id')}")
                return 0
            if settings.qr:
                return _qr_login(client, settings)
            data = request(client, "POST", "/api/manage/accounts", json=body)
            _out({**data, "name": body["name"] if body else None}, settings.json,
                 f"account_id: {data.get('account_id')}\nname: {body['name'] if body else ''}")
            return 0
        except HubError as exc:
            _say(f"bupmesh account {settings.action}: {exc}")
            return 1


def _add_body(settings: AccountSettings) -> dict[str, Any]:
    """The ``POST /api/manage/accounts`` body; the cookies are checked here, never echoed."""
    body: dict[str, Any] = {}
    if settings.cookies_file:
        path = settings.cookies_file
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(1 << 20).strip()
        except OSError as exc:
            raise ConfigError(f"--cookies-file: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--cookies-file: {path} is not UTF-8 text") from None
        if text.startswith("{"):
            try:
                body["cookies_json"] = json.loads(text)
            except ValueError as exc:
                line = getattr(exc, "lineno", "?")
                raise ConfigError(f"--cookies-file: {path} is not valid JSON (line {line})") from None
        else:
            body["cookies"] = text
        where = "--cookies-file"
    else:
        body["cookies"] = settings.cookies
        where = "--cookies"
    try:
        if "cookies_json" in body:
            creds = Credentials.from_biliup_json(body["cookies_json"])
        else:
            creds = Credentials.from_cookie_string(body["cookies"])
    except CredentialsError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if settings.name:
        body["name"] = settings.name
    elif creds.mid is not None:
        body["name"] = f"bili-{creds.mid}"
    else:
        raise ConfigError("--name: required (the cookies carry no DedeUserID to name them by)")
    return body


def _qr_login(client: Any, settings: AccountSettings) -> int:
    started = request(
        client, "POST", "/api/manage/accounts/qr-login",
        json={"name": settings.name} if settings.name else {},
    )
    login_id, url = started.get("login_id"), started.get("url")
    if not isinstance(login_id, str) or not isinstance(url, str):
        raise HubError("the hub answered the QR login without login_id/url")
    _show_qr(url)
    _say(f"Scan with the Bilibili app, then confirm on the phone: {url}")
    deadline = time.monotonic() + float(started.get("expires_in") or 180) + QR_GRACE_SECONDS
    last_state = "waiting"
    while True:
        status = request(client, "GET", f"/api/manage/accounts/qr-login/{login_id}")
        state = status.get("state")
        if state != last_state and state == "scanned":
            _say("scanned: confirm the login on the phone")
        last_state = state
        if state == "done":
            _out(status, settings.json,
                 f"account_id: {status.get('account_id')}\nname: {status.get('name')}")
            return 0
        if state in ("expired", "failed"):
            reason = status.get("message") or "the QR code expired before it was confirmed"
            _say(f"bupmesh account add: QR login {state}: {reason}")
            return 1
        if time.monotonic() > deadline:
            _say("bupmesh account add: QR login did not finish in time")
            return 1
        time.sleep(settings.poll_interval)


def _show_qr(url: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(url)
    qr.make(fit=True)
    # Light modules on the terminal's dark background, as phone scanners expect.
    qr.print_ascii(out=sys.stderr, invert=True)


def _list(data: Any, as_json: bool) -> int:
    accounts = data.get("accounts", []) if isinstance(data, dict) else []
    if as_json:
        print(json.dumps(accounts), flush=True)
        return 0
    if not accounts:
        _say("no accounts; add one with `bupmesh account add`")
        return 0
    print(f"{'ID':>4}  {'NAME':<20} {'MID':>12}  {'UNAME':<20} VALID", flush=True)
    for row in accounts:
        print(f"{row.get('account_id'):>4}  {str(row.get('name')):<20} "
              f"{str(row.get('mid') or '-'):>12}  {str(row.get('uname') or '-'):<20} "
              f"{_verdict(row.get('valid'))}", flush=True)
    return 0


def _print_row(row: dict[str, Any], as_json: bool) -> None:
    _out(row, as_json, f"{row.get('name')}: {_verdict(row.get('valid'))}"
         + (f" as {row['uname']}" if row.get("uname") else ""))


def _verdict(valid: Any) -> str:
    return "unchecked" if valid is None else ("valid" if valid else "invalid")


def _path(settings: AccountSettings) -> str:
    return quote(settings.account or "", safe="")


def _out(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data) if as_json else text, flush=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
