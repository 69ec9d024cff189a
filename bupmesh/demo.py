"""``bupmesh demo``: the whole mesh on loopback, uploading a generated recording.

Starts the Bilibili simulator, a hub and three agents bound to 127.0.0.2-4,
adds the simulator's account, feeds the parts of a generated recording to the
hub, shows each task's progress live, and ends with where every part went and
whether the simulator received it byte-exact. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, MeshError, wait_for, write_random_file

AGENTS = 3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", type=int, default=3, help="parts in the recording (default 3)")
    parser.add_argument("--part-size-mb", type=int, default=48, help="size of each part (default 48)")
    parser.add_argument(
        "--bandwidth-mbps", type=float, default=160.0,
        help="simulated upload bandwidth per agent IP, so progress is visible (default 160)",
    )
    parser.add_argument("--workdir", type=Path, help="keep files and logs here instead of a temp dir")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.parts < 1 or args.part_size_mb < 1:
        console.print("[red]--parts and --part-size-mb must be at least 1[/]")
        return 2
    with tempfile.TemporaryDirectory(prefix="bupmesh-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            return _demo(console, workdir, args)
        except (MeshError, TimeoutError) as exc:
            console.print(f"[red]demo failed:[/] {exc}")
            console.print(f"logs are in {workdir}" if args.workdir else "rerun with --workdir DIR to keep the logs")
            return 1


def _demo(console: Console, workdir: Path, args: argparse.Namespace) -> int:
    with LocalMesh(workdir) as mesh:
        console.print("[bold]starting[/] Bilibili simulator, hub and three agents on loopback ...")
        mesh.start_sim()
        per_ip = int(args.bandwidth_mbps * 1_000_000 / 8)
        mesh.sim("POST", "/_sim/config", json={"faults": {"bandwidth_bps": per_ip}})
        mesh.start_hub(config_yaml=OPEN_RISK_YAML)
        for index in range(1, AGENTS + 1):
            mesh.start_agent(index)
        agents = mesh.wait_agents_online(AGENTS)
        console.print("agents online: " + ", ".join(f"{a['agent_id']} ({a['ip_address']})" for a in agents))
        mesh.add_account("demo")

        recording = workdir / "recording"
        recording.mkdir(exist_ok=True)
        expected: dict[str, str] = {}
        tasks: list[str] = []
        for index in range(1, args.parts + 1):
            path = recording / f"room-21452505-part{index:02d}.flv"
            md5 = write_random_file(path, args.part_size_mb * 1024 * 1024, seed=index)
            created = mesh.add_part(path, title=f"P{index}")
            expected[created["task_id"]] = md5
            tasks.append(created["task_id"])
        console.print(f"recording: {args.parts} parts x {args.part_size_mb} MB queued on the hub")

        started = time.monotonic()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[agent]}"), console=console,
        ) as progress:
            bars = {
                t: progress.add_task(f"part {i + 1}", total=args.part_size_mb * 1024 * 1024, agent="")
                for i, t in enumerate(tasks)
            }

            def show(states: list[dict]) -> None:
                for state in states:
                    done = state["total_bytes"] if state["status"] == "completed" else state["uploaded_bytes"]
                    progress.update(
                        bars[state["task_id"]], completed=done,
                        agent=f"{state.get('agent_id') or '-'} {state['status']}",
                    )

            final = mesh.wait_tasks(tasks, timeout=600, on_poll=show)
        elapsed = time.monotonic() - started

        uploads = wait_for(
            lambda: (u := mesh.sim_uploads()) and len(u) >= sum(t["status"] == "completed" for t in final) and u,
            30, "the simulator ledger",
        )
        by_name = {u["filename"]: u for u in uploads}
        table = Table(title=f"recording uploaded in {elapsed:.1f} s")
        for column in ("part", "status", "agent", "source IP", "server file name", "biz_id", "bytes exact"):
            table.add_column(column)
        ok = True
        for index, state in enumerate(final, start=1):
            result = state.get("result") or {}
            upload = by_name.get(result.get("filename") or "")
            exact = bool(upload) and upload["md5"] == expected[state["task_id"]]
            ok &= state["status"] == "completed" and exact
            table.add_row(
                str(index), state["status"], state.get("agent_id") or "-",
                upload["source_ip"] if upload else "-", result.get("filename") or "-",
                str(result.get("biz_id") or "-"), "yes" if exact else "NO",
            )
        console.print(table)
        ips = {u["source_ip"] for u in uploads}
        console.print(f"{len(ips)} distinct source IPs used: {', '.join(sorted(ips))}")
        console.print("[green]all parts arrived byte-exact[/]" if ok else "[red]some parts failed[/]")
        return 0 if ok else 1
