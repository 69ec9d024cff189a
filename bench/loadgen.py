"""Load generator for ``bench/scale.py``: one process holding many simulated agents.

Each simulated agent looks to the hub like a real ``bupmesh agent``: its own gRPC
channel with the real agent's channel options (keepalive
pings every 20 s), ``Register`` with the PSK for a JWT, ``Connect`` with ``Hello``,
a ``Heartbeat`` at the interval the hub's ``Welcome`` names, and the real agent's
reconnect policy (``spoke.reconnect.ReconnectSchedule``: the reconnect window the hub
names in ``Welcome`` and ``ReconnectWindow``, else ``spoke.backoff.Backoff``'s full
jitter, 1-60 s), so the storm after a hub restart is the one real agents would make.
``--no-window`` leaves the window out of the agents' capabilities (the old agents'
behaviour).

Connections: gRPC shares one subchannel (one TCP connection) among a process's
channels to the same target with the same options, so by default this process's
agents are HTTP/2 streams over one connection: the hub's per-stream cost without
its per-connection cost. ``--own-connections`` gives each agent a local subchannel
pool, so each dials its own TCP connection as a real agent does (and the hub holds
one descriptor per agent).

Offers are completed by answering the protocol, not by uploading to a simulator:
``Accept``, one ``Credit`` for the whole (small) file, the MD5 of the streamed bytes
in ``Result``. The benchmark is about the hub; ten thousand real uploaders on two
cores would measure the machine instead.

Events go to stdout as JSON lines for the driver (one per line, wall-clock ``t`` so
the driver can line them up with its own clock): ``dial`` (a connection attempt),
``welcome`` (with ``n``, the agent's session count: 0 is the first connect),
``offer`` (the file name, which the driver maps to the part it created), ``result``,
``lost`` (an established stream ended). The process stops when stdin closes (the
driver went away) or after ``--max-seconds``.

    python bench/loadgen.py --server 127.0.0.1:12382 --first 0 --count 2500
    (PSK from the BUPMESH_PSK environment variable: never on a command line)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from protocol import mesh_pb2 as pb  # noqa: E402
from protocol import mesh_pb2_grpc as pb_grpc  # noqa: E402
from protocol.grpc_options import channel_options  # noqa: E402
from spoke.backoff import Backoff  # noqa: E402
from spoke.reconnect import ReconnectSchedule  # noqa: E402

WELCOME_TIMEOUT = 15.0
REGISTER_TIMEOUT = 15.0


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: one socket per simulated agent."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def reported_ip(index: int) -> str:
    """A distinct egress IP per agent (as in a real mesh, one agent per IP)."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


class Emitter:
    """JSON lines to stdout; the only output of this process."""

    def __init__(self) -> None:
        self._out = sys.stdout

    def __call__(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")

    def flush(self) -> None:
        self._out.flush()


class SimAgent:
    """One simulated agent: dial, register, hello, heartbeat, answer offers, reconnect."""

    def __init__(self, index: int, server: str, psk: str, emit: Emitter, *,
                 distinct_ips: bool, rng: random.Random, window: bool = True,
                 own_connection: bool = False) -> None:
        self.index = index
        self.agent_id = f"scale-{index:05d}"
        self.server = server
        self.psk = psk
        self.emit = emit
        self.ip = reported_ip(index) if distinct_ips else ""
        self.backoff = Backoff(1.0, 60.0, rng)
        self.schedule = ReconnectSchedule(self.backoff, rng)
        self.window = window
        # One process per agent, as the real agent's link says: its own stale stream is
        # replaced on reconnect, not refused as a second process holding the id.
        self.instance_id = f"{rng.getrandbits(64):016x}"
        self.options = channel_options()
        if own_connection:
            self.options.append(("grpc.use_local_subchannel_pool", 1))
        self.token: str | None = None
        self.sessions = 0
        self.reconnect_after = 0.0
        # task id -> (attempt, running MD5 of the bytes received)
        self.transfers: dict[str, tuple[int, Any]] = {}

    async def run(self, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        while True:
            try:
                welcomed = await self._session()
            except Exception as exc:  # anything unexpected: report it, back off, dial again
                self.emit("error", a=self.index, error=f"{type(exc).__name__}: {exc}"[:300])
                welcomed = False
            now = asyncio.get_running_loop().time()
            self.schedule.lost(now, welcomed=welcomed)
            delay = self.reconnect_after or self.schedule.next_delay(now)
            self.reconnect_after = 0.0
            await asyncio.sleep(delay)

    def _capabilities(self) -> pb.Capabilities:
        return pb.Capabilities(max_concurrent_uploads=2, storage_type="network",
                               buffer_bytes=64 << 20, reconnect_window=self.window)

    async def _session(self) -> bool:
        self.emit("dial", a=self.index)
        channel = grpc.aio.insecure_channel(self.server, options=self.options)
        welcomed = False
        try:
            stub = pb_grpc.AgentLinkStub(channel)
            if self.token is None:
                reply = await stub.Register(pb.RegisterRequest(
                    psk=self.psk, agent_id=self.agent_id, agent_name=self.agent_id,
                    ip_address=self.ip, capabilities=self._capabilities(),
                    instance_id=self.instance_id,
                ), timeout=REGISTER_TIMEOUT)
                self.token = reply.token
            call = stub.Connect(metadata=(("authorization", f"Bearer {self.token}"),))
            await call.write(pb.AgentMessage(hello=pb.Hello(
                agent_id=self.agent_id, agent_name=self.agent_id, ip_address=self.ip,
                capabilities=self._capabilities(), version="bupmesh-loadgen/0.1",
                instance_id=self.instance_id,
            )))
            first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT)
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                call.cancel()
                return False
            welcomed = True
            welcome = first.welcome
            if welcome.HasField("token") and welcome.token.token:
                self.token = welcome.token.token
            self.schedule.set_window(welcome.reconnect_window_seconds)
            self.emit("welcome", a=self.index, n=self.sessions)
            self.sessions += 1
            await self._serve(call, float(welcome.heartbeat_interval_seconds or 30))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self.token = None  # register again next time, as the real agent does
        except TimeoutError:
            pass
        finally:
            if welcomed:
                self.emit("lost", a=self.index)
            self.transfers.clear()
            await channel.close(grace=None)
        return welcomed

    async def _serve(self, call: Any, heartbeat_interval: float) -> None:
        write_lock = asyncio.Lock()  # grpc.aio allows one write in flight per call

        async def write(msg: pb.AgentMessage) -> None:
            async with write_lock:
                # A heartbeat or an answer can fall due just as the call ends (the hub
                # closed the stream, or died): grpc.aio refuses the write with
                # InvalidStateError, while the reader gets the call's end and its status
                # and ends the session as for any lost stream.
                with contextlib.suppress(asyncio.InvalidStateError):
                    await call.write(msg)

        async def heartbeats() -> None:
            while True:
                await asyncio.sleep(heartbeat_interval)
                await write(pb.AgentMessage(heartbeat=pb.Heartbeat(
                    status="online", current_tasks=len(self.transfers),
                    free_slots=max(0, 2 - len(self.transfers)), memory_mb=40)))

        beat = asyncio.create_task(heartbeats())
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    return
                if await self._on_message(msg, write):
                    call.cancel()
                    return
        finally:
            beat.cancel()
            # A heartbeat written as the call ended (the hub killed) finds it finished:
            # the stream is over either way, as for the real agent.
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError,
                                     asyncio.InvalidStateError):
                await beat

    async def _on_message(self, msg: pb.HubMessage, write: Any) -> bool:
        """Answer one hub message; True if the stream should end (Drain with a delay)."""
        kind = msg.WhichOneof("kind")
        if kind == "offer":
            offer = msg.offer
            self.emit("offer", a=self.index, file=offer.file_name)
            if offer.resume_offset:  # not produced by this benchmark: nothing was committed
                await write(pb.AgentMessage(reject=pb.Reject(
                    task_id=offer.task_id, attempt=offer.attempt, reason="loadgen: no resume")))
                return False
            self.transfers[offer.task_id] = (offer.attempt, hashlib.md5())
            await write(pb.AgentMessage(accept=pb.Accept(
                task_id=offer.task_id, attempt=offer.attempt, resume_offset=0)))
            await write(pb.AgentMessage(credit=pb.Credit(
                task_id=offer.task_id, attempt=offer.attempt, bytes=max(1, offer.file_size))))
        elif kind == "chunk":
            held = self.transfers.get(msg.chunk.task_id)
            if held is not None and held[0] == msg.chunk.attempt:
                held[1].update(msg.chunk.data)
        elif kind == "end_of_data":
            end = msg.end_of_data
            held = self.transfers.pop(end.task_id, None)
            if held is not None and held[0] == end.attempt:
                md5 = held[1].hexdigest()
                await write(pb.AgentMessage(result=pb.Result(
                    task_id=end.task_id, attempt=end.attempt, success=True,
                    filename=f"loadgen{md5[:12]}", biz_id=int(md5[:8], 16), md5=md5)))
                self.emit("result", a=self.index)
        elif kind == "cancel":
            cancel = msg.cancel
            if self.transfers.pop(cancel.task_id, None) is not None:
                await write(pb.AgentMessage(result=pb.Result(
                    task_id=cancel.task_id, attempt=cancel.attempt, success=False,
                    error_kind="cancelled", error_message=cancel.reason[:200])))
        elif kind == "token_refresh":
            self.token = msg.token_refresh.token
        elif kind == "reconnect_window":
            self.schedule.set_window(msg.reconnect_window.seconds)
        elif kind == "drain" and msg.drain.reconnect_after_seconds > 0:
            self.reconnect_after = float(msg.drain.reconnect_after_seconds)
            return True
        elif kind == "status_query":
            await write(pb.AgentMessage(status_reply=pb.StatusReply(
                query_id=msg.status_query.query_id, status="online", memory_mb=40)))
        return False


async def run_agents(args: argparse.Namespace, psk: str, stop: asyncio.Event) -> None:
    emit = Emitter()
    rng = random.Random(args.seed)
    agents = [SimAgent(i, args.server, psk, emit, distinct_ips=not args.shared_ip,
                       rng=random.Random(rng.getrandbits(64)), window=not args.no_window,
                       own_connection=args.own_connections)
              for i in range(args.first, args.first + args.count)]
    tasks = [asyncio.create_task(a.run(rng.uniform(0, args.ramp_seconds))) for a in agents]

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.2)
            emit.flush()

    flush_task = asyncio.create_task(flusher())
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        pass
    finally:
        for task in [*tasks, flush_task]:
            task.cancel()
        await asyncio.gather(*tasks, flush_task, return_exceptions=True)
        emit.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="hub gRPC address H:P")
    parser.add_argument("--first", type=int, default=0, help="index of the first agent")
    parser.add_argument("--count", type=int, required=True, help="agents in this process")
    parser.add_argument("--ramp-seconds", type=float, default=10.0,
                        help="first connects spread uniformly over this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared-ip", action="store_true",
                        help="report no egress IP (the hub sees 127.0.0.1 for all)")
    parser.add_argument("--no-window", action="store_true",
                        help="do not announce the reconnect_window capability (old agents)")
    parser.add_argument("--own-connections", action="store_true",
                        help="one TCP connection per agent (default: one per process)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop by itself after this long")
    args = parser.parse_args(argv)
    psk = os.environ.get("BUPMESH_PSK", "")
    if not psk:
        parser.error("set BUPMESH_PSK")
    raise_nofile_limit()

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:  # the driver closes our stdin (or dies): stop
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        await run_agents(args, psk, stop)

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
