"""``bupmesh tasks``: list a hub's tasks, newest first, a page at a time.

An admin-API client like ``bupmesh recordings`` (same ``--hub``, ``--admin-token``,
``--ca-file`` and environment): ``GET /api/manage/tasks`` with the filters given
(``--status``, ``--agent``, ``--account``, ``--recording``, ``--since``,
``--until``), following the hub's ``next_cursor`` until ``--limit`` tasks were
printed (``--limit 0``: all of them). One line per task, or JSON lines with
``--json``. Exit 0 on success, 1 when the hub could not be asked or refused, 2
for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

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

PAGE = 500  # tasks per request (the hub allows up to 1000)


class TasksSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    json: bool = False
    limit: int = 50
    status: str | None = None
    agent: str | None = None
    account: str | None = None
    recording: int | None = None
    since: float | None = None
    until: float | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    add_hub_arguments(parser)
    parser.add_argument("--status", help="only these statuses, comma-separated "
                        "(pending, assigned, uploading, completed, failed, cancelled)")
    parser.add_argument("--agent", metavar="ID", help="only tasks of this agent")
    parser.add_argument("--account", metavar="NAME", help="only tasks of this account")
    parser.add_argument("--recording", type=int, metavar="ID", help="only this recording's parts")
    parser.add_argument("--since", type=float, metavar="EPOCH", help="created at or after")
    parser.add_argument("--until", type=float, metavar="EPOCH", help="created before")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="print at most N tasks (default 50; 0: every one)")
    parser.add_argument("--json", action="store_true", default=None,
                        help="one JSON object per task per line")


def settings_from_args(args: argparse.Namespace,
                       env: dict[str, str] | None = None) -> TasksSettings:
    flags = {key: getattr(args, key) for key in (
        "hub", "admin_token", "ca_file", "json", "limit", "status", "agent", "account",
        "recording", "since", "until")}
    settings = load_config(TasksSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    if settings.limit < 0:
        raise ConfigError("--limit: expected 0 or more")
    return settings


def walk(client: httpx.Client, filters: dict[str, Any], limit: int = 0) -> Iterator[dict]:
    """Tasks newest first, page after page, at most ``limit`` of them (0: all)."""
    params = {k: v for k, v in filters.items() if v is not None}
    given = 0
    while True:
        want = PAGE if not limit else min(PAGE, limit - given)
        page = request(client, "GET", "/api/manage/tasks", params={**params, "limit": want})
        for task in page.get("tasks", []):
            yield task
            given += 1
        cursor = page.get("next_cursor")
        if not cursor or (limit and given >= limit):
            return
        params["cursor"] = cursor


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    filters = {"status": settings.status, "agent": settings.agent, "account": settings.account,
               "recording": settings.recording, "since": settings.since, "until": settings.until}
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            for task in walk(client, filters, settings.limit):
                print(json.dumps(task, ensure_ascii=False) if settings.json else format_line(task))
        except HubError as exc:
            print(f"bupmesh tasks: {exc}", file=sys.stderr)
            return 1
    return 0


def format_line(t: dict[str, Any]) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.get("created_at") or 0))
    tail = t.get("error_message") or (t.get("result") or {}).get("filename") or ""
    return (f"{t.get('task_id')} {created} {t.get('status')} {t.get('progress', 0):.0f}% "
            f"agent {t.get('agent_id') or '-'} part {t.get('part_id')} {tail}").rstrip()
