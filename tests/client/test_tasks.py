"""``bupmesh tasks``: follows the hub's cursor, stops at --limit, passes the filters."""

from __future__ import annotations

import argparse

import httpx
import pytest

from bupmesh.config import ConfigError
from client import tasks as cmd

TASKS = [{"task_id": f"t{i}", "status": "completed", "created_at": 0, "part_id": i}
         for i in reversed(range(1234))]


def fake_hub(seen: list[dict]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        start = int(params.get("cursor", "0"))
        limit = int(params["limit"])
        page = TASKS[start:start + limit]
        more = start + limit < len(TASKS)
        return httpx.Response(200, json={"code": 0, "message": "ok", "data": {
            "tasks": page, "next_cursor": str(start + limit) if more else None}})

    return httpx.Client(base_url="http://hub", transport=httpx.MockTransport(handler))


def test_walk_follows_the_cursor_to_the_end_or_the_limit() -> None:
    seen: list[dict] = []
    got = list(cmd.walk(fake_hub(seen), {"status": "completed", "agent": None}))
    assert got == TASKS
    assert all(p["status"] == "completed" and "agent" not in p for p in seen)
    assert [p.get("cursor") for p in seen] == [None, "500", "1000"]
    seen.clear()
    got = list(cmd.walk(fake_hub(seen), {}, limit=700))
    assert got == TASKS[:700]
    assert [int(p["limit"]) for p in seen] == [500, 200]


def test_settings_need_a_token_and_a_sane_limit() -> None:
    parser = argparse.ArgumentParser()
    cmd.configure(parser)
    args = parser.parse_args(["--admin-token", "t", "--status", "failed", "--limit", "0"])
    s = cmd.settings_from_args(args, env={})
    assert (s.status, s.limit) == ("failed", 0)
    with pytest.raises(ConfigError, match="admin-token"):
        cmd.settings_from_args(parser.parse_args([]), env={})
    with pytest.raises(ConfigError, match="limit"):
        cmd.settings_from_args(parser.parse_args(["--admin-token", "t", "--limit", "-1"]), env={})
    assert "t5" in cmd.format_line(TASKS[-6])
