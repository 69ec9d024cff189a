"""``bupmesh hub agent-token create|list|revoke``: per-agent tokens, over a running hub's admin API.

A thin client like ``bupmesh account`` (same ``--hub``, ``--admin-token``,
``--ca-file`` and environment). It talks to the running hub rather than to its
database because only the hub can act on a change at once: a token created is
known to it without a restart, and a revoked one closes its agent's stream
within a second.

- ``create AGENT_ID [--expires 90d]``: prints the token (stdout, alone on its
  line, or in ``--json``) once; the hub keeps only its hash. Give it to the agent
  as ``--token`` / ``AGENT_TOKEN``, as you would the PSK.
- ``list [--agent AGENT_ID]``: id, agent, state, created, expires, last used.
- ``revoke TOKEN_ID``: the agent's stream on it closes, its JWTs are refused.

Exit 0 on success, 1 when the hub refused, 2 for bad input (one line naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from bupmesh.config import ConfigError, load_config, parse_duration
from client.http import (
    ENV_KEYS,
    HubClientSettings,
    HubError,
    add_hub_arguments,
    check_hub_url,
    connect,
    request,
)


class TokenSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    action: str
    agent_id: str | None = None
    token_id: str | None = None
    expires: str | None = None
    json: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    create = actions.add_parser("create", help="create a token for one agent id (shown once)")
    create.add_argument("agent_id", metavar="AGENT_ID", help="the agent id it admits")
    create.add_argument("--expires", metavar="DURATION",
                        help="lifetime such as 90d, 12h, 3600 (default: never expires)")
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--agent", dest="agent_id", metavar="AGENT_ID",
                         help="only this agent's tokens")
    revoke = actions.add_parser("revoke", help="revoke a token: its agent is cut off at once")
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the token's id (from list)")
    for sub in (create, listing, revoke):
        add_hub_arguments(sub)
        sub.add_argument("--json", action="store_true", default=None, help="print JSON")


def settings_from_args(args: argparse.Namespace,
                       env: dict[str, str] | None = None) -> TokenSettings:
    flags = {
        "action": args.action,
        "hub": args.hub,
        "admin_token": args.admin_token,
        "ca_file": args.ca_file,
        "json": args.json,
        "agent_id": getattr(args, "agent_id", None),
        "token_id": getattr(args, "token_id", None),
        "expires": getattr(args, "expires", None),
    }
    settings = load_config(TokenSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    if settings.expires is not None and parse_duration(settings.expires, key="--expires") <= 0:
        raise ConfigError("--expires: must be positive")
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            if settings.action == "create":
                body: dict[str, Any] = {"agent_id": settings.agent_id}
                if settings.expires is not None:
                    body["expires"] = parse_duration(settings.expires, key="--expires")
                data = request(client, "POST", "/api/manage/agent-tokens", json=body)
                return _created(data, settings.json)
            if settings.action == "list":
                params = {"agent_id": settings.agent_id} if settings.agent_id else None
                data = request(client, "GET", "/api/manage/agent-tokens", params=params)
                return _list(data.get("tokens", []) if isinstance(data, dict) else [],
                             settings.json)
            path = f"/api/manage/agent-tokens/{quote(settings.token_id or '', safe='')}/revoke"
            data = request(client, "POST", path)
            _out(data, settings.json, f"revoked {data.get('token_id')} of agent "
                                      f"{data.get('agent_id')}")
            return 0
        except HubError as exc:
            _say(f"bupmesh hub agent-token {settings.action}: {exc}")
            return 1


def _created(data: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(data), flush=True)
        return 0
    expires = _when(data.get("expires_at")) if data.get("expires_at") else "never"
    _say(f"token {data.get('token_id')} for agent {data.get('agent_id')} (expires {expires}); "
         "shown only now: give it to the agent as --token or AGENT_TOKEN")
    print(data.get("token"), flush=True)
    return 0


def _list(tokens: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(tokens), flush=True)
        return 0
    if not tokens:
        _say("no agent tokens; create one with `bupmesh hub agent-token create AGENT_ID`")
        return 0
    print(f"{'TOKEN':<12}  {'AGENT':<24} {'STATE':<8} {'CREATED':<16}  {'EXPIRES':<16}  "
          "LAST USED", flush=True)
    for row in tokens:
        print(f"{row.get('token_id'):<12}  {str(row.get('agent_id')):<24} "
              f"{str(row.get('state')):<8} {_when(row.get('created_at')):<16}  "
              f"{_when(row.get('expires_at')) if row.get('expires_at') else 'never':<16}  "
              f"{_when(row.get('last_used_at')) if row.get('last_used_at') else '-'}",
              flush=True)
    return 0


def _when(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(t))) if t else "-"


def _out(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data) if as_json else text, flush=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
