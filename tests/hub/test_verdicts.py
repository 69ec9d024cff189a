"""What the hub does on each of Bilibili's refusals, with fake agents over the real link:
never ``failed`` for a refused session, risk control, an account throttle or penalty;
the IP ledger keyed on the egress Bilibili sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.config import RiskSettings
from protocol import mesh_pb2 as pb
from tests.support.hub import (
    OPEN_ACCOUNT,
    FakeAgent,
    MiB,
    anyio_backend,
    make_config,
    make_hub,
    wait_for,
)

__all__ = ["anyio_backend"]  # asyncio only: grpc.aio

pytestmark = pytest.mark.anyio

ACCOUNT = "10001"  # the fake account's mid: the account ledger's key


async def no_offer(agent: FakeAgent, wait: float = 0.4) -> None:
    with pytest.raises(TimeoutError):
        await agent.recv("offer", wait=wait)


async def refuse(agent: FakeAgent, offer: pb.Offer, kind: str, message: str = "", **extra: object
                 ) -> None:
    """Accept, then answer the attempt with a refusal of ``kind``."""
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt,
                                      resume_offset=offer.resume_offset))
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt,
                                      success=False, error_kind=kind,
                                      error_message=message or kind, **extra))


def metric(hub: object, name: str) -> float:
    return hub.service.metrics.registry.get_sample_value(name) or 0.0  # type: ignore[attr-defined]


async def test_a_refused_session_starts_afresh_and_never_fails(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20", max_concurrent=1)
        path, _ = hub.file("p.bin", 3 * MiB)
        await hub.service.create_part(path, account=None, title=None)
        offer = await a.recv("offer")
        await a.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt))
        session = json.dumps({"upload_id": "u1", "chunk_size": MiB, "parts_done": [1, 2]})
        await a.send(committed=pb.Committed(task_id=offer.task_id, attempt=offer.attempt,
                                            offset=2 * MiB, session=session.encode()))
        task = hub.service.tasks[offer.task_id]
        await wait_for(lambda: task.committed_offset == 2 * MiB)
        a.drop()  # the agent dies mid-upload; the next one resumes its session
        b = await hub.agent("b", ip="127.0.0.21", max_concurrent=1)
        resumed = await b.recv("offer")
        assert (resumed.resume_offset, resumed.resume_session) == (2 * MiB, session.encode())
        # ... and upos refuses it: the session is bound to a's address
        await refuse(b, resumed, "session_rejected",
                     "upos refused the session: HTTP 403 on put part 3: AUTH_UIP_MISMATCH")
        fresh = await b.recv("offer")
        assert fresh.task_id == offer.task_id and fresh.attempt == resumed.attempt + 1
        assert (fresh.resume_offset, fresh.resume_session) == (0, b"")
        row = await hub.service.get_task(offer.task_id)
        assert row["status"] == "assigned" and row["retry_count"] == 2
        assert metric(hub, "bupmesh_sessions_dropped_total") == 1
        assert metric(hub, "bupmesh_session_dropped_parts_total") == 2
        assert metric(hub, "bupmesh_session_dropped_bytes_total") == 2 * MiB
        counted = task.retry_state["attempts"]  # a's loss; the refused session was free
        # a fresh session refused again counts as an attempt (no endless loop), yet the
        # task goes on
        await refuse(b, fresh, "session_rejected")
        again = await b.recv("offer")
        assert again.resume_session == b"" and task.retry_state["attempts"] == counted + 1
        assert metric(hub, "bupmesh_sessions_dropped_total") == 1  # nothing more to drop


async def test_a_601_moves_the_task_to_another_ip_and_opens_a_captcha(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("p.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await refuse(a, offer, "risk_control", "code 601 on preupload: 您上传视频过快",
                     error_code=601, voucher="voucher_123")
        await wait_for(lambda: hub.service.list_captchas())
        b = await hub.agent("b", ip="127.0.0.21")
        moved = await b.recv("offer")  # at once, on another IP
        assert moved.task_id == offer.task_id
        (captcha,) = hub.service.list_captchas()
        assert (captcha["voucher"], captcha["ip"], captcha["account"], captcha["agent_id"],
                captcha["open"]) == ("voucher_123", "127.0.0.20", ACCOUNT, "a", True)
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert rows["127.0.0.20"]["state"] == "cooling"
        assert rows["127.0.0.20"]["events"][-1]["voucher"] == "voucher_123"
        view = await hub.service.account_risk("main")
        assert [c["voucher"] for c in view["captchas"]] == ["voucher_123"]
        # an admin solves it: the cooldown it caused ends now
        solved = await hub.service.solve_captcha("voucher_123")
        assert solved["solved_at"] is not None
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert rows["127.0.0.20"]["state"] == "ok"
        assert not [c for c in hub.service.list_captchas() if c["open"]]
        with pytest.raises(Exception, match="no open captcha"):
            await hub.service.solve_captcha("voucher_123")


async def test_answers_on_two_ips_put_the_account_at_fault_not_the_ips(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("p.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await refuse(a, offer, "risk_control", "HTTP 406 on preupload", error_code=406)
        b = await hub.agent("b", ip="127.0.0.21")
        moved = await b.recv("offer")
        await refuse(b, moved, "risk_control", "HTTP 406 on preupload", error_code=406)
        # two IPs refused one account within the hour: the account, not the IPs
        await wait_for(lambda: hub.service.account_ledger.state(ACCOUNT, hub.service.clock())
                       == "cooling")
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        for ip in ("127.0.0.20", "127.0.0.21"):
            assert rows[ip]["state"] == "ok", rows[ip]
            assert [e["blamed"] for e in rows[ip]["events"]] == ["account"]
        view = await hub.service.account_risk("main")
        assert view["suspected"] and view["state"] == "cooling"
        assert view["preupload"]["cooldown_until"] is not None
        await no_offer(a)
        await no_offer(b)
        reasons = (await hub.service.get_task(offer.task_id))["waiting_for"]
        assert set(reasons) == {"a", "b"}
        assert all(r.startswith(f"account {ACCOUNT} cooling down") for r in reasons.values())
        assert not (await hub.service.get_task(offer.task_id))["status"] == "failed"
        # an admin vouches for the account: work flows again, to either IP
        released = await hub.service.release_account("main")
        assert released["state"] == "ok" and not released["suspected"]
        _, again = await wait_first_offer(a, b)
        assert again.task_id == offer.task_id


async def test_an_account_throttle_on_upload_waits_for_the_named_time(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("p.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await refuse(a, offer, "account_throttle", "code 21566: 投稿过于频繁", error_code=21566,
                     retry_after_seconds=0.6)
        await wait_for(lambda: hub.service.tasks[offer.task_id].status.value == "pending")
        reasons = (await hub.service.get_task(offer.task_id))["waiting_for"]
        assert "cooling down" in reasons["a"] and reasons["a"].startswith("account")
        await no_offer(a, wait=0.3)
        again = await a.recv("offer", wait=5)  # after the named 0.6 s, same IP is fine
        assert again.task_id == offer.task_id
        view = await hub.service.account_risk("main")
        assert [e["code"] for e in view["events"]] == [21566]


async def test_an_account_penalty_stops_the_account_until_released(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("p.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await refuse(a, offer, "account_penalty", "code 21515: 批量作弊投稿", error_code=21515)
        await wait_for(lambda: hub.service.tasks[offer.task_id].status.value == "pending")
        await no_offer(a, wait=0.6)
        row = await hub.service.get_task(offer.task_id)
        assert row["status"] == "pending" and "penalised" in row["waiting_for"]["a"]
        view = await hub.service.account_risk(1)
        assert view["penalised"] and "21515" in view["penalty"]
        await hub.service.release_account("main")
        assert (await a.recv("offer")).task_id == offer.task_id


async def test_agents_behind_one_egress_are_one_ip(tmp_path: Path) -> None:
    paced = RiskSettings(min_interval_seconds=300, max_uploads_per_hour=6, account=OPEN_ACCOUNT)
    async with make_hub(tmp_path, make_config(tmp_path, risk=paced)) as hub:
        # two agents with their own reported addresses, whose Bilibili traffic leaves
        # through one proxy: Bilibili sees one address
        a = await hub.agent("a", ip="127.0.0.20", egress_ip="203.0.113.5")
        b = await hub.agent("b", ip="127.0.0.21", egress_ip="203.0.113.5")
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert set(rows) == {"203.0.113.5"}
        row = rows["203.0.113.5"]
        assert row["agents_now"] == ["a", "b"] and row["egress_reported"]
        assert row["link_addresses"] == ["127.0.0.1"]
        agents = {x["agent_id"]: x for x in await hub.service.list_agents()}
        assert (agents["a"]["egress_ip"], agents["a"]["risk_ip"], agents["a"]["ip_address"],
                agents["a"]["link_address"]) == ("203.0.113.5", "203.0.113.5", "127.0.0.20",
                                                 "127.0.0.1")
        await hub.service.create_part(hub.file("one.bin", 1000)[0], account=None, title=None)
        await hub.service.create_part(hub.file("two.bin", 1000)[0], account=None, title=None)
        first, _ = await wait_first_offer(a, b)
        other = b if first is a else a
        await no_offer(other)  # one egress, one pace: the second start waits
        # the other agent's egress moves (a new proxy): it is judged by that address now
        await other.send(heartbeat=pb.Heartbeat(status="online", free_slots=2,
                                                egress_ip="203.0.113.6", line="cs_bda2",
                                                line_bps=5e6))
        await other.recv("offer")
        agents = {x["agent_id"]: x for x in await hub.service.list_agents()}
        moved = agents[other.agent_id]
        assert (moved["egress_ip"], moved["line"], moved["line_bps"]) == (
            "203.0.113.6", "cs_bda2", 5e6)
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert rows["203.0.113.6"]["agents_now"] == [other.agent_id]
        # nonsense from an agent changes nothing
        await other.send(heartbeat=pb.Heartbeat(status="online", egress_ip="not an address"))
        await wait_for(lambda: hub.service.registry.agents[other.agent_id].egress_ip
                       == "203.0.113.6")


async def wait_first_offer(*agents: FakeAgent) -> tuple[FakeAgent, pb.Offer]:
    """The first of ``agents`` to be offered a task, and that offer."""
    def ready() -> FakeAgent | None:
        return next((a for a in agents if a.inbox.statistics().current_buffer_used), None)

    await wait_for(lambda: ready() is not None)
    agent = ready()
    assert agent is not None
    return agent, await agent.recv("offer")


async def test_the_account_ledger_and_captchas_survive_a_hub_restart(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20", egress_ip="203.0.113.9")
        await hub.service.create_part(hub.file("p.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await refuse(a, offer, "risk_control", "code 601", error_code=601, voucher="voucher_r")
        await wait_for(lambda: hub.service.list_captchas())
        hub.service.account_ledger.penalised(ACCOUNT, hub.service.clock(), code=21590,
                                             message="投稿工具已停用")
        await hub.service.state.save_ledger()
    async with make_hub(tmp_path) as hub:
        view = await hub.service.account_risk("main")
        assert view["penalised"] and "21590" in view["penalty"]
        assert [c["voucher"] for c in view["captchas"]] == ["voucher_r"]
        agents = {x["agent_id"]: x for x in await hub.service.list_agents()}
        assert agents["a"]["egress_ip"] == "203.0.113.9"  # keyed on it from the start
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert rows["203.0.113.9"]["state"] == "cooling"
