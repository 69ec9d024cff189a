"""The hub database and the hub config (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bupmesh.config import ConfigError
from hub.config import load_hub_config
from hub.core.lifecycle import Status, TaskRecord
from hub.store.tasks import Store

BASE = {"psk": "p", "admin_token": "a", "insecure": True}


@pytest.mark.anyio
async def test_tasks_roundtrip_and_session_encrypted(tmp_path: Path) -> None:
    key = Fernet(Fernet.generate_key())
    store = Store(tmp_path / "bupmesh.db", key)
    await store.open()
    part = await store.insert_part(file_path="/r.flv", size=10, md5="m", account=None, title="t")
    task = TaskRecord(task_id="t1", part_id=part, file_path="/r.flv", file_size=10,
                      file_md5="m", created_at=5.0)
    await store.insert_task(task)
    task.status, task.agent_id, task.attempt = Status.UPLOADING, "a", 2
    task.resume_session = b'{"auth": "upos-auth-secret"}'
    task.committed_offset, task.excluded = 4, {"b": 99.0}
    task.proceed_attempt, task.proceed_ip, task.proceed_at = 2, "127.0.0.2", 7.5
    await store.save_task(task, log=("a", "127.0.0.2", "start", "go"), part_state="uploading")
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("bupmesh.db*"))  # noqa: ASYNC240
    assert b"upos-auth-secret" not in raw
    # Reopened (a hub restart): everything is back, decrypted.
    again = Store(tmp_path / "bupmesh.db", key)
    await again.open()
    [loaded] = await again.load_tasks(active_only=True)
    assert loaded == task
    assert [e["event_type"] for e in await again.logs("t1")] == ["start"]
    assert (await again.get_part(part))["state"] == "uploading"
    task.status = Status.COMPLETED
    await again.save_task(task)
    assert await again.load_tasks(active_only=True) == []
    again.close()
    # A different key loses the resume point, never the task.
    other = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await other.open()
    [t] = await other.load_tasks()
    assert t.resume_session is None and t.committed_offset == 4
    other.close()


def test_config_defaults_and_layers(tmp_path: Path) -> None:
    cfg = load_hub_config(flags=BASE, env={})
    assert (cfg.http_listen, cfg.grpc_listen, cfg.data_dir) == (
        "0.0.0.0:12380", "0.0.0.0:12382", "./data")
    assert cfg.heartbeat.interval_seconds == 30 and cfg.heartbeat.offline_after_seconds == 90
    assert cfg.retry.network_retries == 3 and cfg.compression == "none"
    yml = tmp_path / "hub.yml"
    yml.write_text("psk: from-file\nadmin_token: t\ninsecure: true\n"
                   "heartbeat: {interval_seconds: 5, offline_after_seconds: 15}\n")
    cfg = load_hub_config(file=str(yml), env={"BUPMESH_PSK": "from-env"}, flags={})
    assert cfg.psk == "from-env" and cfg.heartbeat.interval_seconds == 5
    cfg = load_hub_config(file=str(yml), env={"BUPMESH_PSK": "from-env"},
                          flags={"psk": "from-flag"})
    assert cfg.psk == "from-flag"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"admin_token": "a", "insecure": True}, "psk"),
        ({"psk": "p", "insecure": True}, "admin_token"),
        ({"psk": "p", "admin_token": "a"}, "--insecure"),
        ({**BASE, "grpc_listen": "nope"}, "grpc_listen"),
        ({**BASE, "heartbeat.bogus": 1}, "heartbeat.bogus: unknown setting"),
        ({**BASE, "heartbeat.interval_seconds": "x"}, "heartbeat.interval_seconds"),
        ({**BASE, "compression": "brotli"}, "compression"),
        ({**BASE, "tls.cert_file": "/no/such"}, "tls"),
    ],
)
def test_config_errors_name_the_setting(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        load_hub_config(flags=flags, env={})


@pytest.mark.anyio
async def test_risk_ledger_rows_per_ip_over_the_snapshot(tmp_path: Path) -> None:
    """Per-IP rows (written as IPs change) win over the older whole-ledger snapshot."""
    store = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await store.open()
    assert await store.load_ledger() is None
    await store.save_ledger({"version": 1, "ips": {"10.0.0.1": {"uploads_ok": 1},
                                                   "10.0.0.2": {"uploads_ok": 2}}})
    await store.save_ledger_ips({"10.0.0.2": {"uploads_ok": 7}, "10.0.0.3": {"uploads_ok": 3}})
    await store.save_ledger_ips({"10.0.0.3": {"uploads_ok": 4}})
    await store.save_ledger_ips({})
    store.close()
    again = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await again.open()
    loaded = await again.load_ledger()
    assert loaded == {"version": 1, "ips": {"10.0.0.1": {"uploads_ok": 1},
                                            "10.0.0.2": {"uploads_ok": 7},
                                            "10.0.0.3": {"uploads_ok": 4}}}
    again.close()


@pytest.mark.anyio
async def test_heartbeats_are_written_in_batches_and_never_over_a_later_status(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await store.open()
    for agent in ("a", "b"):
        await store.upsert_agent(agent, agent_name=agent, ip_address="", status="online",
                                 max_concurrent=2, bandwidth_mbps=0, storage_type="network",
                                 buffer_bytes=0, tags={})
    store.note_heartbeat("a", "busy", last_heartbeat=50.0, tasks_completed=3)
    store.note_heartbeat("b", "busy", last_heartbeat=60.0, tasks_completed=1)
    rows = {r["agent_id"]: r for r in await store.load_agents()}
    assert rows["a"]["status"] == "online"  # queued, not written yet
    await store.set_agent_status("b", "offline")  # written now: b's queued beat is older
    assert await store.flush_heartbeats() == 1
    rows = {r["agent_id"]: r for r in await store.load_agents()}
    assert (rows["a"]["status"], rows["a"]["last_heartbeat"], rows["a"]["tasks_completed"]) == \
        ("busy", 50.0, 3)
    assert rows["b"]["status"] == "offline"
    assert await store.flush_heartbeats() == 0
    store.close()
