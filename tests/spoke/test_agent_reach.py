"""What an agent tells the hub about its Bilibili side: egress, line, and why an upload failed.

Against the fake hub of tests/spoke/test_agent.py (a real grpc.aio server in
this process) and the real simulator:

- the egress address in Hello and Heartbeat is the one Bilibili sees: an
  agent process whose Bilibili traffic goes through a loopback HTTP proxy
  reports the proxy's outgoing address, and two agents behind one proxy
  report the same address; a network failure makes the agent look again;
- Result carries Bilibili's code, the captcha voucher and the failure kind
  of the new rules (601, a session refused from another address);
- the line and its measured figure show in the next Heartbeat.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from protocol import mesh_pb2 as pb
from spoke.agent import Agent
from tests.conftest import SimServer
from tests.spoke.test_agent import (  # noqa: F401 - fixtures: one event loop, the fake hub
    PSK,
    FakeHub,
    FakeSession,
    Streamer,
    _one_event_loop,
    anyio_backend,
    hub,
    offer,
    settings,
    spawn_agent,
)
from tests.support.httpproxy import HttpProxy
from uploader.session import UposSession

MiB = 1 << 20


async def next_heartbeat(session: FakeSession, limit: float = 15.0) -> pb.Heartbeat:
    msg = await session.expect("heartbeat", limit)
    return msg.heartbeat


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.anyio
async def test_agents_behind_one_proxy_report_the_proxys_address(
    hub: tuple[FakeHub, str], sim: SimServer, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    servicer, address = hub
    procs: list[subprocess.Popen] = []
    with HttpProxy(egress="127.0.0.61") as proxy:
        try:
            for name in ("p1", "p2"):
                (tmp_path / name).mkdir()
                procs.append(spawn_agent(
                    tmp_path / name, "--server-url", address, "--agent-id", name,
                    "--token", PSK, "--insecure", "--proxy", proxy.url,
                    "--bili-api-url", sim.url, "--egress-check-interval", "300",
                ))  # fmt: skip
            hellos = [(await asyncio.wait_for(servicer.sessions.get(), 30)).hello for _ in procs]
            assert {h.agent_id: h.egress_ip for h in hellos} == {
                "p1": "127.0.0.61",
                "p2": "127.0.0.61",
            }
            assert all(h.ip_address == "" for h in hellos)  # nothing reported by hand
            zone = [r["ip"] for r in sim.requests() if r["op"] == "zone"]
            assert zone == ["127.0.0.61", "127.0.0.61"]  # through the proxy, not 127.0.0.1
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                assert await anyio.to_thread.run_sync(proc.wait, 15) == 0
        finally:
            for proc in procs:
                stop_process(proc)


@pytest.mark.anyio
async def test_a_network_failure_makes_the_agent_look_again(
    hub: tuple[FakeHub, str],  # noqa: F811 - the fixture
) -> None:
    servicer, address = hub
    answers = ["198.51.100.7", "203.0.113.8"]

    async def lookup() -> str:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    agent = Agent(settings(address, egress_check_interval=600.0), egress_lookup=lookup)
    agent.egress.poke_gap = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert session.hello.egress_ip == "198.51.100.7"
        # An upload that cannot reach Bilibili at all (nobody on port 9): network.
        data = b"x" * 100
        session.send(offer=offer("n1", data, None))
        streamer = Streamer(session, budget=4 * MiB)
        streamer.files["n1"], streamer.attempts["n1"] = data, 1
        await streamer.run_until(lambda: "n1" in streamer.results)
        assert streamer.results["n1"].error_kind == "network"
        # The route may have changed: the agent asked again and told the hub at once.
        while True:
            heartbeat = await next_heartbeat(session)
            if heartbeat.egress_ip == "203.0.113.8":
                break
        agent.stop()


@pytest.mark.anyio
async def test_results_carry_the_code_the_voucher_and_the_new_kinds(
    hub: tuple[FakeHub, str], sim: SimServer  # noqa: F811 - the fixture
) -> None:
    servicer, address = hub
    sim.config(
        chunk_size=1 * MiB,
        risk={"preupload_budget": 1, "reply": "601", "until_solved": True},
        upos={"binding": "ip"},
    )
    agent = Agent(settings(address, api_url=sim.url, egress_check_interval=600.0))
    data = random.Random(7).randbytes(3 * MiB)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        session = await asyncio.wait_for(servicer.sessions.get(), 10)
        assert session.hello.egress_ip == "127.0.0.2"  # its --source-ip, as Bilibili sees it
        assert (session.hello.line, session.hello.line_bps) == ("", 0.0)  # nothing measured
        streamer = Streamer(session, budget=4 * MiB)
        streamer.offer(offer("ok", data, sim), data)
        await streamer.run_until(lambda: "ok" in streamer.results)
        assert streamer.results["ok"].success
        # The line it used, and what it measured there, go into every heartbeat now.
        heartbeat = agent.heartbeat()
        assert heartbeat.line.startswith("cs_") and heartbeat.line_bps > 0
        assert heartbeat.egress_ip == "127.0.0.2"
        # The account's budget is spent: a 601 with its voucher.
        streamer.offer(offer("captcha", data, sim), data)
        await streamer.run_until(lambda: "captcha" in streamer.results)
        refused = streamer.results["captcha"]
        assert (refused.error_kind, refused.error_code) == ("risk_control", 601)
        risk = await anyio.to_thread.run_sync(httpx.get, f"{sim.url}/_sim/risk")
        [throttled] = risk.json()["throttled"]
        assert refused.voucher == throttled["voucher"]  # what an admin solves
        # A session opened from another address (127.0.0.3), resumed here: refused.
        session_json = await opened_elsewhere(sim, data)
        sim.config(risk={"preupload_budget": 0})
        streamer.offer(offer("moved", data, sim, attempt=2, resume_session=session_json), data)
        await streamer.run_until(lambda: "moved" in streamer.results)
        moved = streamer.results["moved"]
        assert moved.error_kind == "session_rejected", moved
        assert "AUTH_UIP_MISMATCH" in moved.error_message and moved.error_code == 0
        agent.stop()
    refused_puts = [r for r in sim.requests() if r["op"] == "put" and r["status"] == 403]
    assert {(r["ip"], r["reason"]) for r in refused_puts} == {("127.0.0.2", "uip_mismatch")}


async def opened_elsewhere(sim: SimServer, data: bytes) -> bytes:
    """A session opened from 127.0.0.3 with its first part uploaded."""
    from tests.uploader.sim.flow import Flow

    def open_it() -> bytes:
        flow = Flow(sim, len(data), ip="127.0.0.3")
        sim.config(risk={"preupload_budget": 0})
        assert flow.preupload().json()["OK"] == 1
        assert flow.init().status_code == 200
        assert flow.put(1, data).status_code == 200
        scheme = "http"
        return UposSession(
            name="moved.flv", size=len(data), upos_uri=flow.pre["upos_uri"],
            endpoint=flow.pre["endpoint"],
            upload_url=f"{scheme}:{flow.pre['endpoint']}/"
            + flow.pre["upos_uri"].removeprefix("upos://"),
            auth=flow.pre["auth"], biz_id=flow.pre["biz_id"], chunk_size=flow.chunk_size,
            threads=1, upload_id=flow.upload_id, parts_done=[1],
        ).to_json()  # fmt: skip

    return await anyio.to_thread.run_sync(open_it)
