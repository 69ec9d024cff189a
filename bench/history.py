"""What a long history costs the hub: the task list, the live view, startup, memory.

For each N (default 0, 10,000 and 100,000) this starts a real ``bupmesh hub`` on
a database holding N finished tasks (written straight into SQLite before the hub
starts, as a year of a 50-room operation would leave them: completed, with some
failed and cancelled, over several agents and accounts, a recording per 25
parts, each submitted, archived and approved), then prints:

  * startup: seconds from the process start to ``/healthz`` answering;
  * ``GET /api/manage/tasks``: the default request's time and size, then one page
    per filter (status, agent, account, recording, a time range) and a page deep
    in the history (after following the cursor ``--walk`` pages); medians of
    ``--repeat`` requests;
  * the web UI's first snapshot (``GET /api/manage/events`` up to the end of its
    ``snapshot`` event): time and size;
  * hub RSS after startup and peak RSS (VmHWM) after all of the above, against
    the empty hub's.

Targets: each page under 100 ms, the snapshot carrying only live and recent
work, startup loading only live work, RSS within 10 % of an empty hub's.

    .venv/bin/python bench/history.py [--tasks 0 10000 100000] [--repeat 5] [--json FILE]

A hub without paging (an older version) answers every task to the default
request and ignores the filters; its figures are printed all the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bupmesh.localmesh import LocalMesh

AGENTS = [f"agent-{i}" for i in range(20)]
ACCOUNTS = ["main", "second", "third"]
PARTS_PER_RECORDING = 25


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def fill(db: Path, n: int, now: float) -> None:
    """``n`` finished tasks, one part each, a recording per 25 parts, over the last year."""
    conn = sqlite3.connect(db)
    span = 365 * 86400
    parts, tasks, recs, rec_parts = [], [], [], []
    for i in range(n):
        created = now - span + span * i / max(n, 1)
        status = "failed" if i % 50 == 7 else "cancelled" if i % 97 == 3 else "completed"
        parts.append((i + 1, f"/rec/room{i % 50}/part-{i:06d}.flv", 2_000_000_000 + i,
                      f"{i:032x}", ACCOUNTS[i % 3], f"part {i}", "uploaded", created))
        tasks.append((f"task-{i:08d}", AGENTS[i % len(AGENTS)], i + 1,
                      f"/rec/room{i % 50}/part-{i:06d}.flv", 2_000_000_000 + i, f"{i:032x}",
                      status, created, created + 60, created + 900, ACCOUNTS[i % 3], 1,
                      "network error: reset" if status == "failed" else None,
                      f"n{i:012d}" if status == "completed" else None))
        if i % PARTS_PER_RECORDING == 0:
            rid = i // PARTS_PER_RECORDING + 1
            recs.append((rid, "watcher", f"bench-{rid}", str(i % 50), created, created))
        rec_parts.append((i // PARTS_PER_RECORDING + 1, i + 1, f"/rec/p{i}.flv", 1,
                          i % PARTS_PER_RECORDING + 1, 1))
    with conn:
        conn.executemany("INSERT INTO parts (id, file_path, size, md5, account, title, state, "
                         "created_at) VALUES (?,?,?,?,?,?,?,?)", parts)
        conn.executemany("INSERT INTO agent_tasks (task_id, agent_id, part_id, file_path, "
                         "file_size, file_md5, status, created_at, started_at, completed_at, "
                         "account, attempt, error_message, filename) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", tasks)
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "recordings" in have:
            # Finished as a year's recordings are: submitted, every part in the archive,
            # the archive approved (a hub without the later columns gets what it has).
            cols = {r[1] for r in conn.execute("PRAGMA table_info(recordings)")}
            done = "aid" in cols and "archive_reviews" in have
            conn.executemany(
                "INSERT INTO recordings (id, source, session_key, room_id, started_at, "
                "ended_at, created_at, updated_at, submit_state, aid, bvid) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(*r[:5], r[5] + 3600, r[5], r[5], "submitted", 100_000 + r[0],
                  f"BVbench{r[0]:05d}") for r in recs])
            archived = "archived" in {r[1] for r in conn.execute(
                "PRAGMA table_info(recording_parts)")}
            conn.executemany("INSERT INTO recording_parts (recording_id, part_id, path, size, "
                             "idx" + (", archived" if archived else "") + ") VALUES (?,?,?,?,?"
                             + (",?" if archived else "") + ")",
                             [p if archived else p[:5] for p in rec_parts])
            if done:
                conn.executemany(
                    "INSERT INTO archive_reviews (recording_id, aid, review, changed_at) "
                    "VALUES (?,?,?,?)", [(r[0], 100_000 + r[0], "approved", r[5]) for r in recs])
    conn.close()


def timed(client: httpx.Client, path: str, params: dict[str, Any], repeat: int
          ) -> tuple[float, int, dict[str, Any]]:
    """Median milliseconds, bytes and the last answer's data of ``repeat`` GETs."""
    times, size, data = [], 0, {}
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params=params)
        times.append(1000 * (time.perf_counter() - started))
        response.raise_for_status()
        size = len(response.content)
        data = response.json()["data"]
    return statistics.median(times), size, data


def snapshot(client: httpx.Client) -> tuple[float, int, int]:
    """Milliseconds and bytes to the end of the live view's first snapshot; its task count."""
    started = time.perf_counter()
    body = b""
    with client.stream("GET", "/api/manage/events") as response:
        for chunk in response.iter_bytes():
            body += chunk
            if body.startswith(b"event: snapshot") and b"\n\n" in body:
                break
    took = 1000 * (time.perf_counter() - started)
    event = body.split(b"\n\n", 1)[0]
    data = json.loads(event.split(b"data: ", 1)[1])
    return took, len(event), len(data.get("tasks", []))


def run_one(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"tasks": n}
    with LocalMesh(workdir) as mesh:
        if args.hub_source:
            mesh.extra_env["PYTHONPATH"] = str(args.hub_source.resolve())
        hub = mesh.start_hub()  # creates the schema (the recording tables too)
        hub.stop()
        fill(workdir / "hub-data" / "bupmesh.db", n, time.time())
        started = time.perf_counter()
        hub = mesh.restart_hub()
        result["startup_s"] = time.perf_counter() - started
        time.sleep(2)
        pid = hub.popen.pid
        result["rss_mib"] = status_kib(pid, "VmRSS") / 1024
        with httpx.Client(base_url=mesh.hub_url, timeout=120,
                          headers={"Authorization": f"Bearer {mesh.admin_token}"}) as client:
            ms, size, data = timed(client, "/api/manage/tasks", {}, args.repeat)
            tasks = data["tasks"] if isinstance(data, dict) else data
            result["default"] = {"ms": ms, "bytes": size, "tasks": len(tasks)}
            pages = {
                "status=failed": {"status": "failed"},
                "agent": {"agent": AGENTS[3]},
                "account": {"account": ACCOUNTS[1]},
                "recording": {"recording": max(1, n // PARTS_PER_RECORDING // 2)},
                "time range (a week)": {"since": time.time() - 200 * 86400,
                                        "until": time.time() - 193 * 86400},
            }
            result["pages"] = {}
            for name, params in pages.items():
                ms, size, data = timed(client, "/api/manage/tasks", params, args.repeat)
                count = len(data["tasks"] if isinstance(data, dict) else data)
                result["pages"][name] = {"ms": ms, "bytes": size, "tasks": count}
            cursor, walked = None, 0
            if isinstance(data, dict):
                for _ in range(args.walk):
                    page = client.get("/api/manage/tasks",
                                      params={"cursor": cursor} if cursor else {}).json()["data"]
                    cursor = page.get("next_cursor")
                    walked += 1
                    if not cursor:
                        break
            if cursor:
                ms, size, data = timed(client, "/api/manage/tasks", {"cursor": cursor},
                                       args.repeat)
                result["pages"][f"page {walked + 1} (cursor)"] = {
                    "ms": ms, "bytes": size, "tasks": len(data["tasks"])}
            took, size, count = snapshot(client)
            result["snapshot"] = {"ms": took, "bytes": size, "tasks": count}
        result["peak_rss_mib"] = status_kib(pid, "VmHWM") / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[0, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5, help="requests per figure (median)")
    parser.add_argument("--walk", type=int, default=50, help="pages to follow for the deep one")
    parser.add_argument("--hub-source", type=Path, default=None,
                        help="run the hub from this source tree (e.g. a git archive of another "
                             "commit) while the bench and its clients stay this tree's: "
                             "before and after from the same commands")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"loadavg_start": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bupmesh-history-") as tmp:
        for n in args.tasks:
            r = run_one(n, args, Path(tmp) / f"n{n}")
            report["runs"].append(r)
            print(f"[{n}] startup {r['startup_s']:.2f}s, RSS {r['rss_mib']:.0f} MiB, peak "
                  f"{r['peak_rss_mib']:.0f} MiB; default list {r['default']['ms']:.1f} ms "
                  f"{r['default']['bytes']:,} B ({r['default']['tasks']} tasks); snapshot "
                  f"{r['snapshot']['ms']:.1f} ms {r['snapshot']['bytes']:,} B "
                  f"({r['snapshot']['tasks']} tasks)", flush=True)
            for name, p in r["pages"].items():
                print(f"[{n}]   {name}: {p['ms']:.1f} ms, {p['bytes']:,} B, {p['tasks']} tasks",
                      flush=True)
    report["loadavg_end"] = os.getloadavg()
    print()
    print("| finished tasks | startup | RSS | peak RSS | list (default) | slowest filtered page "
          "| snapshot |")
    print("|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        slowest = max(r["pages"].values(), key=lambda p: p["ms"])
        print(f"| {r['tasks']:,} | {r['startup_s']:.2f} s | {r['rss_mib']:.0f} MiB "
              f"| {r['peak_rss_mib']:.0f} MiB | {r['default']['ms']:.1f} ms, "
              f"{r['default']['bytes'] / 1e6:.2f} MB | {slowest['ms']:.1f} ms "
              f"| {r['snapshot']['ms']:.1f} ms, {r['snapshot']['bytes'] / 1e6:.2f} MB |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
