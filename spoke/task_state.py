"""The agent's view of one task attempt (sans-IO state machine).

    offered -> accepted -> streaming -> finishing -> done
        |          |           |            |
        v          +-----------+------------+--> failed | cancelled
     rejected

Which hub message is legal when is decided here, not scattered through the
runner: a ``Chunk`` after ``EndOfData`` or before ``Accept`` is a protocol
violation (:class:`InvalidTransition`, which the runner turns into a failed
task, never a crashed agent), while a late ``Chunk``/``Cancel`` for a task that
already ended is expected (the hub sent it before it saw our ``Result``) and
is ignored.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    STREAMING = "streaming"
    FINISHING = "finishing"  # every byte received (EndOfData), upload completing
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED, State.REJECTED})


class InvalidTransition(Exception):
    """A message arrived that is not legal in the task's current state."""

    def __init__(self, event: str, state: State) -> None:
        super().__init__(f"{event} is not legal in state {state}")
        self.event = event
        self.state = state


class TaskState:
    """Tracks one ``(task_id, attempt)``; each ``on_*`` returns whether to act on the event."""

    def __init__(self) -> None:
        self.state = State.OFFERED

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def _move(self, event: str, allowed: tuple[State, ...], target: State) -> bool:
        if self.state.terminal:
            return False  # late message for an ended attempt: ignore
        if self.state not in allowed:
            raise InvalidTransition(event, self.state)
        self.state = target
        return True

    def accept(self) -> bool:
        return self._move("accept", (State.OFFERED,), State.ACCEPTED)

    def reject(self) -> bool:
        return self._move("reject", (State.OFFERED,), State.REJECTED)

    def on_chunk(self) -> bool:
        return self._move("chunk", (State.ACCEPTED, State.STREAMING), State.STREAMING)

    def on_end_of_data(self) -> bool:
        return self._move("end_of_data", (State.ACCEPTED, State.STREAMING), State.FINISHING)

    def succeed(self) -> bool:
        # Only after EndOfData: the runner checks the hub's checksum before it reports success.
        return self._move("succeed", (State.FINISHING,), State.DONE)

    def fail(self) -> bool:
        live = (State.OFFERED, State.ACCEPTED, State.STREAMING, State.FINISHING)
        return self._move("fail", live, State.FAILED)

    def cancel(self) -> bool:
        live = (State.OFFERED, State.ACCEPTED, State.STREAMING, State.FINISHING)
        return self._move("cancel", live, State.CANCELLED)
