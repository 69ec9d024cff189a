"""An in-process hub for tests: a real grpc.aio server and HubService, fake agents.

The fake agent speaks the link's conversation message by message, so a test can
check exactly what the hub sends and what it refuses. grpc.aio is asyncio-only:
modules that use these helpers re-export ``anyio_backend`` to run on asyncio alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from hub.accounts.store import load_or_create_key
from hub.app import start_grpc
from hub.config import AccountRiskSettings, HubConfig, RiskSettings, validate
from hub.service import HubService
from hub.store.tasks import Store
from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc
from protocol.integrity import new_part_digest
from protocol.tokens import TokenIssuer
from tests.conftest import SIM_COOKIES, free_port
from uploader.credentials import Credentials

PSK = "test-psk"
MiB = 1 << 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio is asyncio-only


class FakeAccounts:
    def __init__(self) -> None:
        self.creds = Credentials.from_cookie_string(SIM_COOKIES)

    async def credentials(self, account: Any) -> Credentials:
        if account not in (None, "main"):
            raise LookupError(f"no account {account}")
        return self.creds

    async def resolve(self, account: Any) -> dict[str, Any]:
        if account not in (None, "main", 1, "1"):
            raise LookupError(f"no account {account}")
        return {"account_id": 1, "name": "main", "mid": self.creds.mid}

    async def list(self) -> list[dict[str, Any]]:
        return [await self.resolve(None)]


@dataclass
class Hub:
    service: HubService
    target: str
    channel: grpc.aio.Channel
    stub: mesh_pb2_grpc.AgentLinkStub
    tmp: Path
    readers: list[asyncio.Future[None]]

    async def register(self, agent_id: str, *, psk: str = PSK, instance: str | None = None,
                       **kw: Any) -> str:
        resp = await self.stub.Register(
            pb.RegisterRequest(psk=psk, agent_id=agent_id, agent_name=agent_id,
                               instance_id=instance_of(agent_id, instance), **kw)
        )
        return resp.token

    async def agent(self, agent_id: str, *, token: str | None = None, hello: bool = True,
                    held: list[pb.HeldTask] | None = None, max_concurrent: int = 2,
                    ip: str = "127.0.0.9", finish_handshake: bool = False,
                    storage_type: str = "", local_paths: tuple[str, ...] = (),
                    crc32: bool = False, egress_ip: str = "", submit: bool = False,
                    instance: str | None = None) -> FakeAgent:
        """A fake agent process, said Hello (unless not ``hello``). ``instance`` names the
        process; by default one per agent id, so a second call is that process
        reconnecting (and replaces its session)."""
        token = token if token is not None else await self.register(agent_id, instance=instance)
        agent = FakeAgent(self, agent_id, token)
        await agent.open()
        if hello:
            await agent.send(hello=pb.Hello(
                agent_id=agent_id, agent_name=agent_id, ip_address=ip,
                instance_id=instance_of(agent_id, instance),
                capabilities=pb.Capabilities(max_concurrent_uploads=max_concurrent,
                                             buffer_bytes=64 * MiB,
                                             finish_handshake=finish_handshake,
                                             storage_type=storage_type,
                                             local_paths=list(local_paths),
                                             crc32_integrity=crc32, submit=submit),
                held_tasks=held or [], egress_ip=egress_ip))
            welcome = await agent.recv("welcome")
            assert welcome.session_id
        return agent

    def file(self, name: str, size: int) -> tuple[str, str]:
        """A new file of random bytes: its path and MD5 (an older agent's stream check)."""
        path = self.tmp / name
        data = os.urandom(size)
        path.write_bytes(data)
        return str(path), hashlib.md5(data).hexdigest()


def part_digest(path: str) -> str:
    """The part digest of a file, as the hub takes it (protocol.integrity)."""
    digest = new_part_digest()
    digest.update(Path(path).read_bytes())
    return digest.hexdigest()


class FakeAgent:
    def __init__(self, hub: Hub, agent_id: str, token: str) -> None:
        self.hub = hub
        self.agent_id = agent_id
        self.call = hub.stub.Connect(metadata=(("authorization", f"Bearer {token}"),))
        self.send_stream, self.inbox = anyio.create_memory_object_stream[Any](1000)
        self.ended = anyio.Event()
        self.status: grpc.StatusCode | None = None
        self.details = ""
        self.last_eod: pb.EndOfData | None = None  # the last EndOfData stream_all saw

    async def open(self) -> None:
        # gRPC awaits live in their own asyncio task (cancel scopes around grpc.aio awaits
        # do not work); tests wait on the memory stream with anyio deadlines instead.
        self.task = asyncio.ensure_future(self._reader())
        self.hub.readers.append(self.task)

    async def _reader(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    break
                self.send_stream.send_nowait(msg)
            self.status = await self.call.code()
            self.details = await self.call.details()
        except grpc.aio.AioRpcError as exc:
            self.status, self.details = exc.code(), exc.details() or ""
        finally:
            self.ended.set()

    async def send(self, **kind: Any) -> None:
        try:
            await self.call.write(pb.AgentMessage(**kind))
        except grpc.aio.AioRpcError:
            pass  # the hub already ended the call; the reader records its status

    async def recv(self, kind: str | None = None, wait: float = 5.0) -> Any:
        """Next message (of ``kind``; skipping heartbeat-ish noise only if asked)."""
        with anyio.fail_after(wait):
            msg = await self.inbox.receive()
        got = msg.WhichOneof("kind")
        if kind is not None:
            assert got == kind, f"expected {kind}, got {got}: {str(msg)[:200]}"
            return getattr(msg, kind)
        return msg

    async def wait_end(self, wait: float = 5.0) -> grpc.StatusCode | None:
        with anyio.fail_after(wait):
            await self.ended.wait()
        return self.status

    def drop(self) -> None:
        self.call.cancel()


def instance_of(agent_id: str, instance: str | None) -> str:
    return instance if instance is not None else f"instance-of-{agent_id}"


# The account ledger without pacing: tests that are not about it start uploads and
# submissions back to back.
OPEN_ACCOUNT = AccountRiskSettings(preupload_min_gap_seconds=0, preuploads_per_hour=0,
                                   preuploads_per_day=0, submit_min_gap_seconds=0,
                                   submit_gap_jitter=0, submits_per_hour=0, submits_per_day=0)


def make_config(tmp: Path, **over: Any) -> HubConfig:
    """A hub for link tests: the risk ledgers' pacing opened wide (tests that are about it
    pass their own ``risk``), so every fake agent on 127.0.0.9 gets work at once. Parts'
    files live in ``tmp`` (``Hub.file``), the hub's data in ``tmp/data``."""
    over.setdefault("risk", RiskSettings(min_interval_seconds=0, max_uploads_per_hour=100000,
                                         account=OPEN_ACCOUNT))
    over.setdefault("media_roots", [str(tmp)])
    cfg = HubConfig(psk=PSK, admin_token="admin", insecure=True, data_dir=str(tmp / "data"),
                    grpc_listen=f"127.0.0.1:{free_port()}", token_ttl_seconds=3600,
                    **over)
    return validate(cfg)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with make_hub(tmp_path) as h:
        yield h


class make_hub:  # noqa: N801 - used as an async context manager factory
    def __init__(self, tmp: Path, config: HubConfig | None = None,
                 tokens: TokenIssuer | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.tmp = tmp
        self.config = config or make_config(tmp)
        self.tokens = tokens
        self.clock = clock

    async def __aenter__(self) -> Hub:
        store = Store(self.tmp / "bupmesh.db", load_or_create_key(self.tmp))
        await store.open()
        tokens = self.tokens or TokenIssuer(b"k" * 40, ttl_seconds=self.config.token_ttl_seconds)
        clock = {"clock": self.clock} if self.clock is not None else {}
        service = HubService(self.config, store=store, accounts=FakeAccounts(), tokens=tokens,
                             **clock)
        await service.start()
        self._grpc = await start_grpc(service, self.config)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(service.run)
        target = f"127.0.0.1:{self._grpc.grpc_port}"
        self.channel = grpc.aio.insecure_channel(target)
        stub = mesh_pb2_grpc.AgentLinkStub(self.channel)
        self.hub = Hub(service, target, self.channel, stub, self.tmp, [])
        return self.hub

    async def __aexit__(self, *exc: Any) -> None:
        await self._grpc.grpc_server.stop(0)
        await self.channel.close()
        for task in self.hub.readers:
            task.cancel()
        await asyncio.gather(*self.hub.readers, return_exceptions=True)
        # As the hub does when it stops: its stream handlers finish before the store closes.
        await self._grpc.link.handlers_done()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._grpc.service.close()
        self._grpc.service.store.close()


async def wait_for(predicate: Any, wait: float = 5.0) -> None:
    """Poll an (async or sync) predicate with a bounded deadline."""
    with anyio.fail_after(wait):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await anyio.sleep(0.01)


async def agent_status(hub: Hub, agent_id: str) -> str | None:
    for a in await hub.service.list_agents():
        if a["agent_id"] == agent_id:
            return a["status"]
    return None


async def stream_all(agent: FakeAgent, offer: pb.Offer, *, resume: int = 0,
                     grant: int = 3 * MiB) -> tuple[bytes, str]:
    """Accept, grant credit as frames arrive, check frames stay within credit; -> (bytes, md5)."""
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt,
                                      resume_offset=resume))
    granted = received = 0
    data = bytearray()
    need = offer.file_size - resume
    while True:
        if granted - received < grant // 2 and granted < need:
            n = min(grant, need - granted)
            await agent.send(credit=pb.Credit(task_id=offer.task_id, attempt=offer.attempt,
                                              bytes=n))
            granted += n
        msg = await agent.recv()
        kind = msg.WhichOneof("kind")
        if kind == "chunk":
            chunk = msg.chunk
            assert chunk.task_id == offer.task_id and chunk.attempt == offer.attempt
            assert len(chunk.data) <= MiB
            assert chunk.offset == resume + received
            received += len(chunk.data)
            assert received <= granted, "hub sent beyond credit"
            data += chunk.data
        elif kind == "end_of_data":
            assert received == need
            agent.last_eod = msg.end_of_data
            return bytes(data), msg.end_of_data.md5
        else:
            raise AssertionError(f"unexpected {kind}")


async def _is(coro: Any, value: Any) -> bool:
    return (await coro) == value


async def _status(hub: Hub, task_id: str) -> str:
    return (await hub.service.get_task(task_id))["status"]


async def _logged(hub: Hub, task_id: str, event_type: str) -> bool:
    """``event_type`` is in the task's log on disk. A Result changes the task's status in
    memory first; what it does to the store (the log, the part's state and digest, the risk
    ledger) is written just after, ending with the ``success`` entry."""
    return event_type in [e["event_type"] for e in await hub.service.task_logs(task_id)]
