"""One hub, N simulated agents: memory, CPU, dispatch latency and the reconnect storm.

For each N (default 1,000, 5,000 and 10,000) this starts a real ``bupmesh hub``
process on loopback and a load generator (``bench/loadgen.py``, spread over
several processes) holding N agents, each with its own gRPC stream (and, with
``--own-connections``, its own TCP connection), then prints:

  * hub RSS and hub CPU (% of one core) at steady heartbeat load (all N connected,
    heartbeats at the hub's interval, keepalive pings as real agents send them);
  * dispatch latency: from ``POST /api/manage/parts`` to the ``Offer`` arriving at
    the agent, p50/p99 over ``--parts`` parts (the generator completes each task by
    answering the protocol: Accept, Credit, Result with the MD5);
  * the reconnect storm after the hub is killed (SIGKILL, or ``--restart term``)
    and restarted on the same data: reconnects per second over time, and the
    busiest second over the mean rate, and how long after the restarted hub
    listened every agent was back (agents follow the real agent's policy: the
    hub's reconnect window, else full-jitter backoff).

Targets: 10,000 agents on one hub on 2 cores, hub RSS <= 300 MiB, dispatch p99
< 100 ms, every agent back within 20 s of the hub listening with no second above
3x the mean rate; 20,000 with the same p99 and no errors. ``--hub-cpus`` and
``--gen-cpus`` pin the hub and the generator apart; ``--hub-source DIR`` runs
another tree's hub (a before) under the same bench.

    .venv/bin/python bench/scale.py [--agents 1000 5000 10000] [--parts 200]
        [--heartbeat-seconds 30] [--steady-seconds 30] [--restart kill|term]
        [--own-connections] [--hub-cpus 0] [--gen-cpus 1] [--hub-source DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import raise_nofile_limit  # noqa: E402
from scalestats import cpu_percent, per_second, percentile, storm_summary  # noqa: E402

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, wait_for  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
PART_BYTES = 4096
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


class LoadGen:
    """The generator's worker processes and the events they report."""

    def __init__(self, server: str, psk: str, agents: int, *, workers: int,
                 ramp_seconds: float, seed: int, max_seconds: float, log_dir: Path,
                 cpus: set[int] | None = None, own_connections: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.procs: list[subprocess.Popen] = []
        env = {**os.environ, "BUPMESH_PSK": psk}
        per = math.ceil(agents / workers)
        for w in range(workers):
            first, count = w * per, min(per, agents - w * per)
            if count <= 0:
                break
            stderr = open(log_dir / f"loadgen-{w}.log", "ab")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [sys.executable, str(LOADGEN), "--server", server, "--first", str(first),
                 "--count", str(count), "--ramp-seconds", str(ramp_seconds),
                 "--seed", str(seed * 1000 + w), "--max-seconds", str(max_seconds),
                 *(["--own-connections"] if own_connections else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
            )
            stderr.close()
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            event = json.loads(line)
            with self._lock:
                self.events.append(event)

    def snapshot(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["ev"] == kind]

    def back_since(self, t: float) -> dict[int, float]:
        """Agent index -> time of its first Welcome at or after ``t``."""
        back: dict[int, float] = {}
        for e in self.snapshot("welcome"):
            if e["t"] >= t and (e["a"] not in back or e["t"] < back[e["a"]]):
                back[e["a"]] = e["t"]
        return back

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.stdin.close()  # type: ignore[union-attr]  # the worker's stop signal
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def profiled(enabled: bool, pid: int, out: Path) -> Iterator[None]:
    """Sample ``pid`` with py-spy (collapsed stacks in ``out``) while the block runs.

    py-spy is for profiling only (``.venv/bin/pip install py-spy``), not a dependency.
    """
    if not enabled:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "200", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    print(f"profile: {out}", flush=True)


def pin(pid: int, cpus: list[int] | None) -> None:
    """Keep ``pid`` (and the threads it starts from now on) on ``cpus`` (taskset)."""
    if cpus:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), set(cpus))


def hub_yaml(heartbeat_seconds: float, admission_rate: float = 0.0) -> str:
    text = (OPEN_RISK_YAML + "heartbeat:\n"
            f"  interval_seconds: {heartbeat_seconds}\n"
            f"  offline_after_seconds: {heartbeat_seconds * 3}\n")
    if admission_rate:
        text += f"reconnect:\n  admission_rate: {admission_rate}\n"
    return text


def measure_dispatch(mesh: LocalMesh, gen: LoadGen, parts: int, interval: float,
                     workdir: Path, timeout: float) -> dict[str, Any]:
    """Create ``parts`` parts one after another; time each until its Offer arrives."""
    created: dict[str, float] = {}
    task_ids: list[str] = []
    payload_dir = workdir / "parts"
    payload_dir.mkdir(exist_ok=True)
    with httpx.Client(base_url=mesh.hub_url, timeout=30,
                      headers={"Authorization": f"Bearer {mesh.admin_token}"}) as client:
        for i in range(parts):
            path = payload_dir / f"scale-part-{i:05d}.bin"
            path.write_bytes(i.to_bytes(4, "big") * (PART_BYTES // 4))
            started = time.time()
            reply = client.post("/api/manage/parts", json={"file_path": str(path)})
            reply.raise_for_status()
            created[path.name] = started
            task_ids.append(reply.json()["data"]["task_id"])
            time.sleep(interval)

        def offered() -> dict[str, float] | None:
            seen: dict[str, float] = {}
            for e in gen.snapshot("offer"):
                if e["file"] in created and e["file"] not in seen:
                    seen[e["file"]] = e["t"]
            return seen if len(seen) == len(created) else None

        offers = wait_for(offered, timeout, f"offers for {parts} parts", interval=0.2)

        def completed() -> int | None:
            page = client.get("/api/manage/tasks",
                              params={"status": "completed", "limit": 1000}).json()["data"]
            tasks = page["tasks"] if isinstance(page, dict) else page
            done = sum(1 for t in tasks if t["task_id"] in set(task_ids))
            return done if done == len(task_ids) else None

        done = wait_for(completed, timeout, f"{parts} tasks completed", interval=0.5)
    latencies = [1000 * (offers[name] - created[name]) for name in created]
    return {
        "parts": parts,
        "completed": done,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


def run_one(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workers = args.workers or max(1, math.ceil(n / args.agents_per_worker))
    ramp = args.ramp_seconds if args.ramp_seconds is not None else max(3.0, n / 250)
    result: dict[str, Any] = {"agents": n, "workers": workers, "ramp_seconds": ramp}
    with LocalMesh(workdir) as mesh:
        if args.hub_source:
            mesh.extra_env["PYTHONPATH"] = str(args.hub_source.resolve())
        hub = mesh.start_hub(config_yaml=hub_yaml(args.heartbeat_seconds, args.admission_rate))
        pin(hub.popen.pid, args.hub_cpus)
        mesh.add_account()
        gen = LoadGen(mesh.grpc_address, mesh.psk, n, workers=workers, ramp_seconds=ramp,
                      seed=args.seed, max_seconds=args.max_seconds, log_dir=workdir,
                      cpus=set(args.gen_cpus) if args.gen_cpus else None,
                      own_connections=args.own_connections)
        try:
            started = time.time()
            wait_for(lambda: gen.alive() and len(gen.back_since(0)) >= n or not gen.alive(),
                     ramp + args.connect_timeout, f"{n} agents connected", interval=0.5)
            if not gen.alive():
                raise RuntimeError(f"a load generator process died: see {workdir}/loadgen-*.log")
            result["all_connected_s"] = max(gen.back_since(0).values()) - started
            print(f"[{n}] {n} agents connected in {result['all_connected_s']:.1f}s "
                  f"({workers} generator processes)", flush=True)

            # Steady state: every agent heartbeats once per interval from its own phase.
            time.sleep(min(args.heartbeat_seconds, 10.0))
            ticks, t0 = cpu_ticks(hub.popen.pid), time.monotonic()
            with profiled(args.profile, hub.popen.pid, workdir / f"hub-n{n}-steady.txt"):
                time.sleep(args.steady_seconds)
            result["hub_cpu_percent"] = cpu_percent(ticks, cpu_ticks(hub.popen.pid),
                                                    time.monotonic() - t0, CLK_TCK)
            result["hub_rss_mib"] = status_kib(hub.popen.pid, "VmRSS") / 1024
            result["hub_fds"] = len(os.listdir(f"/proc/{hub.popen.pid}/fd"))
            print(f"[{n}] steady: hub RSS {result['hub_rss_mib']:.0f} MiB, "
                  f"CPU {result['hub_cpu_percent']:.1f}%, {result['hub_fds']} descriptors",
                  flush=True)

            with profiled(args.profile, hub.popen.pid, workdir / f"hub-n{n}-dispatch.txt"):
                result["dispatch"] = measure_dispatch(mesh, gen, args.parts, args.part_interval,
                                                      workdir, timeout=120)
            d = result["dispatch"]
            print(f"[{n}] dispatch over {d['parts']} parts: p50 {d['p50_ms']:.1f} ms, "
                  f"p99 {d['p99_ms']:.1f} ms, max {d['max_ms']:.1f} ms", flush=True)
            result["hub_peak_rss_mib"] = status_kib(hub.popen.pid, "VmHWM") / 1024

            result["storm"] = measure_storm(mesh, hub, gen, n, args)
            s = result["storm"]
            print(f"[{n}] storm ({args.restart}): all {n} back {s['all_back_after_kill_s']:.1f}s "
                  f"after the kill, {s['all_back_after_listening_s']:.1f}s after the hub "
                  f"listened ({s['hub_listening_after_s']:.1f}s after the kill), max {s['max_per_s']}/s, mean {s['mean_per_s']:.0f}/s, "
                  f"ratio {s['ratio']:.2f}", flush=True)
            if s["hub_side"]:
                h = s["hub_side"]
                print(f"[{n}] storm as the hub logged it: {h['reconnects']} sessions, "
                      f"max {h['max_per_s']}/s, mean {h['mean_per_s']:.0f}/s, "
                      f"ratio {h['ratio']:.2f}", flush=True)
        finally:
            gen.close()
    return result


def measure_storm(mesh: LocalMesh, hub: Any, gen: LoadGen, n: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Kill the hub, start it again on the same data and ports, time the agents' return."""
    log_offset = hub.log_path.stat().st_size  # the restarted hub appends to the same log
    killed = time.time()
    if args.restart == "kill":
        hub.kill()
    else:
        hub.stop(timeout=30)
    down = time.time()
    new_hub = mesh.restart_hub()
    pin(new_hub.popen.pid, args.hub_cpus)
    up = time.time()
    deadline = time.monotonic() + args.storm_timeout
    with profiled(args.profile, new_hub.popen.pid, mesh.workdir / f"hub-n{n}-storm.txt"):
        while len(gen.back_since(killed)) < n and time.monotonic() < deadline:
            time.sleep(0.5)
    back = gen.back_since(killed)  # an agent not back by the deadline is reported, not fatal
    times = list(back.values())
    summary = storm_summary(times, killed)
    dials = [e["t"] for e in gen.snapshot("dial") if e["t"] >= killed]
    end = max(times)
    # The hub's own account (its log): sessions it accepted. On one box the generator is
    # CPU-starved too, so the time it reads a Welcome can lag the hub by seconds.
    accepted = hub_sessions(new_hub.log_path, log_offset)
    listening = hub_listening(new_hub.log_path, log_offset) or up
    return {
        "restart": args.restart,
        "hub_stopped_after_s": down - killed,
        "hub_answering_after_s": up - killed,
        "hub_listening_after_s": listening - killed,
        "all_back_after_listening_s": max(max(accepted, default=end), end) - listening,
        **summary,
        "reconnects_per_s": per_second(times, killed, end),
        "hub_side": storm_summary(accepted, killed) if accepted else None,
        "hub_sessions_per_s": per_second(accepted, killed, max(accepted, default=killed)),
        "dials_per_s": per_second(dials, killed, end),
        "hub_rss_after_mib": status_kib(new_hub.popen.pid, "VmRSS") / 1024,
        "not_back": n - len(back),
        "generator_errors": [e["error"] for e in gen.snapshot("error")][:20],
    }


LISTENING_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO bupmesh\.hub: gRPC agent link listening")


def hub_listening(log_path: Path, offset: int) -> float | None:
    """When the restarted hub's gRPC port started listening (epoch seconds), from its log."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        for raw in f:
            m = LISTENING_LINE.match(raw.decode("utf-8", "replace"))
            if m:
                stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                return stamp + int(m.group(2)) / 1000
    return None


SESSION_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO bupmesh\.hub: agent \S+ connected \(session")


def hub_sessions(log_path: Path, offset: int) -> list[float]:
    """Times (epoch seconds) of the sessions the hub accepted, from its log after ``offset``."""
    times = []
    with open(log_path, "rb") as f:
        f.seek(offset)
        for raw in f:
            m = SESSION_LINE.match(raw.decode("utf-8", "replace"))
            if m:
                stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                times.append(stamp + int(m.group(2)) / 1000)
    return times


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--parts", type=int, default=200, help="parts for the dispatch figure")
    parser.add_argument("--part-interval", type=float, default=0.05,
                        help="seconds between part creations")
    parser.add_argument("--heartbeat-seconds", type=float, default=30.0,
                        help="hub heartbeat interval (agents follow Welcome)")
    parser.add_argument("--steady-seconds", type=float, default=30.0,
                        help="window for the steady-state CPU figure")
    parser.add_argument("--restart", choices=["kill", "term"], default="kill",
                        help="how the hub goes down before the storm (SIGKILL or SIGTERM)")
    parser.add_argument("--workers", type=int, default=0,
                        help="generator processes (default: one per --agents-per-worker)")
    parser.add_argument("--agents-per-worker", type=int, default=2500)
    parser.add_argument("--admission-rate", type=float, default=0.0,
                        help="the hub's reconnect.admission_rate (default 0: measured)")
    parser.add_argument("--own-connections", action="store_true",
                        help="one TCP connection per agent, as real agents dial (default: the "
                             "agents of one generator process share one, as gRPC pools them)")
    parser.add_argument("--hub-cpus", type=int, nargs="+", default=None,
                        help="pin the hub to these CPUs (default: no pinning)")
    parser.add_argument("--gen-cpus", type=int, nargs="+", default=None,
                        help="pin the load generator to these CPUs")
    parser.add_argument("--ramp-seconds", type=float, default=None,
                        help="spread first connects over this long (default N/250, >= 3)")
    parser.add_argument("--connect-timeout", type=float, default=180.0)
    parser.add_argument("--storm-timeout", type=float, default=300.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="generator processes stop by themselves after this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep logs and data here (default: a temporary directory)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the hub with py-spy in the steady, dispatch and storm phases")
    parser.add_argument("--hub-source", type=Path, default=None,
                        help="run the hub from this source tree (e.g. a git archive of another "
                             "commit) while the bench and its clients stay this tree's: "
                             "before and after from the same commands")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = parser.parse_args(argv)
    # Inherited by the hub and the generators: one descriptor per agent stream.
    nofile = raise_nofile_limit()
    # One descriptor per connection, and the hub's own (a few dozen).
    needed = (max(args.agents) if args.own_connections else 0) + 500
    if nofile < needed:
        parser.error(f"RLIMIT_NOFILE hard limit {nofile} < {needed} needed for the hub")

    report: dict[str, Any] = {"machine": machine(), "settings": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bupmesh-scale-") as tmp:
        base = args.workdir or Path(tmp)
        for n in args.agents:
            report["runs"].append(run_one(n, args, base / f"n{n}"))
    report["machine"]["loadavg_end"] = os.getloadavg()

    print()
    print("| agents | hub RSS | hub CPU (steady) | dispatch p50 | dispatch p99 "
          "| storm: all back after kill | after listening | max/s | mean/s | max/mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        d, s = r["dispatch"], r["storm"]
        print(f"| {r['agents']:,} | {r['hub_rss_mib']:.0f} MiB | {r['hub_cpu_percent']:.1f} % "
              f"| {d['p50_ms']:.1f} ms | {d['p99_ms']:.1f} ms | {s['all_back_after_kill_s']:.1f} s "
              f"| {s['all_back_after_listening_s']:.1f} s | {s['max_per_s']} | {s['mean_per_s']:.0f} | {s['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
