"""``bupmesh upload`` as a real subprocess against a small fake hub on loopback.

The fake hub is a Starlette app speaking the two admin routes the command
uses, served by uvicorn in a background thread; each task id follows a
scripted sequence of states, one step per poll. The real hub end to end is
covered by the mesh e2e tests.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import REPO, bupmesh_command, free_port

TOKEN = "admin-SECRET-for-upload-tests"

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "ok": [
        {"status": "pending", "uploaded_bytes": 0, "total_bytes": 100},
        {"status": "uploading", "uploaded_bytes": 30, "total_bytes": 100, "upload_speed": 2e6},
        {
            "status": "uploading",
            "uploaded_bytes": 70,
            "total_bytes": 100,
            "upload_speed": 2e6,
            "eta_seconds": 3,
        },
        {
            "status": "completed",
            "uploaded_bytes": 100,
            "total_bytes": 100,
            "result": {"filename": "n240101sim0001", "biz_id": 424242},
        },
    ],
    "fail": [
        {"status": "uploading", "uploaded_bytes": 10, "total_bytes": 100},
        {
            "status": "failed",
            "uploaded_bytes": 10,
            "total_bytes": 100,
            "error_message": "risk_control: HTTP 406 on preupload",
        },
    ],
    "cancel": [
        {"status": "uploading", "uploaded_bytes": 10, "total_bytes": 100},
        {"status": "cancelled", "uploaded_bytes": 10, "total_bytes": 100},
    ],
    "slow": [{"status": "uploading", "uploaded_bytes": 1, "total_bytes": 100}],
    # long enough (at 0.05 s a poll) to restart the hub in the middle
    "restart": [{"status": "uploading", "uploaded_bytes": 5, "total_bytes": 100}] * 60
    + [{"status": "completed", "result": {"filename": "n-restarted", "biz_id": 7}}],
}


class FakeHub:
    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.polls: dict[str, int] = {}
        self.auth_headers: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/api/manage/parts", self.create_part, methods=["POST"]),
                Route("/api/manage/tasks/{task_id}", self.get_task, methods=["GET"]),
            ]
        )

    def refused(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        self.auth_headers.append(header)
        if header != f"Bearer {TOKEN}":
            return JSONResponse(
                {"code": 401, "message": "invalid admin token", "data": None}, status_code=401
            )
        return None

    async def create_part(self, request: Request) -> JSONResponse:
        if refusal := self.refused(request):
            return refusal
        body = await request.json()
        self.parts.append(body)
        name = Path(body["file_path"]).name
        if name.startswith("remote-missing"):
            message = f"no such file: {body['file_path']}"
            return JSONResponse({"code": 404, "message": message, "data": None}, status_code=404)
        stem = name.split(".")[0]
        data = {"part_id": len(self.parts), "task_id": f"task-{stem}"}
        return JSONResponse({"code": 0, "message": "success", "data": data})

    async def get_task(self, request: Request) -> JSONResponse:
        if refusal := self.refused(request):
            return refusal
        task_id = request.path_params["task_id"]
        script = SCRIPTS[task_id.removeprefix("task-")]
        step = self.polls.get(task_id, 0)
        self.polls[task_id] = step + 1
        state = script[min(step, len(script) - 1)]
        data = {
            "task_id": task_id,
            "part_id": 1,
            "agent_id": "agent-a",
            "retry_count": 0,
            "error_message": None,
            "result": None,
            "upload_speed": 0,
            "eta_seconds": None,
            **state,
        }
        return JSONResponse({"code": 0, "message": "success", "data": data})


class ThreadServer:
    """uvicorn on 127.0.0.1 in a daemon thread, stopped by the fixture."""

    def __init__(
        self,
        app: Any,
        certfile: str | None = None,
        keyfile: str | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        scheme = "https" if certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("fake hub did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    with ThreadServer(fake.app) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for stem in [*SCRIPTS, "remote-missing"]:
        (tmp_path / f"{stem}.flv").write_bytes(b"FLV" + stem.encode())
    return tmp_path


def upload(
    cwd: Path, *args: str, token: str | None = TOKEN, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUPMESH_")}
    env["PYTHONPATH"] = str(REPO)
    if token is not None:
        env["BUPMESH_ADMIN_TOKEN"] = token
    return subprocess.run(
        bupmesh_command("upload", *args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fast(hub: FakeHub) -> list[str]:
    return ["--hub", hub.url, "--poll-interval", "0.05"]  # type: ignore[attr-defined]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_wait_prints_result_and_plain_progress(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "ok.flv", "--wait", "--account", "main", "--title", "P1", *fast(hub))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "filename: n240101sim0001\nbiz_id: 424242\n"
    assert "ok.flv: task task-ok (part 1)" in proc.stderr
    assert "uploading 30% 0.0/0.0 MB 2.0 MB/s agent agent-a" in proc.stderr
    assert "uploading 70%" in proc.stderr and "ETA 3s" in proc.stderr
    assert "completed 100%" in proc.stderr
    assert hub.parts == [{"file_path": str(files / "ok.flv"), "account": "main", "title": "P1"}]
    assert TOKEN not in proc.stdout + proc.stderr


def test_wait_json_is_one_object(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "ok.flv", "--wait", "--json", *fast(hub))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(one_line(proc.stdout)) == {
        "task_id": "task-ok",
        "part_id": 1,
        "status": "completed",
        "filename": "n240101sim0001",
        "biz_id": 424242,
    }
    assert hub.parts == [{"file_path": str(files / "ok.flv")}]


def test_without_wait_prints_the_task_id(hub: FakeHub, files: Path) -> None:
    proc = upload(files, str(files / "ok.flv"), *fast(hub))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "task_id: task-ok\npart_id: 1\n"
    assert hub.polls == {}
    proc = upload(files, "ok.flv", "--json", *fast(hub))
    assert json.loads(one_line(proc.stdout)) == {"task_id": "task-ok", "part_id": 2}


@pytest.mark.parametrize(
    ("stem", "reason"),
    [
        ("fail", "task task-fail failed: risk_control: HTTP 406 on preupload"),
        ("cancel", "task task-cancel cancelled: no reason given"),
    ],
)
def test_failed_or_cancelled_exits_non_zero(
    hub: FakeHub, files: Path, stem: str, reason: str
) -> None:
    proc = upload(files, f"{stem}.flv", "--wait", *fast(hub))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == f"bupmesh upload: {reason}"
    proc = upload(files, f"{stem}.flv", "--wait", "--json", *fast(hub))
    assert proc.returncode == 1
    assert json.loads(one_line(proc.stdout))["status"] == {"fail": "failed"}.get(stem, "cancelled")


def test_wait_timeout(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "slow.flv", "--wait", "--timeout", "0.5", *fast(hub))
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("task task-slow did not finish within 0.5s")
    assert hub.polls["task-slow"] >= 2


def test_wrong_admin_token_is_one_line(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "ok.flv", "--wait", *fast(hub), token="wrong")
    assert proc.returncode == 1
    assert "refused the admin token (401)" in one_line(proc.stderr)
    assert hub.auth_headers == ["Bearer wrong"]


def test_flag_token_wins_over_environment(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "ok.flv", "--admin-token", TOKEN, *fast(hub), token="wrong")
    assert proc.returncode == 0, proc.stderr


def test_connection_refused_is_one_line(files: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = upload(files, "ok.flv", "--hub", url)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        f"bupmesh upload: cannot reach the hub at {url}: connection refused"
    )


def test_missing_file_is_refused_before_asking(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "nope.flv", "--wait", *fast(hub))
    assert proc.returncode == 2
    assert one_line(proc.stderr) == f"bupmesh upload: FILE: no such file: {files / 'nope.flv'}"
    assert hub.parts == []


def test_hub_side_refusal_is_one_line(hub: FakeHub, files: Path) -> None:
    proc = upload(files, "remote-missing.flv", "--wait", *fast(hub))
    assert proc.returncode == 1
    assert "404" in one_line(proc.stderr) and "no such file" in proc.stderr


@pytest.mark.parametrize(
    ("args", "token", "needle"),
    [
        (["ok.flv"], None, "--admin-token: required"),
        (["ok.flv", "--hub", "127.0.0.1:12380"], TOKEN, "--hub: expected http(s)://"),
        (["ok.flv", "--timeout", "0"], TOKEN, "--timeout: must be positive"),
        (["."], TOKEN, "is a directory"),
        (["ok.flv", "--ca-file", "missing-ca.pem"], TOKEN, "--ca-file: cannot load"),
    ],
)
def test_bad_input_exits_2(files: Path, args: list[str], token: str | None, needle: str) -> None:
    proc = upload(files, *args, token=token)
    assert proc.returncode == 2
    assert needle in one_line(proc.stderr)


def test_https_with_a_private_ca(files: Path, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    fake = FakeHub()
    with ThreadServer(fake.app, str(certfile), str(keyfile)) as server:
        args = ["--hub", server.url, "--poll-interval", "0.05"]
        proc = upload(files, "ok.flv", "--wait", "--ca-file", str(cafile), *args)
        assert proc.returncode == 0, proc.stderr
        assert "biz_id: 424242" in proc.stdout
        proc = upload(files, "ok.flv", *args)  # system trust only
        assert proc.returncode == 1
        assert "not trusted (use --ca-file)" in one_line(proc.stderr)


def test_progress_bar_on_a_terminal(hub: FakeHub, files: Path) -> None:
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUPMESH_")}
    env.update(BUPMESH_ADMIN_TOKEN=TOKEN, PYTHONPATH=str(REPO), COLUMNS="120", TERM="xterm")
    proc = subprocess.Popen(
        bupmesh_command("upload", "ok.flv", "--wait", *fast(hub)),
        cwd=files,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # keep the pty from filling up
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=60)
    finally:
        reader.join(timeout=5)
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert stdout == "filename: n240101sim0001\nbiz_id: 424242\n"
    assert "\x1b[" in screen and "━" in screen, screen  # rich drew a bar
    assert "completed" in screen
    assert "uploading 30%" not in screen  # no plain lines on a terminal


def test_wait_rides_out_a_hub_restart(files: Path) -> None:
    first = FakeHub()
    server = ThreadServer(first.app).__enter__()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUPMESH_")}
    env.update(BUPMESH_ADMIN_TOKEN=TOKEN, PYTHONPATH=str(REPO))
    args = ["restart.flv", "--wait", "--hub", server.url, "--poll-interval", "0.05"]
    proc = subprocess.Popen(
        bupmesh_command("upload", *args),
        cwd=files,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while first.polls.get("task-restart", 0) < 2:
            assert time.monotonic() < deadline, "the command never polled"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        server.__exit__()
        time.sleep(0.5)  # down for a while: polls meet connection refused
        assert proc.poll() is None, "gave up while the hub was down"
        second = FakeHub()
        second.polls["task-restart"] = 58  # carry on near the end of the script
        with ThreadServer(second.app, port=server.port):
            stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        server.__exit__()
    assert proc.returncode == 0, stderr
    assert stdout == "filename: n-restarted\nbiz_id: 7\n"


def test_ctrl_c_stops_waiting_only(hub: FakeHub, files: Path, ctrl_c: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUPMESH_")}
    env.update(BUPMESH_ADMIN_TOKEN=TOKEN, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        bupmesh_command("upload", "slow.flv", "--wait", *fast(hub)),
        cwd=files,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while hub.polls.get("task-slow", 0) < 1:
            assert time.monotonic() < deadline and proc.poll() is None, "never polled"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert stderr.strip().endswith("stopped waiting; task task-slow carries on at the hub")
