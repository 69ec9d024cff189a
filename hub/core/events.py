"""What changed in the hub, for the web UI's live view (one feed per open page).

The hub says *which* object changed (a task, an agent, the IP table) with a cheap
synchronous ``touch`` from the places that already update it; it never says how.
Each subscriber (one per open Server-Sent Events stream) keeps only the set of keys
touched since it last looked, and reads the objects' current state when it sends.
That gives the three properties a hub running for months needs:

- publishing never blocks and never waits for a browser: a touch is a dict insert
  per subscriber and an event set, whatever the subscribers are doing;
- a slow subscriber coalesces: a task that moved twenty times while a page was busy
  is sent once, as it is now, never twenty stale times;
- a subscriber's memory is bounded: past ``limit`` distinct keys it drops them all
  and is told to resync, and its stream sends a fresh snapshot instead.

Backend-neutral (anyio), no IO: tested without sockets or sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

TASK = "task"
AGENT = "agent"
IPS = "ips"  # the IP risk table is small: it is sent whole, under this one key
RECORDING = "recording"  # keyed by recording id (the recording pipeline touches it)
IPS_KEY = "*"

DEFAULT_LIMIT = 4096  # distinct changed keys one subscriber may hold before it resyncs


@dataclass(frozen=True)
class Batch:
    """What one subscriber has to send: ``resync`` (send a snapshot) or the changed keys."""

    resync: bool
    changes: tuple[tuple[str, str], ...]  # (kind, key), in first-touched order


class Subscription:
    """One consumer's pending changes; filled by the bus, drained with ``next_batch``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._pending: dict[tuple[str, str], None] = {}  # ordered set
        self._resync = False
        self._closed = False
        self._wakeup: anyio.Event | None = None
        self.overflows = 0  # times it fell so far behind that it had to resync

    @property
    def closed(self) -> bool:
        return self._closed

    def _mark(self, kind: str, key: str) -> None:
        if self._closed or self._resync:
            return  # a resync covers every change until it is taken
        item = (kind, key)
        if item not in self._pending and len(self._pending) >= self.limit:
            self._pending.clear()
            self._resync = True
            self.overflows += 1
        else:
            self._pending[item] = None
        self._wake()

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def ready(self) -> bool:
        return self._closed or self._resync or bool(self._pending)

    def take(self) -> Batch | None:
        """The changes so far (possibly none), clearing them; None once closed."""
        if self._closed:
            return None
        batch = Batch(self._resync, () if self._resync else tuple(self._pending))
        self._pending.clear()
        self._resync = False
        return batch

    async def next_batch(self) -> Batch | None:
        """Wait for at least one change (or a resync); None when the bus has closed."""
        while not self.ready():
            self._wakeup = anyio.Event()
            if self.ready():  # touched between the check and the new event
                break
            await self._wakeup.wait()
        self._wakeup = None
        return self.take()


class EventBus:
    """Fan-out of change notices to subscribers; owned by ``HubService`` as ``events``."""

    def __init__(self, *, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._subscribers: set[Subscription] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- publishing (hooks in the hub; synchronous, never raise, never block) ------------

    def touch(self, kind: str, key: str) -> None:
        if not key:
            return
        for sub in self._subscribers:
            sub._mark(kind, key)

    def touch_task(self, task_id: str, agent_id: str | None = None) -> None:
        """A task changed; so did its agent's task count and the IP table when it has one."""
        self.touch(TASK, task_id)
        if agent_id:
            self.touch(AGENT, agent_id)
            self.touch(IPS, IPS_KEY)

    def touch_agent(self, agent_id: str) -> None:
        self.touch(AGENT, agent_id)

    def touch_ips(self) -> None:
        self.touch(IPS, IPS_KEY)

    def touch_recording(self, recording_id: int) -> None:
        self.touch(RECORDING, str(recording_id))

    # -- subscribing --------------------------------------------------------------------

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the life of the ``with`` block (closed at once if the bus is)."""
        sub = Subscription(self.limit)
        if self._closed:
            sub._close()
        else:
            self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """The hub is stopping: every subscriber's ``next_batch`` returns None."""
        self._closed = True
        for sub in self._subscribers:
            sub._close()
        self._subscribers.clear()
