"""Held tasks across a reconnect, the hub's part (hub/core/held.py): which leases wait for
their agent and until when, and the fencing of a re-attach. Pure, with a fake clock.
"""

from __future__ import annotations

import pytest

from hub.core.held import HeldLeases, reattach_offset
from hub.core.lifecycle import Status, TaskRecord
from protocol import mesh_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
