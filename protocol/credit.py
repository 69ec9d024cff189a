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

    The budget is split into slots and a shared pool. Each open task owns
    ``max(min_window, slot_reserve)`` bytes (its *own*: enough to assemble one
    chunk), each unused slot keeps ``slot_reserve`` for a task still to come, and
    the rest is a pool any task may borrow from. No task ever takes from another
    task's own share, so however the others behave, even stuck holding all they
    were granted (a hanging PUT, a throttled IP), every task can still get one
    chunk's worth and progress: a slow task never stalls a fast one. Without
    ``slots`` there is no slot reserve and each task owns its ``min_window``.

    Windows (the target outstanding per task) are a task's own share plus an even
    split of the pool among tasks that need more. A task is re-granted once about
    half its window is free (or its tail fits, or its pipe is idle), so the hub
    never waits for a window to drain to zero. ``granted + held`` over all tasks
    never exceeds ``total``.
    """

    def __init__(self, total: int, *, slots: int | None = None, slot_reserve: int = 0) -> None:
        if total <= 0:
            raise CreditError(f"budget must be positive, got {total}")
        if slots is not None and (slots < 1 or slot_reserve < 0 or slots * slot_reserve > total):
            raise CreditError(
                f"{slots} slots of {slot_reserve} bytes do not fit a budget of {total}"
            )
        self.total = total
        self.slots = slots
        self.slot_reserve = slot_reserve if slots is not None else 0
        self._tasks: dict[str, _TaskCredit] = {}

    # -- admission and lifecycle -------------------------------------------------------------

    @property
    def reserved(self) -> int:
        """Bytes owned by open tasks plus the reserve of unused slots (the rest is the pool)."""
        return sum(self._own(t) for t in self._tasks.values()) + self._unused_reserve()

    @property
    def pool(self) -> int:
        return self.total - self.reserved

    @property
    def outstanding(self) -> int:
        """Budget in use: granted-but-not-released bytes over all tasks."""
        return sum(t.outstanding for t in self._tasks.values())

    @property
    def free(self) -> int:
        return self.total - self.outstanding

    def can_admit(self, min_window: int) -> bool:
        """Whether a new task needing ``min_window`` bytes of window fits next to the others."""
        if min_window <= 0:
            return False
        if self.slots is not None and len(self._tasks) >= self.slots:
            return False
        own = max(min_window, self.slot_reserve)
        return self.reserved - self._slot_share() + own <= self.total

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
        grown = max(min_window, self.slot_reserve) - self._own(t)
        if self.reserved + grown > self.total:
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
        pool_left = self.pool - sum(self._borrowed(t) for t in self._tasks.values())
        # Tasks furthest below their window first, so a starving task is served before
        # a busy one takes the last free bytes.
        order = sorted(self._tasks.items(), key=lambda kv: kv[1].outstanding - kv[1].window)
        for task, t in order:
            room = t.window - t.outstanding
            if room <= 0 or t.ungranted <= 0:
                continue
            # Up to its own share freely; beyond it only what the pool still has.
            limit = self._own(t) + self._borrowed(t) + max(0, pool_left) - t.outstanding
            amount = min(room, t.ungranted, free, limit)
            # Re-grant at about half a window (never wait for zero), or the whole tail.
            # With nothing in flight the hub is idle for this task, and the held bytes
            # may be a partial chunk the uploader cannot release: then any room is
            # granted, or the task would stall.
            threshold = 1 if t.in_flight == 0 else min(max(1, t.window // 2), t.ungranted)
            if amount < threshold:
                continue
            before = self._borrowed(t)
            t.granted += amount
            free -= amount
            pool_left -= self._borrowed(t) - before
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

    def _own(self, t: _TaskCredit) -> int:
        return max(t.min_window, self.slot_reserve)

    def _borrowed(self, t: _TaskCredit) -> int:
        return max(0, t.outstanding - self._own(t))

    def _slot_share(self) -> int:
        """What one more open task takes out of the unused-slot reserve."""
        return self.slot_reserve if self.slots is not None and len(self._tasks) < self.slots else 0

    def _unused_reserve(self) -> int:
        if self.slots is None:
            return 0
        return max(0, self.slots - len(self._tasks)) * self.slot_reserve

    def _rebalance(self) -> None:
        """Windows: each task's own share (no more than it needs) plus an even split of the
        pool among the tasks that need more. They sum to at most ``total``."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.window = max(1, min(self._own(t), t.need))
        spare = self.pool
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
