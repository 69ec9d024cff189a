"""``bupmesh upload FILE``: ask a running hub to upload a file, optionally wait for it.

A thin admin-API client: ``POST /api/manage/parts`` with the file's absolute
path, then (with ``--wait``) ``GET /api/manage/tasks/{id}`` every half second
until the task ends. Progress goes to stderr (a rich bar on a terminal, a line
per status change or 10 % otherwise); stdout carries only results, so
``--json`` output can be piped. Exit 0 when the upload completed, 1 when it
failed or was cancelled or the hub could not be asked, 2 for bad input.

The path is resolved where this command runs and the hub opens it, so the
two usually share a machine or a mount. A file missing here is refused early
when the hub is on loopback (it cannot exist there either); for a remote hub
the hub has the last word.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from bupmesh.config import ConfigError, load_config
from bupmesh.progress_bar import ProgressBar
from client.http import (
    ENV_KEYS,
    HubClientSettings,
    HubError,
    Unreachable,
    add_hub_arguments,
    check_hub_url,
    connect,
    request,
)

TERMINAL = ("completed", "failed", "cancelled")
# Keep polling through a hub restart this long before giving up.
UNREACHABLE_GRACE_SECONDS = 60.0


class UploadSettings(HubClientSettings, forbid_unknown_fields=True, kw_only=True):
    file: str
    account: str | None = None
    title: str | None = None
    wait: bool = False
    json: bool = False
    timeout: float | None = None
    poll_interval: float = 0.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="the recording to upload (a path the hub can read)"
    )
    add_hub_arguments(parser)
    parser.add_argument("--account", metavar="NAME", help="Bilibili account to upload as")
    parser.add_argument("--title", metavar="T", help="title of the part")
    parser.add_argument(
        "--wait", action="store_true", default=None, help="wait for the upload and show progress"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=None,
        help="print one JSON object (task_id, part_id; with --wait also status, filename, biz_id)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long"
    )
    parser.add_argument("--poll-interval", type=float, help=argparse.SUPPRESS)


def settings_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> UploadSettings:
    flags = {
        "file": args.file,
        "hub": args.hub,
        "admin_token": args.admin_token,
        "ca_file": args.ca_file,
        "account": args.account,
        "title": args.title,
        "wait": args.wait,
        "json": args.json,
        "timeout": args.timeout,
        "poll_interval": args.poll_interval,
    }
    settings = load_config(UploadSettings, env=env, env_keys=ENV_KEYS, flags=flags)
    check_hub_url(settings.hub)
    if not settings.admin_token:
        raise ConfigError("--admin-token: required (or set BUPMESH_ADMIN_TOKEN)")
    if settings.timeout is not None and settings.timeout <= 0:
        raise ConfigError("--timeout: must be positive")
    if not 0 < settings.poll_interval <= 60:
        raise ConfigError("--poll-interval: must be between 0 and 60 seconds")
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    path = os.path.abspath(settings.file)
    _check_file(path, settings.hub)
    with connect(settings.hub, settings.admin_token, settings.ca_file) as client:
        try:
            created = request(client, "POST", "/api/manage/parts", json=_part_body(settings, path))
            task_id = created.get("task_id") if isinstance(created, dict) else None
            part_id = created.get("part_id") if isinstance(created, dict) else None
            if not settings.wait:
                if settings.json:
                    _print_json({"task_id": task_id, "part_id": part_id})
                else:
                    print(f"task_id: {task_id}\npart_id: {part_id}", flush=True)
                return 0
            if not task_id:
                raise HubError(f"the hub created part {part_id} but no task to wait for")
            _say(f"{os.path.basename(path)}: task {task_id} (part {part_id})")
            try:
                task = _wait(client, settings, str(task_id), os.path.basename(path))
            except KeyboardInterrupt:
                # Only the waiting stops; say so, so nobody thinks the upload was cancelled.
                _say(f"bupmesh upload: stopped waiting; task {task_id} carries on at the hub")
                raise
        except HubError as exc:
            _say(f"bupmesh upload: {exc}")
            return 1
    return _report(task, part_id, settings.json)


def _check_file(path: str, hub: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"FILE: {path} is a directory")
    if not os.path.exists(path) and _is_loopback(hub):
        raise ConfigError(f"FILE: no such file: {path}")


def _is_loopback(hub: str) -> bool:
    host = urlsplit(hub).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _part_body(settings: UploadSettings, path: str) -> dict[str, Any]:
    body: dict[str, Any] = {"file_path": path}
    if settings.account is not None:
        body["account"] = settings.account
    if settings.title is not None:
        body["title"] = settings.title
    return body


def _wait(client: httpx.Client, settings: UploadSettings, task_id: str, name: str) -> dict:
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    unreachable_since: float | None = None
    with _Progress(name, tty=sys.stderr.isatty() and not settings.json) as progress:
        while True:
            try:
                task = request(client, "GET", f"/api/manage/tasks/{task_id}")
                unreachable_since = None
            except Unreachable:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_GRACE_SECONDS:
                    raise
                task = None
            if isinstance(task, dict):
                progress.update(task)
                if task.get("status") in TERMINAL:
                    return task
            if deadline is not None and time.monotonic() >= deadline:
                raise HubError(f"task {task_id} did not finish within {settings.timeout:g}s")
            time.sleep(settings.poll_interval)


def _report(task: dict, part_id: Any, as_json: bool) -> int:
    result = task.get("result") or {}
    status = task.get("status")
    out = {
        "task_id": task.get("task_id"),
        "part_id": task.get("part_id", part_id),
        "status": status,
        "filename": result.get("filename") if isinstance(result, dict) else None,
        "biz_id": result.get("biz_id") if isinstance(result, dict) else None,
    }
    if status == "completed":
        if as_json:
            _print_json(out)
        else:
            print(f"filename: {out['filename']}\nbiz_id: {out['biz_id']}", flush=True)
        return 0
    error = task.get("error_message") or "no reason given"
    if as_json:
        _print_json({**out, "error_message": task.get("error_message")})
    _say(f"bupmesh upload: task {out['task_id']} {status}: {error}")
    return 1


def _print_json(value: dict) -> None:
    print(json.dumps(value), flush=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Progress:
    """Task progress on stderr: a bar on a terminal, a line per change otherwise."""

    def __init__(self, name: str, *, tty: bool) -> None:
        self.name = name
        self._bar = ProgressBar(name, enabled=tty, reported=True)
        self._last: tuple[Any, int] | None = None

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def update(self, task: dict) -> None:
        status = task.get("status")
        uploaded = _number(task.get("uploaded_bytes"))
        total = _number(task.get("total_bytes"))
        speed = _number(task.get("upload_speed"))
        eta = task.get("eta_seconds")
        eta_text = f"ETA {eta:.0f}s" if isinstance(eta, int | float) and eta >= 0 else ""
        speed_text = f"{speed / 1e6:.1f} MB/s" if speed else ""
        if self._bar.enabled:
            self._bar.update(uploaded, total=total or None, status=str(status),
                             speed=speed_text, eta=eta_text)
            return
        percent = int(uploaded * 100 / total) if total else 0
        # A line when the status changes or another 10 % is done.
        key = (status, percent // 10)
        if key == self._last:
            return
        self._last = key
        parts = [f"{status}", f"{percent}%", f"{uploaded / 1e6:.1f}/{total / 1e6:.1f} MB"]
        parts += [p for p in (speed_text, eta_text) if p]
        agent = task.get("agent_id")
        if agent:
            parts.append(f"agent {agent}")
        _say(f"{self.name}: " + " ".join(parts))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
