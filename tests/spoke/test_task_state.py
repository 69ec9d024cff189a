"""The agent's task state machine: the legal path, and hub messages out of order refused."""

from __future__ import annotations

import pytest

from spoke.task_state import InvalidTransition, State, TaskState


def test_task_state_happy_path_and_illegal_messages() -> None:
    s = TaskState()
    with pytest.raises(InvalidTransition):
        s.on_chunk()  # no chunk before Accept
    assert s.accept() and s.on_chunk() and s.on_chunk()
    assert s.state is State.STREAMING
    with pytest.raises(InvalidTransition):
        s.succeed()  # not before EndOfData
    assert s.on_end_of_data() and s.state is State.FINISHING
    with pytest.raises(InvalidTransition):
        s.on_chunk()  # a chunk after EndOfData
    assert s.succeed() and s.state is State.DONE and s.terminal
    # late messages for an ended attempt are ignored, not errors
    assert not s.on_chunk() and not s.cancel() and not s.fail()


def test_task_state_cancel_fail_reject() -> None:
    s = TaskState()
    assert s.reject() and s.state is State.REJECTED
    s = TaskState()
    s.accept()
    assert s.cancel() and s.state is State.CANCELLED and not s.on_end_of_data()
    s = TaskState()
    s.accept()
    s.on_chunk()
    assert s.fail() and s.state is State.FAILED
    with pytest.raises(InvalidTransition):
        TaskState().on_end_of_data()
