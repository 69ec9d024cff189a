"""The hub's gRPC link, in process: a real grpc.aio server and channel, a fake agent.

The fake agent (tests/support/hub.py) speaks the conversation message by message,
so each test can check exactly what the hub sends and what it refuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from hub.config import HeartbeatSettings
from hub.core.errors import NotFound
from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc
from protocol.tokens import TokenIssuer
from tests.support.hub import (
    PSK,
    Hub,
    MiB,
    _is,
    _logged,
    _status,
    agent_status,
    anyio_backend,
    hub,
    make_config,
    make_hub,
    part_digest,
    stream_all,
    wait_for,
)

__all__ = ["anyio_backend", "hub"]  # fixtures: asyncio only (grpc.aio), an in-process hub

# ------------------------------------------------------------------------------ auth


@pytest.mark.anyio
async def test_register_and_wrong_psk(hub: Hub) -> None:
    token = await hub.register("a1")
    assert hub.service.verify_agent_token(token) == "a1"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hub.stub.Register(pb.RegisterRequest(psk="wrong", agent_id="a2"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert hub.service.registry.get("a2") is None  # nothing else happened
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hub.stub.Register(pb.RegisterRequest(psk=PSK, agent_id="bad id with spaces"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.anyio
async def test_bad_tokens_are_unauthenticated(hub: Hub) -> None:
    good = await hub.register("a1")
    expired_issuer = TokenIssuer(b"k" * 40, ttl_seconds=1, clock=lambda: 1000.0)
    other_secret = TokenIssuer(b"z" * 40)
    alg_none = (f"{_b64({'alg': 'none', 'typ': 'JWT'})}."
                f"{_b64({'sub': 'a1', 'exp': 2**40, 'iat': 0, 'jti': 'x'})}.")
    for token in ["", "garbage", expired_issuer.issue("a1")[0], other_secret.issue("a1")[0],
                  alg_none]:
        agent = await hub.agent("a1", token=token, hello=False)
        await agent.send(hello=pb.Hello(agent_id="a1"))
        assert await agent.wait_end() == grpc.StatusCode.UNAUTHENTICATED, token
    assert await agent_status(hub, "a1") == "offline"
    # Revoked tokens and disabled agents are refused as well.
    await hub.service.admin.set_agent_access("a1", revoke_tokens=True)
    agent = await hub.agent("a1", token=good, hello=False)
    assert await agent.wait_end() == grpc.StatusCode.UNAUTHENTICATED
    fresh = await hub.register("a1")
    (await hub.agent("a1", token=fresh)).drop()
    await hub.service.admin.set_agent_access("a1", disabled=True)
    agent = await hub.agent("a1", token=fresh, hello=False)
    assert await agent.wait_end() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hub.register("a1")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.anyio
async def test_hello_welcome_and_drop_marks_offline_at_once(hub: Hub) -> None:
    agent = await hub.agent("a1")
    assert await agent_status(hub, "a1") == "online"
    agents = await hub.service.list_agents()
    assert agents[0]["ip_address"] == "127.0.0.9" and agents[0]["max_concurrent_uploads"] == 2
    await agent.send(heartbeat=pb.Heartbeat(status="online", free_slots=2, memory_mb=30))
    await wait_for(lambda: hub.service.registry.get("a1").memory_mb == 30)
    agent.drop()
    # offline_after is 90 s: only the dropped stream can make this happen quickly.
    await wait_for(lambda: agent_status(hub, "a1"), wait=3)
    await wait_for(lambda: _is(agent_status(hub, "a1"), "offline"), wait=3)


@pytest.mark.anyio
async def test_new_session_replaces_old(hub: Hub) -> None:
    first = await hub.agent("a1")
    second = await hub.agent("a1")
    await first.wait_end()
    assert await agent_status(hub, "a1") == "online"
    assert hub.service.registry.get("a1").session_id is not None
    await second.send(heartbeat=pb.Heartbeat(status="online"))


# ------------------------------------------------------------------------------ protocol errors


@pytest.mark.anyio
async def test_first_message_must_be_hello(hub: Hub) -> None:
    agent = await hub.agent("a1", hello=False)
    await agent.send(heartbeat=pb.Heartbeat(status="online"))
    assert await agent.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Hello" in agent.details


@pytest.mark.anyio
async def test_malformed_message_closes_only_that_stream(hub: Hub) -> None:
    bad = await hub.agent("bad")
    good = await hub.agent("good")
    await bad.call.write(pb.AgentMessage())  # no kind set
    assert await bad.wait_end() == grpc.StatusCode.INVALID_ARGUMENT
    await wait_for(lambda: _is(agent_status(hub, "bad"), "offline"))
    # The other agent's stream carries on: it still gets work and streams it.
    path, md5 = hub.file("f.bin", 300_000)
    await hub.service.create_part(path, account=None, title="t")
    offer = await good.recv("offer")
    _, streamed = await stream_all(good, offer)
    assert streamed == md5
    # Negative credit and a second Hello are violations too.
    for msg in ({"credit": pb.Credit(task_id=offer.task_id, attempt=offer.attempt, bytes=-5)},
                {"hello": pb.Hello(agent_id="good")}):
        again = await hub.agent("good")
        await again.send(**msg)
        assert await again.wait_end() in (grpc.StatusCode.INVALID_ARGUMENT,
                                          grpc.StatusCode.FAILED_PRECONDITION)


# ------------------------------------------------------------------------------ transfers


@pytest.mark.anyio
async def test_offer_accept_credit_chunks_end_result(hub: Hub) -> None:
    agent = await hub.agent("a1")
    size = 3 * MiB + 12345
    path, md5 = hub.file("rec.flv", size)
    created = await hub.service.create_part(path, account=None, title="t")
    offer = await agent.recv("offer")
    assert offer.task_id == created["task_id"] and offer.attempt == 1
    # No pass over the file before the first attempt: its digest is learned from the
    # stream itself.
    assert offer.file_size == size and offer.file_digest == "" and offer.file_md5 == ""
    assert offer.file_name == "rec.flv"
    assert offer.credentials.cookies.startswith("SESSDATA=") and offer.resume_offset == 0
    assert not offer.crc32_integrity  # an agent without the capability keeps MD5
    data, streamed = await stream_all(agent, offer, grant=700_000)  # odd credit sizes
    assert agent.last_eod is not None and not agent.last_eod.HasField("crc32")
    assert streamed == md5 and hashlib.md5(data).hexdigest() == md5
    assert (await hub.service.get_task(offer.task_id))["status"] == "uploading"
    await agent.send(committed=pb.Committed(task_id=offer.task_id, attempt=1, offset=size,
                                            session=b'{"auth": "upos-secret"}'))
    await agent.send(progress=pb.Progress(task_id=offer.task_id, attempt=1,
                                          uploaded_bytes=size, total_bytes=size))
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="n123", biz_id=77, md5=md5))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "completed"))
    await wait_for(lambda: _logged(hub, offer.task_id, "success"))
    task = await hub.service.get_task(offer.task_id)
    assert task["result"] == {"filename": "n123", "biz_id": 77}
    assert task["uploaded_bytes"] == size and task["agent_id"] == "a1"
    events = [e["event_type"] for e in await hub.service.task_logs(offer.task_id)]
    assert events[-3:] == ["offer", "start", "success"]
    part = await hub.service.store.get_part(created["part_id"])
    assert (part["state"], part["filename"], part["biz_id"]) == ("uploaded", "n123", 77)
    assert part["digest"] == part_digest(path) and task["file_digest"] == part["digest"]
    assert part["md5"] == "" and task["file_md5"] == ""  # no one outside the mesh needs it
    # The resume session holds upos auth: never in the database in plain text.
    raw = b"".join(p.read_bytes() for p in hub.tmp.glob("bupmesh.db*"))
    assert b"upos-secret" not in raw


@pytest.mark.anyio
async def test_md5_mismatch_fails_with_kind_file(hub: Hub) -> None:
    agent = await hub.agent("a1")
    path, _ = hub.file("x.bin", 100_000)
    await hub.service.create_part(path, account=None, title=None)
    offer = await agent.recv("offer")
    await stream_all(agent, offer)
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="n1", md5="0" * 32))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "failed"))
    task = await hub.service.get_task(offer.task_id)
    assert task["error_kind"] == "file" and "checksum" in task["error_message"]


@pytest.mark.anyio
async def test_crc32_agent_is_checked_by_crc32_and_the_part_digest_still_learned(
    hub: Hub,
) -> None:
    agent = await hub.agent("a1", crc32=True)
    path, _ = hub.file("c.flv", 2 * MiB + 777)
    created = await hub.service.create_part(path, account=None, title=None)
    offer = await agent.recv("offer")
    assert offer.crc32_integrity
    data, eod_md5 = await stream_all(agent, offer, grant=900_000)
    assert agent.last_eod is not None and agent.last_eod.crc32 == zlib.crc32(data)
    assert eod_md5 == ""  # no MD5 at all for an agent that checks by CRC32
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="n1", biz_id=1, crc32=zlib.crc32(data)))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "completed"))
    await wait_for(lambda: _logged(hub, offer.task_id, "success"))
    # the first whole-file attempt yields the part's digest
    assert (await hub.service.store.get_part(created["part_id"]))["digest"] == part_digest(path)

    # A resumed attempt: the CRC covers the tail only, and a wrong one is a file error.
    path2, _ = hub.file("d.flv", 2 * MiB)
    await hub.service.create_part(path2, account=None, title=None)
    offer = await agent.recv("offer")
    tail, _ = await stream_all(agent, offer, resume=MiB + 5)
    assert agent.last_eod.crc32 == zlib.crc32(tail)
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="n2", crc32=zlib.crc32(tail) ^ 1))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "failed"))
    assert (await hub.service.get_task(offer.task_id))["error_kind"] == "file"


@pytest.mark.anyio
async def test_slow_task_does_not_stall_fast_one(hub: Hub) -> None:
    agent = await hub.agent("a1", max_concurrent=2)
    p1, _ = hub.file("slow.bin", 4 * MiB)
    p2, md5_2 = hub.file("fast.bin", 4 * MiB)
    await hub.service.create_part(p1, account=None, title=None)
    slow = await agent.recv("offer")
    await hub.service.create_part(p2, account=None, title=None)
    fast = await agent.recv("offer")
    await agent.send(accept=pb.Accept(task_id=slow.task_id, attempt=1))
    await agent.send(credit=pb.Credit(task_id=slow.task_id, attempt=1, bytes=1000))
    await agent.send(accept=pb.Accept(task_id=fast.task_id, attempt=1))
    await agent.send(credit=pb.Credit(task_id=fast.task_id, attempt=1, bytes=4 * MiB))
    got: dict[str, int] = {slow.task_id: 0, fast.task_id: 0}
    end_md5 = None
    # The slow task's 1000 bytes may come before or after the fast one ends (its first
    # disk read races the other's frames); what matters is that the fast one ends.
    while end_md5 is None or got[slow.task_id] < 1000:
        msg = await agent.recv()
        if msg.WhichOneof("kind") == "chunk":
            got[msg.chunk.task_id] += len(msg.chunk.data)
        elif msg.WhichOneof("kind") == "end_of_data":
            assert msg.end_of_data.task_id == fast.task_id
            end_md5 = msg.end_of_data.md5
    assert got == {slow.task_id: 1000, fast.task_id: 4 * MiB} and end_md5 == md5_2


@pytest.mark.anyio
async def test_cancel_mid_transfer(hub: Hub) -> None:
    agent = await hub.agent("a1")
    path, _ = hub.file("c.bin", 3 * MiB)
    created = await hub.service.create_part(path, account=None, title=None)
    offer = await agent.recv("offer")
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
    await agent.send(credit=pb.Credit(task_id=offer.task_id, attempt=1, bytes=MiB))
    assert (await agent.recv("chunk")).offset == 0
    await hub.service.cancel_task(created["task_id"])
    cancel = await agent.recv("cancel")
    assert cancel.task_id == offer.task_id and cancel.attempt == 1
    assert await _status(hub, offer.task_id) == "cancelled"
    # Further credit sends nothing; a late Result changes nothing.
    await agent.send(credit=pb.Credit(task_id=offer.task_id, attempt=1, bytes=MiB))
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=False,
                                      error_kind="cancelled"))
    await agent.send(heartbeat=pb.Heartbeat(status="online", memory_mb=5))
    await wait_for(lambda: hub.service.registry.get("a1").memory_mb == 5)
    assert agent.inbox.statistics().current_buffer_used == 0
    assert await _status(hub, offer.task_id) == "cancelled"
    with pytest.raises(NotFound):
        await hub.service.cancel_task("task-nope")


@pytest.mark.anyio
async def test_agent_lost_reoffers_with_resume_point_and_fences_old_attempt(
        tmp_path: Path) -> None:
    """Without held attempts (0 s on the hub): a lost stream's lease ends at once."""
    cfg = make_config(tmp_path, heartbeat=HeartbeatSettings(held_grace_seconds=0))
    async with make_hub(tmp_path, cfg) as hub:
        await _lost_reoffers_with_resume_point(hub)


async def _lost_reoffers_with_resume_point(hub: Hub) -> None:
    agent = await hub.agent("a1")
    path, md5 = hub.file("r.bin", 2 * MiB)
    digest = part_digest(path)
    await hub.service.create_part(path, account=None, title=None)
    offer = await agent.recv("offer")
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
    await agent.send(committed=pb.Committed(task_id=offer.task_id, attempt=1, offset=MiB,
                                            session=b'{"resume": 1}'))
    await wait_for(lambda: hub.service.tasks[offer.task_id].committed_offset == MiB)
    agent.drop()
    again = await hub.agent("a1", held=[pb.HeldTask(task_id=offer.task_id, attempt=1)])
    # The old attempt is told to stop, then the task comes back as attempt 2 with the resume point.
    msgs = [await again.recv(), await again.recv()]
    kinds = {m.WhichOneof("kind"): m for m in msgs}
    assert kinds["cancel"].cancel.attempt == 1
    offer2 = kinds["offer"].offer
    assert offer2.attempt == 2 and offer2.resume_offset == MiB
    assert offer2.resume_session == b'{"resume": 1}'
    # Late messages of attempt 1 are ignored (fencing); a stale Accept is told to stop.
    await again.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="old", md5=md5))
    await again.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
    stale = await again.recv("cancel")
    assert (stale.task_id, stale.attempt) == (offer.task_id, 1)
    data, streamed = await stream_all(again, offer2, resume=MiB)
    assert await _status(hub, offer.task_id) == "uploading"
    # A resumed stream sees only the tail, so the hub hashed the whole file separately.
    await wait_for(lambda: hub.service.tasks[offer.task_id].file_digest == digest)
    assert data == Path(path).read_bytes()[MiB:]  # noqa: ASYNC240
    await again.send(result=pb.Result(task_id=offer.task_id, attempt=2, success=True,
                                      filename="new", biz_id=1, md5=streamed))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "completed"))
    assert (await hub.service.get_task(offer.task_id))["result"]["filename"] == "new"


@pytest.mark.anyio
async def test_network_failure_retries_on_same_agent_then_moves_on(tmp_path: Path) -> None:
    """A network error retries on the same agent (its session, no new preupload)
    with backoff, up to retry.network_retries; then another agent gets the task."""
    cfg = make_config(tmp_path)
    cfg.retry.network_retries = 1
    cfg.retry.backoff_initial_seconds = 0.05
    async with make_hub(tmp_path, cfg) as hub:
        a1 = await hub.agent("a1")
        path, _ = hub.file("n.bin", 1000)
        await hub.service.create_part(path, account=None, title=None)
        a2 = await hub.agent("a2", ip="127.0.0.10")
        for attempt in (1, 2):
            offer = await a1.recv("offer")
            assert offer.attempt == attempt
            await a1.send(result=pb.Result(task_id=offer.task_id, attempt=attempt,
                                           success=False, error_kind="network",
                                           error_message="reset"))
        offer3 = await a2.recv("offer")
        assert (offer3.task_id, offer3.attempt) == (offer.task_id, 3)
        task = await hub.service.get_task(offer.task_id)
        assert task["retry_count"] == 2 and task["status"] == "assigned"
        events = [e["event_type"] for e in await hub.service.task_logs(offer.task_id)]
        assert events.count("offer") == 3 and events.count("retry") == 2


@pytest.mark.anyio
async def test_risk_control_moves_to_another_ip_and_cools_the_ip(hub: Hub) -> None:
    a = await hub.agent("a", ip="127.0.0.20")
    path, _ = hub.file("rk.bin", 1000)
    await hub.service.create_part(path, account=None, title=None)
    offer = await a.recv("offer")
    same_ip = await hub.agent("a-twin", ip="127.0.0.20")
    b = await hub.agent("b", ip="127.0.0.21")
    await a.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=False,
                                  error_kind="risk_control", error_message="HTTP 406"))
    offer2 = await b.recv("offer")
    assert offer2.task_id == offer.task_id and offer2.attempt == 2
    ips = {r["ip"]: r for r in await hub.service.list_ips()}
    assert ips["127.0.0.20"]["state"] == "cooling"
    assert ips["127.0.0.20"]["events"][0]["agent_id"] == "a"
    assert sorted(ips["127.0.0.20"]["agents"]) == ["a", "a-twin"]
    assert ips["127.0.0.21"]["state"] == "ok" and ips["127.0.0.21"]["active_tasks"] == 1
    with pytest.raises(TimeoutError):
        await same_ip.recv("offer", wait=0.3)  # the twin shares the cooled IP


@pytest.mark.anyio
async def test_silent_agent_goes_offline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.heartbeat.interval_seconds = 0.2
    cfg.heartbeat.offline_after_seconds = 0.6
    async with make_hub(tmp_path, cfg) as hub:
        agent = await hub.agent("a1")
        await agent.wait_end(wait=5)
        assert await agent_status(hub, "a1") == "offline"


@pytest.mark.anyio
async def test_token_refresh_before_expiry(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, )
    cfg.token_ttl_seconds = 10  # margin max(5, 2.5) s: refresh due 5 s before expiry
    now = [1_000_000.0]
    tokens = TokenIssuer(b"k" * 40, ttl_seconds=10, clock=lambda: now[0])
    async with make_hub(tmp_path, cfg, tokens=tokens, clock=lambda: now[0]) as hub:
        agent = await hub.agent("a1")
        now[0] += 6
        refresh = await agent.recv("token_refresh")
        assert hub.service.verify_agent_token(refresh.token) == "a1"
        assert refresh.expires_at == int(now[0]) + 10


@pytest.mark.anyio
@pytest.mark.parametrize("when", ["before", "during"])
async def test_source_changed_fails_with_kind_file(hub: Hub, when: str) -> None:
    agent = await hub.agent("a1")
    # Large enough that the last block is read only after more credit arrives.
    path, md5 = hub.file("chg.bin", 20 * MiB)
    old = time.time() - 60
    os.utime(path, (old, old))  # a finished recording: the hub may reuse its digest
    await hub.service.create_part(path, account=None, title=None)
    await wait_for(lambda: hub.service.tasks[next(iter(hub.service.tasks))].file_fingerprint)
    offer = await agent.recv("offer")

    def rewrite() -> None:
        with open(path, "r+b") as fh:
            fh.seek(5 * MiB)
            fh.write(b"\0" * 10)

    if when == "before":
        rewrite()
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
    await agent.send(credit=pb.Credit(task_id=offer.task_id, attempt=1, bytes=MiB))
    await agent.recv("chunk")
    if when == "during":
        rewrite()  # before the read of the last block
    await agent.send(credit=pb.Credit(task_id=offer.task_id, attempt=1, bytes=19 * MiB))
    received = hashlib.md5()
    while True:
        msg = await agent.recv()
        if msg.WhichOneof("kind") == "end_of_data":
            break
        received.update(msg.chunk.data)
    # The agent faithfully reports what it got; the hub still refuses the result.
    await agent.send(result=pb.Result(task_id=offer.task_id, attempt=1, success=True,
                                      filename="n", md5=msg.end_of_data.md5))
    await wait_for(lambda: _is(_status(hub, offer.task_id), "failed"))
    assert (await hub.service.get_task(offer.task_id))["error_kind"] == "file"


async def _relay_bytes(target_port: int, counter: list[int], task_status: Any) -> None:
    """A loopback TCP relay counting the bytes the server sends (what is on the wire)."""

    async def pump(src: Any, dst: Any, count: bool) -> None:
        try:
            async for data in src:
                if count:
                    counter[0] += len(data)
                await dst.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def handle(client: Any) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", target_port) as server:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, server, False)
                tg.start_soon(pump, server, client, True)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(handle)


@pytest.mark.anyio
@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_gzip_compression_option(tmp_path: Path, compression: str) -> None:
    cfg = make_config(tmp_path, compression=compression)
    async with make_hub(tmp_path, cfg) as hub, anyio.create_task_group() as tg:
        counter = [0]
        port = await tg.start(_relay_bytes, int(hub.target.rsplit(":", 1)[1]), counter)
        hub.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        hub.stub = mesh_pb2_grpc.AgentLinkStub(hub.channel)
        agent = await hub.agent("a1")
        path = tmp_path / "zeros.bin"
        path.write_bytes(bytes(4 * MiB))  # noqa: ASYNC240 - compresses a thousandfold
        await hub.service.create_part(str(path), account=None, title=None)
        offer = await agent.recv("offer")
        data, _ = await stream_all(agent, offer)
        assert data == bytes(4 * MiB)
        if compression == "gzip":
            assert counter[0] < MiB, counter
        else:
            assert counter[0] > 4 * MiB, counter
        agent.drop()
        await hub.channel.close()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_held_task_resumes_on_the_new_stream_and_others_are_fenced(tmp_path: Path) -> None:
    """A lost stream's leases wait ``held_grace_seconds``; the Hello of the next
    stream re-attaches the attempts it still holds (same attempt, streaming on from its
    offset within fresh credit) and ends the rest: a wrong attempt gets Cancel, a lease
    it does not list is re-queued as a new attempt."""
    cfg = make_config(tmp_path)
    cfg.heartbeat.held_grace_seconds = 30
    async with make_hub(tmp_path, cfg) as hub:
        agent = await hub.agent("a1")
        path, _ = hub.file("held.bin", 2 * MiB + 5)
        data = Path(path).read_bytes()  # noqa: ASYNC240
        other_path, _ = hub.file("other.bin", 1000)
        await hub.service.create_part(path, account=None, title=None)
        first = await agent.recv("offer")
        await hub.service.create_part(other_path, account=None, title=None)
        second = await agent.recv("offer")
        for offer in (first, second):
            await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=1))
        await agent.send(credit=pb.Credit(task_id=first.task_id, attempt=1, bytes=MiB + 7))
        received = bytearray()
        while len(received) < MiB + 7:
            chunk = await agent.recv("chunk")
            if chunk.task_id == first.task_id:
                received += chunk.data
        agent.drop()
        await wait_for(lambda: first.task_id in hub.service.held
                       and second.task_id in hub.service.held)
        assert await _status(hub, first.task_id) == "uploading"  # kept, not re-queued
        offset = len(received)
        again = await hub.agent("a1", held=[
            pb.HeldTask(task_id=first.task_id, attempt=1, committed_bytes=offset),
            pb.HeldTask(task_id=second.task_id, attempt=7, committed_bytes=0),
        ])
        cancel = await again.recv("cancel")
        assert (cancel.task_id, cancel.attempt) == (second.task_id, 7)
        reoffer = await again.recv("offer")  # held by nobody: a new attempt, as before
        assert (reoffer.task_id, reoffer.attempt) == (second.task_id, 2)
        # The held attempt streams on from the agent's offset, within the new credit only.
        await again.send(credit=pb.Credit(task_id=first.task_id, attempt=1, bytes=300_000))
        tail = bytearray()
        while len(tail) < 300_000:
            chunk = await again.recv("chunk")
            assert (chunk.task_id, chunk.attempt) == (first.task_id, 1)
            assert chunk.offset == offset + len(tail)
            tail += chunk.data
        with pytest.raises(TimeoutError):
            await again.recv(wait=0.2)  # nothing beyond credit
        await again.send(credit=pb.Credit(task_id=first.task_id, attempt=1, bytes=MiB))
        while True:
            msg = await again.recv()
            if msg.WhichOneof("kind") == "end_of_data":
                eod = msg.end_of_data
                break
            if msg.chunk.task_id == first.task_id:
                tail += msg.chunk.data
        assert bytes(received + tail) == data
        # The new stream vouches for what it sent: the tail's MD5.
        assert eod.md5 == hashlib.md5(data[offset:]).hexdigest()
        await again.send(result=pb.Result(task_id=first.task_id, attempt=1, success=True,
                                          filename="held", biz_id=1, md5=eod.md5))
        await wait_for(lambda: _is(_status(hub, first.task_id), "completed"))
        await wait_for(lambda: _logged(hub, first.task_id, "success"))
        task = await hub.service.get_task(first.task_id)
        assert task["attempt"] == 1 and task["result"]["filename"] == "held"
        events = [e["event_type"] for e in await hub.service.task_logs(first.task_id)]
        assert events[-4:] == ["offer", "start", "resume", "success"]
