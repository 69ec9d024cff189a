"""``bupmesh risk``: what the hub's two risk ledgers hold, and the admin's levers on them.

An admin-API client like ``bupmesh recordings`` (same ``--hub``, ``--admin-token``,
``--ca-file`` and environment):

- ``risk ips``: each egress IP's standing (``GET /api/manage/ips``) and every live
  learned limit with its evidence;
- ``risk account ACCOUNT``: one account's standing (``GET /api/manage/accounts/{id}/risk``);
- ``risk release ACCOUNT``: lift an account's penalty and cooldowns;
- ``risk forget --ip IP | --mesh | --account ACCOUNT``: forget a learned limit;
- ``risk captchas``: the captchas Bilibili asked for; ``risk solved VOUCHER``: one
  was solved (in a browser or the app, as that account): its cooldowns end now.

stdout carries only results (``--json`` makes them one JSON value). Exit 0 on
success, 1 when the hub could not be asked or refused, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from bupmesh.config import ConfigError, load_config
from client.http import (
    ENV_KEYS,
    HubClientSettings,
    HubError,
    add_hub_arguments,
    check_hub_url,
    connect,
    request,
)


class RiskSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    action: str
    json: bool = False
    account: str | None = None
    voucher: str | None = None
    ip: str | None = None
    mesh: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ips = actions.add_parser("ips", help="each egress IP's standing and the learned limits")
    account = actions.add_parser("account", help="one account's standing")
    account.add_argument("account", metavar="ACCOUNT", help="account name or id")
    release = actions.add_parser("release", help="lift an account's penalty and cooldowns")
    release.add_argument("account", metavar="ACCOUNT", help="account name or id")
    forget = actions.add_parser("forget", help="forget a learned limit")
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("--ip", metavar="IP", help="the limit this egress IP learned")
    which.add_argument("--mesh", action="store_true", default=None,
                       help="the limit every IP is held to")
    which.add_argument("--account", metavar="ACCOUNT", help="the limit this account learned")
    captchas = actions.add_parser("captchas", help="captchas Bilibili asked for")
    solved = actions.add_parser("solved", help="a captcha was solved: end its cooldowns")
    solved.add_argument("voucher", metavar="VOUCHER", help="the captcha's voucher")
    for sub in (ips, account, release, forget, captchas, solved):
        add_hub_arguments(sub)
        sub.add_argument("--json", action="store_true", default=None, help="print JSON")


def settings_from_args(args: argparse.Namespace,
                       env: dict[str, str] | None = None) -> RiskSettings:
    flags = {"action": args.action, "hub": args.hub, "admin_token": args.admin_token,
             "ca_file": args.ca_file, "json": args.json,
             **{k: getattr(args, k, None) for k in ("account", "voucher", "ip", "mesh")}}
    settings = load_config(RiskSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    return settings


def call(client: Any, settings: RiskSettings) -> Any:
    """The admin API call(s) an action makes; the data to print."""
    action = settings.action
    account = quote(settings.account or "", safe="")
    if action == "ips":
        return request(client, "GET", "/api/manage/ips")
    if action == "account":
        return request(client, "GET", f"/api/manage/accounts/{account}/risk")
    if action == "release":
        return request(client, "POST", f"/api/manage/accounts/{account}/risk/release")
    if action == "forget":
        if settings.ip:
            body: dict[str, Any] = {"scope": "ip", "subject": settings.ip}
        elif settings.mesh:
            body = {"scope": "mesh"}
        else:
            body = {"scope": "account", "subject": settings.account}
        return request(client, "POST", "/api/manage/risk/forget", json=body)
    if action == "captchas":
        return request(client, "GET", "/api/manage/captchas")
    if action == "solved":
        voucher = quote(settings.voucher or "", safe="")
        return request(client, "POST", f"/api/manage/captchas/{voucher}/solved")
    raise ConfigError(f"risk: unknown action {action!r}")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            data = call(client, settings)
        except HubError as exc:
            print(f"bupmesh risk {settings.action}: {exc}", file=sys.stderr)
            return 1
    if settings.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(render(settings.action, data), end="")
    return 0


def render(action: str, data: Any) -> str:
    """Plain text for a person; ``--json`` gives the hub's answer as it is."""
    if action == "ips":
        lines = [_ip_line(row) for row in data.get("ips", [])] or ["no IPs yet"]
        return "\n".join(lines + _learned_lines(data.get("learned", []))) + "\n"
    if action in ("account", "release"):
        return _account_text(data)
    if action == "forget":
        return "\n".join(_learned_lines(data.get("learned", [])) or ["no learned limit"]) + "\n"
    if action == "captchas":
        rows = data.get("captchas", [])
        lines = [f"{c['voucher']}  IP {c['ip']}  account {c['account'] or '?'}  "
                 f"{'open' if c['open'] else 'solved' if c.get('solved_at') else 'expired'}"
                 f"  since {_when(c['raised_at'])}" for c in rows]
        return "\n".join(lines or ["no captchas"]) + "\n"
    if action == "solved":
        return f"captcha {data['voucher']} solved: IP {data['ip']} and account " \
               f"{data['account'] or '?'} may go on\n"
    return json.dumps(data) + "\n"


def _ip_line(row: dict[str, Any]) -> str:
    agents = ",".join(row.get("agents_now") or row.get("agents") or []) or "-"
    links = ",".join(row.get("link_addresses") or []) or "-"
    cap = row.get("learned_hourly_cap")
    learned = f"  learned {cap}/h" if cap else ""
    egress = "" if row.get("egress_reported", True) else " (reported, egress not known)"
    return (f"{row['ip']}{egress}  {row.get('state')}  agents {agents}  links {links}  "
            f"{row.get('uploads_last_hour', 0)} this hour{learned}  {row.get('reason') or ''}")


def _learned_lines(limits: list[dict[str, Any]]) -> list[str]:
    lines = []
    for lim in limits:
        who = "every IP" if lim["scope"] == "mesh" else f"{lim['scope']} {lim['subject']}"
        lines.append(f"learned: {who} at most {lim['hourly_cap']}/h until "
                     f"{_when(lim['decays_at'])} unless refused again")
        for e in lim.get("evidence", []):
            lines.append(f"    {_when(e['time'])} {e['kind']} on {e['ip']} (agent "
                         f"{e['agent_id']}) after {e['starts_last_hour']} starts that hour")
    return lines


def _account_text(d: dict[str, Any]) -> str:
    pre, sub = d.get("preupload", {}), d.get("submit", {})
    lines = [f"account {d.get('name')} (id {d.get('account_id')}, mid {d.get('mid')}): "
             f"{d.get('state')}" + (f", penalised: {d['penalty']}" if d.get("penalised") else ""),
             f"  uploads: {pre.get('reason')}; {pre.get('last_hour')} this hour "
             f"(cap {pre.get('hourly_cap') or '-'}), {pre.get('last_day')} today",
             f"  submissions: {sub.get('reason')}; {sub.get('last_hour')} this hour "
             f"(cap {sub.get('hourly_cap') or '-'}), {sub.get('last_day')} today"]
    if d.get("learned"):
        lines += _learned_lines([d["learned"]])
    for c in d.get("captchas", []):
        lines.append(f"  captcha needed: {c['voucher']} (IP {c['ip']})")
    return "\n".join(lines) + "\n"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
