"""The hub's data directory fills up, for real: a hub whose data directory is an 8 MiB
tmpfs, a simulator, an agent, an upload running (the simulator reads slowly).

A filler file takes every free byte. The hub must stay up and keep its agent; a new
part is refused with 507 naming the directory and its free bytes; the running upload
finishes at the simulator; the webhook receives a ``data_dir_full`` alert. The filler
goes: the hub resumes by itself (alert resolved), the refused part is accepted and
uploads, and a restart of the hub finds every task as it ended: nothing lost, each file
uploaded once. Started again on a disk too full for SQLite to open the database, the
hub exits with one line saying so.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, MeshError, wait_for, write_random_file
from tests.e2e.test_ops import Webhook

pytestmark = pytest.mark.e2e

KiB, MiB = 1024, 1 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs at ``<tmp>/mesh/hub-data``, where LocalMesh puts the hub's data."""
    mount = tmp_path / "mesh" / "hub-data"
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write until the filesystem is full; the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        block = b"\0" * (64 * KiB)
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass
    small = b"\0" * 512  # the last partial block
    try:
        with open(filler, "ab") as out:
            while True:
                out.write(small)
                out.flush()
    except OSError:
        pass
    return filler


def test_a_full_data_directory_is_survived_and_recovered(tmpfs: Path, tmp_path: Path) -> None:
    hook = Webhook()
    config = OPEN_RISK_YAML + f"""
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
storage:
  resume_free_mb: 1
  probe_interval_seconds: 0.2
alerts:
  webhook_url: "http://127.0.0.1:{hook.port}/hook"
  evaluate_interval_seconds: 0.3
  low_speed_bps: 0
"""
    try:
        with LocalMesh(tmp_path / "mesh") as mesh:
            mesh.start_sim()
            mesh.start_hub(config_yaml=config)
            mesh.start_agent(1)
            mesh.wait_agents_online(1)
            mesh.add_account("main")
            hub = mesh.processes[-2]
            assert hub.name == "hub"
            # A running upload: the simulator reads 256 KiB/s, so 3 MiB take ~12 s.
            mesh.sim("POST", "/_sim/config", json={"faults": {"bandwidth_bps": 256 * KiB}})
            running_path = tmp_path / "running.flv"
            running_md5 = write_random_file(running_path, 3 * MiB, seed=1)
            running = mesh.add_part(running_path)
            wait_for(lambda: mesh.task(running["task_id"])["status"] == "uploading", 30,
                     "the upload to start")

            filler = fill(tmpfs)
            later_path = tmp_path / "later.flv"
            later_md5 = write_random_file(later_path, 200 * KiB, seed=2)
            admin = {"Authorization": f"Bearer {mesh.admin_token}"}

            def refused() -> httpx.Response | None:
                r = httpx.post(f"{mesh.hub_url}/api/manage/parts", headers=admin,
                               json={"file_path": str(later_path)}, timeout=10)
                assert r.status_code in (200, 507), r.text
                return r if r.status_code == 507 else None

            # The first write that meets the full disk trips the alarm; from then on new
            # work is refused before anything is written.
            answer = wait_for(refused, 30, "a 507 for a new part")
            message = answer.json()["message"]
            assert str(tmpfs) in message and "bytes free" in message, message
            again = refused()  # the alarm is raised now: refused at the door
            assert again is not None and again.headers.get("retry-after")
            storage = mesh.admin("GET", "/api/manage/storage")
            assert storage["full"] and storage["directory"] == str(tmpfs)

            # Up, reads served, the agent kept, the running upload finished at Bilibili.
            done = mesh.wait_tasks([running["task_id"]], timeout=120)[0]
            assert done["status"] == "completed", done
            assert hub.alive()
            assert [a["agent_id"] for a in mesh.agents()
                    if a["status"] in ("online", "busy")] == ["agent-1"]
            uploads = {u["filename"]: u for u in mesh.sim_uploads()}
            assert uploads[done["result"]["filename"]]["md5"] == running_md5
            wait_for(lambda: hook.find("data_dir_full", "firing"), 30,
                     "the data_dir_full alert")
            assert str(tmpfs) in hook.find("data_dir_full", "firing")["summary"]
            assert mesh.admin("GET", "/api/manage/storage")["full"]  # still, nothing freed

            # Space returns: the hub resumes by itself, the refused part is accepted now.
            os.unlink(filler)
            wait_for(lambda: not mesh.admin("GET", "/api/manage/storage")["full"], 30,
                     "the hub to resume writing")
            wait_for(lambda: hook.find("data_dir_full", "resolved"), 30, "the alert resolved")
            mesh.sim("POST", "/_sim/config", json={"faults": {"bandwidth_bps": 0}})
            later = mesh.add_part(later_path)
            second = mesh.wait_tasks([later["task_id"]], timeout=60)[0]
            assert second["status"] == "completed", second

            # What the hub wrote while full (the running task's end) is on disk: a
            # restart finds both tasks completed, and nothing is uploaded again.
            hub.stop()
            mesh.restart_hub()
            mesh.wait_agents_online(1)
            for task_id in (running["task_id"], later["task_id"]):
                assert mesh.task(task_id)["status"] == "completed"
            uploads = mesh.sim_uploads()
            md5s = sorted(u["md5"] for u in uploads if u.get("md5"))
            assert md5s == sorted([running_md5, later_md5]), uploads
            log = hub.log_path.read_text(errors="replace")
            assert "Traceback" not in log, log[-3000:]  # nothing failed unforeseen

            # A hub started on a disk too full to open its database says so in one line.
            mesh.processes[-1].stop()
            filler = fill(tmpfs)
            with pytest.raises(MeshError, match=r"exited \(2\)"):
                mesh.restart_hub()
            assert "too full to open the database" in hub.log_path.read_text(errors="replace")
            os.unlink(filler)
            mesh.restart_hub()
            assert mesh.task(later["task_id"])["status"] == "completed"
    finally:
        hook.close()
