"""Byte credits between hub and agent (sans-IO: no sockets, no clocks, no gRPC).

The agent owns the memory, so the agent grants credit: a ``Credit(bytes)``
message lets the hub send that many more ``Chunk`` bytes for one task. Two
plain classes keep the books on either side:

* :class:`CreditLedger` (hub side, one per task): how much the hub may still
  send. It refuses to account a frame beyond credit, so a bug in the hub's send
  loop shows up as an exception instead of as an agent running out of memory.
* :class:`CreditBudget` (agent side, one per agent): the total buffer budget
  shared by every task. A task's bytes count against the budget from the moment
  they are granted until the uploader releases them, so ``granted + held`` never
  exceeds the budget however the hub and the uploader interleave.

Both raise :class:`CreditError` (a ``ValueError``) on a protocol violation;
callers turn that into a task failure, never a crash of the link.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRAME = 1 << 20
"""Largest ``Chunk.data`` on the wire (1 MiB) so tasks interleave on one stream."""


class CreditError(ValueError):
    """A peer sent (or we were about to send) bytes without credit, or similar misuse."""


class CreditLedger:
    """Hub side: credit granted by the agent for one task versus bytes sent.

    ``sendable(max_frame)`` says how large the next frame may be; ``on_sent(n)``
    accounts a frame and raises if it exceeds the credit, before anything hits
    the wire.
    """

    __slots__ = ("granted", "sent")

    def __init__(self) -> None:
        self.granted = 0
        self.sent = 0

    def grant(self, n: int) -> None:
        """Record a ``Credit(bytes=n)`` from the agent; ``n`` must be positive."""
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise CreditError(f"credit must be a positive byte count, got {n!r}")
        self.granted += n

    @property
    def available(self) -> int:
        """Bytes the hub may still send for this task."""
        return self.granted - self.sent

    def sendable(self, max_frame: int = MAX_FRAME) -> int:
        """Size of the next frame allowed now (0 = wait for credit)."""
        return max(0, min(self.available, max_frame))

    def on_sent(self, n: int) -> None:
        """Account a frame of ``n`` bytes; raises (and accounts nothing) beyond credit."""
        if n < 0:
            raise CreditError(f"negative frame size {n}")
        if n > self.available:
            raise CreditError(f"frame of {n} bytes exceeds credit ({self.available} left)")
        self.sent += n

    def __repr__(self) -> str:
        return f"CreditLedger(granted={self.granted}, sent={self.sent})"


@dataclass
class _TaskCredit:
    need: int  # bytes this task still needs in total (size - resume offset)
    min_window: int  # below this the uploader cannot assemble one chunk
    granted: int = 0  # total granted so far (monotonic)
    received: int = 0  # total received so far
    released: int = 0  # total released by the uploader
    window: int = 0  # current target for outstanding bytes

    @property
    def in_flight(self) -> int:
        return self.granted - self.received

    @property
    def held(self) -> int:
        return self.received - self.released

    @property
    def outstanding(self) -> int:
        """Bytes of budget this task occupies: granted but not yet released."""
        return self.granted - self.released

    @property
    def ungranted(self) -> int:
        return self.need - self.granted


class CreditBudget:
    """Agent side: one buffer budget (bytes) shared by every open task.

    Windows are water-filled: each task first gets its ``min_window`` (admission
    guarantees they fit), the rest of the budget is split evenly, and no task is
    given more than it still needs. A task is re-granted once about half its
    window is free (or its tail fits), so the hub never idles waiting for a
    window to drain to zero. Grants are also capped by the budget still free, so
    while windows shrink after a new task arrives, the old tasks simply get no
    new credit until their held bytes drain below the new window.
    """

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise CreditError(f"budget must be positive, got {total}")
        self.total = total
        self._tasks: dict[str, _TaskCredit] = {}

    # -- admission and lifecycle -------------------------------------------------------------

    @property
    def reserved(self) -> int:
        """Sum of the minimum windows of open tasks (what admission protects)."""
        return sum(t.min_window for t in self._tasks.values())

    @property
    def outstanding(self) -> int:
        """Budget in use: granted-but-not-released bytes over all tasks."""
        return sum(t.outstanding for t in self._tasks.values())

    @property
    def free(self) -> int:
        return self.total - self.outstanding

    def can_admit(self, min_window: int) -> bool:
        """Whether a new task needing ``min_window`` bytes of window fits next to the others."""
        return min_window > 0 and self.reserved + min_window <= self.total

    def open(self, task: str, *, need: int, min_window: int) -> None:
        """Start crediting ``task`` for ``need`` bytes; raises if it cannot be admitted."""
        if task in self._tasks:
            raise CreditError(f"task {task} is already open")
        if need < 0:
            raise CreditError(f"negative need {need}")
        if not self.can_admit(min_window):
            raise CreditError(
                f"cannot admit a window of {min_window} bytes: {self.reserved} of "
                f"{self.total} reserved"
            )
        self._tasks[task] = _TaskCredit(need=need, min_window=min_window)
        self._rebalance()

    def raise_min_window(self, task: str, min_window: int) -> bool:
        """Grow ``task``'s minimum window (its real chunk size turned out larger).

        False, changing nothing, if the larger minimum does not fit next to the others.
        """
        t = self._get(task)
        if min_window <= t.min_window:
            return True
        if self.reserved - t.min_window + min_window > self.total:
            return False
        t.min_window = min_window
        self._rebalance()
        return True

    def close(self, task: str) -> None:
        """Forget ``task`` (done, failed or cancelled): its whole outstanding credit is free."""
        if self._tasks.pop(task, None) is not None:
            self._rebalance()

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def tasks(self) -> list[str]:
        return list(self._tasks)

    # -- events ------------------------------------------------------------------------------

    def on_received(self, task: str, n: int) -> None:
        """``n`` bytes of ``task`` arrived; raises if the hub sent beyond credit."""
        t = self._get(task)
        if n < 0:
            raise CreditError(f"negative frame size {n}")
        if n > t.in_flight:
            raise CreditError(
                f"task {task}: {n} bytes received but only {t.in_flight} bytes of credit open"
            )
        t.received += n

    def on_released(self, task: str, n: int) -> None:
        """The uploader is done with ``n`` held bytes of ``task`` (or they were discarded)."""
        t = self._get(task)
        if n < 0 or n > t.held:
            raise CreditError(f"task {task}: release of {n} bytes but {t.held} held")
        t.released += n

    def forget_in_flight(self, task: str) -> int:
        """The stream carrying ``task`` was lost: credit not yet used will never arrive.

        Returns the bytes written off; ``granted`` is rolled back so they can be granted
        again on the next stream.
        """
        t = self._get(task)
        lost = t.in_flight
        t.granted -= lost
        return lost

    def grants(self) -> list[tuple[str, int]]:
        """Credit to send now, as ``(task, bytes)``; the books already count it as granted."""
        out: list[tuple[str, int]] = []
        free = self.free
        # Tasks furthest below their window first, so a starving task is served before
        # a busy one takes the last free bytes.
        order = sorted(self._tasks.items(), key=lambda kv: kv[1].outstanding - kv[1].window)
        for task, t in order:
            room = t.window - t.outstanding
            if room <= 0 or t.ungranted <= 0:
                continue
            amount = min(room, t.ungranted, free)
            # Re-grant at about half a window (never wait for zero), or the whole tail.
            # With nothing in flight the hub is idle for this task, and the held bytes
            # may be a partial chunk the uploader cannot release: then any room is
            # granted, or the task would stall.
            threshold = 1 if t.in_flight == 0 else min(max(1, t.window // 2), t.ungranted)
            if amount < threshold:
                continue
            t.granted += amount
            free -= amount
            out.append((task, amount))
        return out

    # -- introspection -----------------------------------------------------------------------

    def window(self, task: str) -> int:
        return self._get(task).window

    def granted(self, task: str) -> int:
        return self._get(task).granted

    def held(self, task: str) -> int:
        return self._get(task).held

    def in_flight(self, task: str) -> int:
        return self._get(task).in_flight

    def task_outstanding(self, task: str) -> int:
        return self._get(task).outstanding

    # -- internals ---------------------------------------------------------------------------

    def _get(self, task: str) -> _TaskCredit:
        try:
            return self._tasks[task]
        except KeyError:
            raise CreditError(f"unknown task {task}") from None

    def _rebalance(self) -> None:
        """Water-fill windows: minimums first, the rest evenly, none beyond what a task needs.

        The windows sum to at most ``total``, so when every task is within its window
        the budget holds; tasks above a shrunken window just get no credit until they
        drain.
        """
        tasks = list(self._tasks.values())
        for t in tasks:
            t.window = t.min_window
        spare = self.total - sum(t.window for t in tasks)
        hungry = [t for t in tasks if t.need > t.window]
        while spare > 0 and hungry:
            share = max(1, spare // len(hungry))
            next_hungry = []
            for t in hungry:
                if spare <= 0:
                    break
                give = min(share, t.need - t.window, spare)
                t.window += give
                spare -= give
                if t.need > t.window:
                    next_hungry.append(t)
            hungry = next_hungry
