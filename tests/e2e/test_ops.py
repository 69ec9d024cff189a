"""Running it for real (alerts, logs, audit, metrics), one real-process run shared by the tests below:

``bupmesh hub gen-cert`` makes a CA and a server certificate; a simulator, a TLS
hub using them (JSON logs, alerts to a webhook whose URL carries tokens, test-short
thresholds) and two agents trusting the CA upload a file with an account of
distinctive cookies; admin calls succeed and fail; agent-2 is SIGKILLed (the
webhook receiver here gets the offline alert) and started again (it gets the
recovery). Then every log, every API response body seen, and the database with
its -wal/-shm are searched for every secret of the run.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, bupmesh_argv, wait_for, write_random_file

pytestmark = pytest.mark.e2e

OFFLINE_AFTER = 2.0  # alerts.agent_offline_seconds for this run


class Webhook:
    """A loopback webhook receiver that records every JSON POST."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                hook.paths.append(self.path)
                hook.received.append({**body, "_received_at": time.time()})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def find(self, key: str, state: str) -> dict[str, Any] | None:
        return next((a for a in self.received if a["key"] == key and a["state"] == state), None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Run:
    mesh: LocalMesh
    tls_dir: Path
    webhook: Webhook
    secrets: dict[str, str]
    responses: list[bytes] = field(default_factory=list)
    upload: dict[str, Any] = field(default_factory=dict)
    md5: str = ""
    killed_at: float = 0.0
    restarted_at: float = 0.0
    audit: list[dict[str, Any]] = field(default_factory=list)
    gen_cert_output: str = ""


def _distinct(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(10)}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("ops")
    tls_dir = work / "tls"
    gen = subprocess.run(
        bupmesh_argv("hub", "gen-cert", "--out", str(tls_dir), "--ip", "127.0.0.1",
                     "--hostname", "localhost"),
        capture_output=True, text=True, timeout=60,
    )
    assert gen.returncode == 0, gen.stderr
    ca = tls_dir / "ca.pem"
    verify = ssl.create_default_context(cafile=str(ca))

    values = {
        "psk": _distinct("psk"),
        "admin_token": _distinct("adm"),
        "sessdata": _distinct("sess"),
        "bili_jct": _distinct("csrf"),
        "access_key": _distinct("akey"),
        "webhook_path_token": _distinct("hookpath"),
        "webhook_query_token": _distinct("hookquery"),
    }
    webhook = Webhook()
    hook_url = (f"http://127.0.0.1:{webhook.port}/hooks/{values['webhook_path_token']}"
                f"?key={values['webhook_query_token']}")
    cookies = f"SESSDATA={values['sessdata']}; bili_jct={values['bili_jct']}; DedeUserID=4242"
    config = (OPEN_RISK_YAML + "alerts:\n"
              f"  webhook_url: \"{hook_url}\"\n"
              f"  agent_offline_seconds: {OFFLINE_AFTER}\n"
              "  evaluate_interval_seconds: 0.25\n"
              "  low_speed_bps: 0\n")
    mesh = LocalMesh(work, psk=values["psk"], admin_token=values["admin_token"])
    r = Run(mesh=mesh, tls_dir=tls_dir, webhook=webhook, secrets=values,
            gen_cert_output=gen.stdout)

    def call(method: str, path: str, *, token: str | None = values["admin_token"],
             json_body: Any = None, keep: bool = True) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.request(method, f"{mesh.hub_url}{path}", json=json_body,
                                 headers=headers, verify=verify, timeout=30)
        if keep:
            r.responses.append(response.content)
        return response

    with mesh:
        try:
            mesh.start_sim()
            mesh.sim("POST", "/_sim/accounts", json={
                "cookies": cookies, "access_key": values["access_key"], "mid": 4242})
            # A killed agent's stream breaks at once (offline at once); the heartbeat timeout
            # stays generous so a busy agent on this shared machine is not declared lost.
            mesh.start_hub("--heartbeat-interval", "1", "--offline-after", "8",
                           "--log-format", "json", config_yaml=config,
                           tls=(str(tls_dir / "hub.crt"), str(tls_dir / "hub.key")))
            for index in (1, 2):
                mesh.start_agent(index, ca_file=str(ca))
            wait_for(lambda: len([a for a in call("GET", "/api/manage/agents").json()["data"]
                                  ["agents"] if a["status"] in ("online", "busy")]) == 2,
                     30, "two agents online over TLS")

            account = {"name": "main", "cookies": cookies, "access_key": values["access_key"],
                       "mid": 4242}
            assert call("POST", "/api/manage/accounts", json_body=account).status_code == 200
            source = work / "recording.flv"
            r.md5 = write_random_file(source, 3 * 1024 * 1024 + 17, seed=6)
            part = call("POST", "/api/manage/parts",
                        json_body={"file_path": str(source), "account": "main"}).json()["data"]
            task = wait_for(
                lambda: (t := call("GET", f"/api/manage/tasks/{part['task_id']}").json()["data"])
                and t["status"] in ("completed", "failed", "cancelled") and t,
                60, "the upload")
            assert task["status"] == "completed", task
            r.upload = next(u for u in mesh.sim_uploads() if u["md5"] == r.md5)

            # failing admin calls: duplicate account, wrong token, an agent's JWT, unknown task
            assert call("POST", "/api/manage/accounts", json_body=account).status_code == 409
            assert call("GET", "/api/manage/tasks", token=_distinct("wrong")).status_code == 401
            reg = call("POST", "/api/agent/register", token=values["psk"], keep=False,
                       json_body={"agent_id": "probe"})  # the one body that carries a JWT
            values["jwt"] = reg.json()["data"]["token"]
            assert call("GET", "/api/manage/agents", token=values["jwt"]).status_code == 401
            assert call("POST", "/api/manage/cancel-task",
                        json_body={"task_id": "no-such-task"}).status_code == 404

            # agent-2 dies without a word; later it comes back
            assert webhook.find("agent_offline:agent-2", "firing") is None
            agent2 = next(p for p in mesh.processes if p.name == "agent-2")
            agent2.kill()
            r.killed_at = time.time()
            wait_for(lambda: webhook.find("agent_offline:agent-2", "firing"), 30,
                     "the offline alert at the webhook")
            mesh.start_agent(2, ca_file=str(ca))
            r.restarted_at = time.time()
            wait_for(lambda: webhook.find("agent_offline:agent-2", "resolved"), 30,
                     "the recovery message at the webhook")
            r.audit = call("GET", "/api/manage/audit").json()["data"]["entries"]
            call("GET", "/metrics")
        finally:
            mesh.stop_all()
            webhook.close()
    yield r


def test_gen_cert_files_serve_a_tls_hub_and_agents(run: Run) -> None:
    out = run.gen_cert_output
    assert "--tls-cert" in out and "--ca-file" in out and str(run.tls_dir / "ca.pem") in out
    assert (run.tls_dir / "hub.key").stat().st_mode & 0o077 == 0
    assert (run.tls_dir / "ca.key").stat().st_mode & 0o077 == 0
    assert run.upload["size"] == 3 * 1024 * 1024 + 17 and run.upload["mid"] == 4242
    assert run.mesh.hub_url.startswith("https://")
    again = subprocess.run(bupmesh_argv("hub", "gen-cert", "--out", str(run.tls_dir)),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites silently


def test_offline_alert_after_the_threshold_then_recovery(run: Run) -> None:
    hook = run.webhook
    firing = hook.find("agent_offline:agent-2", "firing")
    resolved = hook.find("agent_offline:agent-2", "resolved")
    assert firing and resolved
    assert firing["alert"] == "agent_offline" and firing["subject"] == "agent-2"
    assert firing["severity"] == "critical" and firing["details"]["ip_address"] == "127.0.0.3"
    # not before the threshold had passed since the agent's last heartbeat
    assert firing["at"] - firing["details"]["last_heartbeat"] >= OFFLINE_AFTER
    assert firing["_received_at"] >= run.killed_at
    assert resolved["_received_at"] >= run.restarted_at and resolved["since"] == firing["since"]
    assert resolved["text"].startswith("[RESOLVED]")
    # one alert per condition: no repeats while it held
    keys = [(a["key"], a["state"]) for a in hook.received]
    assert keys.count(("agent_offline:agent-2", "firing")) == 1
    assert all(p.startswith("/hooks/") for p in hook.paths)
    hub_log = run.mesh.workdir / "hub.log"
    lines = [json.loads(line) for line in hub_log.read_text().splitlines()
             if line.startswith("{")]
    alert_lines = [e for e in lines if e["logger"] == "bupmesh.alerts"]
    assert any(e["msg"].startswith("ALERT agent_offline:agent-2") for e in alert_lines)
    assert any(e["msg"].startswith("RESOLVED agent_offline:agent-2") for e in alert_lines)


def test_admin_actions_are_in_the_audit_log(run: Run) -> None:
    seen = [(e["actor"], e["method"], e["route"], e["status"]) for e in reversed(run.audit)]
    assert ("admin", "POST", "/api/manage/accounts", 200) in seen
    assert ("admin", "POST", "/api/manage/parts", 200) in seen
    assert ("admin", "POST", "/api/manage/accounts", 409) in seen
    assert ("invalid-token", "GET", "/api/manage/tasks", 401) in seen
    assert ("agent:probe", "GET", "/api/manage/agents", 401) in seen
    assert ("admin", "POST", "/api/manage/cancel-task", 404) in seen


def _forms(value: str) -> set[str]:
    raw = value.encode()
    out = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        out |= {enc, enc.rstrip("=")}
    return out


def test_no_secret_in_logs_api_output_or_database(run: Run) -> None:
    places: dict[str, bytes] = {}
    for log in run.mesh.workdir.glob("*.log"):
        places[log.name] = log.read_bytes()
    for i, body in enumerate(run.responses):
        places[f"response {i}"] = body
    data = run.mesh.workdir / "hub-data"
    db_files = [p for p in data.iterdir() if p.name.startswith("bupmesh.db")]
    assert {p.name for p in db_files} >= {"bupmesh.db"}
    for path in db_files:
        places[path.name] = path.read_bytes()
    assert len(run.responses) > 10 and {"hub.log", "agent-1.log", "agent-2.log"} <= set(places)
    found = []
    for name, value in run.secrets.items():
        for form in _forms(value):
            for where, blob in places.items():
                if form.encode() in blob:
                    found.append(f"{name} ({form[:12]}...) in {where}")
    assert not found, found
    # and no JWT of any agent, whatever its value
    jwt = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
    assert not [w for w, blob in places.items() if jwt.search(blob)]
    # the run did log: the grep looked at real text
    assert b"agent-2" in places["hub.log"] and b"bupmesh.audit" in places["hub.log"]
