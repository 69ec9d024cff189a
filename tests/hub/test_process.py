"""``bupmesh hub`` as a real process: clean shutdown with agents attached, TLS, bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import grpc
import pytest
import trustme

from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc
from tests.conftest import bupmesh_command, free_port, stop_process, wait_http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HubProc:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.http = free_port()
        self.grpc = free_port()
        self.log = tmp / f"hub-{self.grpc}.log"
        self.proc = subprocess.Popen(
            bupmesh_command("hub", "--psk", "psk-1", "--admin-token", "adm",
                            "--http-listen", f"127.0.0.1:{self.http}",
                            "--grpc-listen", f"127.0.0.1:{self.grpc}",
                            "--data-dir", str(tmp / "data"), *extra),
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def until(predicate, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await anyio.sleep(0.05)
    raise TimeoutError(f"condition not met within {seconds}s")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProc]:
    h = HubProc(tmp_path, "--insecure")
    try:
        wait_http(f"http://127.0.0.1:{h.http}/healthz", h.proc)
        yield h
    finally:
        stop_process(h.proc)


@pytest.mark.anyio
async def test_sigterm_with_a_connected_agent_exits_cleanly(hub: HubProc) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc}") as channel:
        stub = mesh_pb2_grpc.AgentLinkStub(channel)
        token = (await stub.Register(pb.RegisterRequest(psk="psk-1", agent_id="a1"))).token
        call = stub.Connect(metadata=(("authorization", f"Bearer {token}"),))
        await call.write(pb.AgentMessage(hello=pb.Hello(agent_id="a1")))
        assert (await call.read()).WhichOneof("kind") == "welcome"
        hub.proc.send_signal(signal.SIGTERM)
        await until(lambda: hub.proc.poll() is not None, 15)
        call.cancel()
    assert hub.proc.returncode == 0
    text = hub.log.read_text()
    assert "hub stopped" in text and "psk-1" not in text  # and no secret in the log


def test_missing_psk_or_tls_is_one_clear_line(tmp_path: Path) -> None:
    base = ["--admin-token", "a", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.run(bupmesh_command("hub", *base, "--insecure"), capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "psk" in proc.stderr
    proc = subprocess.run(bupmesh_command("hub", *base, "--psk", "p"), capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "--insecure" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.anyio
async def test_tls_link_with_trustme(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "hub.pem", tmp_path / "hub.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    h = HubProc(tmp_path, "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    try:
        await until(lambda: h.proc.poll() is not None
                    or b"gRPC agent link listening" in h.log.read_bytes(), 30)
        assert h.proc.poll() is None, h.log.read_text()
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{h.grpc}", creds) as channel:
            stub = mesh_pb2_grpc.AgentLinkStub(channel)
            reply = await stub.Register(pb.RegisterRequest(psk="psk-1", agent_id="a1"),
                                        timeout=10)
            assert reply.token
        # Plaintext against the TLS port gets nowhere.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{h.grpc}") as channel:
            stub = mesh_pb2_grpc.AgentLinkStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Register(pb.RegisterRequest(psk="psk-1", agent_id="a1"), timeout=3)
    finally:
        stop_process(h.proc)


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_busy_port_is_one_clear_line(tmp_path: Path, which: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = free_port()
        http, grpc_port = (taken, other) if which == "http" else (other, taken)
        proc = subprocess.run(
            bupmesh_command("hub", "--psk", "p", "--admin-token", "a", "--insecure",
                            "--http-listen", f"127.0.0.1:{http}",
                            "--grpc-listen", f"127.0.0.1:{grpc_port}",
                            "--data-dir", str(tmp_path / "d")),
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # The config error is the command's last word; on a loaded machine the GC watch may
    # have logged a pause before it, so look for the line rather than count lines.
    assert any(line.startswith(f"bupmesh hub: {which}_listen:")
               for line in proc.stderr.strip().splitlines()), proc.stderr


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("risk:\n  max_uploads_per_hour: -3\n", "-3", "risk.max_uploads_per_hour"),
        ("heartbeat:\n  interval_seconds: 0\n", "0", "heartbeat.interval_seconds"),
        ("retry:\n  network_retries: 1000\n", "1000", "retry.network_retries"),
        ("alerts:\n  failure_rate: 1.5\n", "1.5", "alerts.failure_rate"),
        ("submission:\n  copyright: 3\n", "3", "submission.copyright"),
    ],
)
def test_a_number_out_of_range_stops_startup_naming_it(tmp_path: Path, setting: str,
                                                        value: str, named: str) -> None:
    config = tmp_path / "hub.yml"
    config.write_text(setting)
    proc = subprocess.run(
        bupmesh_command("hub", "--psk", "p", "--admin-token", "a", "--config", str(config),
                        "--http-listen", f"127.0.0.1:{free_port()}",
                        "--grpc-listen", f"127.0.0.1:{free_port()}",
                        "--data-dir", str(tmp_path / "d")),
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"bupmesh hub: {named}: "), line
