"""Protocol fuzzing: malformed and out-of-order input never takes the hub down.

gRPC: hypothesis generates whole ``Connect`` conversations (random oneof kinds, wild field
values, unknown task ids and attempts, messages for the legitimate agent's task, messages
before Hello, a second Hello, bytes that are no protobuf at all, oversized frames, bad or
missing tokens) and ``Register`` requests, sent as raw bytes over a real in-process hub.
Each conversation is checked against an oracle of the link rules (first violation ->
that status; none -> the stream ends OK when the agent half-closes), and between
examples a legitimate agent streams part of an upload over its own stream, which
finally completes with the right MD5.

HTTP: hypothesis-generated bodies that are never valid (non-JSON, invalid UTF-8, JSON
that is not an object, known fields of the wrong type, unknown fields, huge strings,
nested junk) against every POST route of the real ``build_app`` over the real
``HubService``: always a 4xx with the error envelope, never a 500, never a secret.

The client runs each conversation in lock-step (see ``_run_conversation``): writing on
after the hub has ended a call makes grpc-python aio itself misreport the status
(client side: INTERNAL "Internal error from Core", grpc/grpc#43486; server side, when a
call ends while frames are still arriving: ExecuteBatchError TOO_MANY_OPERATIONS and a
GOAWAY to that connection). Those are gRPC's races, not the hub's rules, so the fuzzer
does not provoke them; each fuzz connection is its own, as a remote agent's would be.

Bounded and reproducible: ``derandomize=True``, no example database, small
``max_examples``; the hub runs in one anyio blocking portal per test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.api.routes import build_app
from hub.app import build_service
from hub.config import HubConfig
from protocol import mesh_pb2 as pb
from protocol.grpc_options import MAX_MESSAGE
from tests.support.hub import PSK, FakeAgent, Hub, make_hub, wait_for

MiB = 1 << 20
CONNECT = "/bupmesh.mesh.v1.AgentLink/Connect"
REGISTER = "/bupmesh.mesh.v1.AgentLink/Register"
LEGIT = "<the legitimate agent's task>"  # placeholder: replaced by its task id at send time
FUZZ_AGENT = "fuzzer"
CLEAR = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,  # Hello naming another agent than the token
}

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)

# ------------------------------------------------------------------------------ strategies

# Protobuf string fields take any str without surrogates (they cannot be UTF-8 encoded).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
huge_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=2000, max_size=4000)
strings = st.one_of(text, huge_text, st.sampled_from(["", "online", "127.0.0.1", "\x00"]))
int32 = st.one_of(st.sampled_from([0, 1, 2, -1]), st.integers(-(2**31), 2**31 - 1))
int64 = st.one_of(st.sampled_from([0, 1, -1, MiB, 2**62]), st.integers(-(2**63), 2**63 - 1))
doubles = st.floats(allow_nan=True, allow_infinity=True)
task_ids = st.one_of(st.sampled_from([LEGIT, LEGIT, "", "task-0000000000000000"]), strings)
blobs = st.one_of(st.binary(max_size=64), st.just(b'{"auth": "x"}'))


def _task_fields() -> dict[str, Any]:
    return {"task_id": task_ids, "attempt": int32}


capabilities = st.builds(
    pb.Capabilities, max_concurrent_uploads=int32, bandwidth_mbps=int32,
    storage_type=st.one_of(st.sampled_from(["network", "local", "hybrid"]), strings),
    buffer_bytes=int64, finish_handshake=st.booleans(),
    local_paths=st.lists(strings, max_size=3),
)


def hellos(agent_ids: st.SearchStrategy[str]) -> st.SearchStrategy[pb.Hello]:
    return st.builds(
        pb.Hello, agent_id=agent_ids, agent_name=strings, ip_address=strings,
        capabilities=capabilities, tags=st.dictionaries(text, strings, max_size=3),
        held_tasks=st.lists(st.builds(pb.HeldTask, committed_bytes=int64, **_task_fields()),
                            max_size=3),
        version=strings,
    )


progress = st.builds(pb.Progress, uploaded_bytes=int64, total_bytes=int64, speed_bps=doubles,
                     eta_seconds=doubles, **_task_fields())
kinds: dict[str, st.SearchStrategy[Any]] = {
    "hello": hellos(st.one_of(st.just(FUZZ_AGENT), st.just(FUZZ_AGENT), strings)),
    "heartbeat": st.builds(pb.Heartbeat, status=strings, current_tasks=int32, free_slots=int32,
                           memory_mb=int64, tasks_completed=int64),
    "accept": st.builds(pb.Accept, resume_offset=int64, local_read=st.booleans(),
                        **_task_fields()),
    "reject": st.builds(pb.Reject, reason=strings, **_task_fields()),
    "credit": st.builds(pb.Credit, bytes=int64, **_task_fields()),
    "committed": st.builds(pb.Committed, offset=int64, session=blobs, **_task_fields()),
    "progress": progress,
    "result": st.builds(pb.Result, success=st.booleans(), filename=strings, biz_id=int64,
                        error_kind=strings, error_message=strings, md5=strings,
                        **_task_fields()),
    "status_reply": st.builds(pb.StatusReply, query_id=strings, status=strings,
                              tasks=st.lists(progress, max_size=2), memory_mb=int64,
                              buffered_bytes=int64),
    "finishing": st.builds(pb.Finishing, offset=int64, session=blobs, **_task_fields()),
}
agent_messages = st.one_of(
    st.just(pb.AgentMessage()),  # no kind at all
    *[s.map(lambda m, k=k: pb.AgentMessage(**{k: m})) for k, s in kinds.items()],
)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2); payload shorter than 128 bytes."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


# Frames on the wire: (kind, payload). "msg" is an AgentMessage, "raw" arbitrary bytes,
# "huge" an oversized frame of MAX_MESSAGE + n bytes.
frames = st.one_of(
    st.tuples(st.just("msg"), agent_messages),
    st.tuples(st.just("msg"), agent_messages),
    st.tuples(st.just("raw"), st.binary(max_size=128)),
    # Well-formed framing, invalid UTF-8 in a string field: Accept.task_id = b"\xc3\x28".
    st.tuples(st.just("raw"), st.sampled_from([
        _field(3, _field(1, b"\xc3\x28")),
        _field(1, _field(1, b"\xff" + FUZZ_AGENT.encode())),
        b"\x0a\x7f",  # a length running past the end
    ])),
    st.tuples(st.just("huge"), st.integers(1, 4096)),
)


@dataclass
class Conversation:
    token: str  # "valid" | "garbage" | "none"
    hello_first: bool
    frames: list[tuple[str, Any]] = field(default_factory=list)


conversations = st.builds(
    Conversation,
    token=st.sampled_from(["valid", "valid", "valid", "valid", "garbage", "none"]),
    hello_first=st.booleans(),
    frames=st.lists(frames, max_size=8),
)


def verdict(frame: tuple[str, Any], seen_hello: bool) -> grpc.StatusCode | None:
    """The link's rules (hub/agents/link.py, HubService.handle_message) as an oracle: the status
    ``frame`` ends the stream with, or None if the stream carries on.

    The fuzzer's agent never holds a lease, so every task message is fenced (ignored)
    unless it breaks a rule checked before fencing: empty task_id, non-positive credit.
    """
    kind, payload = frame
    if kind == "huge":
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if kind == "raw":
        try:
            payload = pb.AgentMessage.FromString(payload)
        except DecodeError:
            return grpc.StatusCode.INVALID_ARGUMENT
    which = payload.WhichOneof("kind")
    if which is None:
        return grpc.StatusCode.INVALID_ARGUMENT
    if not seen_hello:
        if which != "hello":
            return grpc.StatusCode.FAILED_PRECONDITION
        if payload.hello.agent_id != FUZZ_AGENT:
            return grpc.StatusCode.PERMISSION_DENIED
        return None
    if which == "hello":
        return grpc.StatusCode.FAILED_PRECONDITION
    if which in ("heartbeat", "status_reply"):
        return None
    body = getattr(payload, which)
    if not body.task_id or (which == "credit" and body.bytes <= 0):
        return grpc.StatusCode.INVALID_ARGUMENT
    return None


def _with_task_id(msg: pb.AgentMessage, task_id: str) -> pb.AgentMessage:
    msg = pb.AgentMessage.FromString(msg.SerializeToString())
    kind = msg.WhichOneof("kind")
    if kind is not None:
        body = getattr(msg, kind)
        if hasattr(body, "task_id") and body.task_id == LEGIT:
            body.task_id = task_id
        for held in getattr(body, "held_tasks", ()):
            if held.task_id == LEGIT:
                held.task_id = task_id
    return msg


# ------------------------------------------------------------------------------ the legit agent


@dataclass
class Legit:
    """The well-behaved agent: one upload, advanced a little after every fuzz example."""

    agent: FakeAgent
    offer: pb.Offer
    md5: str
    granted: int = 0
    received: int = 0
    hasher: Any = field(default_factory=hashlib.md5)

    async def step(self, grant: int) -> str | None:
        """Grant ``grant`` more bytes and take every frame it buys; -> EndOfData md5 if done."""
        grant = min(grant, self.offer.file_size - self.granted)
        if grant:
            self.granted += grant
            await self.agent.send(credit=pb.Credit(task_id=self.offer.task_id,
                                                   attempt=self.offer.attempt, bytes=grant))
        while self.received < self.granted:
            chunk = await self.agent.recv("chunk", wait=10)
            assert (chunk.task_id, chunk.attempt) == (self.offer.task_id, self.offer.attempt)
            assert chunk.offset == self.received and len(chunk.data) <= MiB
            self.received += len(chunk.data)
            assert self.received <= self.granted, "hub sent beyond credit"
            self.hasher.update(chunk.data)
        if self.received == self.offer.file_size:
            end = await self.agent.recv("end_of_data", wait=10)
            return end.md5
        return None


async def _start_legit(hub: Hub) -> Legit:
    agent = await hub.agent("good", ip="127.0.0.2")
    path, md5 = hub.file("legit.flv", 3 * MiB + 4321)
    await hub.service.create_part(path, account=None, title="legit")
    offer = await agent.recv("offer")
    await agent.send(accept=pb.Accept(task_id=offer.task_id, attempt=offer.attempt))
    return Legit(agent, offer, md5)


async def _finish_legit(hub: Hub, legit: Legit) -> None:
    streamed = await legit.step(legit.offer.file_size)
    assert streamed == legit.md5 == legit.hasher.hexdigest()
    assert legit.received == legit.offer.file_size
    await legit.agent.send(result=pb.Result(
        task_id=legit.offer.task_id, attempt=legit.offer.attempt, success=True,
        filename="n-legit", biz_id=42, md5=streamed))

    async def completed() -> bool:
        return (await hub.service.get_task(legit.offer.task_id))["status"] == "completed"

    await wait_for(completed, wait=10)
    task = await hub.service.get_task(legit.offer.task_id)
    assert task["agent_id"] == "good" and task["result"] == {"filename": "n-legit", "biz_id": 42}
    assert task["retry_count"] == 0 and not legit.agent.ended.is_set()


# ------------------------------------------------------------------------------ raw calls


async def _run_conversation(hub: Hub, conv: Conversation, token: str,
                            task_id: str) -> tuple[grpc.StatusCode, str, grpc.StatusCode]:
    """Play ``conv`` on its own connection -> (status got, details, status expected).

    In lock-step, so what is checked is the hub, not gRPC's client races: after a frame
    the oracle calls a violation, nothing more is written and the status is read; after
    any other frame (once Hello is in) a barrier Accept for an unknown task must come
    back as Cancel before the next frame goes out (so a rule the hub fails to enforce,
    or a stream it ends wrongly, shows up right there). Without a valid token nothing
    is written: the hub refuses the call before it reads a message.
    """
    metadata: tuple[tuple[str, str], ...] = ()
    if conv.token == "valid":
        metadata = (("authorization", f"Bearer {token}"),)
    elif conv.token == "garbage":
        metadata = (("authorization", "Bearer not.a.jwt"),)
    frames = list(conv.frames)
    if conv.hello_first:
        frames.insert(0, ("msg", pb.AgentMessage(hello=pb.Hello(agent_id=FUZZ_AGENT))))
    # Its own connection, as an agent (or attacker) elsewhere would have; identity
    # serializers: the fuzzer puts arbitrary bytes on the wire.
    channel = grpc.aio.insecure_channel(hub.target)
    call = channel.stream_stream(CONNECT)(metadata=metadata)
    expected = grpc.StatusCode.OK

    async def talk() -> None:
        nonlocal expected
        if conv.token != "valid":
            expected = grpc.StatusCode.UNAUTHENTICATED
            await drain()
            return
        seen_hello = False
        for n, (kind, payload) in enumerate(frames):
            if kind == "msg":
                data = _with_task_id(payload, task_id).SerializeToString()
            elif kind == "raw":
                data = payload
            else:
                data = b"\x00" * (MAX_MESSAGE + payload)
            await call.write(data)
            code = verdict((kind, payload), seen_hello)
            if code is not None:
                expected = code
                await drain()
                return
            seen_hello = True
            barrier = f"barrier-{n}"
            await call.write(pb.AgentMessage(accept=pb.Accept(
                task_id=barrier, attempt=1)).SerializeToString())
            while True:
                raw = await call.read()
                assert raw is not grpc.aio.EOF, f"stream ended after frame {n}"
                got = pb.HubMessage.FromString(raw)
                if got.WhichOneof("kind") == "cancel" and got.cancel.task_id == barrier:
                    break
        await call.done_writing()
        await drain()

    async def drain() -> None:
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass

    # asyncio.wait_for, not an anyio scope, around grpc.aio awaits: anyio's cancel scopes
    # do not take effect on them.
    try:
        try:
            await asyncio.wait_for(talk(), 15)
        except grpc.aio.AioRpcError:
            pass  # the status below says why (and must be what the oracle expects)
        code = await asyncio.wait_for(call.code(), 15)
        details = await call.details() or ""
    finally:
        call.cancel()
        await channel.close()
    return code, details, expected


async def _check_after(hub: Hub, legit: Legit) -> None:
    """Between examples: the fuzzer's session is gone, the legit one carries on."""
    def fuzz_detached() -> bool:
        info = hub.service.registry.get(FUZZ_AGENT)
        return info is None or info.session is None

    await wait_for(fuzz_detached, wait=5)
    assert not legit.agent.ended.is_set(), (legit.agent.status, legit.agent.details)
    assert await legit.step(64 * 1024) is None
    info = hub.service.registry.get("good")
    assert info is not None and info.session is not None
    assert legit.offer.task_id in hub.service.tasks


@contextmanager
def _hub_in_portal(tmp_path: Path) -> Iterator[tuple[BlockingPortal, Hub]]:
    with start_blocking_portal(backend="asyncio") as portal:
        with portal.wrap_async_context_manager(make_hub(tmp_path)) as hub:
            yield portal, hub


def _timed(portal: BlockingPortal, fn: Any, *args: Any, wait: float = 40) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(wait):
            return await fn(*args)

    return portal.call(bounded)


# ------------------------------------------------------------------------------ gRPC tests


def test_connect_fuzz_never_takes_the_hub_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with _hub_in_portal(tmp_path) as (portal, hub):
        legit = _timed(portal, _start_legit, hub)
        token = _timed(portal, hub.register, FUZZ_AGENT)
        seen: set[grpc.StatusCode] = set()

        @FUZZ
        @given(conv=conversations)
        def check(conv: Conversation) -> None:
            code, details, want = _timed(portal, _run_conversation, hub, conv, token,
                                         legit.offer.task_id)
            seen.add(code)
            assert code == want, (code, details, want)
            if code is not grpc.StatusCode.OK:
                assert code in CLEAR and details, (code, details)
                assert "Exception" not in details and "Traceback" not in details, details
            _timed(portal, _check_after, hub, legit)

        check()
        # The oracle's branches were all reached (a fuzzer that never trips a rule
        # proves nothing).
        assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED} <= seen, seen
        _timed(portal, _finish_legit, hub, legit)
    # The hub side never failed: no servicer exception, no core batch error.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_undecodable_frames_are_invalid_argument(tmp_path: Path) -> None:
    """Regression: bytes that are not a valid message (bad wire format, invalid UTF-8 in a
    string field) ended the call UNKNOWN with an ExceptionGroup from the servicer."""
    with _hub_in_portal(tmp_path) as (portal, hub):
        legit = _timed(portal, _start_legit, hub)
        token = _timed(portal, hub.register, FUZZ_AGENT)
        for data in (b"\xff\xff\xff", _field(3, _field(1, b"\xc3\x28"))):
            conv = Conversation("valid", True, [("raw", data)])
            code, details, want = _timed(portal, _run_conversation, hub, conv, token,
                                         legit.offer.task_id)
            assert (code, want) == (grpc.StatusCode.INVALID_ARGUMENT,) * 2, (code, details)
            assert "AgentMessage" in details
            _timed(portal, _check_after, hub, legit)
            assert _timed(portal, _register_raw, hub, data) == grpc.StatusCode.INVALID_ARGUMENT
        _timed(portal, _finish_legit, hub, legit)


register_requests = st.one_of(
    st.tuples(st.just("msg"), st.builds(
        pb.RegisterRequest, psk=st.one_of(st.just(PSK), strings),
        agent_id=st.one_of(st.sampled_from(["fz-1", "fz.2@x", ""]), strings)
        .filter(lambda s: s != "good"),
        agent_name=strings, ip_address=strings, capabilities=capabilities,
        tags=st.dictionaries(text, strings, max_size=3),
    )),
    st.tuples(st.just("raw"), st.binary(max_size=128)),
    st.tuples(st.just("raw"), st.just(_field(1, b"\xc3\x28"))),
)


async def _register_raw(hub: Hub, data: bytes) -> grpc.StatusCode:
    call = hub.channel.unary_unary(REGISTER)(data)
    try:
        await asyncio.wait_for(call, 15)
    except grpc.aio.AioRpcError:
        pass
    return await call.code()


def test_register_fuzz(tmp_path: Path) -> None:
    with _hub_in_portal(tmp_path) as (portal, hub):
        legit = _timed(portal, _start_legit, hub)

        @FUZZ
        @given(req=register_requests)
        def check(req: tuple[str, Any]) -> None:
            kind, payload = req
            data = payload.SerializeToString() if kind == "msg" else payload
            code = _timed(portal, _register_raw, hub, data)
            try:
                parsed = pb.RegisterRequest.FromString(data)
            except DecodeError:
                assert code == grpc.StatusCode.INVALID_ARGUMENT
            else:
                if parsed.psk != PSK:
                    assert code == grpc.StatusCode.UNAUTHENTICATED
                else:
                    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
            _timed(portal, _check_after, hub, legit)

        check()
        _timed(portal, _finish_legit, hub, legit)


# ------------------------------------------------------------------------------ HTTP


HTTP_PSK = "psk-SECRET-for-fuzz"
ADMIN = "admin-SECRET-for-fuzz"

# Every POST route: (path, credential, the body's known fields and what type they take).
POST_ROUTES: dict[str, tuple[str, dict[str, str]]] = {
    "/api/agent/register": ("psk", {
        "agent_id": "str", "agent_name": "str", "ip_address": "str",
        "max_concurrent_uploads": "int", "bandwidth_mbps": "float", "tags": "dict",
        "grpc_address": "str", "capabilities": "dict"}),
    "/api/agent/heartbeat": ("jwt", {
        "agent_id": "str", "status": "str", "current_tasks": "int", "available_slots": "int",
        "memory_usage_mb": "float", "tasks_completed": "int"}),
    "/api/agent/task-status": ("jwt", {
        "task_id": "str", "status": "str", "attempt": "int", "uploaded_bytes": "int",
        "total_bytes": "int", "upload_speed": "float", "eta_seconds": "float",
        "error_message": "str", "error_kind": "str", "filename": "str", "biz_id": "int"}),
    "/api/manage/assign-task": ("admin", {"part_id": "int", "agent_id": "str",
                                          "force": "bool"}),
    "/api/manage/cancel-task": ("admin", {"task_id": "str"}),
    "/api/manage/retry-task": ("admin", {"task_id": "str"}),
    "/api/manage/accounts": ("admin", {"name": "str", "cookies": "str", "cookies_json": "dict",
                                       "access_key": "str", "mid": "int"}),
    "/api/manage/parts": ("admin", {"file_path": "str", "account": "str", "title": "str",
                                    "auto_upload": "bool"}),
    "/api/manage/agents/fz-other/drain": ("admin", {"reconnect_after_seconds": "int"}),
    "/api/manage/agents/fz-other/disable": ("admin", {}),
    "/api/manage/agents/fz-other/enable": ("admin", {}),
    "/api/manage/agents/fz-other/explode": ("admin", {}),
    "/api/manage/ips/203.0.113.9/enable": ("admin", {}),
}
# Routes that read no body (or only for one action) answer on their own merits: a 200 is
# fine there, a 500 or a leak never is.
BODILESS = {p for p, (_, f) in POST_ROUTES.items() if not f} - {
    "/api/manage/agents/fz-other/explode", "/api/manage/ips/203.0.113.9/enable"}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False), text)
junk = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.one_of(st.integers(), st.booleans(), st.lists(text, max_size=2),
                     st.dictionaries(text, text, max_size=2)),
    "int": st.one_of(text, st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                     st.integers(min_value=2**64)),
    "float": st.one_of(text, st.booleans(), st.dictionaries(text, st.integers(), max_size=2)),
    "bool": st.one_of(st.integers(2, 10), text, st.floats(allow_nan=False)),
    "dict": st.one_of(text, st.integers(), st.lists(junk, max_size=3)),
}


@st.composite
def bad_bodies(draw: st.DrawFn, fields: dict[str, str]) -> bytes:
    """A request body no route accepts."""
    choice = draw(st.sampled_from(["nonjson", "utf8", "notobject", "wrongtype", "unknown",
                                   "unknown", "huge"]))
    if choice == "nonjson":
        raw = draw(st.binary(min_size=1, max_size=200))
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return raw
        return json.dumps([value]).encode()  # valid JSON after all: make it a non-object
    if choice == "utf8":
        return b'{"name": "\xff\xfe' + draw(st.binary(max_size=20)) + b'"}'
    if choice == "notobject":
        return json.dumps(draw(st.one_of(json_scalars, st.lists(junk, max_size=4)))).encode()
    obj: dict[str, Any] = {}
    # Known fields with junk or wrongly typed values, in random order...
    for name in draw(st.lists(st.sampled_from(sorted(fields) or ["x"]), max_size=4,
                              unique=True)):
        if name in fields:
            obj[name] = draw(st.one_of(junk, WRONG[fields[name]]))
    if choice == "wrongtype" and fields:
        name = draw(st.sampled_from(sorted(fields)))
        obj.pop(name, None)
        obj[name] = draw(WRONG[fields[name]])
        return json.dumps(obj).encode()
    # ...then at least one unknown field (last, so earlier type errors get their turn).
    unknown = draw(text.filter(lambda s: s not in fields))
    obj[unknown] = draw(junk)
    if choice == "huge":
        obj["x" * draw(st.integers(1, 8))] = "y" * draw(st.sampled_from([100_000, 300_000, MiB + 10]))
    return json.dumps(obj).encode()


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(sorted(POST_ROUTES)))
    cred, fields = POST_ROUTES[path]
    body = draw(bad_bodies(fields))
    headers = {"content-type": draw(st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded"]))}
    auth = draw(st.sampled_from(["right"] * 8 + ["wrong", "none"]))
    return path, cred if auth == "right" else auth, body, headers


@pytest.fixture
def http_hub(tmp_path: Path) -> Iterator[tuple[BlockingPortal, httpx.AsyncClient, dict]]:
    config = HubConfig(psk=HTTP_PSK, admin_token=ADMIN, data_dir=str(tmp_path / "data"),
                       insecure=True)
    with start_blocking_portal(backend="asyncio") as portal:
        service = portal.call(build_service, config)
        try:
            jwt, _ = portal.call(service.register_agent, HTTP_PSK, "fz-agent", "fz",
                                 "127.0.0.7", {}, {})
            # The target of the admin agent actions (disable would lock fz-agent out).
            portal.call(service.register_agent, HTTP_PSK, "fz-other", "fz", "127.0.0.8", {}, {})
            app = build_app(service, admin_token=ADMIN)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(
                app=app, client=("127.0.0.7", 4000)), base_url="http://hub")
            creds = {
                "psk": f"Bearer {HTTP_PSK}", "jwt": f"Bearer {jwt}", "admin": f"Bearer {ADMIN}",
                "wrong": "Bearer not-a-credential", "secrets": [HTTP_PSK, ADMIN, jwt],
            }
            yield portal, client, creds
            portal.call(client.aclose)
        finally:
            service.accounts.close()
            service.store.close()


def test_http_fuzz_every_post_route(
    http_hub: tuple[BlockingPortal, httpx.AsyncClient, dict],
) -> None:
    portal, client, creds = http_hub
    statuses: dict[str, set[int]] = {}

    async def post(path: str, cred: str, body: bytes,
                   headers: dict[str, str]) -> httpx.Response:
        if cred != "none":
            headers = {**headers, "authorization": creds[cred]}
        return await client.post(path, content=body, headers=headers)

    @settings(FUZZ, max_examples=200)
    @given(req=http_requests())
    def check(req: tuple[str, str, bytes, dict[str, str]]) -> None:
        path, cred, body, headers = req
        response = _timed(portal, post, path, cred, body, headers)
        statuses.setdefault(path, set()).add(response.status_code)
        for secret in creds["secrets"]:
            assert secret.encode() not in response.content, (path, response.status_code)
        envelope = response.json()
        assert set(envelope) == {"code", "message", "data"}, envelope
        if path in BODILESS and cred != "wrong" and cred != "none":
            assert response.status_code < 500, response.text
            return
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        assert envelope["code"] == response.status_code != 0
        assert isinstance(envelope["message"], str) and envelope["message"]
        assert envelope["data"] is None

    check()
    assert set(statuses) == set(POST_ROUTES), sorted(set(POST_ROUTES) - set(statuses))
    # The bodies reached the decoder (400), not only the auth check (401).
    missing = [p for p, codes in statuses.items() if POST_ROUTES[p][1] and 400 not in codes]
    assert not missing, [(p, statuses[p]) for p in missing]
