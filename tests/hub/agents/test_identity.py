"""Who may be an agent, over the real gRPC link in process (fake agents, tests/support/hub.py):

- one process per agent id: a second instance is refused (ALREADY_EXISTS naming the
  holder) at Register and at Hello, changes nothing, and the live agent keeps its
  stream and its work; the same instance replaces its own stale stream; a gone
  stream frees the id at once;
- per-agent tokens: only for their id, only their hash stored, revocation closes the
  stream at once and refuses the JWT, expiry likewise (fake clock), JWTs never
  outlive the token; ``agents.allow_psk: false``;
- approval: a new PSK id is pending (no work) until approved; rejected is refused
  until cleared; a token admits its id;
- account allowlists: work only for allowed accounts, ``waiting_for`` says why, and
  an Offer carries the cookies but never the access key.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import grpc
import pytest

from hub.core.errors import BadRequest, Conflict
from hub.core.registry import PENDING
from protocol import mesh_pb2 as pb
from protocol.tokens import TokenIssuer
from tests.conftest import SIM_COOKIES
from tests.support.hub import (
    Hub,
    agent_status,
    anyio_backend,
    hub,
    make_config,
    make_hub,
    wait_for,
)
from uploader.credentials import Credentials

__all__ = ["anyio_backend", "hub"]

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


async def _refused_register(hub: Hub, agent_id: str, **kw: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hub.register(agent_id, **kw)
    return err.value


async def _row(hub: Hub, agent_id: str) -> dict:
    return next(a for a in await hub.service.list_agents() if a["agent_id"] == agent_id)


# ------------------------------------------------------------------------------ one process per id


@pytest.mark.anyio
async def test_a_second_process_cannot_take_a_live_id_and_the_live_one_keeps_working(
        hub: Hub) -> None:
    live = await hub.agent("a1", ip="10.1.1.1")
    session = hub.service.registry.get("a1").session

    refused = await _refused_register(hub, "a1", instance="impostor", ip_address="6.6.6.6")
    assert refused.code() == ALREADY_EXISTS
    assert "already connected from 127.0.0.1 (reports 10.1.1.1)" in refused.details()
    # Holding a JWT of the id (issued earlier) does not help: the Hello is refused.
    jwt, _ = hub.service.tokens.issue("a1")
    impostor = await hub.agent("a1", token=jwt, hello=False)
    await impostor.send(hello=pb.Hello(agent_id="a1", instance_id="impostor",
                                       ip_address="6.6.6.6", agent_name="evil"))
    assert await impostor.wait_end() == ALREADY_EXISTS
    assert "another agent process" in impostor.details

    info = hub.service.registry.get("a1")
    assert info.session is session and not session.closed
    assert (info.ip_address, info.agent_name) == ("10.1.1.1", "a1")  # nothing was applied
    row = await _row(hub, "a1")
    assert row["status"] == "online"
    assert row["duplicate"]["live_address"] == "127.0.0.1 (reports 10.1.1.1)"
    assert row["duplicate"]["refused_address"] == "127.0.0.1 (reports 6.6.6.6)"
    assert row["duplicate"]["attempts"] == 2
    assert hub.service.agent_duplicates()[0]["agent_id"] == "a1"
    # and the live agent still gets work
    path, _ = hub.file("a.bin", 1000)
    await hub.service.create_part(path, account=None, title=None)
    assert (await live.recv("offer")).file_size == 1000


@pytest.mark.anyio
async def test_the_same_process_replaces_its_stale_stream_and_a_gone_stream_frees_the_id(
        hub: Hub) -> None:
    first = await hub.agent("a1")
    again = await hub.agent("a1")  # the same instance dialling again: replaces at once
    assert await first.wait_end() is not None
    assert hub.service.registry.get("a1").session.closed is False
    # Its stream gone (the process crashed), any process may take the id at once.
    again.drop()
    await wait_for(lambda: hub.service.registry.get("a1").session is None)
    other = await hub.agent("a1", instance="restarted")
    assert await agent_status(hub, "a1") == "online"
    await other.send(heartbeat=pb.Heartbeat(status="online"))


@pytest.mark.anyio
async def test_a_claim_without_an_instance_id_never_replaces_a_live_stream(hub: Hub) -> None:
    await hub.agent("a1")
    refused = await _refused_register(hub, "a1", instance="")
    assert refused.code() == ALREADY_EXISTS


# ------------------------------------------------------------------------------ per-agent tokens


@pytest.mark.anyio
async def test_a_token_admits_only_its_own_id_and_only_its_hash_is_stored(hub: Hub) -> None:
    created = await hub.service.create_agent_token("tok-1")
    token = created["token"]
    assert token.startswith(f"bma_{created['token_id']}_")
    jwt = await hub.register("tok-1", psk=token)
    grant = hub.service.authenticate_stream(jwt)
    assert (grant.agent_id, grant.credential) == ("tok-1", f"token:{created['token_id']}")
    for agent_id in ("tok-2", "other"):
        refused = await _refused_register(hub, agent_id, psk=token)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "another agent id" in refused.details()
    assert (await _refused_register(hub, "tok-1", psk=token[:-2] + "xx")).code() == \
        grpc.StatusCode.UNAUTHENTICATED
    listed = hub.service.list_agent_tokens()
    assert [(t["token_id"], t["state"]) for t in listed] == [(created["token_id"], "active")]
    assert "token" not in listed[0] and "token_hash" not in listed[0]
    raw = b"".join(p.read_bytes() for p in hub.tmp.glob("bupmesh.db*"))
    assert token.encode() not in raw and token.rsplit("_", 1)[1].encode() not in raw
    with pytest.raises(BadRequest):
        await hub.service.create_agent_token("bad id")


@pytest.mark.anyio
async def test_revoking_a_token_closes_its_stream_at_once_and_refuses_its_jwt(hub: Hub) -> None:
    created = await hub.service.create_agent_token("tok-1")
    jwt = await hub.register("tok-1", psk=created["token"])
    agent = await hub.agent("tok-1", token=jwt)
    bystander = await hub.agent("psk-agent")
    with anyio.fail_after(1.0):  # closed by the revocation itself, not by a timer
        await hub.service.revoke_agent_token(created["token_id"])
        await agent.ended.wait()
    assert hub.service.list_agent_tokens()[0]["state"] == "revoked"
    again = await hub.agent("tok-1", token=jwt, hello=False)
    assert await again.wait_end() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in again.details
    assert (await _refused_register(hub, "tok-1", psk=created["token"])).code() == \
        grpc.StatusCode.UNAUTHENTICATED
    await bystander.send(heartbeat=pb.Heartbeat(status="online"))
    assert await agent_status(hub, "psk-agent") == "online"


@pytest.mark.anyio
async def test_an_expired_token_is_refused_and_its_stream_closed(tmp_path: Path) -> None:
    now = [1_000_000.0]
    clock = lambda: now[0]  # noqa: E731
    tokens = TokenIssuer(b"k" * 40, ttl_seconds=3600, clock=clock)
    async with make_hub(tmp_path, tokens=tokens, clock=clock) as h:
        created = await h.service.create_agent_token("tok-1", expires_in=600)
        assert created["expires_at"] == now[0] + 600
        jwt = await h.register("tok-1", psk=created["token"])
        grant = h.service.authenticate_stream(jwt)
        assert grant.expires_at == int(now[0] + 600)  # never longer than the token
        agent = await h.agent("tok-1", token=jwt)
        assert not h.service.auth.needs_refresh(h.service.registry.get("tok-1").session)
        now[0] += 601
        await agent.wait_end(wait=3)  # the clock pass notices within a tick
        refused = await _refused_register(h, "tok-1", psk=created["token"])
        assert "expired" in refused.details()
        assert h.service.list_agent_tokens()[0]["state"] == "expired"


@pytest.mark.anyio
async def test_without_allow_psk_only_tokens_register(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.agents.allow_psk = False
    async with make_hub(tmp_path, config=config) as h:
        refused = await _refused_register(h, "a1")
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "agents.allow_psk: false" in refused.details()
        assert "agent-token create a1" in refused.details()
        psk_jwt, _ = h.service.tokens.issue("a1")  # one issued before the switch
        old = await h.agent("a1", token=psk_jwt, hello=False)
        assert await old.wait_end() == grpc.StatusCode.UNAUTHENTICATED
        created = await h.service.create_agent_token("a1")
        await h.agent("a1", token=await h.register("a1", psk=created["token"]))
        assert await agent_status(h, "a1") == "online"


# ------------------------------------------------------------------------------ approval


@pytest.mark.anyio
async def test_approval_gates_work_and_rejection_bars_the_id(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.agents.require_approval = True
    async with make_hub(tmp_path, config=config) as h:
        agent = await h.agent("new-1", hello=False)
        await agent.send(hello=pb.Hello(agent_id="new-1", instance_id="instance-of-new-1",
                                        ip_address="10.9.9.9",
                                        capabilities=pb.Capabilities(max_concurrent_uploads=3,
                                                                     storage_type="network")))
        welcome = await agent.recv("welcome")
        assert welcome.approval_pending
        row = await _row(h, "new-1")
        assert (row["status"], row["approval"], row["ip_address"], row["max_concurrent_uploads"]) \
            == ("pending", PENDING, "10.9.9.9", 3)
        path, _ = h.file("p.bin", 1000)
        part = await h.service.create_part(path, account=None, title=None)
        task = await h.service.get_task(part["task_id"])
        assert task["waiting_for"] == {"new-1": "agent is pending"}
        with pytest.raises(TimeoutError):
            await agent.recv("offer", wait=0.5)
        await h.service.set_agent_approval("new-1", "approve")
        assert (await agent.recv("offer")).task_id == part["task_id"]

        await h.service.set_agent_approval("new-1", "reject")
        await agent.wait_end()
        refused = await _refused_register(h, "new-1")
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "rejected" in refused.details()
        await h.service.set_agent_approval("new-1", "clear")
        await h.agent("new-1")
        assert (await _row(h, "new-1"))["approval"] == PENDING  # waits for a decision again

        # A per-agent token is an admin's decision already: its id is approved.
        created = await h.service.create_agent_token("tok-1")
        await h.agent("tok-1", token=await h.register("tok-1", psk=created["token"]))
        assert (await _row(h, "tok-1"))["status"] == "online"


# ------------------------------------------------------------------------------ allowlists


@pytest.mark.anyio
async def test_only_agents_allowed_the_account_get_its_work_and_offers_hold_no_access_key(
        tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.agents.allowed_accounts = {"fenced": ["backup"]}
    async with make_hub(tmp_path, config=config) as h:
        h.service.accounts.creds = Credentials.from_cookie_string(SIM_COOKIES,
                                                                  access_key="app-key-7")
        fenced = await h.agent("fenced")
        with pytest.raises(Conflict, match="hub config"):
            await h.service.set_agent_accounts("fenced", None)
        path, _ = h.file("p.bin", 1000)
        part = await h.service.create_part(path, account="main", title=None)
        await wait_for(lambda: _waiting(h, part["task_id"]))
        task = await h.service.get_task(part["task_id"])
        assert "may not use account main" in task["waiting_for"]["fenced"]
        with pytest.raises(TimeoutError):
            await fenced.recv("offer", wait=0.5)

        # The API's allowlist: by the account's name or its id
        await h.service.set_agent_accounts("open", ["1"])
        allowed = await h.agent("open")
        offer = await allowed.recv("offer")
        assert offer.task_id == part["task_id"]
        assert offer.credentials.cookies and offer.credentials.mid
        assert offer.credentials.access_key == ""  # uploads never use it
        row = await _row(h, "fenced")
        assert (row["allowed_accounts"], row["accounts_from_config"]) == (["backup"], True)
        with pytest.raises(BadRequest):
            await h.service.set_agent_accounts("open", "main")


async def _waiting(h: Hub, task_id: str) -> bool:
    return "fenced" in ((await h.service.get_task(task_id)).get("waiting_for") or {})
