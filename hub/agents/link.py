"""The gRPC side of the agent link: ``AgentLink.Register`` and ``AgentLink.Connect``.

``Connect`` authenticates the JWT in the ``authorization`` metadata before it
reads a single message; a bad token ends the call with UNAUTHENTICATED and
nothing else happens. Each accepted stream becomes an :class:`AgentSession`:
a reader (``context.read()``, in the handler's task) feeding messages to a
:class:`StreamHandler`, and a writer task (``context.write()``), started when
there is something to send, draining control messages first and then file
frames from the session's :class:`hub.agents.transfer.Transfer`. Stopping a
stream cancels those tasks (anyio scopes placed directly around ``grpc.aio``
awaits do not stop them). grpc.aio runs on asyncio only, so this module (and
``hub/app.py`` that serves it) is tied to asyncio; the parts it calls are
written against anyio and tested on both backends where they can be.

This is the one place that speaks gRPC status codes: the hub's parts raise
domain errors (:mod:`hub.core.errors`) and the link maps them (``STATUS`` and
``CODES``). A malformed or out-of-order message
(:class:`hub.core.errors.ProtocolViolation`) ends only this stream, with
INVALID_ARGUMENT or FAILED_PRECONDITION and a readable detail; a Hello the hub
refuses (another process holds the agent id: ALREADY_EXISTS) ends it the same way.
A message whose write found the hub's disk full (``StorageFull``) ends nothing:
the stream goes on and the write is made, or asked for again, once space returns.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import anyio
import grpc
from google.protobuf.message import DecodeError

from hub.agents.transfer import Transfer
from hub.core.errors import (
    AuthError,
    BadRequest,
    DuplicateAgent,
    Forbidden,
    ProtocolViolation,
    StorageFull,
    Violation,
)
from protocol import mesh_pb2 as pb
from protocol import mesh_pb2_grpc

log = logging.getLogger("bupmesh.hub.link")

HELLO_TIMEOUT = 30.0
HANDLERS_END_SECONDS = 5.0  # the most a stopping hub waits for its stream handlers

# A read or write the stream can no longer serve. grpc.aio.BaseError covers a misuse
# of the call and the error a read or write raises once the server has stopped: it is
# raised at once, before any await where the stop's cancellation could land, when a
# handler comes back from a worker thread to a hub that stopped meanwhile.
STREAM_BROKEN = (grpc.RpcError, grpc.aio.BaseError)

# How each way of breaking the conversation ends the stream.
STATUS = {
    Violation.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Violation.OUT_OF_ORDER: grpc.StatusCode.FAILED_PRECONDITION,
    Violation.WRONG_AGENT: grpc.StatusCode.PERMISSION_DENIED,
    Violation.SILENT: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# How each refusal of a registration, a token or a Hello ends the call; first match wins.
CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (DuplicateAgent, grpc.StatusCode.ALREADY_EXISTS),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
)
REFUSALS = tuple(kind for kind, _ in CODES)


def code_of(error: Exception) -> grpc.StatusCode:
    """The status a stream or call ends with for a domain error."""
    if isinstance(error, ProtocolViolation):
        return STATUS[error.kind]
    for kind, code in CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class StreamHandler(Protocol):
    """What the hub does with one stream's events (hub/agents/sessions.py)."""

    async def hello(self, session: AgentSession, hello: pb.Hello) -> None: ...

    async def message(self, session: AgentSession, kind: str, msg: Any) -> None: ...

    def closed(self, session: AgentSession) -> None: ...

    def transfer_failed(self, session: AgentSession, task_id: str, attempt: int,
                        message: str) -> None: ...


class Grant(Protocol):
    """What a valid JWT lets a stream be (``hub.agents.auth.StreamGrant``)."""

    agent_id: str
    expires_at: int
    credential: str


class Authenticator(Protocol):
    """Registration and token checks (hub/agents/auth.py)."""

    async def register_agent(self, credential: str, agent_id: str, agent_name: str,
                             ip_address: str, capabilities: dict[str, Any],
                             tags: dict[str, str], *, instance_id: str = "",
                             peer: str = "") -> tuple[str, int]: ...

    def authenticate_stream(self, token: str) -> Grant: ...


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return ""


def peer_ip(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:127.0.0.2:5555`` / ``ipv6:[::1]:5555`` -> the address part."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return ""


class AgentSession:
    """One live stream of one agent.

    An idle stream costs the hub little, because a large fleet is mostly idle
    streams: the reader runs in the ``Connect`` handler's own task, the Hello
    deadline is a timer, and a writer task exists only while there is something to
    write (it ends when the queue and the file frames run dry; the next ``send`` or
    a frame becoming ready starts another). The stream is ended by cancelling the
    handler's task (and the writer's), the way a task group would cancel children:
    ``grpc.aio`` awaits ignore anyio cancel scopes, but not a cancelled task.
    """

    def __init__(self, handler: StreamHandler, agent_id: str, token_exp: int, peer: str,
                 credential: str = "psk") -> None:
        self.handler = handler
        self.agent_id = agent_id
        self.session_id = uuid.uuid4().hex
        self.token_exp = token_exp
        self.credential = credential  # what the agent registered with: "psk" | "token:<id>"
        self.peer_ip = peer
        self.ip_address = peer  # replaced by Hello.ip_address when the agent reports one
        self.hello: pb.Hello | None = None
        self.closed = False
        self.close_reason = ""
        self._control: collections.deque[pb.HubMessage] | None = None  # made by send()
        self._context: grpc.aio.ServicerContext | None = None
        self._main: asyncio.Task[Any] | None = None  # the handler's task: runs the reader
        self._writer: asyncio.Task[None] | None = None
        self._children: set[asyncio.Task[Any]] | None = None  # file reads, hashing
        self._error: Exception | None = None  # a violation or refusal: the call's status
        self.transfer = Transfer(self._spawn, self._transfer_error, notify=self._kick)

    @property
    def crc32_integrity(self) -> bool:
        """The agent checks streams with CRC32 (its Hello said so): Offers ask for it."""
        return self.hello is not None and self.hello.capabilities.crc32_integrity

    # -- used by the hub ------------------------------------------------------------------

    def send(self, msg: pb.HubMessage) -> None:
        """Queue a control message; it goes out before any further file frame."""
        if self.closed:
            return
        if self._control is None:
            self._control = collections.deque()
        self._control.append(msg)
        self._kick()

    def stop_stream(self, task_id: str) -> None:
        """Stop sending ``task_id``'s bytes (its attempt ended); buffered ones are dropped."""
        self.transfer.stop(task_id)

    def close(self, reason: str, error: Exception | None = None) -> None:
        """End the stream (replaced, silent, drained, or a protocol error)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if error is not None and self._error is None:
            self._error = error
        self.transfer.stop_all()
        self._cancel_children()
        main = self._main
        if main is not None and main is not _current_task():
            main.cancel()  # the reader's pending read ends; run() finishes the call

    # -- the stream -----------------------------------------------------------------------

    async def run(self, context: grpc.aio.ServicerContext) -> Exception | None:
        self._context = context
        self._main = main = asyncio.current_task()
        hello_timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._no_hello)
        try:
            if not self.closed:
                await self._reader(context)
        except asyncio.CancelledError:
            if not self.closed:
                raise  # cancelled from outside (the call ended, the server stops)
            if main is not None:
                main.uncancel()  # our own close(): finish the call with its status
        finally:
            hello_timer.cancel()
            self.closed = True
            self.transfer.stop_all()
            self._cancel_children()
            self.handler.closed(self)
        return self._error

    def _no_hello(self) -> None:
        if self.hello is None:
            self.close("no Hello", ProtocolViolation(Violation.SILENT,
                                                     f"no Hello within {HELLO_TIMEOUT:.0f}s"))

    async def _reader(self, context: grpc.aio.ServicerContext) -> None:
        try:
            while not self.closed:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    self.close("agent closed the stream")
                    return
                if msg is None:  # see _parse: bytes that are not an AgentMessage
                    raise ProtocolViolation(Violation.MALFORMED,
                                            "not a valid AgentMessage (protobuf decode failed)")
                try:
                    if msg.WhichOneof("kind") in _APPLIED_WHOLE:
                        await _applied_even_if_cancelled(self._dispatch(msg))
                    else:
                        await self._dispatch(msg)
                except StorageFull as exc:
                    # The hub's disk is full: what this message asked to store waits
                    # (or is asked again by the agent); the stream and its uploads go on.
                    log.warning("agent %s: %s not stored: %s", self.agent_id,
                                msg.WhichOneof("kind"), exc)
        except ProtocolViolation as exc:
            log.warning("agent %s: closing stream: %s", self.agent_id, exc.details)
            self.close("protocol error", exc)
        except REFUSALS as exc:  # the Hello was refused (logged where it was decided)
            self.close(f"refused: {exc}", exc)
        except STREAM_BROKEN as exc:
            self.close(f"stream broken: {type(exc).__name__}")

    async def _dispatch(self, msg: pb.AgentMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind is None:
            raise ProtocolViolation(Violation.MALFORMED, "empty AgentMessage (no kind set)")
        if self.hello is None:
            if kind != "hello":
                raise ProtocolViolation(Violation.OUT_OF_ORDER,
                                        f"first message must be Hello, got {kind}")
            hello = msg.hello
            if hello.agent_id != self.agent_id:
                raise ProtocolViolation(Violation.WRONG_AGENT,
                                        "Hello.agent_id differs from the token's agent")
            self.hello = hello
            if hello.ip_address:
                self.ip_address = hello.ip_address
            await self.handler.hello(self, hello)
            return
        if kind == "hello":
            raise ProtocolViolation(Violation.OUT_OF_ORDER, "second Hello on one stream")
        await self.handler.message(self, kind, getattr(msg, kind))

    def _kick(self) -> None:
        """Something may be ready to write: start a writer unless one is running."""
        if self.closed or self._writer is not None or self._context is None:
            return
        self._writer = asyncio.get_running_loop().create_task(self._write_ready())

    async def _write_ready(self) -> None:
        """Write control messages first, then file frames, until there is nothing to send."""
        context = self._context
        assert context is not None
        transfer = self.transfer
        try:
            while not self.closed:
                control = self._control
                if control:
                    msg = control.popleft()
                    if not control:
                        self._control = None  # an idle stream keeps no queue
                else:
                    msg = transfer.next_message()
                if msg is None:
                    return
                await context.write(msg)
        except STREAM_BROKEN as exc:
            self.close(f"stream broken: {type(exc).__name__}")
        except Exception:  # a bug here must end this stream only, loudly
            log.exception("agent %s: writer failed", self.agent_id)
            self.close("internal error")
        finally:
            self._writer = None

    def _spawn(self, fn: Any) -> None:
        """Run ``fn()`` (a file read, a hash) for as long as the stream lives."""
        if self.closed:
            return
        if self._children is None:
            self._children = set()
        task = asyncio.get_running_loop().create_task(fn())
        self._children.add(task)
        task.add_done_callback(self._child_done)

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        if self._children is not None:
            self._children.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent %s: stream task failed", self.agent_id,
                      exc_info=task.exception())
            self.close("internal error")

    def _cancel_children(self) -> None:
        writer = self._writer
        if writer is not None and writer is not _current_task():
            writer.cancel()
        for task in list(self._children or ()):
            task.cancel()

    def _transfer_error(self, task_id: str, attempt: int, message: str) -> None:
        self.handler.transfer_failed(self, task_id, attempt, message)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a test closing a session from outside)
        return None


def _parse(message_type: Any) -> Any:
    """A request deserializer that yields None for bytes that are not ``message_type``
    (bad wire format, invalid UTF-8 in a string): the handler then refuses them with
    INVALID_ARGUMENT. A raising deserializer would end the call with UNKNOWN instead."""

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return None

    return parse


def _serialize_hub_message(msg: pb.HubMessage | bytes) -> bytes:
    """File frames arrive already encoded (see ``protocol.chunks.encode_chunk``)."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def add_servicer(servicer: AgentLinkServicer, server: grpc.aio.Server) -> None:
    """Like ``mesh_pb2_grpc.add_AgentLinkServicer_to_server``, with a pass-through
    serializer for pre-encoded frames (same service, methods and message types)."""
    handlers = {
        "Register": grpc.unary_unary_rpc_method_handler(
            servicer.Register,
            request_deserializer=_parse(pb.RegisterRequest),
            response_serializer=pb.RegisterResponse.SerializeToString,
        ),
        "Connect": grpc.stream_stream_rpc_method_handler(
            servicer.Connect,
            request_deserializer=_parse(pb.AgentMessage),
            response_serializer=_serialize_hub_message,
        ),
    }
    service = pb.DESCRIPTOR.services_by_name["AgentLink"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


# An attempt's or a submission's end: once the hub starts applying one it finishes,
# even when the call is cancelled under it (the server stopping, the stream replaced),
# so what the agent reported is written before the store closes, never half of it.
_APPLIED_WHOLE = frozenset({"result", "submit_result"})


async def _applied_even_if_cancelled(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task], timeout=HANDLERS_END_SECONDS)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("a message applied as its stream ended failed: %r", task.exception())
        raise


class AgentLinkServicer(mesh_pb2_grpc.AgentLinkServicer):
    def __init__(self, auth: Authenticator, streams: StreamHandler) -> None:
        self.auth = auth
        self.streams = streams
        self._running = 0  # Connect handlers not yet returned
        self._idle = anyio.Event()
        self._idle.set()

    async def handlers_done(self, limit: float = HANDLERS_END_SECONDS) -> bool:
        """Once the gRPC server has stopped: wait for every stream's handler to return.

        gRPC's stop returns before the handlers it cancelled have run their last lines,
        and one handling a Result may still be writing it: the store must stay open
        until then. Bounded, as a stuck handler must not hold up the hub's exit; False
        if one was still running at the limit.
        """
        with anyio.move_on_after(limit):
            await self._idle.wait()
            return True
        return False

    async def Register(  # noqa: N802 - gRPC method name
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "not a valid RegisterRequest (protobuf decode failed)")
        caps = request.capabilities
        peer = peer_ip(context)
        try:
            token, exp = await self.auth.register_agent(
                request.psk,
                request.agent_id,
                request.agent_name,
                request.ip_address or peer,
                {
                    "max_concurrent_uploads": caps.max_concurrent_uploads,
                    "bandwidth_mbps": caps.bandwidth_mbps,
                    "storage_type": caps.storage_type,
                    "buffer_bytes": caps.buffer_bytes,
                },
                dict(request.tags),
                instance_id=request.instance_id,
                peer=peer,
            )
        except REFUSALS as exc:
            await context.abort(code_of(exc), str(exc))
        return pb.RegisterResponse(agent_id=request.agent_id, token=token, expires_at=exp)

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        if self._running == 0:
            self._idle = anyio.Event()
        self._running += 1
        try:
            await self._connect(context)
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _connect(self, context: grpc.aio.ServicerContext) -> None:
        try:
            grant = self.auth.authenticate_stream(bearer_token(context))
        except REFUSALS as exc:
            await context.abort(code_of(exc), str(exc))
        session = AgentSession(self.streams, grant.agent_id, grant.expires_at, peer_ip(context),
                               grant.credential)
        error = await session.run(context)
        if error is not None:
            context.set_code(code_of(error))
            context.set_details(str(error))
