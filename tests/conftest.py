"""Fixtures shared by the whole suite.

Processes started here are real ``bupmesh`` subprocesses on loopback; each is
stopped when its fixture ends, so nothing outlives the test run.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bupmesh.localmesh import SIM_COOKIES, bupmesh_argv, free_port  # noqa: F401 - re-exported

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Backend-neutral code (uploader, simulator, sans-IO logic) runs on both."""
    return request.param


# One definition for tests and the local-mesh harness (demo, benchmarks).
bupmesh_command = bupmesh_argv


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers; fail fast if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@dataclass
class SimServer:
    url: str  # e.g. http://127.0.0.1:41234 (member_url for the uploader)
    proc: subprocess.Popen

    def config(self, **changes: object) -> dict:
        return httpx.post(f"{self.url}/_sim/config", json=changes, timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset", timeout=10).raise_for_status()

    def uploads(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/uploads", timeout=10).json()["uploads"]

    def submissions(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/submissions", timeout=10).json()["submissions"]

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests", timeout=10).json()["requests"]


def start_sim(tmp_path: Path, *extra: str) -> SimServer:
    port = free_port()
    log = open(tmp_path / f"sim-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        bupmesh_command("sim-bili", "--listen", f"127.0.0.1:{port}", *extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sim/config", proc)
    except Exception:
        stop_process(proc)
        raise
    return SimServer(url=url, proc=proc)


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    server = start_sim(tmp_path_factory.mktemp("sim"))
    yield server
    stop_process(server.proc)


@pytest.fixture
def sim(sim_session: SimServer) -> SimServer:
    """A running simulator, reset to defaults for each test."""
    sim_session.reset()
    return sim_session


SIM_ACCESS_KEY = "sim-access-key"
