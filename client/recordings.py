"""``bupmesh recordings``: list a hub's recordings (or ask it to submit one).

An admin-API client like ``bupmesh upload`` (same ``--hub``, ``--admin-token``,
``--ca-file`` and environment): ``GET /api/manage/recordings``, printed as one
line per recording and one per part, or as JSON with ``--json``. ``--submit ID``
sends ``POST /api/manage/recordings/{ID}/submit`` first. Exit 0 on success, 1 when
the hub could not be asked or refused, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

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


class RecordingsSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    json: bool = False
    submit: int | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    add_hub_arguments(parser)
    parser.add_argument("--json", action="store_true", default=None,
                        help="print the hub's answer as JSON")
    parser.add_argument("--submit", type=int, metavar="ID",
                        help="ask the hub to submit recording ID (once every part is uploaded)")


def settings_from_args(args: argparse.Namespace,
                       env: dict[str, str] | None = None) -> RecordingsSettings:
    flags = {"hub": args.hub, "admin_token": args.admin_token, "ca_file": args.ca_file,
             "json": args.json, "submit": args.submit}
    settings = load_config(RecordingsSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            if settings.submit is not None:
                request(client, "POST", f"/api/manage/recordings/{settings.submit}/submit")
            data = request(client, "GET", "/api/manage/recordings")
        except HubError as exc:
            print(f"bupmesh recordings: {exc}", file=sys.stderr)
            return 1
    recordings = data.get("recordings", []) if isinstance(data, dict) else []
    if settings.json:
        print(json.dumps(recordings, ensure_ascii=False, indent=2))
        return 0
    print(format_table(recordings), end="")
    return 0


def format_table(recordings: list[dict[str, Any]]) -> str:
    if not recordings:
        return "no recordings\n"
    lines = []
    for r in recordings:
        start = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("started_at") or 0))
        state = r.get("state", "?")
        if r.get("bvid"):
            state += f" {r['bvid']}"
            review = r.get("review") or {}
            if review.get("state"):
                state += f" review {review['state']}"
                if review.get("reason"):
                    state += f" ({review['reason']})"
        elif r.get("waiting_for"):
            state += f" ({r['waiting_for']})"
        elif r.get("error_message"):
            state += f" ({r['error_message']})"
        lines.append(f"#{r.get('recording_id')} room {r.get('room_id')} "
                     f"{r.get('streamer') or '-'} {start} {r.get('title') or ''!r}: {state}")
        for p in r.get("parts", []):
            lines.append(f"    P{p.get('index')} {p.get('upload_state')} "
                         f"{p.get('filename') or '-'} {p.get('size')} B  {p.get('path')}")
    return "\n".join(lines) + "\n"
