"""The hub's control, in process: risk-aware scheduling, manual control, the completion
handshake and what survives a restart. A real grpc.aio server, fake agents that speak
the conversation message by message, and the admin HTTP API over the real service.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hub.accounts.store import load_or_create_key
from hub.api.routes import build_app
from hub.config import HeartbeatSettings, RiskSettings
from hub.core.errors import Conflict
from hub.store.tasks import Store
from protocol import mesh_pb2 as pb
from tests.support.hub import (
    OPEN_ACCOUNT,
    FakeAgent,
    Hub,
    MiB,
    _is,
    _logged,
    _status,
    anyio_backend,
    make_config,
    make_hub,
    part_digest,
    stream_all,
    wait_for,
)

__all__ = ["anyio_backend"]  # asyncio only: grpc.aio

ADMIN = {"Authorization": "Bearer admin"}
PACED = RiskSettings(min_interval_seconds=300, max_uploads_per_hour=6, cooldown_seconds=3600,
                     disable_after_events=2, account=OPEN_ACCOUNT)


def http(hub: Hub) -> httpx.AsyncClient:
    app = build_app(hub.service, admin_token="admin")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def no_offer(agent: FakeAgent, wait: float = 0.4) -> None:
    with pytest.raises(TimeoutError):
        await agent.recv("offer", wait=wait)


@pytest.mark.anyio
async def test_min_interval_paces_one_ip_and_other_ips_take_the_work(tmp_path: Path) -> None:
    async with make_hub(tmp_path, make_config(tmp_path, risk=PACED)) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        twin = await hub.agent("a-twin", ip="127.0.0.20")  # same egress IP: same fate
        first = hub.file("one.bin", 1000)[0]
        await hub.service.create_part(first, account=None, title=None)
        offer = await a.recv("offer")
        await hub.service.create_part(hub.file("two.bin", 1000)[0], account=None, title=None)
        await no_offer(twin)  # 127.0.0.20 rests for min_interval after a start
        task = next(t for t in hub.service.tasks.values() if t.task_id != offer.task_id)
        reasons = (await hub.service.get_task(task.task_id))["waiting_for"]
        assert "min interval" in reasons["a-twin"], reasons
        b = await hub.agent("b", ip="127.0.0.21")
        offer2 = await b.recv("offer")
        assert offer2.task_id == task.task_id
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        assert rows["127.0.0.20"]["state"] == "resting"
        assert rows["127.0.0.20"]["uploads_last_hour"] == 1
        assert rows["127.0.0.21"]["active_tasks"] == 1


@pytest.mark.anyio
async def test_assign_task_honours_the_ip_unless_forced(tmp_path: Path) -> None:
    async with make_hub(tmp_path, make_config(tmp_path, risk=PACED)) as hub, http(hub) as client:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("one.bin", 1000)[0], account=None, title=None)
        await a.recv("offer")
        part = await hub.service.create_part(hub.file("two.bin", 1000)[0], account=None,
                                             title=None, auto_upload=False)
        body = {"part_id": part["part_id"], "agent_id": "a"}
        task_id = ok(await client.post("/api/manage/assign-task", json=body,
                                       headers=ADMIN))["task_id"]
        await no_offer(a)  # pinned, but the IP rests: the pin waits
        assert (await hub.service.get_task(task_id))["status"] == "pending"
        forced = {**body, "force": True}
        assert ok(await client.post("/api/manage/assign-task", json=forced,
                                    headers=ADMIN))["task_id"] == task_id
        offer = await a.recv("offer")
        assert offer.task_id == task_id
        logs = [e["message"] for e in await hub.service.task_logs(task_id)]
        assert "assigned to a (forced)" in logs


@pytest.mark.anyio
async def test_disabled_ip_refuses_assignment_until_an_admin_reenables_it(
    tmp_path: Path,
) -> None:
    # A short cooldown so the second strike comes after the first episode (an event while
    # cooling is the same episode, not a new strike).
    quick = RiskSettings(min_interval_seconds=0, max_uploads_per_hour=100, cooldown_seconds=0.2,
                         disable_after_events=2, account=OPEN_ACCOUNT)
    async with make_hub(tmp_path, make_config(tmp_path, risk=quick)) as hub, http(hub) as client:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("r1.bin", 1000)[0], account=None, title=None)
        states = []
        for _ in range(2):
            offer = await a.recv("offer", wait=5)
            await a.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt,
                                          success=False, error_kind="risk_control",
                                          error_message="HTTP 406 on preupload"))
            await wait_for(lambda o=offer: hub.service.tasks[o.task_id].status.value == "pending")
            rows = ok(await client.get("/api/manage/ips", headers=ADMIN))["ips"]
            row = next(r for r in rows if r["ip"] == "127.0.0.20")
            states.append(row["state"])
        assert states == ["cooling", "disabled"] and len(row["events"]) == 2
        await no_offer(a, wait=0.5)  # a disabled IP gets nothing, however long the wait
        part = await hub.service.create_part(hub.file("r3.bin", 1000)[0], account=None,
                                             title=None, auto_upload=False)
        with pytest.raises(Conflict, match="re-enable"):
            await hub.service.assign_task(part["part_id"], "a", force=True)
        response = await client.post("/api/manage/ips/127.0.0.20/enable", headers=ADMIN)
        assert ok(response)["state"] in ("ok", "resting", "capped")
        response = await client.post("/api/manage/ips/10.9.9.9/enable", headers=ADMIN)
        assert response.status_code == 404
        await hub.service.assign_task(part["part_id"], "a", force=True)
        # The waiting part and the assigned one both go out now.
        offers = {(await a.recv("offer")).part_id for _ in range(2)}
        assert offers == {1, part["part_id"]}


@pytest.mark.anyio
async def test_ledger_survives_a_hub_restart(tmp_path: Path) -> None:
    async with make_hub(tmp_path, make_config(tmp_path, risk=PACED)) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.service.create_part(hub.file("one.bin", 1000)[0], account=None, title=None)
        offer = await a.recv("offer")
        await a.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=False,
                                      error_kind="risk_control", error_message="code 601"))
        await wait_for(lambda: hub.service.tasks[offer.task_id].status.value == "pending")
    async with make_hub(tmp_path, make_config(tmp_path, risk=PACED)) as hub:
        rows = {r["ip"]: r for r in await hub.service.list_ips()}
        row = rows["127.0.0.20"]
        assert row["state"] == "cooling" and row["events"][0]["kind"] == "601"
        assert row["agents"] == ["a"] and row["uploads_last_hour"] == 1
        a = await hub.agent("a", ip="127.0.0.20")
        await no_offer(a)  # still cooling after the restart


@pytest.mark.anyio
async def test_retry_a_failed_task_keeps_its_id_and_resume_point(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub, http(hub) as client:
        a = await hub.agent("a")
        path, _ = hub.file("f.bin", 2 * MiB)
        await hub.service.create_part(path, account=None, title=None)
        offer = await a.recv("offer")
        await a.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
        await a.send(committed=pb.Committed(task_id=offer.task_id, attempt=1, offset=MiB,
                                            session=b'{"s": 1}'))
        await a.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=False,
                                      error_kind="auth", error_message="cookie expired"))
        await wait_for(lambda: _is(_status(hub, offer.task_id), "failed"))
        response = await client.post("/api/manage/retry-task", json={"task_id": "nope"},
                                      headers=ADMIN)
        assert response.status_code == 404
        task = ok(await client.post("/api/manage/retry-task", json={"task_id": offer.task_id},
                                    headers=ADMIN))
        assert task["status"] == "pending" and task["task_id"] == offer.task_id
        again = await a.recv("offer")
        assert (again.attempt, again.resume_offset, again.resume_session) == (
            2, MiB, b'{"s": 1}')
        response = await client.post("/api/manage/retry-task", json={"task_id": offer.task_id},
                                     headers=ADMIN)
        assert response.status_code == 409  # live again: nothing to retry


@pytest.mark.anyio
async def test_drain_disable_enable_an_agent(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub, http(hub) as client:
        a = await hub.agent("a")
        row = ok(await client.post("/api/manage/agents/a/drain", headers=ADMIN))
        assert row["status"] == "draining"
        await hub.service.create_part(hub.file("d.bin", 1000)[0], account=None, title=None)
        await no_offer(a)
        assert ok(await client.post("/api/manage/agents/a/enable", headers=ADMIN))[
            "status"] == "online"
        offer = await a.recv("offer")
        # disable: the stream is closed, the lease re-queued, and the agent refused.
        assert ok(await client.post("/api/manage/agents/a/disable", headers=ADMIN))[
            "status"] == "disabled"
        await a.wait_end()
        await wait_for(lambda: _is(_status(hub, offer.task_id), "pending"))
        with pytest.raises(Exception, match="disabled"):
            await hub.register("a")
        response = await client.post("/api/manage/agents/a/bogus", headers=ADMIN)
        assert response.status_code == 400
        response = await client.post("/api/manage/agents/nobody/drain", headers=ADMIN)
        assert response.status_code == 404
        ok(await client.post("/api/manage/agents/a/enable", headers=ADMIN))
        a2 = await hub.agent("a")
        assert (await a2.recv("offer")).task_id == offer.task_id


@pytest.mark.anyio
async def test_finishing_gets_proceed_only_while_the_lease_holds(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        old = await hub.agent("old")  # no finish_handshake: completes on its own, as before
        path, _ = hub.file("x.bin", 1000)
        await hub.service.create_part(path, account=None, title=None)
        assert not (await old.recv("offer")).await_proceed
        old.drop()
        a = await hub.agent("a", finish_handshake=True)
        offer = await a.recv("offer")
        assert offer.await_proceed and offer.attempt == 2
        data, md5 = await stream_all(a, offer)
        session = b'{"parts_done": [1]}'
        await a.send(finishing=pb.Finishing(task_id=offer.task_id, attempt=offer.attempt,
                                            offset=len(data), session=session))
        proceed = await a.recv("proceed")
        assert (proceed.task_id, proceed.attempt) == (offer.task_id, offer.attempt)
        task = hub.service.tasks[offer.task_id]
        assert task.proceed_attempt == 2 and task.committed_offset == 1000
        # A Finishing for an attempt that no longer holds the lease is told to Cancel.
        await a.send(finishing=pb.Finishing(task_id=offer.task_id, attempt=1, offset=1000))
        cancel = await a.recv("cancel")
        assert cancel.attempt == 1
        await a.send(result=pb.Result(task_id=offer.task_id, attempt=2, success=True,
                                      filename="f", biz_id=3, md5=md5))
        await wait_for(lambda: _is(_status(hub, offer.task_id), "completed"))


@pytest.mark.anyio
async def test_lost_after_proceed_resumes_the_finished_session(tmp_path: Path) -> None:
    """The hub let attempt 1 complete, then lost the agent: the re-offer resumes that
    session with every part done, so the next agent only repeats the (idempotent)
    completion and nothing is streamed again. Only an agent on the IP the completion
    was granted on gets it: upos may refuse the session from any other address.
    (Held attempts off: a's lease ends with its stream.)"""
    cfg = make_config(tmp_path, heartbeat=HeartbeatSettings(held_grace_seconds=0))
    async with make_hub(tmp_path, cfg) as hub:
        a = await hub.agent("a", ip="127.0.0.30", finish_handshake=True)
        path, _ = hub.file("y.bin", 3000)
        await hub.service.create_part(path, account=None, title=None)
        offer = await a.recv("offer")
        await stream_all(a, offer)
        final = b'{"parts_done": [1, 2, 3]}'
        await a.send(finishing=pb.Finishing(task_id=offer.task_id, attempt=1, offset=3000,
                                            session=final))
        await a.recv("proceed")
        assert hub.service.tasks[offer.task_id].proceed_ip == "127.0.0.30"
        a.drop()
        await hub.agent("elsewhere", ip="127.0.0.31", finish_handshake=True)

        async def elsewhere_waits_for_the_granted_ip() -> bool:
            reasons = (await hub.service.get_task(offer.task_id))["waiting_for"]
            return "granted on IP 127.0.0.30" in reasons.get("elsewhere", "")

        await wait_for(elsewhere_waits_for_the_granted_ip)
        b = await hub.agent("b", ip="127.0.0.30", finish_handshake=True)
        again = await b.recv("offer")
        assert (again.attempt, again.resume_offset, again.resume_session) == (2, 3000, final)
        data, streamed = await stream_all(b, again, resume=3000)
        assert data == b""
        await b.send(result=pb.Result(task_id=offer.task_id, attempt=2, success=True,
                                      filename="y", biz_id=9, md5=streamed))
        await wait_for(lambda: _is(_status(hub, offer.task_id), "completed"))
        # Nothing was streamed: the part's digest comes from its own pass over the file.
        async def digest() -> str:
            return (await hub.service.store.get_part(again.part_id))["digest"]

        await wait_for(lambda: _is(digest(), part_digest(path)))
        await wait_for(lambda: _logged(hub, offer.task_id, "success"))
        assert (await hub.service.store.get_part(again.part_id))["state"] == "uploaded"


@pytest.mark.anyio
async def test_after_a_restart_work_waits_for_the_agents_that_were_connected(
    tmp_path: Path,
) -> None:
    """Re-offers spread over every agent that comes back, not all to the first one."""
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await hub.agent("b", ip="127.0.0.21")
        for name in ("p1.bin", "p2.bin"):
            await hub.service.create_part(hub.file(name, 1000)[0], account=None, title=None)
        await wait_for(lambda: len([t for t in hub.service.tasks.values()
                                    if t.status.value == "assigned"]) == 2)
        del a
    # As after a crash (SIGKILL): the old hub never got to write its agents offline.
    store = Store(tmp_path / "bupmesh.db", load_or_create_key(tmp_path))
    await store.open()
    for agent_id in ("a", "b"):
        await store.set_agent_status(agent_id, "online")
    store.close()
    async with make_hub(tmp_path) as hub:
        a = await hub.agent("a", ip="127.0.0.20")
        await no_offer(a, wait=0.5)  # b was connected too: wait for it (bounded)
        b = await hub.agent("b", ip="127.0.0.21")
        offers = [await a.recv("offer"), await b.recv("offer")]
        assert {o.attempt for o in offers} == {2}
        assert len({o.task_id for o in offers}) == 2


@pytest.mark.anyio
async def test_locality_offers_to_an_agent_that_reads_the_file_itself(tmp_path: Path) -> None:
    """A hybrid agent that can read the part's path gets it (locality strategy),
    accepts with local_read, is streamed nothing, and must report the part's digest."""
    cfg = make_config(tmp_path)
    cfg.scheduler.strategy = "locality"
    async with make_hub(tmp_path, cfg) as hub:
        net = await hub.agent("net", ip="127.0.0.20")
        local = await hub.agent("local", ip="127.0.0.21", storage_type="hybrid",
                                local_paths=(str(tmp_path),))
        results = []
        for name, reported in (("good.bin", None), ("bad.bin", "0" * 32)):
            path, _ = hub.file(name, 3000)
            digest = part_digest(path)
            created = await hub.service.create_part(path, account=None, title=None,
                                                    auto_upload=False)
            await hub.service.parts.hash_part_once(created["part_id"])  # digest known up front
            await hub.service.parts.new_task(created["part_id"])
            offer = await local.recv("offer")
            assert offer.file_digest == digest and offer.file_path == path
            assert offer.file_md5 == ""
            await local.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt,
                                              local_read=True))
            await wait_for(lambda o=offer: _is(_status(hub, o.task_id), "uploading"))
            await local.send(credit=pb.Credit(task_id=offer.task_id, attempt=offer.attempt,
                                              bytes=MiB))
            with pytest.raises(TimeoutError):
                await local.recv(wait=0.3)  # no Chunk, no EndOfData
            await local.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt,
                                              success=True, filename="f", biz_id=1,
                                              file_digest=reported or digest))
            want = "completed" if reported is None else "failed"
            await wait_for(lambda o=offer, w=want: _is(_status(hub, o.task_id), w))
            results.append(await hub.service.get_task(offer.task_id))
        assert results[0]["status"] == "completed"
        assert results[1]["status"] == "failed" and results[1]["error_kind"] == "file"
        await no_offer(net, wait=0.1)


@pytest.mark.anyio
async def test_a_part_an_older_hub_hashed_is_read_locally_against_its_md5(
    tmp_path: Path,
) -> None:
    """A part stored with an MD5 and no digest (hashed by an older hub) is offered with
    file_md5 at once, and a local read of it must report that MD5."""
    async with make_hub(tmp_path) as hub:
        local = await hub.agent("local", storage_type="hybrid", local_paths=(str(tmp_path),))
        for reported, want in ((None, "completed"), ("0" * 32, "failed")):
            path, md5 = hub.file(f"old-{want}.bin", 2000)
            part_id = await hub.service.store.insert_part(file_path=path, size=2000, md5=md5,
                                                          account=None, title=None)
            await hub.service.parts.new_task(part_id)
            offer = await local.recv("offer")
            assert (offer.file_md5, offer.file_digest) == (md5, "")
            await local.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt,
                                              local_read=True))
            await wait_for(lambda o=offer: _is(_status(hub, o.task_id), "uploading"))
            await local.send(result=pb.Result(task_id=offer.task_id, attempt=offer.attempt,
                                              success=True, filename="f", biz_id=1,
                                              md5=reported or md5))
            await wait_for(lambda o=offer, w=want: _is(_status(hub, o.task_id), w))


@pytest.mark.anyio
async def test_local_read_without_a_known_digest_is_a_protocol_error(tmp_path: Path) -> None:
    async with make_hub(tmp_path) as hub:
        # Its paths do not cover the file: offered at once, the hub hashing as it streams.
        a = await hub.agent("a", storage_type="local", local_paths=("/nowhere",))
        await hub.service.create_part(hub.file("n.bin", 100)[0], account=None, title=None)
        offer = await a.recv("offer")
        assert offer.file_digest == "" and offer.file_md5 == ""
        await a.send(accept=pb.Accept(task_id=offer.task_id, attempt=1, local_read=True))
        assert await a.wait_end() is not None
        assert "local_read" in a.details


@pytest.mark.anyio
async def test_a_part_a_local_agent_can_read_is_hashed_before_its_first_offer(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path)
    cfg.scheduler.strategy = "locality"
    async with make_hub(tmp_path, cfg) as hub:
        local = await hub.agent("local", storage_type="local", local_paths=(str(tmp_path),))
        path, _ = hub.file("l.bin", 5000)
        await hub.service.create_part(path, account=None, title=None)
        offer = await local.recv("offer")
        assert offer.file_digest == part_digest(path)  # so the agent may read it itself
        # An agent that cannot read the path is offered the part at once, digest unknown.
        other = tmp_path / "elsewhere"
        other.mkdir()
        net = await hub.agent("net", ip="127.0.0.30")
        path2 = other / "n.bin"
        path2.write_bytes(b"x" * 10)
        cfg_local = hub.service.registry.get("local")
        cfg_local.local_paths = (str(tmp_path / "nowhere"),)
        await hub.service.create_part(str(path2), account=None, title=None)
        offers = []
        for agent in (local, net):
            try:
                offers.append(await agent.recv("offer", wait=1))
            except TimeoutError:
                pass
        assert [o.file_digest for o in offers] == [""]
