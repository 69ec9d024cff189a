"""A whole mesh on this machine: simulator, hub and agents as real processes.

The demo, the end-to-end tests and the benchmarks all need the same thing:
start ``bupmesh sim-bili``, ``bupmesh hub`` and a few ``bupmesh agent``
processes on loopback (each agent bound to its own 127.0.0.N so the simulator
sees distinct IPs), talk to the hub's admin API, and tear everything down no
matter what. Keeping that in one place keeps the three honest with each other.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import httpx

SIM_COOKIES = "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001"
# The hub paces each IP to one upload start per 5 minutes and each account to a few
# submissions an hour by default (``risk``, ``risk.account``), which is right for
# Bilibili and far too slow for a demo or a benchmark against the simulator, whose
# risk model is off unless configured.
OPEN_ACCOUNT_YAML = (  # goes under a ``risk:`` mapping
    "  account:\n    preupload_min_gap_seconds: 0\n    preuploads_per_hour: 0\n"
    "    preuploads_per_day: 0\n    submit_min_gap_seconds: 0\n    submit_gap_jitter: 0\n"
    "    submits_per_hour: 0\n    submits_per_day: 0\n"
)
OPEN_RISK_YAML = ("risk:\n  min_interval_seconds: 0\n  max_uploads_per_hour: 100000\n"
                  + OPEN_ACCOUNT_YAML)
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def bupmesh_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "bupmesh", *args]


class MeshError(RuntimeError):
    """A process of the local mesh failed to start or answer."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    _log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@dataclass
class LocalMesh:
    """Owns every process it starts; use as a context manager."""

    workdir: Path
    # hex, not urlsafe: a value starting with "-" would read as a flag to argparse
    psk: str = field(default_factory=lambda: secrets.token_hex(16))
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    extra_env: dict[str, str] = field(default_factory=dict)
    # Directories the hub may upload from (--media-root); none: the hub's default, the
    # directory it runs in (the workdir).
    media_roots: tuple[str, ...] = ()
    processes: list[Process] = field(default_factory=list)
    sim_url: str = ""
    hub_url: str = ""
    grpc_address: str = ""
    hub_args: tuple[tuple[str, ...], tuple[str, str] | None] = ((), None)  # for restart_hub

    def __enter__(self) -> LocalMesh:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ------------------------------------------------------------- processes

    def spawn(self, name: str, argv: Sequence[str], *, relay_log: bool = False) -> Process:
        """Start a process logging to ``<workdir>/<name>.log``.

        With ``relay_log`` the process writes its log into a pipe and this
        process copies it to the file, so the child itself writes nothing to
        disk (what /proc/PID/io counts when a benchmark checks an agent).
        """
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - owned by Process
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        popen = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE if relay_log else log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
        )
        if relay_log:
            threading.Thread(target=_relay, args=(popen.stdout, log), daemon=True).start()
        process = Process(name=name, popen=popen, log_path=log_path, _log=log)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        # Agents first so they drain before the hub goes away.
        for process in sorted(self.processes, key=lambda p: not p.name.startswith("agent")):
            process.stop()

    def start_sim(self, *extra: str) -> Process:
        port = free_port()
        process = self.spawn("sim", bupmesh_argv("sim-bili", "--listen", f"127.0.0.1:{port}", *extra))
        self.sim_url = f"http://127.0.0.1:{port}"
        self._wait_http(f"{self.sim_url}/_sim/config", process)
        return process

    def start_hub(self, *extra: str, http_port: int | None = None,
                  grpc_port: int | None = None, tls: tuple[str, str] | None = None,
                  config_yaml: str | None = None) -> Process:
        """Start ``bupmesh hub``; ``config_yaml`` becomes its ``--config`` file."""
        if config_yaml is not None:
            config_path = self.workdir / "hub.yml"
            config_path.write_text(config_yaml)
            extra = ("--config", str(config_path), *extra)
        http_port = http_port or free_port()
        grpc_port = grpc_port or free_port()
        argv = [
            "hub", "--data-dir", str(self.workdir / "hub-data"),
            "--http-listen", f"127.0.0.1:{http_port}", "--grpc-listen", f"127.0.0.1:{grpc_port}",
            "--psk", self.psk, "--admin-token", self.admin_token,
        ]
        if self.sim_url:
            argv += ["--bili-member-url", self.sim_url]
        for root in self.media_roots:
            argv += ["--media-root", str(root)]
        argv += ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else ["--insecure"]
        process = self.spawn("hub", bupmesh_argv(*argv, *extra))
        self.hub_args = (tuple(extra), tls)
        scheme = "https" if tls else "http"
        self.hub_url = f"{scheme}://127.0.0.1:{http_port}"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self._wait_http(f"{self.hub_url}/healthz", process, verify=not tls)
        return process

    def restart_hub(self) -> Process:
        """Start the hub again on the same ports, data dir and arguments (after a crash).

        The previous hub process must be gone (``Process.kill``/``stop``); what it
        wrote to ``hub-data`` is all the new one gets, as after a real restart.
        """
        if not self.hub_url:
            raise MeshError("restart_hub: no hub was started")
        extra, tls = self.hub_args
        http_port = int(self.hub_url.rsplit(":", 1)[1])
        grpc_port = int(self.grpc_address.rsplit(":", 1)[1])
        return self.start_hub(*extra, http_port=http_port, grpc_port=grpc_port, tls=tls)

    def start_agent(self, index: int, *extra: str, ca_file: str | None = None,
                    agent_id: str | None = None, token: str | None = None,
                    relay_log: bool = False, proxy: str | None = None) -> Process:
        """Agent ``index`` (1-based) binds its Bilibili traffic to 127.0.0.<index+1>, or sends
        it through ``proxy`` (which then decides the address Bilibili sees)."""
        agent_id = agent_id or f"agent-{index}"
        argv = [
            "agent", "--server-url", self.grpc_address, "--agent-id", agent_id,
            "--agent-name", f"Agent {index}", "--token", token or self.psk,
            *(("--proxy", proxy) if proxy else ("--source-ip", f"127.0.0.{index + 1}")),
        ]
        argv += ["--ca-file", ca_file] if ca_file else ["--insecure"]
        # The agent asks Bilibili (here the simulator) which address it sees; with no
        # simulator there is nobody on loopback to ask.
        argv += ["--bili-api-url", self.sim_url] if self.sim_url else ["--egress-check-interval", "0"]
        return self.spawn(f"agent-{index}", bupmesh_argv(*argv, *extra), relay_log=relay_log)

    def _wait_http(self, url: str, process: Process, timeout: float = 30.0, verify: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise MeshError(f"{process.name} exited ({process.popen.returncode}):\n{process.log_text()[-3000:]}")
            try:
                httpx.get(url, timeout=1.0, verify=verify)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise MeshError(f"{process.name} did not answer {url} within {timeout}s")

    # ------------------------------------------------------------- admin API

    def admin(self, method: str, path: str, *, json: Any = None, verify: Any = True) -> Any:
        response = httpx.request(
            method, f"{self.hub_url}{path}", json=json, timeout=30, verify=verify,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        body = response.json()
        if response.status_code >= 400 or body.get("code") != 0:
            raise MeshError(f"{method} {path}: HTTP {response.status_code} {body.get('message')}")
        return body["data"]

    def all_tasks(self, **filters: str) -> list[dict]:
        """Every task the hub lists (``GET /api/manage/tasks`` page by page, newest first);
        ``filters`` are its query parameters (status, agent, account, ...)."""
        tasks: list[dict] = []
        params = {**filters, "limit": "1000"}
        while True:
            page = self.admin("GET", "/api/manage/tasks?" + urlencode(params))
            tasks += page["tasks"]
            if not page.get("next_cursor"):
                return tasks
            params["cursor"] = page["next_cursor"]

    def add_account(self, name: str = "main", cookies: str = SIM_COOKIES, **kw: Any) -> Any:
        return self.admin("POST", "/api/manage/accounts", json={"name": name, "cookies": cookies}, **kw)

    def add_part(self, path: Path, **fields: Any) -> dict:
        kw = {k: fields.pop(k) for k in ("verify",) if k in fields}
        return self.admin("POST", "/api/manage/parts", json={"file_path": str(path), **fields}, **kw)

    def task(self, task_id: str, **kw: Any) -> dict:
        return self.admin("GET", f"/api/manage/tasks/{task_id}", **kw)

    def agents(self, **kw: Any) -> list[dict]:
        data = self.admin("GET", "/api/manage/agents", **kw)
        return data["agents"] if isinstance(data, dict) else data

    def wait_agents_online(self, count: int, timeout: float = 30.0, **kw: Any) -> list[dict]:
        return wait_for(
            lambda: (a := [x for x in self.agents(**kw) if x["status"] in ("online", "busy")])
            and len(a) >= count and a,
            timeout, f"{count} agents online",
        )

    def wait_tasks(self, task_ids: Sequence[str], timeout: float = 120.0,
                   on_poll: Callable[[list[dict]], None] | None = None, **kw: Any) -> list[dict]:
        def poll() -> list[dict] | None:
            tasks = [self.task(t, **kw) for t in task_ids]
            if on_poll:
                on_poll(tasks)
            return tasks if all(t["status"] in TERMINAL for t in tasks) else None

        return wait_for(poll, timeout, "tasks to finish", interval=0.25)

    # ------------------------------------------------------------- simulator

    def sim(self, method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(method, f"{self.sim_url}{path}", timeout=30, **kw)
        response.raise_for_status()
        return response.json()

    def sim_uploads(self) -> list[dict]:
        return self.sim("GET", "/_sim/uploads")["uploads"]


def _relay(source: IO[bytes], sink: IO[bytes]) -> None:
    try:
        for line in iter(source.readline, b""):
            sink.write(line)
            sink.flush()
    except ValueError:  # the log was closed by Process.stop after the child exited
        pass


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes; return their MD5. Streams in 1 MiB blocks."""
    import hashlib
    import random

    rng = random.Random(seed)
    digest = hashlib.md5()
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            block = rng.randbytes(min(remaining, 1 << 20))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    return digest.hexdigest()
