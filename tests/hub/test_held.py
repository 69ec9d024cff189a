"""Held tasks across a reconnect (issue 3): the pure parts, with fake clocks.

spoke/held.py (which attempts outlive their stream, until when), hub/core/held.py
(which leases wait for their agent, the fencing of a re-attach) and the stream
check restarting at the re-attach point (spoke/source.py).
"""

from __future__ import annotations

import hashlib
import zlib

import pytest

from hub.core.held import HeldLeases, reattach_offset
from hub.core.lifecycle import Status, TaskRecord
from protocol import mesh_pb2 as pb
from protocol.credit import CreditBudget
from spoke.held import HeldTasks
from spoke.source import StreamError, StreamSource
from uploader.errors import UploadError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- agent side: which attempts are held, until when ------------------------------------------


def test_agent_holds_detached_tasks_until_the_grace_period_ends() -> None:
    clock = Clock()
    held = HeldTasks(15, clock)
    held.detach(["a", "b"])
    assert sorted(held.live()) == ["a", "b"] and "a" in held
    clock.now += 10
    held.detach(["a"])  # a second lost dial does not extend the deadline
    assert held.expired() == []
    clock.now += 5
    assert held.live() == []  # a Hello now would list none of them
    assert sorted(held.expired()) == ["a", "b"]
    assert len(held) == 0 and held.expired() == []


def test_agent_reattach_and_forget_end_holding() -> None:
    clock = Clock()
    held = HeldTasks(15, clock)
    held.detach(["a", "b", "c"])
    held.reattach(["a"])
    held.forget("b")  # the attempt ended on its own while detached
    assert held.live() == ["c"]
    clock.now += 15
    assert held.expired() == ["c"]


# -- hub side: leases waiting for their agent --------------------------------------------------


def _task(status: Status = Status.UPLOADING, agent: str = "a1", attempt: int = 3) -> TaskRecord:
    return TaskRecord(task_id="t1", part_id=1, file_path="/x", file_size=100, file_md5="",
                      status=status, attempt=attempt, agent_id=agent)


def test_hub_keeps_only_streaming_leases_and_only_with_a_grace_period() -> None:
    clock = Clock()
    leases = HeldLeases(15, clock)
    assert leases.may_keep(_task(), local_read=False)
    assert not leases.may_keep(_task(), local_read=True)  # needs no stream: ends as before
    assert not leases.may_keep(_task(Status.ASSIGNED), local_read=False)  # offer unanswered
    assert not HeldLeases(0, clock).may_keep(_task(), local_read=False)


def test_hub_leases_expire_after_the_grace_period() -> None:
    clock = Clock()
    leases = HeldLeases(15, clock)
    leases.keep("t1", "a1", "s1")
    leases.keep("t2", "a2", "s2")
    clock.now += 14.9
    assert leases.expired() == []
    clock.now += 0.1
    assert sorted(lease.task_id for lease in leases.expired()) == ["t1", "t2"]
    assert len(leases) == 0


def test_hub_hands_over_an_agents_leases_on_its_hello() -> None:
    clock = Clock()
    leases = HeldLeases(15, clock)
    leases.keep("t1", "a1", "s1")
    leases.keep("t2", "a2", "s2")
    assert [lease.task_id for lease in leases.of_agent("a1")] == ["t1"]
    assert "t1" not in leases and "t2" in leases
    clock.now += 20
    assert [lease.session_id for lease in leases.expired()] == ["s2"]


@pytest.mark.parametrize(
    ("task", "held", "local_read", "want"),
    [
        (_task(), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=40), False, 40),
        (_task(), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=100), False, 100),
        (_task(), pb.HeldTask(task_id="t1", attempt=2, committed_bytes=40), False, None),
        (_task(agent="a2"), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=40), False, None),
        (_task(Status.PENDING), pb.HeldTask(task_id="t1", attempt=3), False, None),
        (_task(Status.CANCELLED), pb.HeldTask(task_id="t1", attempt=3), False, None),
        (_task(Status.ASSIGNED), pb.HeldTask(task_id="t1", attempt=3), False, None),
        (_task(), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=101), False, None),
        (_task(), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=-1), False, None),
        (_task(), pb.HeldTask(task_id="t1", attempt=3, committed_bytes=40), True, None),
        (None, pb.HeldTask(task_id="t1", attempt=3, committed_bytes=40), False, None),
    ],
    ids=["held", "all-bytes", "old-attempt", "other-agent", "requeued", "cancelled",
         "not-accepted", "beyond-file", "negative", "local-read", "unknown"],
)
def test_reattach_is_fenced_to_the_lease_holder(
    task: TaskRecord | None, held: pb.HeldTask, local_read: bool, want: int | None
) -> None:
    assert reattach_offset(task, "a1", held, local_read=local_read) == want


# -- the stream check across two streams -------------------------------------------------------


def _source(size: int, crc32: bool) -> tuple[CreditBudget, StreamSource]:
    budget = CreditBudget(1000)
    budget.open("t", need=size, min_window=size)
    return budget, StreamSource(size=size, start=0, budget=budget, key="t", crc32=crc32)


def _feed(budget: CreditBudget, src: StreamSource, data: bytes, start: int, end: int) -> None:
    budget.grants()
    for pos in range(start, end, 7):
        src.feed(pos, data[pos : min(pos + 7, end)])


@pytest.mark.anyio
@pytest.mark.parametrize("crc32", [True, False], ids=["crc32", "md5"])
async def test_a_held_attempt_checks_what_the_new_stream_sent(crc32: bool) -> None:
    data = bytes(range(200)) + bytes(range(100))
    budget, src = _source(len(data), crc32)
    _feed(budget, src, data, 0, 130)
    assert await src.read(0, 50) == data[:50]  # partly uploaded, partly still queued
    budget.forget_in_flight("t")
    assert src.restart_check() == 130  # the Hello asks for bytes from here
    _feed(budget, src, data, 130, len(data))
    tail = data[130:]
    src.end_of_data(hashlib.md5(tail).hexdigest(), zlib.crc32(tail))
    assert await src.read(50, 1000) == data[50:]
    src.verify()  # the hub vouches for the tail only, and that is what is checked
    if crc32:
        assert src.crc32() == zlib.crc32(tail)
    else:
        assert src.md5() == hashlib.md5(tail).hexdigest()


@pytest.mark.anyio
async def test_a_held_attempt_still_catches_a_corrupt_tail() -> None:
    data = bytes(range(200))
    budget, src = _source(len(data), True)
    _feed(budget, src, data, 0, 60)
    src.restart_check()
    _feed(budget, src, data, 60, 200)
    src.end_of_data("", zlib.crc32(data))  # a whole-attempt CRC: not what this stream sent
    with pytest.raises(UploadError):
        await src.read(0, 1000)


def test_a_stream_that_ended_cannot_be_resumed() -> None:
    data = bytes(50)
    budget, src = _source(len(data), True)
    _feed(budget, src, data, 0, 50)
    src.end_of_data("", zlib.crc32(data))
    with pytest.raises(StreamError):
        src.restart_check()


# -- settings ------------------------------------------------------------------------------------


def test_held_grace_settings_default_off_and_parse(tmp_path) -> None:
    from bupmesh.config import ConfigError
    from spoke.config import load_agents

    base = "server:\n  url: hub:12382\nagent:\n  id: a1\n  token: psk\n"
    path = tmp_path / "agent.yml"
    path.write_text(base)
    (settings,) = load_agents(file=path, env={})
    assert settings.held_grace == 0
    path.write_text(base + "  held_grace: 15s\n")
    (settings,) = load_agents(file=path, env={})
    assert settings.held_grace == 15.0
    path.write_text(base + "  held_grace: soon\n")
    with pytest.raises(ConfigError, match="held_grace"):
        load_agents(file=path, env={})
