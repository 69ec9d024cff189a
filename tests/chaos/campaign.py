"""One chaos run with real processes: mesh up, nemesis plays its plan, heal, wait, check.

The mesh is the real thing (``bupmesh sim-bili``, ``bupmesh hub``, five
``bupmesh agent`` processes bound to 127.0.0.2-6), except that each agent
dials the hub through its own :class:`tests.support.faultproxy.FaultProxy`, so the
nemesis can break that agent's path without touching the others. A
:class:`tests.chaos.schedule.Plan` says what to break and when; this module
only carries it out (:class:`Nemesis`), adds the planned parts as they fall
due (a recorder handing over recordings during the storm), then heals
everything, waits (bounded) until nothing moves, reads the simulator's ledger
and the hub's SQLite database and hands them to :func:`tests.chaos.checker.check`.

Settings are chosen so every part *can* complete once the faults heal:
network retries back off fast and often (0.2-2 s, 5 per agent), the hub's
risk pacing is open (min interval 0) with a 1 s cooldown, and the heal step
re-enables any IP the ledger disabled (an operator's job after a 406 storm;
without it a part could wait hours for Bilibili to forgive an IP, which is
right in production and useless here).
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bupmesh.localmesh import (
    OPEN_ACCOUNT_YAML,
    TERMINAL,
    LocalMesh,
    MeshError,
    Process,
    wait_for,
    write_random_file,
)
from tests.chaos import schedule as S
from tests.chaos.checker import Findings, Source, check
from tests.support.faultproxy import FaultProxy

MiB = 1024 * 1024
SIM_CHUNK = MiB  # several upos parts per file, so resumes and mid-part faults happen
SIM_THREADS = 2
BASE_BANDWIDTH = 4 * MiB  # per source IP: uploads last long enough to be hit
QUIESCENCE_TIMEOUT = {"short": 90.0, "long": 240.0}
STILL_SECONDS = 3.0  # the simulator saw no request for this long: nothing is in flight

HUB_YAML = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 100000
  cooldown_seconds: 1
  disable_after_events: 4
{OPEN_ACCOUNT_YAML}    cooldown_seconds: 1
retry:
  network_retries: 5
  backoff_initial_seconds: 0.2
  backoff_max_seconds: 2
"""

WEBHOOK_SECRET = "chaos-hook-secret"

# Recordings arrive as BililiveRecorder webhooks and are submitted on their own.
INGEST_YAML = """\
ingest:
  bililive_recorder_work_dir: {files}
  webhook_secret: {secret}
submission:
  auto_submit: true
  settle_seconds: 0.3
  unknown_wait_seconds: 1
  retry_seconds: 1
"""
SUBMIT_DONE = frozenset({"submitted", "failed"})

# Three chunks of credit for two concurrent tasks: an agent cannot finish a part
# without its link, so link faults land in the middle of transfers.
AGENT_YAML = f"""\
agent:
  chunk_size_mb: {SIM_CHUNK // MiB}
  buffer_size_mb: 3
  max_concurrent_uploads: 2
"""


def agent_ip(index: int) -> str:
    return f"127.0.0.{index + 1}"


@dataclass
class RunResult:
    plan: S.Plan
    findings: Findings
    seconds: float
    nemesis_log: list[str]
    stats: dict[str, Any]
    logs: str = ""

    @property
    def ok(self) -> bool:
        return self.findings.ok

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (f"chaos seed {self.plan.seed} ({self.plan.profile.name}): {verdict} in "
                f"{self.seconds:.1f}s; {self.findings.counts()}; {self.stats}")

    def report(self, replay: str) -> str:
        return "\n".join([
            self.summary(), f"replay: {replay}", "", self.plan.render(), "",
            "nemesis as executed:", *("  " + line for line in self.nemesis_log), "",
            self.findings.render(), "", self.logs,
        ])


@dataclass
class _PendingPart:
    plan: S.PartPlan
    path: Path
    ambiguous: bool = False  # a request may have reached the hub: look before re-sending
    tries: int = 0


@dataclass
class _PendingRecording:
    """One live session's webhook events, sent strictly in order (each retried until the
    hub takes it: the hub de-duplicates by EventId, so a blind retry is safe)."""

    number: int
    events: list[tuple[float, dict[str, Any]]]  # (due, event) in order
    sent: int = 0

    @property
    def due(self) -> float:
        return self.events[self.sent][0]


def brec_event(kind: str, session: str, room: int, **data: Any) -> dict[str, Any]:
    """A BililiveRecorder webhook v2 body (the fields the hub reads)."""
    return {
        "EventType": kind, "EventTimestamp": "2026-11-29T20:00:00.0000000+08:00",
        "EventId": str(uuid.uuid4()),
        "EventData": {"SessionId": session, "RoomId": room, "ShortId": 0, "Name": "chaos",
                      "Title": f"chaos room {room}", "AreaNameParent": "网游",
                      "AreaNameChild": "英雄联盟", "Recording": True, "Streaming": True, **data},
    }


@dataclass
class Nemesis:
    """Carries out a plan on a running mesh; every action is logged with its real time."""

    mesh: LocalMesh
    proxies: dict[int, FaultProxy]
    agent_args: dict[int, tuple[str, ...]]
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    t0: float = 0.0
    killed_agents: set[int] = field(default_factory=set)
    hub_down: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.2f}s  {text}")

    # -- processes ------------------------------------------------------------------------------

    def _latest(self, name: str) -> Process:
        return next(p for p in reversed(self.mesh.processes) if p.name == name)

    def kill_agent(self, index: int) -> None:
        self._latest(f"agent-{index}").kill()
        self.killed_agents.add(index)

    def start_agent(self, index: int) -> None:
        if index in self.killed_agents:
            self._latest(f"agent-{index}").stop()  # closes the dead one's log handle
            self.mesh.start_agent(index, *self.agent_args[index])
            self.killed_agents.discard(index)

    def kill_hub(self) -> None:
        hub = self._latest("hub")
        hub.kill()
        hub.stop()
        self.hub_down = True

    def start_hub(self) -> None:
        if not self.hub_down:
            return
        for attempt in itertools.count(1):  # the port may linger a moment after SIGKILL
            try:
                self.mesh.restart_hub()
                break
            except MeshError as exc:
                if attempt >= 3:
                    raise
                self.note(f"hub restart failed ({exc!s:.200}), trying again")
                time.sleep(1)
        self.hub_down = False

    # -- simulator ------------------------------------------------------------------------------

    def sim_config(self, body: dict[str, Any]) -> None:
        self.mesh.sim("POST", "/_sim/config", json=body)

    def sim_faults(self, **faults: Any) -> None:
        self.sim_config({"faults": faults})

    def sim_406(self, ip: str, on: bool) -> None:
        current = set(self.mesh.sim("GET", "/_sim/config")["risk"]["always_406"])
        current = current | {ip} if on else current - {ip}
        self.sim_config({"risk": {"always_406": sorted(current)}})

    def sim_fail_next(self, rule: dict[str, Any]) -> None:
        # Lists are replaced by a POST: append to what is left of the current rules.
        rules = self.mesh.sim("GET", "/_sim/config")["faults"]["fail_next"]
        self.sim_faults(fail_next=[*rules, rule])

    # -- one fault ------------------------------------------------------------------------------

    def actions(self, fault: S.Fault) -> list[tuple[float, str, Callable[[], None]]]:
        """(when, what, do) for the start of ``fault`` and, if windowed, its undoing."""
        i = fault.agent
        proxy = self.proxies[i] if i is not None else None
        ip = agent_ip(i) if i is not None else ""
        start: Callable[[], None]
        undo: Callable[[], None] | None = None
        k = fault.kind
        if k == S.KILL_AGENT:
            start, undo = (lambda: self.kill_agent(i)), (lambda: self.start_agent(i))
        elif k == S.CUT_LINK:
            start = lambda: self.note(f"  cut {proxy.cut()} connections")  # noqa: E731
        elif k == S.CUT_ALL_LINKS:
            start = lambda: self.note(  # noqa: E731
                f"  cut {sum(p.cut() for p in self.proxies.values())} connections")
        elif k == S.BLACKHOLE_LINK:
            start, undo = proxy.blackhole, proxy.heal
        elif k == S.LINK_LATENCY:
            start, undo = (lambda: proxy.set_latency(fault.value)), (lambda: proxy.set_latency(0))
        elif k == S.LINK_BANDWIDTH:
            start = lambda: proxy.set_bandwidth(int(fault.value))  # noqa: E731
            undo = lambda: proxy.set_bandwidth(0)  # noqa: E731
        elif k == S.KILL_HUB:
            start, undo = self.kill_hub, self.start_hub
        elif k == S.SIM_5XX_RATE:
            start = lambda: self.sim_faults(status_5xx_rate=fault.value)  # noqa: E731
            undo = lambda: self.sim_faults(status_5xx_rate=0.0)  # noqa: E731
        elif k == S.SIM_DELAY:
            start = lambda: self.sim_faults(delay_seconds=fault.value)  # noqa: E731
            undo = lambda: self.sim_faults(delay_seconds=0.0)  # noqa: E731
        elif k == S.SIM_406:
            start, undo = (lambda: self.sim_406(ip, True)), (lambda: self.sim_406(ip, False))
        elif k == S.SIM_IP_BANDWIDTH:
            start = lambda: self.sim_faults(bandwidth_bps_per_ip={ip: int(fault.value)})  # noqa: E731
            undo = lambda: self.sim_faults(bandwidth_bps_per_ip={ip: BASE_BANDWIDTH})  # noqa: E731
        elif k == S.SIM_FAIL_5XX:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": fault.op, "action": "status", "status": 503,
                 "count": int(fault.value), "ip": ip})
        elif k == S.SIM_DROP_PUT:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": "put", "action": "drop", "count": int(fault.value), "ip": ip})
        elif k == S.SIM_STALL:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": "put", "action": "stall", "seconds": fault.duration, "count": 1, "ip": ip})
        else:
            raise ValueError(f"unknown fault kind {k!r}")
        who = f" agent-{i}" if i is not None else ""
        out = [(fault.at, f"{k}{who} start", start)]
        if undo is not None:
            out.append((fault.at + fault.duration, f"{k}{who} end", undo))
        return out

    def do(self, what: str, action: Callable[[], None]) -> None:
        self.note(what)
        try:
            action()
        except Exception as exc:  # a nemesis that could not act: the run proves nothing
            self.errors.append(f"{what}: {exc!r}")
            self.note(f"  FAILED: {exc!r}")


class Campaign:
    """Build the mesh for ``plan`` in ``workdir``, run it, and return the verdict."""

    def __init__(self, plan: S.Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.sources: dict[str, Source] = {}
        self.recordings: dict[int, list[str]] = {}  # number -> source paths
        self.http = httpx.Client(timeout=5)

    # -- admin calls that survive a dead hub ----------------------------------------------------

    def _admin(self, mesh: LocalMesh, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, f"{mesh.hub_url}{path}", **kw,
                                     headers={"Authorization": f"Bearer {mesh.admin_token}"})
        body = response.json()
        if response.status_code >= 400 or body.get("code") != 0:
            raise MeshError(f"{method} {path}: HTTP {response.status_code} {body.get('message')}")
        return body["data"]

    def _tasks(self, mesh: LocalMesh) -> list[dict]:
        data = self._admin(mesh, "GET", "/api/manage/tasks")
        return data["tasks"] if isinstance(data, dict) else data

    def _try_add(self, mesh: LocalMesh, item: _PendingPart, nemesis: Nemesis) -> bool:
        """One attempt to hand a part to the hub; True once the hub has it (exactly once)."""
        item.tries += 1
        path = str(item.path)
        try:
            if item.ambiguous:
                if any(t.get("file_path") == path for t in self._tasks(mesh)):
                    nemesis.note(f"part {item.plan.name} was created by an earlier request")
                    return True
                item.ambiguous = False
            self._admin(mesh, "POST", "/api/manage/parts",
                        json={"file_path": path, "title": item.plan.name})
            nemesis.note(f"part {item.plan.name} added ({item.plan.size} B)")
            return True
        except httpx.ConnectError:
            return False  # never reached the hub: safe to send again
        except (httpx.HTTPError, MeshError, ValueError) as exc:
            # The hub may have written the part and died before answering: a blind
            # retry would upload the file twice, so look first next time.
            item.ambiguous = True
            nemesis.note(f"part {item.plan.name}: {exc!r:.120}; will look before re-sending")
            return False

    def _try_event(self, mesh: LocalMesh, item: _PendingRecording, nemesis: Nemesis) -> bool:
        """Send the recording's next event; True once the hub has taken it."""
        _, event = item.events[item.sent]
        try:
            response = self.http.post(f"{mesh.hub_url}/api/webhook/bililive-recorder",
                                      json=event, params={"secret": WEBHOOK_SECRET})
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            nemesis.note(f"recording {item.number}: webhook HTTP {response.status_code}; again")
            return False
        data = response.json().get("data") or {}
        nemesis.note(f"recording {item.number}: {event['EventType']} "
                     f"{event['EventData'].get('RelativePath', '')} -> {data.get('result')}")
        item.sent += 1
        return True

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.monotonic()
        mesh_dir = self.workdir / "mesh"
        with LocalMesh(mesh_dir) as mesh:
            proxies: dict[int, FaultProxy] = {}
            try:
                return self._run(mesh, proxies, started)
            finally:
                for proxy in proxies.values():
                    proxy.stop()
                self.http.close()

    def _run(self, mesh: LocalMesh, proxies: dict[int, FaultProxy], started: float) -> RunResult:
        plan, profile = self.plan, self.plan.profile
        mesh.start_sim()
        mesh.sim("POST", "/_sim/config", json={
            "chunk_size": SIM_CHUNK, "threads": SIM_THREADS, "seed": plan.seed,
            "faults": {"bandwidth_bps": BASE_BANDWIDTH},
        })
        files = (self.workdir / "files").resolve()
        files.mkdir(parents=True, exist_ok=True)
        mesh.start_hub(config_yaml=HUB_YAML + f"scheduler:\n  strategy: {plan.strategy}\n"
                       + INGEST_YAML.format(files=files, secret=WEBHOOK_SECRET))
        mesh.add_account("main")
        agent_yml = self.workdir / "agent.yml"
        agent_yml.write_text(AGENT_YAML)
        lifetime = profile.nemesis_seconds + QUIESCENCE_TIMEOUT[profile.name] + 120
        agent_args: dict[int, tuple[str, ...]] = {}
        for index in range(1, profile.agents + 1):
            proxies[index] = FaultProxy(mesh.grpc_address, lifetime=lifetime).start()
            agent_args[index] = ("--config", str(agent_yml), "--server-url", proxies[index].address)
            mesh.start_agent(index, *agent_args[index])
        mesh.wait_agents_online(profile.agents, timeout=60)

        pending: list[_PendingPart | _PendingRecording] = []
        sessions: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        for part in plan.parts:  # in hand-over order
            path = files / part.name
            md5 = write_random_file(path, part.size, seed=part.content_seed)
            self.sources[str(path)] = Source(str(path), part.size, md5)
            if part.recording is None:
                pending.append(_PendingPart(part, path))
                continue
            n = part.recording
            session = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bupmesh-chaos/{plan.seed}/{n}"))
            events = sessions.setdefault(n, [(part.at, brec_event("SessionStarted", session, 7000 + n))])
            events.append((part.at, brec_event(
                "FileClosed", session, 7000 + n, RelativePath=part.name, FileSize=part.size,
                FileOpenTime="2026-11-29T20:00:00+08:00", FileCloseTime="2026-11-29T20:59:00+08:00")))
            self.recordings.setdefault(n, []).append(str(path))
        for n, events in sorted(sessions.items()):
            session = events[0][1]["EventData"]["SessionId"]
            events.append((events[-1][0], brec_event("SessionEnded", session, 7000 + n)))
            pending.append(_PendingRecording(n, events))

        nemesis = Nemesis(mesh, proxies, agent_args)
        self._play(nemesis, pending)
        self._heal(mesh, nemesis)
        healed = time.monotonic()
        quiet = self._wait_quiescence(mesh, nemesis)
        self.heal_to_quiet = time.monotonic() - healed
        findings = self._check(mesh)
        if nemesis.errors:
            findings.non_terminal.extend(f"nemesis could not act: {e}" for e in nemesis.errors)
        if not quiet:
            findings.non_terminal.append("the mesh did not quiesce within the bound")
        stats = self._stats(mesh, proxies, nemesis)
        result = RunResult(plan, findings, time.monotonic() - started, nemesis.log, stats)
        if not result.ok:
            result.logs = self._logs(mesh)
        return result

    def _play(self, nemesis: Nemesis, pending: list[_PendingPart | _PendingRecording]) -> None:
        """Run every planned action and part hand-over at its time (late if the one before ran long)."""
        seq = itertools.count()
        queue: list[tuple[float, int, str, Callable[[], None]]] = []
        for fault in self.plan.faults:
            for at, what, action in nemesis.actions(fault):
                heapq.heappush(queue, (at, next(seq), what, action))
        parts: list[tuple[float, int, _PendingPart | _PendingRecording]] = [
            (p.due if isinstance(p, _PendingRecording) else p.plan.at, next(seq), p)
            for p in pending]
        heapq.heapify(parts)
        nemesis.t0 = time.monotonic()
        deadline = nemesis.t0 + self.plan.profile.nemesis_seconds + 120  # parts wait for a hub
        while queue or parts:
            now = time.monotonic() - nemesis.t0
            if queue and queue[0][0] <= now:
                _, _, what, action = heapq.heappop(queue)
                nemesis.do(what, action)
                continue
            if parts and parts[0][0] <= now:
                at, n, item = heapq.heappop(parts)
                if isinstance(item, _PendingRecording):
                    if not nemesis.hub_down and self._try_event(nemesis.mesh, item, nemesis):
                        if item.sent < len(item.events):  # the next event in its own time
                            heapq.heappush(parts, (item.due, n, item))
                        continue
                elif not nemesis.hub_down and self._try_add(nemesis.mesh, item, nemesis):
                    continue
                if time.monotonic() > deadline:
                    nemesis.errors.append(f"hand-over {item!r:.80} could not be made")
                    continue
                heapq.heappush(parts, (now + 0.5, n, item))
                continue
            upcoming = min([q[0] for q in queue[:1]] + [p[0] for p in parts[:1]])
            time.sleep(min(max(upcoming - now, 0.0), 0.2))
        nemesis.note("plan done")

    def _heal(self, mesh: LocalMesh, nemesis: Nemesis) -> None:
        """Undo everything: processes up, links clean, simulator honest, IPs forgiven."""
        nemesis.note("heal")
        nemesis.do("heal hub", nemesis.start_hub)
        for index in sorted(nemesis.killed_agents):
            nemesis.do(f"heal agent-{index}", lambda i=index: nemesis.start_agent(i))
        for proxy in nemesis.proxies.values():
            proxy.heal()
            proxy.set_latency(0)
            proxy.set_bandwidth(0)
        nemesis.do("heal simulator", lambda: nemesis.sim_config({
            "risk": {"always_406": []},
            "faults": {"status_5xx_rate": 0.0, "delay_seconds": 0.0, "drop_put_rate": 0.0,
                       "fail_next": [], "bandwidth_bps_per_ip": {
                           agent_ip(i): BASE_BANDWIDTH for i in nemesis.proxies}},
        }))

        def forgive() -> None:
            data = self._admin(mesh, "GET", "/api/manage/ips")
            for row in data["ips"] if isinstance(data, dict) else data:
                if row.get("state") in ("disabled", "cooling"):
                    self._admin(mesh, "POST", f"/api/manage/ips/{row['ip']}/enable")
                    nemesis.note(f"  re-enabled {row['ip']} (was {row['state']})")
            # 406s on several IPs at once put the account at fault: vouch for it too
            risk = self._admin(mesh, "GET", "/api/manage/accounts/main/risk")
            if risk.get("state") in ("cooling", "penalised"):
                self._admin(mesh, "POST", "/api/manage/accounts/main/risk/release")
                nemesis.note(f"  released account main (was {risk['state']})")

        nemesis.do("heal risk ledger", forgive)

    def _wait_quiescence(self, mesh: LocalMesh, nemesis: Nemesis) -> bool:
        """Every task terminal, then the simulator idle for a while: late duplicates show up."""
        timeout = QUIESCENCE_TIMEOUT[self.plan.profile.name]
        deadline = time.monotonic() + timeout

        def all_terminal() -> bool:
            try:
                tasks = self._tasks(mesh)
            except (httpx.HTTPError, MeshError, ValueError, sqlite3.Error):  # garbled, busy
                return False
            if len(tasks) < len(self.sources) or any(t["status"] not in TERMINAL for t in tasks):
                return False
            return all(state in SUBMIT_DONE for state in self._submit_states(mesh))

        try:
            wait_for(all_terminal, timeout, "every task terminal", interval=0.5)
        except TimeoutError:
            nemesis.note(f"tasks or submissions not done after {timeout}s")
            return False
        nemesis.note("every task terminal, every recording submitted or failed")
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline + 30:
            seen = len(mesh.sim("GET", "/_sim/requests")["requests"])
            if seen != last:
                last, still_since = seen, time.monotonic()
            elif time.monotonic() - still_since >= STILL_SECONDS:
                nemesis.note("simulator quiet")
                return True
            time.sleep(0.5)
        nemesis.note("simulator never went quiet")
        return False

    def _submit_states(self, mesh: LocalMesh) -> list[str]:
        db = mesh.workdir / "hub-data" / "bupmesh.db"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            states = [r[0] for r in conn.execute("SELECT submit_state FROM recordings")]
        finally:
            conn.close()
        # Until every recording exists its absence is "not done" too.
        return states if len(states) >= len(self.recordings) else [*states, "missing"]

    def _check(self, mesh: LocalMesh) -> Findings:
        db = mesh.workdir / "hub-data" / "bupmesh.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            parts = [dict(r) for r in conn.execute(
                "SELECT id, file_path, size, md5, state, filename FROM parts")]
            tasks = [dict(r) for r in conn.execute(
                "SELECT task_id, part_id, status, error_message, attempt, retry_count "
                "FROM agent_tasks")]
            self._recording_rows = [dict(r) for r in conn.execute(
                "SELECT id, submit_state, submit_attempt, submit_error, aid FROM recordings")]
        conn.close()
        self._tasks_rows = tasks
        return check(
            sources=self.sources.values(),
            parts=parts,
            tasks=tasks,
            uploads=mesh.sim_uploads(),
            submissions=mesh.sim("GET", "/_sim/submissions")["submissions"],
            complete_requests=mesh.sim("GET", "/_sim/requests", params={"op": "complete"})["requests"],
            sessions=mesh.sim("GET", "/_sim/sessions")["sessions"],
            recordings=[paths for _, paths in sorted(self.recordings.items())],
        )

    def _stats(self, mesh: LocalMesh, proxies: dict[int, FaultProxy], nemesis: Nemesis) -> dict:
        requests = mesh.sim("GET", "/_sim/requests")["requests"]
        attempts = sorted(int(t["attempt"]) for t in self._tasks_rows)
        return {
            "strategy": self.plan.strategy,
            "faults": len(self.plan.faults),
            "heal_to_quiet_s": round(self.heal_to_quiet, 1),
            "link_cuts": sum(p.cuts for p in proxies.values()),
            "reconnects": sum(p.accepted for p in proxies.values()) - len(proxies),
            "sim_errors": sum(1 for r in requests if r["status"] >= 400 or r["status"] == 0),
            "max_attempt": attempts[-1] if attempts else 0,
            "attempts_total": sum(attempts),
            "archives": sum(1 for r in self._recording_rows if r["submit_state"] == "submitted"),
            "submit_attempts": sum(int(r["submit_attempt"] or 0) for r in self._recording_rows),
        }

    def _logs(self, mesh: LocalMesh) -> str:
        out = []
        for process in mesh.processes:
            if process.name in {p.name for p in out}:  # restarted ones share a log file
                continue
            out.append(process)
        # Read the files, not the handles: killed processes' handles are closed already.
        return "\n".join(
            f"===== {p.name} ({p.log_path})\n{p.log_path.read_text(errors='replace')[-3000:]}"
            for p in out)
