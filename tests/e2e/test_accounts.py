"""Accounts end to end: a real hub and simulator, every way of adding an account, and no leaks.

The hub's passport and api URLs point at the simulator, whose control API
plays the user's phone for QR logins. After adding accounts by cookie
string, by biliup ``cookies.json``, by QR login over the API and through
``bupmesh account add`` (file, environment, QR), every secret used is looked
for in the database file and its WAL, the hub log, every API response and
the CLI's output: none may appear.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bupmesh.localmesh import (
    OPEN_RISK_YAML,
    LocalMesh,
    bupmesh_argv,
    wait_for,
    write_random_file,
)

pytestmark = pytest.mark.e2e

LIVE = {"SESSDATA": "e2e-live-SESS-9f8e7d", "bili_jct": "e2e-live-JCT-6c5b4a", "DedeUserID": "6001"}
DEAD = {"SESSDATA": "e2e-dead-SESS-1a2b3c", "bili_jct": "e2e-dead-JCT-4d5e6f", "DedeUserID": "6002"}
JSON_COOKIES = {"SESSDATA": "e2e-json-SESS-0a9b8c", "bili_jct": "e2e-json-JCT-7d6e5f",
                "DedeUserID": "6003"}
JSON_ACCESS = "e2e-json-ACCESS-3c2d1e"
JSON_REFRESH = "e2e-json-REFRESH-f0e1d2"
ENV_COOKIES = {"SESSDATA": "e2e-env-SESS-5a6b7c", "bili_jct": "e2e-env-JCT-8d9e0f",
               "DedeUserID": "6004"}
EXTRA_ACCESS = "e2e-extra-ACCESS-112233"


def cookie_string(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def biliup_json(cookies: dict[str, str], access: str, refresh: str, mid: int) -> dict[str, Any]:
    return {
        "cookie_info": {"cookies": [{"name": k, "value": v} for k, v in cookies.items()]},
        "token_info": {"access_token": access, "mid": mid, "refresh_token": refresh,
                       "expires_in": 15552000},
    }


class Recorder:
    """Every admin API call goes through here, so every response body can be checked."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self.bodies: list[bytes] = []

    def call(self, method: str, path: str, json_body: Any = None, expect: int = 200) -> Any:
        response = httpx.request(
            method, f"{self.mesh.hub_url}{path}", json=json_body, timeout=30,
            headers={"Authorization": f"Bearer {self.mesh.admin_token}"},
        )
        self.bodies.append(response.content)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response.json()["data"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("accounts"),
                   media_roots=(str(tmp_path_factory.getbasetemp()),)) as local:
        local.start_sim()
        local.start_hub(config_yaml=OPEN_RISK_YAML + (
            f"bilibili:\n  passport_url: {local.sim_url}\n  api_url: {local.sim_url}\n"
        ))
        for cookies in (LIVE, JSON_COOKIES, ENV_COOKIES):
            local.sim("POST", "/_sim/accounts", json={"cookies": cookie_string(cookies)})
        local.sim("POST", "/_sim/accounts", json={"cookies": cookie_string(DEAD), "expired": True})
        local.sim("POST", "/_sim/accounts", json={"access_key": JSON_ACCESS, "mid": 6003})
        yield local


def pending_qr_code(mesh: LocalMesh, known: set[str]) -> str:
    def fresh() -> str | None:
        for row in mesh.sim("GET", "/_sim/qr")["sessions"]:
            if row["state"] == "waiting" and row["auth_code"] not in known:
                return row["auth_code"]
        return None

    code = wait_for(fresh, 20, "a new QR code at the simulator")
    known.add(code)
    return code


def play_phone(mesh: LocalMesh, auth_code: str, mid: int) -> None:
    mesh.sim("POST", f"/_sim/qr/{auth_code}/scan")
    mesh.sim("POST", f"/_sim/qr/{auth_code}/confirm", json={"mid": mid, "uname": f"user{mid}"})


def cli(mesh: LocalMesh, *args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bupmesh_argv("account", *args, "--hub", mesh.hub_url), capture_output=True, text=True,
        timeout=timeout, cwd=mesh.workdir,
        env={**os.environ, "BUPMESH_ADMIN_TOKEN": mesh.admin_token, **(env or {})},
    )


def test_every_way_to_add_an_account_and_no_secret_anywhere(mesh: LocalMesh,
                                                            tmp_path: Path) -> None:
    api = Recorder(mesh)
    known_codes: set[str] = set()
    outputs: list[str] = []

    # 1. cookie string (+ an explicit access key) and 2. biliup cookies.json, over the API
    api.call("POST", "/api/manage/accounts",
             {"name": "live", "cookies": cookie_string(LIVE), "access_key": EXTRA_ACCESS})
    api.call("POST", "/api/manage/accounts",
             {"name": "dead", "cookies": cookie_string(DEAD)})
    api.call("POST", "/api/manage/accounts",
             {"name": "json", "cookies_json": biliup_json(JSON_COOKIES, JSON_ACCESS,
                                                          JSON_REFRESH, 6003)})
    # 3. QR login over the API: waiting -> scanned -> done
    started = api.call("POST", "/api/manage/accounts/qr-login", {"name": "qr"})
    code = pending_qr_code(mesh, known_codes)
    assert code in started["url"]
    path = f"/api/manage/accounts/qr-login/{started['login_id']}"
    assert api.call("GET", path)["state"] == "waiting"
    mesh.sim("POST", f"/_sim/qr/{code}/scan")
    wait_for(lambda: api.call("GET", path)["state"] == "scanned", 10, "state scanned")
    mesh.sim("POST", f"/_sim/qr/{code}/confirm", json={"mid": 7001, "uname": "qr-owner"})
    done = wait_for(lambda: (s := api.call("GET", path))["state"] == "done" and s, 10, "done")
    assert done["name"] == "qr" and done["mid"] == 7001

    # 4. the CLI: cookies.json from a file, a cookie string from the environment, a QR login
    cookies_file = tmp_path / "cookies.json"
    cookies_file.write_text(json.dumps(biliup_json(LIVE, "e2e-file-ACCESS-445566",
                                                   "e2e-file-REFRESH-778899", 6001)))
    by_file = cli(mesh, "add", "--cookies-file", str(cookies_file), "--name", "from-file")
    by_env = cli(mesh, "add", "--json", env={"BUPMESH_BILI_COOKIES": cookie_string(ENV_COOKIES)})
    for result in (by_file, by_env):
        outputs += [result.stdout, result.stderr]
        assert result.returncode == 0, result.stderr
    assert json.loads(by_env.stdout)["name"] == "bili-6004"
    qr_cli = subprocess.Popen(
        bupmesh_argv("account", "add", "--qr", "--poll-interval", "0.2", "--hub", mesh.hub_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=mesh.workdir,
        env={**os.environ, "BUPMESH_ADMIN_TOKEN": mesh.admin_token},
    )
    try:
        cli_code = pending_qr_code(mesh, known_codes)
        play_phone(mesh, cli_code, 7002)
        out, err = qr_cli.communicate(timeout=30)
    finally:
        qr_cli.kill()
    outputs += [out, err]
    assert qr_cli.returncode == 0, err
    assert "name: bili-7002" in out and cli_code in err  # the URL is shown next to the QR
    assert "\u2580" in err or "\u2584" in err or "\u2588" in err  # a QR drawn in blocks

    # Validity: a check asks nav with the cookies and stores the verdict.
    checked = {name: api.call("POST", f"/api/manage/accounts/{name}/check")
               for name in ("live", "dead", "json", "qr", "from-file", "bili-6004", "bili-7002")}
    assert {n: c["valid"] for n, c in checked.items()} == {
        "live": True, "dead": False, "json": True, "qr": True, "from-file": True,
        "bili-6004": True, "bili-7002": True,
    }
    assert checked["qr"]["uname"] == "qr-owner" and checked["dead"]["uname"] is None
    listed = {a["name"]: a for a in api.call("GET", "/api/manage/accounts")["accounts"]}
    assert listed["live"]["valid"] is True and listed["live"]["checked_at"]
    assert listed["json"]["has_refresh_token"] and listed["qr"]["has_access_key"]
    listing = cli(mesh, "list")
    outputs += [listing.stdout, listing.stderr]
    assert "qr-owner" in listing.stdout and "invalid" in listing.stdout

    # The QR account's stored secrets really work through the mesh: one upload.
    mesh.start_agent(1)
    mesh.wait_agents_online(1)
    source = tmp_path / "qr.flv"
    md5 = write_random_file(source, 300_000, seed=5)
    task = api.call("POST", "/api/manage/parts", {"file_path": str(source), "account": "qr"})
    [final] = mesh.wait_tasks([task["task_id"]], timeout=60)
    assert final["status"] == "completed", final
    [ledger] = [u for u in mesh.sim_uploads() if u["filename"] == final["result"]["filename"]]
    assert ledger["md5"] == md5 and ledger["mid"] == 7001

    # Delete: gone from the list, a second delete is a 404.
    api.call("DELETE", "/api/manage/accounts/dead")
    api.call("DELETE", "/api/manage/accounts/dead", expect=404)
    assert "dead" not in {a["name"] for a in api.call("GET", "/api/manage/accounts")["accounts"]}

    # Now look for every secret used, everywhere it must not be.
    issued = [v for row in mesh.sim("GET", "/_sim/qr")["sessions"] if row["issued"]
              for v in row["issued"].values()]
    assert len(issued) == 8  # two logins: SESSDATA, bili_jct, access and refresh token each
    secrets = [LIVE["SESSDATA"], LIVE["bili_jct"], DEAD["SESSDATA"], DEAD["bili_jct"],
               JSON_COOKIES["SESSDATA"], JSON_COOKIES["bili_jct"], JSON_ACCESS, JSON_REFRESH,
               ENV_COOKIES["SESSDATA"], ENV_COOKIES["bili_jct"], EXTRA_ACCESS,
               "e2e-file-ACCESS-445566", "e2e-file-REFRESH-778899", *issued]
    data_dir = mesh.workdir / "hub-data"
    db_files = sorted(p for p in data_dir.iterdir() if p.name.startswith("bupmesh.db"))
    assert "bupmesh.db-wal" in [p.name for p in db_files]  # the hub holds it open: WAL mode
    places = {p.name: p.read_bytes() for p in db_files}
    places["hub.log"] = (mesh.workdir / "hub.log").read_bytes()
    places.update({f"response {i}": body for i, body in enumerate(api.bodies)})
    places.update({f"cli output {i}": text.encode() for i, text in enumerate(outputs)})
    assert len(api.bodies) > 15
    for where, blob in places.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret} found in {where}"
    # ...and they are really in there, encrypted: the hub could upload with them.
    assert b"e2e-" not in places["bupmesh.db"] + places["bupmesh.db-wal"]


def test_cli_errors_are_one_line(mesh: LocalMesh, tmp_path: Path) -> None:
    def fails(code: int, text: str, *args: str, **kw: Any) -> None:
        result = cli(mesh, *args, **kw)
        assert result.returncode == code and text in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "only-SECRET-value" not in result.stderr + result.stdout

    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"cookie_info": ')
    fails(2, "not valid JSON", "add", "--cookies-file", str(bad_json))
    fails(2, "--name: required", "add", env={"BUPMESH_BILI_COOKIES": "SESSDATA=only-SECRET-value"})
    result = cli(mesh, "add", "--cookies", cookie_string(LIVE), "--name", "twice")
    assert result.returncode == 0, result.stderr
    fails(1, "already exists", "add", "--cookies", cookie_string(LIVE), "--name", "twice")
    fails(1, "404", "check", "no-such-account")
    fails(1, "refused the admin token", "list", env={"BUPMESH_ADMIN_TOKEN": "wrong"})
