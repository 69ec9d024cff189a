"""End to end, with real processes: failures and recovery, one fresh mesh per scenario.

Each scenario starts ``bupmesh sim-bili``, ``bupmesh hub`` and agents bound to
127.0.0.2-4, breaks something in the middle of an upload (the simulator's risk
control or 5xx storm, a SIGKILLed agent or hub, a link reset or blackholed by
:class:`tests.support.faultproxy.FaultProxy`) and then checks the invariants of
the invariants of docs/architecture.md at the simulator, which is the only witness that counts:

* every task ends ``completed`` or ``failed`` with a reason; none is left pending;
* a completed part has exactly one completed upos object, whose MD5 and size
  are the source file's; no file is completed twice under another name; the
  simulator saw exactly as many successful ``complete`` calls as objects.

Uploads are made to last long enough to interrupt by the simulator's per-IP
bandwidth cap and a small chunk size (several parts per file), not by big files.
The hub runs with a 1 s heartbeat (offline after 5 s) so heartbeat-based
detection fits in a test, and with risk limits opened wide (no minimum interval,
no hourly cap) so the scheduler's ledger never delays the uploads under test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bupmesh.localmesh import OPEN_ACCOUNT_YAML, TERMINAL, LocalMesh, wait_for, write_random_file
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
CHUNK = 2 * MiB  # the simulator's chunk_size: a 12 MiB file is six upos parts
HEARTBEAT = 1.0
OFFLINE_AFTER = 5.0

HUB_CONFIG = f"""\
heartbeat:
  interval_seconds: {HEARTBEAT}
  offline_after_seconds: {OFFLINE_AFTER}
risk:
  min_interval_seconds: 0
  max_uploads_per_hour: 1000
  cooldown_seconds: 3600
  disable_after_events: 3
{OPEN_ACCOUNT_YAML}retry:
  network_retries: 5
  backoff_initial_seconds: 0.5
  backoff_max_seconds: 2
"""

# With the default 64 MB of credit an agent holds a whole test file after a
# fraction of a second and could finish it with the link down; these agents
# hold at most two parts, so a dead link stalls them (what a 50 GB part does).
SMALL_BUFFER_AGENT = f"""\
agent:
  chunk_size_mb: {CHUNK // MiB}
  buffer_size_mb: {2 * CHUNK // MiB}
"""

AGENT_IPS = {1: "127.0.0.2", 2: "127.0.0.3", 3: "127.0.0.4"}


@dataclass
class Scenario:
    """One mesh and the files given to it: the bookkeeping every check needs."""

    mesh: LocalMesh
    tmp: Path
    proxies: dict[int, FaultProxy] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # task_id -> source md5
    sizes: dict[str, int] = field(default_factory=dict)

    def start_agents(
        self, indexes: Sequence[int], *, via_proxy: bool = False, small_buffer: bool = False
    ) -> None:
        """``small_buffer``: two chunks of credit, so the agent cannot finish without the link."""
        agent_config = self.tmp / "agent.yml"
        agent_config.write_text(SMALL_BUFFER_AGENT)
        for index in indexes:
            extra: list[str] = ["--config", str(agent_config)] if small_buffer else []
            if via_proxy:
                proxy = FaultProxy(self.mesh.grpc_address, lifetime=300).start()
                self.proxies[index] = proxy
                extra += ["--server-url", proxy.address]  # argparse: the last one wins
            self.mesh.start_agent(index, *extra)

    def add_file(self, name: str, size: int, seed: int) -> str:
        path = self.tmp / name
        md5 = write_random_file(path, size, seed=seed)
        task_id = self.mesh.add_part(path, title=name)["task_id"]
        self.expected[task_id] = md5
        self.sizes[task_id] = size
        return task_id

    def sim_config(self, **changes: Any) -> None:
        self.mesh.sim("POST", "/_sim/config", json=changes)

    def requests(self, **filters: str) -> list[dict]:
        return self.mesh.sim("GET", "/_sim/requests", params=filters)["requests"]

    def agent_status(self, agent_id: str) -> str | None:
        for agent in self.mesh.agents():
            if agent["agent_id"] == agent_id:
                return agent["status"]
        return None

    def logs(self) -> str:
        """Every process log and the hub's view of agents and IPs, for assertion messages."""
        parts = []
        for path in ("/api/manage/agents", "/api/manage/ips"):
            try:
                parts.append(f"===== GET {path}\n{self.mesh.admin('GET', path)}")
            except Exception as exc:  # the hub may be the thing that is down
                parts.append(f"===== GET {path}: {exc!r}")
        for process in self.mesh.processes:
            parts.append(f"===== {process.name}\n{process.log_text()[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    config = tmp_path / "hub.yml"
    config.write_text(HUB_CONFIG)
    with LocalMesh(tmp_path / "mesh", media_roots=(str(tmp_path),)) as mesh:
        mesh.start_sim()
        # One PUT at a time per upload: "parts done" is then a prefix, so the
        # hub's uploaded_bytes is its commit point and resume checks are exact.
        mesh.sim("POST", "/_sim/config", json={"chunk_size": CHUNK, "threads": 1})
        mesh.start_hub("--config", str(config))
        mesh.add_account("main")
        case = Scenario(mesh=mesh, tmp=tmp_path)
        try:
            yield case
        finally:
            for proxy in case.proxies.values():
                proxy.stop()


# ---------------------------------------------------------------------------- invariants


def wait_all_terminal(case: Scenario, timeout: float) -> list[dict]:
    try:
        return case.mesh.wait_tasks(list(case.expected), timeout=timeout)
    except TimeoutError:
        tasks = [case.mesh.task(t) for t in case.expected]
        pytest.fail(f"tasks not terminal after {timeout}s: {tasks}\n{case.logs()}")


def assert_exactly_once(case: Scenario, final: list[dict], *, all_completed: bool = True) -> None:
    """The invariants: one completed object per part with the source's bytes; nothing stuck."""
    every_task = case.mesh.all_tasks()
    stuck = [t for t in every_task if t["status"] not in TERMINAL]
    assert not stuck, f"non-terminal tasks: {stuck}"

    ledger = case.mesh.sim_uploads()
    by_md5: dict[str, list[dict]] = {}
    for upload in ledger:
        by_md5.setdefault(upload["md5"], []).append(upload)
    names = [u["filename"] for u in ledger]
    assert len(names) == len(set(names)), f"an object completed twice: {names}"
    for task in final:
        md5 = case.expected[task["task_id"]]
        if task["status"] == "completed":
            uploads = [u for u in ledger if u["filename"] == task["result"]["filename"]]
            assert len(uploads) == 1, (task, ledger)
            (upload,) = uploads
            assert upload["md5"] == md5, (task, upload)
            assert upload["size"] == case.sizes[task["task_id"]]
            assert len(by_md5[md5]) == 1, f"source completed more than once: {by_md5[md5]}"
        else:
            assert not all_completed, f"task did not complete: {task}\n{case.logs()}"
            assert task["status"] == "failed" and task["error_message"], task
            assert md5 not in by_md5, f"failed task has an object: {by_md5[md5]}"
    completes = [r for r in case.requests(op="complete") if r["status"] == 200]
    assert len(completes) == len(ledger), f"{len(completes)} completions for {len(ledger)} objects"


def holder_of(case: Scenario, task_id: str, min_parts: int, timeout: float = 60) -> str:
    """Wait until ``task_id`` runs on an agent that has ``min_parts`` parts reported to the hub.

    The hub's ``uploaded_bytes`` comes from the agent's Progress, which it sends
    right after the ``Committed`` of the same part (one stream, in order), so the
    hub knows at least that much is committed when this returns.
    """

    def poll() -> str | None:
        task = case.mesh.task(task_id)
        if task["status"] in TERMINAL:
            pytest.fail(f"task ended before the fault could be injected: {task}")
        if task["status"] == "uploading" and task["uploaded_bytes"] >= min_parts * CHUNK:
            return task["agent_id"]
        return None

    try:
        return wait_for(poll, timeout, f"{task_id} to commit {min_parts} parts", interval=0.1)
    except TimeoutError:
        pytest.fail(f"upload never got going: {case.mesh.task(task_id)}\n{case.logs()}")


def committed_parts(case: Scenario) -> dict[str, int]:
    """Per task, how many parts the hub knows are committed (threads=1: a prefix)."""
    return {t: case.mesh.task(t)["uploaded_bytes"] // CHUNK for t in case.expected}


def assert_resumed(case: Scenario, final: dict, known: int, fault_at: float) -> None:
    """The task's object is the upos session opened before the fault, continued:
    the ``known`` parts committed before it were not sent again."""
    (upload,) = [u for u in case.mesh.sim_uploads() if u["filename"] == final["result"]["filename"]]
    puts = case.requests(op="put", upload_id=upload["upload_id"])
    before = {r["part"] for r in puts if r["status"] == 200 and r["time"] < fault_at}
    assert before, f"a fresh upos session after the fault, not a resume: {upload}"
    assert set(range(1, known + 1)) <= before, (known, sorted(before))
    resent = sorted(r["part"] for r in puts if r["time"] > fault_at and r["part"] <= known)
    assert not resent, f"parts committed before the fault were sent again: {resent}"
    parts_total = -(-upload["size"] // CHUNK)
    done = {r["part"] for r in puts if r["status"] == 200}
    assert done == set(range(1, parts_total + 1)), sorted(done)


def index_of(agent_id: str) -> int:
    return int(agent_id.rsplit("-", 1)[1])


# ---------------------------------------------------------------------------- scenarios


def test_406_on_one_ip_moves_its_work_elsewhere_and_cools_the_ip_down(scenario: Scenario) -> None:
    case = scenario
    case.sim_config(risk={"always_406": ["127.0.0.3"]})
    # Only the agent on the refused IP at first, so it certainly meets the 406.
    case.start_agents([2])
    case.mesh.wait_agents_online(1)
    for index in range(3):
        case.add_file(f"risk{index}.flv", 3 * MiB + index, seed=10 + index)
    wait_for(
        lambda: any(r["status"] == 406 for r in case.requests(ip="127.0.0.3")),
        60, "the simulator to refuse 127.0.0.3",
    )
    case.start_agents([1, 3])
    final = wait_all_terminal(case, 60)
    assert_exactly_once(case, final)
    ips = {u["source_ip"] for u in case.mesh.sim_uploads()}
    assert "127.0.0.3" not in ips and ips <= {"127.0.0.2", "127.0.0.4"}, ips

    # The hub recorded the event and cools the IP down (GET /api/manage/ips).
    data = case.mesh.admin("GET", "/api/manage/ips")
    rows = data["ips"] if isinstance(data, dict) else data
    row = next((r for r in rows if "127.0.0.3" in (r.get("ip"), r.get("ip_address"))), None)
    assert row is not None, f"no row for 127.0.0.3 in /api/manage/ips: {rows}"
    assert row.get("ip") == "127.0.0.3", f"rows are keyed by `ip` (risk ledger shape): {row}"
    assert row.get("state") in ("cooling", "disabled"), f"127.0.0.3 is not cooled down: {row}"
    assert row.get("cooldown_until") or row.get("disabled"), row
    assert any(e.get("agent_id", e.get("agent")) == "agent-2" for e in row.get("events", [])), row
    clean = next((r for r in rows if r.get("ip") == "127.0.0.2"), None)  # never refused
    assert clean is not None and clean.get("state") not in ("cooling", "disabled"), clean


def test_agent_killed_mid_upload_is_resumed_elsewhere_from_the_last_committed_part(
    scenario: Scenario,
) -> None:
    case = scenario
    case.sim_config(faults={"bandwidth_bps": 2 * MiB})
    case.start_agents([1, 2, 3])
    case.mesh.wait_agents_online(3)
    task_id = case.add_file("killed.flv", 12 * MiB + 12345, seed=21)
    holder = holder_of(case, task_id, min_parts=2)
    known = committed_parts(case)[task_id]
    victim = next(p for p in case.mesh.processes if p.name == holder)
    killed_at = time.time()
    victim.kill()

    # The dropped stream marks it offline at once, well before the heartbeat timeout.
    started = time.monotonic()
    wait_for(lambda: case.agent_status(holder) == "offline", OFFLINE_AFTER - 1,
             f"{holder} to be marked offline when its stream drops")
    assert time.monotonic() - started < OFFLINE_AFTER

    (final,) = wait_all_terminal(case, 90)
    assert_exactly_once(case, [final])
    assert final["agent_id"] != holder
    (upload,) = case.mesh.sim_uploads()
    # source_ip stays the IP that opened the session; another one completed it
    assert upload["source_ip"] == AGENT_IPS[index_of(holder)]
    assert upload["complete_ip"] != AGENT_IPS[index_of(holder)]
    assert_resumed(case, final, known, killed_at)


def test_hub_killed_mid_upload_and_restarted_finishes_every_task(scenario: Scenario) -> None:
    case = scenario
    case.sim_config(faults={"bandwidth_bps": 2 * MiB})
    # Agents that cannot finish alone: the tail case has its own test below.
    case.start_agents([1, 2, 3], small_buffer=True)
    case.mesh.wait_agents_online(3)
    tasks = [case.add_file(f"hubkill{i}.flv", 10 * MiB + i, seed=30 + i) for i in range(3)]
    holder_of(case, tasks[0], min_parts=1)
    known = committed_parts(case)
    hub = next(p for p in reversed(case.mesh.processes) if p.name == "hub")
    killed_at = time.time()
    hub.kill()
    assert hub.popen.returncode == -9
    case.mesh.restart_hub()
    # Agents come back on their own (jittered backoff) and say what they hold.
    case.mesh.wait_agents_online(3, timeout=45)
    final = wait_all_terminal(case, 120)
    assert_exactly_once(case, final)
    for task in final:  # everything on SQLite: each continues its own upos session
        if known[task["task_id"]]:
            assert_resumed(case, task, known[task["task_id"]], killed_at)


def test_link_reset_by_the_network_recovers_and_the_task_completes(scenario: Scenario) -> None:
    case = scenario
    case.sim_config(faults={"bandwidth_bps": 2 * MiB})
    case.start_agents([1, 2, 3], via_proxy=True, small_buffer=True)
    case.mesh.wait_agents_online(3)
    task_id = case.add_file("cut.flv", 12 * MiB + 7, seed=41)
    holder = holder_of(case, task_id, min_parts=1)
    known = committed_parts(case)[task_id]
    proxy = case.proxies[index_of(holder)]
    accepted = proxy.accepted
    cut_at = time.time()
    assert proxy.cut() >= 1
    # The RST ends the stream: the hub sees it go at once, the agent dials again.
    wait_for(lambda: proxy.accepted > accepted, 15, f"{holder} to dial again after the reset")
    (final,) = wait_all_terminal(case, 90)
    assert_exactly_once(case, [final])
    assert_resumed(case, final, known, cut_at)
    wait_for(lambda: case.agent_status(holder) in ("online", "busy"), 20, f"{holder} back online")
    hub_log = next(p for p in case.mesh.processes if p.name == "hub").log_text()
    assert f"agent {holder} offline" in hub_log


def test_blackholed_link_is_detected_by_keepalive_and_recovers(scenario: Scenario) -> None:
    case = scenario
    case.sim_config(faults={"bandwidth_bps": 2 * MiB})
    case.start_agents([1, 2, 3], via_proxy=True, small_buffer=True)
    case.mesh.wait_agents_online(3)
    task_id = case.add_file("blackhole.flv", 12 * MiB + 99, seed=51)
    holder = holder_of(case, task_id, min_parts=1)
    known = committed_parts(case)[task_id]
    proxy = case.proxies[index_of(holder)]
    accepted = proxy.accepted
    blackholed_at = time.time()
    proxy.blackhole()
    # No error reaches either end. The hub notices the silence (heartbeat timeout)...
    wait_for(lambda: case.agent_status(holder) == "offline", OFFLINE_AFTER + 10,
             f"the hub to notice {holder} went silent")
    # ... and the work goes on elsewhere while the link is still dead.
    (final,) = wait_all_terminal(case, 90)
    assert_exactly_once(case, [final])
    assert final["agent_id"] != holder
    assert_resumed(case, final, known, blackholed_at)
    # The agent's own keepalive (20 s ping, 10 s timeout) gives up on the dead link
    # and it dials again: the new connection stalls in the blackhole until healed.
    wait_for(lambda: proxy.accepted > accepted, 45, f"{holder}'s keepalive to drop the dead link")
    proxy.heal()
    wait_for(lambda: case.agent_status(holder) in ("online", "busy"), 30, f"{holder} back online")
    assert_exactly_once(case, [case.mesh.task(task_id)])


def test_link_dying_after_the_last_byte_still_completes_exactly_once(scenario: Scenario) -> None:
    """The tail of every part: the agent holds all remaining bytes when its link dies.

    Hearing nothing, the hub ends the lease and offers the task again, resuming
    the same upos session, while the old agent may finish that session on its own
    (or, with a completion handshake, wait for the hub's word). Either way the
    part must end ``completed`` with exactly one object, never ``failed`` and
    never completed twice.
    """
    case = scenario
    case.sim_config(faults={"bandwidth_bps": 2 * MiB})
    case.start_agents([1, 2, 3], via_proxy=True)  # default 64 MB credit: holds the whole file
    case.mesh.wait_agents_online(3)
    task_id = case.add_file("tail.flv", 8 * MiB + 5, seed=71)
    holder = holder_of(case, task_id, min_parts=1)
    proxy = case.proxies[index_of(holder)]
    # Precondition: the agent holds the whole file and its EndOfData (which it logs; the
    # proxy's byte count cannot tell, as it includes the frames and the Offer).
    agent = next(p for p in case.mesh.processes if p.name == holder)
    received = re.compile(rf"task {task_id} attempt \d+: every byte received")
    wait_for(lambda: received.search(agent.log_text()), 10, "the file to reach the agent")
    proxy.blackhole()
    wait_for(lambda: case.agent_status(holder) == "offline", OFFLINE_AFTER + 10,
             f"the hub to notice {holder} went silent")
    time.sleep(0.5)  # (not a wait on a condition: a head start for the re-offer, then heal)
    proxy.heal()  # give the old agent every chance to report what it did
    (final,) = wait_all_terminal(case, 60)
    assert_exactly_once(case, [final])


def test_5xx_storm_is_retried_and_every_part_completes(scenario: Scenario) -> None:
    case = scenario
    case.sim_config(
        faults={
            "status_5xx_rate": 0.3,
            "fail_next": [{"op": "put", "action": "status", "status": 503, "count": 3}],
        },
    )
    case.start_agents([1, 2, 3])
    case.mesh.wait_agents_online(3)
    tasks = [case.add_file(f"storm{i}.flv", 6 * MiB + i, seed=60 + i) for i in range(3)]
    final = wait_all_terminal(case, 120)
    errors = [r for r in case.requests() if 500 <= r["status"] < 600]
    assert len(errors) >= 3, "the storm did not happen"
    assert_exactly_once(case, final)
    assert [t["task_id"] for t in final] == tasks

