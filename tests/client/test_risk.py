"""``bupmesh risk``: each action's admin API call and what it prints (a mock hub)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest

from bupmesh.config import ConfigError
from client import risk

EVIDENCE = {"time": 1e9, "ip": "203.0.113.5", "agent_id": "a1", "kind": "406",
            "starts_last_hour": 4, "account": "10001", "shows_hourly_cap": 3}
LIMIT = {"scope": "ip", "subject": "203.0.113.5", "hourly_cap": 3, "decays_at": 1e9 + 86400,
         "evidence": [EVIDENCE]}
ANSWERS: dict[tuple[str, str], Any] = {
    ("GET", "/api/manage/ips"): {"ips": [{"ip": "203.0.113.5", "state": "capped",
                                          "agents_now": ["a1", "a2"],
                                          "link_addresses": ["10.1.0.2", "10.1.0.3"],
                                          "egress_reported": True, "uploads_last_hour": 3,
                                          "learned_hourly_cap": 3, "reason": "hourly cap"}],
                                 "learned": [LIMIT]},
    ("GET", "/api/manage/accounts/main%20one/risk"): {
        "name": "main one", "account_id": 1, "mid": 10001, "state": "penalised",
        "penalised": True, "penalty": "code 21515: 批量作弊投稿",
        "preupload": {"reason": "penalised", "last_hour": 1, "hourly_cap": 20, "last_day": 2},
        "submit": {"reason": "penalised", "last_hour": 0, "hourly_cap": 4, "last_day": 0},
        "learned": None, "captchas": [{"voucher": "voucher_9", "ip": "203.0.113.5"}]},
    ("POST", "/api/manage/accounts/1/risk/release"): {
        "name": "main", "account_id": 1, "mid": 10001, "state": "ok", "penalised": False,
        "preupload": {"reason": "ok"}, "submit": {"reason": "ok"}, "captchas": []},
    ("POST", "/api/manage/risk/forget"): {"learned": []},
    ("GET", "/api/manage/captchas"): {"captchas": [
        {"voucher": "voucher_9", "ip": "203.0.113.5", "account": "10001", "open": True,
         "raised_at": 1e9, "solved_at": None}]},
    ("POST", "/api/manage/captchas/voucher_9/solved"): {
        "voucher": "voucher_9", "ip": "203.0.113.5", "account": "10001", "solved_at": 1e9},
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bupmesh risk")
    risk.configure(parser)
    return parser.parse_args(argv)


def run_action(argv: list[str]) -> tuple[str, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = ANSWERS[(request.method, request.url.raw_path.decode())]
        return httpx.Response(200, json={"code": 0, "message": "ok", "data": data})

    args = parse([*argv, "--admin-token", "t"])
    settings = risk.settings_from_args(args, env={})
    with httpx.Client(base_url="http://hub", transport=httpx.MockTransport(handler)) as c:
        data = risk.call(c, settings)
    return risk.render(settings.action, data), seen


def test_ips_shows_egress_agents_links_and_evidence() -> None:
    text, _ = run_action(["ips"])
    assert "203.0.113.5  capped  agents a1,a2  links 10.1.0.2,10.1.0.3" in text
    assert "learned: ip 203.0.113.5 at most 3/h" in text
    assert "406 on 203.0.113.5 (agent a1) after 4 starts" in text


def test_account_release_forget_captchas_solved() -> None:
    text, _ = run_action(["account", "main one"])
    assert "penalised: code 21515" in text and "captcha needed: voucher_9" in text
    text, seen = run_action(["release", "1"])
    assert seen[0].method == "POST" and ": ok" in text
    for flags, body in ((["--ip", "203.0.113.5"], {"scope": "ip", "subject": "203.0.113.5"}),
                        (["--mesh"], {"scope": "mesh"}),
                        (["--account", "main"], {"scope": "account", "subject": "main"})):
        text, seen = run_action(["forget", *flags])
        assert json.loads(seen[0].content) == body and "no learned limit" in text
    text, _ = run_action(["captchas"])
    assert "voucher_9  IP 203.0.113.5  account 10001  open" in text
    text, seen = run_action(["solved", "voucher_9"])
    assert seen[0].url.path == "/api/manage/captchas/voucher_9/solved"
    assert "captcha voucher_9 solved" in text


def test_needs_an_admin_token() -> None:
    with pytest.raises(ConfigError, match="--admin-token"):
        risk.settings_from_args(parse(["captchas"]), env={})
