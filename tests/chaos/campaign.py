"""One chaos run with real processes: mesh up, nemesis plays its plan, heal, wait, check.

The mesh is the real thing (``bupmesh sim-bili``, ``bupmesh hub``, five
``bupmesh agent`` processes bound to 127.0.0.2-6), except that each agent
dials the hub through its own :class:`tests.support.faultproxy.FaultProxy`, so the
nemesis can break that agent's path without touching the others, and agents the
plan moves send their Bilibili traffic through an HTTP proxy of their own. A
:class:`tests.chaos.schedule.Plan` says what to break and when;
:class:`tests.chaos.nemesis.Nemesis` carries it out while this module adds the
planned parts as they fall due (a recorder handing over recordings during the
storm), then heals everything, waits (bounded) until nothing moves, reads the
simulator's ledger and the hub's SQLite database and hands them to
:func:`tests.chaos.checker.check`.

The hub runs its default strategy (``ip_diversity``) with held attempts on both
ends. Two accounts: recordings are submitted as ``main``, parts handed over by
the API upload as ``sub``, so a penalty or an account's captcha stops one and
not the other. Settings are chosen so every part *can* complete once the faults
heal: network retries back off fast and often (0.2-2 s, 5 per agent), the
hub's risk pacing is open (min interval 0) with 1 s cooldowns (an IP's, an
account at fault, an account throttle's first wait), and the heal step does
what an admin does after a storm: marks solved the captchas it solved at
Bilibili, re-enables IPs, forgets the limits the injected answers taught, and
releases an account Bilibili penalised, once its alert is out (without it a
part could wait hours for Bilibili to forgive an IP, which is right in
production and useless here).
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bupmesh.localmesh import (
    OPEN_ACCOUNT_YAML,
    SIM_COOKIES,
    TERMINAL,
    LocalMesh,
    MeshError,
    wait_for,
    write_random_file,
)
from tests.chaos import schedule as S
from tests.chaos.checker import Findings, Source, check
from tests.chaos.nemesis import BASE_BANDWIDTH, Nemesis, agent_ip
from tests.support.faultproxy import FaultProxy
from tests.support.httpproxy import HttpProxy

MiB = 1024 * 1024
SIM_CHUNK = MiB  # several upos parts per file, so resumes and mid-part faults happen
SIM_THREADS = 2
QUIESCENCE_TIMEOUT = {"short": 90.0, "long": 240.0}
STILL_SECONDS = 3.0  # the simulator saw no request for this long: nothing is in flight
# Simulator requests that only read (egress, line probes, archive lookups): never a late
# duplicate, so the quiet wait ignores them.
READS = frozenset({"zone", "probe", "view", "archives"})

# Held attempts as the defaults have them (heartbeat.held_grace_seconds, agent.held_grace),
# written out so the campaign keeps testing them if the defaults ever change.
HELD_GRACE = 60
ALERT_WAIT = 15.0  # a penalised account's alert is out within this (rules run every 1 s)

HUB_YAML = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
  held_grace_seconds: {HELD_GRACE}
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 100000
  cooldown_seconds: 1
  disable_after_events: 4
{OPEN_ACCOUNT_YAML}    cooldown_seconds: 1
    throttle_cooldown_seconds: 1
    throttle_cooldown_max_seconds: 4
retry:
  network_retries: 5
  backoff_initial_seconds: 0.2
  backoff_max_seconds: 2
alerts:
  evaluate_interval_seconds: 1
"""

# Recordings go to `main`, API parts to `sub`: two Bilibili users (two mids).
MAIN, SUB = "main", "sub"
SUB_MID = 10002
SUB_COOKIES = f"SESSDATA=sim-sessdata-2; bili_jct=sim-csrf-2; DedeUserID={SUB_MID}"

WEBHOOK_SECRET = "chaos-hook-secret"

# Recordings arrive as BililiveRecorder webhooks and are submitted on their own.
INGEST_YAML = """\
ingest:
  bililive_recorder_work_dir: {files}
  webhook_secret: {secret}
submission:
  account: main
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
  held_grace: {HELD_GRACE}s
  egress_check_interval: 10s
"""


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


class Campaign:
    """Build the mesh for ``plan`` in ``workdir``, run it, and return the verdict."""

    def __init__(self, plan: S.Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.sources: dict[str, Source] = {}
        self.recordings: dict[int, list[str]] = {}  # number -> source paths
        self.http = httpx.Client(timeout=5)
        self.penalties: dict[str, bool] = {}  # account Bilibili penalised -> its alert was out
        self.egress: dict[int, HttpProxy] = {}

    # -- admin calls that survive a dead hub ----------------------------------------------------

    def _admin(self, mesh: LocalMesh, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, f"{mesh.hub_url}{path}", **kw,
                                     headers={"Authorization": f"Bearer {mesh.admin_token}"})
        body = response.json()
        if response.status_code >= 400 or body.get("code") != 0:
            raise MeshError(f"{method} {path}: HTTP {response.status_code} {body.get('message')}")
        return body["data"]

    def _tasks(self, mesh: LocalMesh) -> list[dict]:
        tasks: list[dict] = []
        path = "/api/manage/tasks?limit=1000"
        while True:  # page by page (the hub never lists its whole history at once)
            data = self._admin(mesh, "GET", path)
            tasks += data["tasks"]
            if not data.get("next_cursor"):
                return tasks
            path = f"/api/manage/tasks?limit=1000&cursor={data['next_cursor']}"

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
                        json={"file_path": path, "title": item.plan.name, "account": SUB})
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
                for proxy in [*proxies.values(), *self.egress.values()]:
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
        mesh.sim("POST", "/_sim/accounts", json={"cookies": SUB_COOKIES, "mid": SUB_MID})
        mesh.start_hub(config_yaml=HUB_YAML + f"scheduler:\n  strategy: {plan.strategy}\n"
                       + INGEST_YAML.format(files=files, secret=WEBHOOK_SECRET))
        mesh.add_account(MAIN, SIM_COOKIES)
        mesh.add_account(SUB, SUB_COOKIES)
        agent_yml = self.workdir / "agent.yml"
        agent_yml.write_text(AGENT_YAML)
        lifetime = profile.nemesis_seconds + QUIESCENCE_TIMEOUT[profile.name] + 120
        agent_args: dict[int, tuple[str, ...]] = {}
        # Agents whose egress the plan moves send their Bilibili traffic through a proxy
        # of their own, leaving from their usual address until the nemesis moves it.
        for index in sorted({f.agent for f in plan.faults if f.kind == S.EGRESS_CHANGE}):
            assert index is not None
            self.egress[index] = HttpProxy(egress=agent_ip(index)).start()
        admin = lambda method, path, **kw: self._admin(mesh, method, path, **kw)  # noqa: E731
        nemesis = Nemesis(mesh, proxies, agent_args, admin, egress=self.egress)
        for index in range(1, profile.agents + 1):
            proxies[index] = FaultProxy(mesh.grpc_address, lifetime=lifetime).start()
            agent_args[index] = ("--config", str(agent_yml), "--server-url", proxies[index].address)
            nemesis.start_agent(index)
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

        self._play(nemesis, pending)
        nemesis.heal()
        nemesis.do("heal risk ledgers", lambda: self._forgive(mesh, nemesis))
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

    def _forgive(self, mesh: LocalMesh, nemesis: Nemesis) -> None:
        """What an admin does after the storm, through the admin API.

        An account Bilibili penalised stays stopped until released (the penalty is
        sticky on purpose): its alert must be out first, or the hub kept quiet about
        an account that uploads nothing. Then every IP the ledger holds back is
        re-enabled and every limit the injected answers taught is forgotten: a
        campaign's few minutes sit inside one sliding hour, so a learned rate would
        hold the mesh for the rest of the run.
        """
        for name in (MAIN, SUB):
            risk = self._admin(mesh, "GET", f"/api/manage/accounts/{name}/risk")
            if risk["state"] == "penalised":
                self.penalties[name] = self._alerted(mesh, f"account_penalty:{risk['account']}")
                nemesis.note(f"  account {name} penalised ({risk['penalty']}); alert "
                             f"{'raised' if self.penalties[name] else 'MISSING'}")
            if risk["state"] in ("cooling", "penalised") or risk.get("learned"):
                self._admin(mesh, "POST", f"/api/manage/accounts/{name}/risk/release")
                nemesis.note(f"  released account {name} (was {risk['state']})")
        data = self._admin(mesh, "GET", "/api/manage/ips")
        for row in data["ips"] if isinstance(data, dict) else data:
            if row.get("state") in ("disabled", "cooling"):
                self._admin(mesh, "POST", f"/api/manage/ips/{row['ip']}/enable")
                nemesis.note(f"  re-enabled {row['ip']} (was {row['state']})")
        for limit in self._admin(mesh, "GET", "/api/manage/risk/learned")["learned"]:
            if limit["scope"] in ("ip", "mesh"):
                body = {"scope": limit["scope"], "subject": limit["subject"]}
                self._admin(mesh, "POST", "/api/manage/risk/forget", json=body)
                nemesis.note(f"  forgot the {limit['scope']} limit {limit['subject']} "
                             f"({limit['hourly_cap']}/h)")

    def _alerted(self, mesh: LocalMesh, key: str) -> bool:
        """Whether the hub raised alert ``key`` (its log), waiting for the next rule pass."""
        log = next(p for p in reversed(mesh.processes) if p.name == "hub").log_path
        try:
            wait_for(lambda: f"ALERT {key}:" in log.read_text(errors="replace"), ALERT_WAIT,
                     f"alert {key}", interval=0.5)
        except TimeoutError:
            return False
        return True

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
            # Reads go on for as long as the mesh runs (each agent asks where its egress is
            # every few seconds here, unjittered): counted, five agents can keep every gap
            # under STILL_SECONDS for good. Only what can write an object or an archive counts.
            seen = sum(r["op"] not in READS
                       for r in mesh.sim("GET", "/_sim/requests")["requests"])
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
            # attempts a reconnecting agent held across its lost stream, and the hub kept
            self._held = conn.execute("SELECT COUNT(*) FROM agent_upload_logs "
                                      "WHERE event_type = 'resume'").fetchone()[0]
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
            penalties=self.penalties,
        )

    def _stats(self, mesh: LocalMesh, proxies: dict[int, FaultProxy], nemesis: Nemesis) -> dict:
        requests = mesh.sim("GET", "/_sim/requests")["requests"]
        attempts = sorted(int(t["attempt"]) for t in self._tasks_rows)
        codes = {code: sum(1 for r in requests if r.get("code") == code)
                 for code in (406, 601, 21566, 137022, 21590)}
        ips = self._admin(mesh, "GET", "/api/manage/ips")
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
            "answers": {str(code): n for code, n in codes.items() if n},
            "sessions_refused": sum(1 for r in requests if r["status"] == 403),
            "held_resumed": self._held,
            "captchas_solved": nemesis.captchas_solved,
            "penalised": sorted(self.penalties),
            "egress_ips": len(ips["ips"] if isinstance(ips, dict) else ips),
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
