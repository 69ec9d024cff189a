"""The agent's link to the hub: dial, register, say Hello, hold one stream, reconnect.

Agents sit behind NAT, so the agent dials: ``Register`` trades the PSK (or the
agent's own token) for a JWT (kept until it is close to expiry, refreshed by the
hub's ``TokenRefresh``), ``Connect`` carries it as ``authorization: Bearer
<jwt>``, the first message is ``Hello`` and the hub answers ``Welcome``. From
then on one :class:`Stream` carries everything; when it ends, the link dials
again at a random moment of the reconnect window the hub named, or (a hub that
named none) after an exponential, fully jittered delay (:mod:`spoke.reconnect`),
or after the delay a hub's ``Drain`` asked for.

Both ``Register`` and ``Hello`` carry this process's instance id (random, made
once per link), so the hub can tell this agent reconnecting (it replaces its own
stale stream) from a second process with the same agent id (refused while the
first is connected). A refusal that waiting a second will not fix (the id is
held by another process, or an admin rejected it) is logged once as an ERROR
saying what to change, and the link tries again only every few minutes
(:data:`REFUSED_BACKOFF`), so a duplicated agent.yml neither flaps nor floods
the hub.

What the agent says and does on the stream is not the link's business: a
:class:`LinkHandler` (the :class:`~spoke.agent.Agent`) provides the Hello's
contents, heartbeats and the handling of every hub message, and hears when a
stream starts and ends. The link needs ``grpc.aio``, hence asyncio.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.abc
import grpc
import grpc.aio

from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc as pb_grpc
from protocol.chunks import WireChunk, parse_hub_message
from protocol.grpc_options import channel_options
from spoke.backoff import Backoff
from spoke.config import AgentSettings
from spoke.egress import Reach
from spoke.reconnect import ReconnectSchedule
from spoke.stream import Stream

VERSION = "bupmesh-agent/0.1"
_CONNECT = pb.DESCRIPTOR.services_by_name["AgentLink"].methods_by_name["Connect"]
CONNECT_METHOD = f"/{_CONNECT.containing_service.full_name}/{_CONNECT.name}"
REGISTER_TIMEOUT = 15.0
WELCOME_TIMEOUT = 15.0
TOKEN_MARGIN = 60.0  # re-register when the JWT expires sooner than this
CLOSE_WAIT = 5.0  # after a stream, how long the next dial waits for its stopped attempts
# Delays after a refusal the agent cannot fix by itself: 1-2 min, growing to 10 min.
REFUSED_BACKOFF = (60.0, 600.0)
REFUSED = {
    grpc.StatusCode.ALREADY_EXISTS: "change --agent-id (AGENT_ID, agent.id) of one of the "
                                    "two processes, or stop one",
    grpc.StatusCode.PERMISSION_DENIED: "ask the hub's admin to clear this agent id",
}


class LinkHandler(Protocol):
    """What the link asks of the agent it carries."""

    def capabilities(self) -> pb.Capabilities:
        """What this agent can do (``RegisterRequest`` and ``Hello``)."""
        ...

    def held_tasks(self) -> list[pb.HeldTask]:
        """Attempts that outlived the last stream, for the next ``Hello``."""
        ...

    def heartbeat(self) -> pb.Heartbeat:
        ...

    def reach(self) -> Reach:
        """What Bilibili sees of this agent (egress address, line) for ``Hello``."""
        ...

    def welcomed(self, stream: Stream, held: list[pb.HeldTask]) -> None:
        """The hub welcomed a Hello that listed ``held``; ``stream`` is live and serving."""
        ...

    def dispatch(self, stream: Stream, message: pb.HubMessage | WireChunk) -> None:
        """One hub message, in order; must not block (the reader waits for it)."""
        ...

    def stream_lost(self) -> list[anyio.Event]:
        """The stream is gone; returns what to await (bounded) before dialling again."""
        ...


def make_channel(settings: AgentSettings) -> grpc.aio.Channel:
    compression = grpc.Compression.Gzip if settings.compression == "gzip" else None
    if settings.insecure:
        return grpc.aio.insecure_channel(
            settings.server_url, options=channel_options(), compression=compression
        )
    root = None
    if settings.ca_file:
        with open(settings.ca_file, "rb") as fh:
            root = fh.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.aio.secure_channel(
        settings.server_url, credentials, options=channel_options(), compression=compression
    )


class Link:
    """Dials the hub and keeps one welcomed :class:`Stream` up until :meth:`stop`."""

    def __init__(
        self,
        settings: AgentSettings,
        handler: LinkHandler,
        *,
        backoff: Backoff,
        refused_backoff: Backoff | None = None,
        wall_clock: Callable[[], float] = time.time,
        log: logging.LoggerAdapter[logging.Logger],
        schedule: ReconnectSchedule | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.backoff = backoff
        self.schedule = schedule or ReconnectSchedule(backoff)
        self.refused_backoff = refused_backoff or Backoff(*REFUSED_BACKOFF)
        self.instance_id = uuid.uuid4().hex  # this process, to the hub
        self._refusal_logged = False  # the ERROR of a run of refusals was written
        self.wall_clock = wall_clock
        self.log = log
        self.stream: Stream | None = None  # the welcomed stream, while there is one
        self.stopping = False  # stop() was called: no more dialling
        self._token: str | None = None
        self._token_expires = 0.0
        self._connect_scope: anyio.CancelScope | None = None
        self._reconnect_after = 0.0
        self._stop_event = anyio.Event()

    # -- the agent's side ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect, until :meth:`stop` and the last stream ended."""
        while not self.stopping:
            welcomed = await self._one_session()
            if self.stopping:
                break
            now = anyio.current_time()
            self.schedule.lost(now, welcomed=welcomed)
            if welcomed:
                self.refused_backoff.reset()
                self._refusal_logged = False
            delay = self._reconnect_after or self.schedule.next_delay(now)
            self._reconnect_after = 0.0
            self.log.info("reconnecting in %.1fs", delay)
            with anyio.move_on_after(delay):
                await self._stop_event.wait()

    def stop(self) -> Stream | None:
        """Dial no more; returns the live stream, to be drained and closed by the caller.

        Without one, a dial or registration in progress is given up at once.
        """
        self.stopping = True
        self._stop_event.set()
        if self.stream is None and self._connect_scope is not None:
            self._connect_scope.cancel()
        return self.stream

    def send(self, message: pb.AgentMessage) -> None:
        """Queue ``message`` on the live stream; without one it is dropped (the hub
        treats the attempts of a lost stream as lost, or as held when the next Hello
        lists them)."""
        if self.stream is not None:
            self.stream.send(message)

    def reconnect_after(self, seconds: float) -> None:
        """The hub asked (``Drain``) to be dialled again only after ``seconds``."""
        self._reconnect_after = seconds

    def set_reconnect_window(self, seconds: float) -> None:
        """The hub's reconnect window (``Welcome``, ``ReconnectWindow``)."""
        self.schedule.set_window(seconds)

    def set_token(self, refresh: pb.TokenRefresh) -> None:
        self._token = refresh.token
        self._token_expires = float(refresh.expires_at or 0)

    # -- one stream ----------------------------------------------------------------------------

    async def _one_session(self) -> bool:
        """Run one stream until it ends; True if the hub welcomed us."""
        welcomed = False
        channel = make_channel(self.settings)
        try:
            async with anyio.create_task_group() as tg:
                self._connect_scope = tg.cancel_scope

                async def body() -> None:
                    nonlocal welcomed
                    welcomed = await self._serve(channel, tg)

                tg.start_soon(body)
        except Exception as exc:  # grpc errors, protocol errors: log and reconnect
            self.log.warning("link error: %s", _describe(exc))
        finally:
            self.stream = None
            self._connect_scope = None
            pending = self.handler.stream_lost()
            with anyio.CancelScope(shield=True):
                await channel.close(grace=None)
                # As when they ran in the stream's group: an attempt that is not held is
                # over before the agent dials again (bounded: stopping a runner is prompt).
                with anyio.move_on_after(CLOSE_WAIT):
                    for event in pending:
                        await event.wait()
        return welcomed

    async def _serve(self, channel: grpc.aio.Channel, tg: anyio.abc.TaskGroup) -> bool:
        stub = pb_grpc.AgentLinkStub(channel)
        try:
            token = await self._ensure_token(stub)
        except grpc.aio.AioRpcError as exc:
            if not self._refused(exc):
                self.log.warning(
                    "registration refused: %s: %s", exc.code().name, exc.details() or ""
                )
            tg.cancel_scope.cancel()
            return False
        # The generated stub would decode every Chunk with two copies of its data;
        # parse_hub_message hands Chunk data over as a view of what gRPC received.
        connect = channel.stream_stream(
            CONNECT_METHOD,
            request_serializer=pb.AgentMessage.SerializeToString,
            response_deserializer=parse_hub_message,
        )
        call = connect(metadata=(("authorization", f"Bearer {token}"),))
        welcomed = anyio.Event()

        async def watchdog() -> None:
            # Not a scope around the read: those do not work on grpc.aio awaits.
            with anyio.move_on_after(WELCOME_TIMEOUT):
                await welcomed.wait()
                return
            self.log.warning("no Welcome within %ss", WELCOME_TIMEOUT)
            tg.cancel_scope.cancel()

        tg.start_soon(watchdog)
        held = self.handler.held_tasks()
        try:
            await call.write(pb.AgentMessage(hello=self._hello(held)))
            first = await call.read()
            welcomed.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._token = None  # register again next time
            if not self._refused(exc):
                self.log.warning("connect refused: %s: %s", exc.code().name,
                                 exc.details() or "")
            call.cancel()
            tg.cancel_scope.cancel()
            return False
        if (
            first is grpc.aio.EOF
            or isinstance(first, WireChunk)
            or first.WhichOneof("kind") != "welcome"
        ):
            self.log.warning("hub did not welcome us; closing")
            call.cancel()
            tg.cancel_scope.cancel()
            return False
        welcome = first.welcome
        stream = Stream(
            call,
            tg,
            session_id=welcome.session_id,
            heartbeat_interval=float(welcome.heartbeat_interval_seconds)
            if welcome.heartbeat_interval_seconds > 0
            else self.settings.heartbeat_interval,
            log=self.log,
        )
        if welcome.HasField("token") and welcome.token.token:
            self.set_token(welcome.token)
        self.set_reconnect_window(welcome.reconnect_window_seconds)
        self.stream = stream
        self.log.info("connected to %s (session %s)", self.settings.server_url, stream.session_id)
        if welcome.approval_pending:
            self.log.warning("agent id %s waits for the hub's admin to approve it: no work "
                             "until then (approve it in the web UI or with POST "
                             "/api/manage/agents/%s/approve)", self.settings.agent_id,
                             self.settings.agent_id)
        self.handler.welcomed(stream, held)
        stream.serve(self.handler.dispatch, self.handler.heartbeat, lambda: self.stopping)
        return True

    async def _ensure_token(self, stub: pb_grpc.AgentLinkStub) -> str:
        if self._token and self._token_expires - TOKEN_MARGIN > self.wall_clock():
            return self._token
        s = self.settings
        reply = await stub.Register(
            pb.RegisterRequest(
                psk=s.token,
                agent_id=s.agent_id,
                agent_name=s.agent_name,
                ip_address=s.reported_ip,
                capabilities=self.handler.capabilities(),
                tags=s.tags,
                instance_id=self.instance_id,
            ),
            timeout=REGISTER_TIMEOUT,
        )
        self._token = reply.token
        self._token_expires = float(reply.expires_at or 0)
        return reply.token

    def _hello(self, held: list[pb.HeldTask]) -> pb.Hello:
        s = self.settings
        reach = self.handler.reach()
        return pb.Hello(
            agent_id=s.agent_id,
            agent_name=s.agent_name,
            ip_address=s.reported_ip,
            capabilities=self.handler.capabilities(),
            tags=s.tags,
            held_tasks=held,
            version=VERSION,
            egress_ip=reach.egress_ip,
            line=reach.line,
            line_bps=reach.line_bps,
            instance_id=self.instance_id,
        )

    def _refused(self, exc: grpc.aio.AioRpcError) -> bool:
        """A refusal that retrying soon cannot fix: one ERROR, then a long wait. True if so."""
        advice = REFUSED.get(exc.code())
        if advice is None:
            return False
        delay = self.refused_backoff.next_delay()
        self._reconnect_after = delay
        when = f"{delay / 60:.0f} min" if delay >= 90 else f"{delay:.0f} s"
        if not self._refusal_logged:
            self._refusal_logged = True
            self.log.error("the hub refused agent id %s: %s; %s. Trying again in %s",
                           self.settings.agent_id, exc.details() or exc.code().name, advice,
                           when)
        else:
            self.log.info("still refused (%s); trying again in %s", exc.code().name, when)
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details() or ''}"
    return f"{type(exc).__name__}: {exc}"
