"""End to end, with real processes: simulator, hub and three agents on loopback.

Each agent binds its Bilibili traffic to its own address (127.0.0.2-4), so the
simulator's ledger tells which IP uploaded what. Bytes are checked at the
simulator: the MD5 it computed over what arrived must equal the source file's.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bupmesh.localmesh import (
    OPEN_RISK_YAML,
    LocalMesh,
    MeshError,
    bupmesh_argv,
    wait_for,
    write_random_file,
)
from protocol import mesh_pb2, mesh_pb2_grpc

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    # The hub paces each IP to one upload start per 5 minutes by default; ten parts
    # over three IPs would take half an hour, so these tests open the pacing wide.
    with LocalMesh(tmp_path_factory.mktemp("mesh"),
                   media_roots=(str(tmp_path_factory.getbasetemp()),)) as local:
        local.start_sim()
        local.start_hub(config_yaml=OPEN_RISK_YAML)
        for index in (1, 2, 3):
            local.start_agent(index)
        local.wait_agents_online(3)
        local.add_account("main")
        yield local


def sim_config(mesh: LocalMesh, **changes: object) -> None:
    mesh.sim("POST", "/_sim/config", json=changes)


def test_ten_parts_arrive_byte_exact_spread_over_three_ips(mesh: LocalMesh, tmp_path: Path) -> None:
    # A per-IP cap keeps every agent busy long enough that all three get work.
    sim_config(mesh, faults={"bandwidth_bps": 40 * MiB})
    sizes = [2, 1, 3 * MiB, 10 * MiB, 10 * MiB + 1, 17 * MiB, 24 * MiB, 5 * MiB - 7, 31 * MiB, 12 * MiB]
    expected: dict[str, str] = {}
    for index, size in enumerate(sizes):
        path = tmp_path / f"part{index}.flv"
        md5 = write_random_file(path, size, seed=100 + index)
        expected[mesh.add_part(path, title=f"P{index}")["task_id"]] = md5
    try:
        final = mesh.wait_tasks(list(expected), timeout=240)
    finally:
        sim_config(mesh, faults={"bandwidth_bps": 0})
    assert [t["status"] for t in final] == ["completed"] * len(sizes), final

    ledger = {u["filename"]: u for u in mesh.sim_uploads()}
    ips = set()
    for task in final:
        upload = ledger[task["result"]["filename"]]
        assert upload["md5"] == expected[task["task_id"]]
        assert task["uploaded_bytes"] == task["total_bytes"] == upload["size"]
        ips.add(upload["source_ip"])
    assert ips == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    # exactly one completed object per part
    names = [u["filename"] for u in mesh.sim_uploads()]
    assert len(names) == len(set(names))


def test_cancel_mid_upload_leaves_no_completed_object(mesh: LocalMesh, tmp_path: Path) -> None:
    sim_config(mesh, faults={"bandwidth_bps": 4 * MiB})
    path = tmp_path / "long.flv"
    md5 = write_random_file(path, 64 * MiB, seed=7)
    before = len(mesh.sim_uploads())
    task_id = mesh.add_part(path)["task_id"]
    try:
        wait_for(lambda: mesh.task(task_id)["uploaded_bytes"] > 0, 60, "upload to start")
        mesh.admin("POST", "/api/manage/cancel-task", json={"task_id": task_id})
        final = wait_for(
            lambda: (t := mesh.task(task_id))["status"] in ("cancelled", "completed", "failed") and t,
            10, "task to stop",
        )
    finally:
        sim_config(mesh, faults={"bandwidth_bps": 0})
    assert final["status"] == "cancelled"
    uploads = mesh.sim_uploads()
    assert len(uploads) == before
    assert all(u["md5"] != md5 for u in uploads)
    # and it stays that way: nothing completes it later
    completes = [r for r in mesh.sim("GET", "/_sim/requests")["requests"] if r["op"] == "complete"]
    assert len(completes) == before


def test_wrong_psk_and_bad_tokens_are_refused(mesh: LocalMesh) -> None:
    host = mesh.hub_url
    # HTTP registration with a wrong PSK
    response = httpx.post(
        f"{host}/api/agent/register", headers={"Authorization": "Bearer wrong"},
        json={"agent_id": "intruder", "agent_name": "x", "ip_address": "127.0.0.9"}, timeout=10,
    )
    assert response.status_code == 401
    # admin routes refuse a wrong or missing token, and an agent's JWT
    assert httpx.get(f"{host}/api/manage/agents", timeout=10).status_code == 401
    assert httpx.get(f"{host}/api/manage/agents", headers={"Authorization": "Bearer x"}, timeout=10).status_code == 401
    token = httpx.post(
        f"{host}/api/agent/register", headers={"Authorization": f"Bearer {mesh.psk}"},
        json={"agent_id": "probe", "agent_name": "probe", "ip_address": "127.0.0.9"}, timeout=10,
    ).json()["data"]["token"]
    agent_auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{host}/api/manage/agents", headers=agent_auth, timeout=10).status_code == 401

    # gRPC: wrong PSK on Register, and garbage / alg-none tokens on Connect
    alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZ2VudC0xIiwiZXhwIjo5OTk5OTk5OTk5fQ."
    with grpc.insecure_channel(mesh.grpc_address) as channel:
        stub = mesh_pb2_grpc.AgentLinkStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(mesh_pb2.RegisterRequest(psk="wrong", agent_id="intruder"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for bad in ("garbage", alg_none, token + "x"):
            hello = mesh_pb2.AgentMessage(hello=mesh_pb2.Hello(agent_id="agent-1"))
            call = stub.Connect(iter([hello]), metadata=[("authorization", f"Bearer {bad}")], timeout=10)
            with pytest.raises(grpc.RpcError) as info:
                list(call)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # none of that disturbed the real agents
    assert len(mesh.wait_agents_online(3)) >= 3


def test_agent_with_wrong_psk_never_comes_online(mesh: LocalMesh) -> None:
    agent = mesh.start_agent(9, agent_id="bad-psk", token="not-the-psk")
    try:
        wait_for(lambda: "401" in agent.log_text() or "UNAUTHENTICATED" in agent.log_text()
                 or "unauthenticated" in agent.log_text().lower(), 20, "the agent to log its refusal")
        assert all(a["agent_id"] != "bad-psk" or a["status"] == "offline" for a in mesh.agents())
    finally:
        agent.stop()


def test_tls_mesh_uploads_byte_exact(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "hub.pem", tmp_path / "hub.key", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with LocalMesh(tmp_path / "tls", media_roots=(str(tmp_path),)) as local:
        local.start_sim()
        local.start_hub(tls=(str(cert_file), str(key_file)))
        local.start_agent(1, ca_file=str(ca_file))
        verify = ssl.create_default_context(cafile=str(ca_file))
        local.wait_agents_online(1, verify=verify)
        local.add_account("main", verify=verify)
        path = tmp_path / "tls.flv"
        md5 = write_random_file(path, 6 * MiB + 3, seed=42)
        task_id = local.add_part(path, verify=verify)["task_id"]
        (final,) = local.wait_tasks([task_id], timeout=120, verify=verify)
        assert final["status"] == "completed", final
        (upload,) = local.sim_uploads()
        assert upload["md5"] == md5 and upload["source_ip"] == "127.0.0.2"
        # plaintext to the TLS port is refused
        with pytest.raises(httpx.HTTPError):
            httpx.get(local.hub_url.replace("https", "http") + "/healthz", timeout=5)


def test_hub_refuses_to_start_without_tls_or_insecure(tmp_path: Path) -> None:
    proc = subprocess.run(
        bupmesh_argv("hub", "--data-dir", str(tmp_path), "--psk", "p", "--admin-token", "a"),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "insecure" in proc.stderr or "tls" in proc.stderr.lower()


def test_mesh_error_is_raised_for_a_hub_that_cannot_start(tmp_path: Path) -> None:
    with LocalMesh(tmp_path) as local, pytest.raises(MeshError):
        local.start_hub("--grpc-listen", "not-an-address")


def test_demo_uploads_a_recording_through_three_agents() -> None:
    proc = subprocess.run(
        bupmesh_argv("demo", "--parts", "3", "--part-size-mb", "4", "--bandwidth-mbps", "400"),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all parts arrived byte-exact" in proc.stdout
    assert "agents online: agent-1" in proc.stdout
