"""Tasks kept running across a lost stream, until the next Hello or a deadline.

When the stream drops, an attempt that is still receiving bytes (accepted, no
``EndOfData`` yet, streamed rather than read locally) is not abandoned at once:
its uploader goes on PUTting what is already in its credit buffer and then waits
for more. If the agent is welcomed again within ``held_grace`` seconds, the
attempt is listed in ``Hello.held_tasks`` and the hub either streams on from the
first byte the agent lacks or tells it to stop (``Cancel``). Past the deadline
the attempt is stopped, as every attempt was before (the hub re-offers it with
its resume point). Sans-IO: time comes from ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class HeldTasks:
    """Task ids detached from a stream, each with the time it must be stopped by."""

    def __init__(self, grace: float, clock: Callable[[], float]) -> None:
        self.grace = grace
        self._clock = clock
        self._until: dict[str, float] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._until

    def __len__(self) -> int:
        return len(self._until)

    def detach(self, task_ids: Iterable[str]) -> None:
        """The stream carrying these tasks ended now (a task detached earlier keeps its deadline)."""
        until = self._clock() + self.grace
        for task_id in task_ids:
            self._until.setdefault(task_id, until)

    def live(self) -> list[str]:
        """Held tasks still within their grace period (what the next Hello lists)."""
        now = self._clock()
        return [task_id for task_id, until in self._until.items() if until > now]

    def reattach(self, task_ids: Iterable[str]) -> None:
        """A Hello listing these was welcomed: they belong to the new stream now."""
        for task_id in task_ids:
            self._until.pop(task_id, None)

    def forget(self, task_id: str) -> None:
        """The task ended on its own while detached."""
        self._until.pop(task_id, None)

    def expired(self) -> list[str]:
        """Tasks whose grace period is over (removed: the caller stops them)."""
        now = self._clock()
        due = [task_id for task_id, until in self._until.items() if until <= now]
        for task_id in due:
            del self._until[task_id]
        return due
