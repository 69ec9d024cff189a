"""Background work of the hub's parts, run in the hub's task group.

A gRPC handler that notices something (a stream ended, a file cannot be read)
must not do the follow-up work itself (it may be being cancelled): it hands it
to the hub's task group through a :class:`Spawner`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.abc


class Spawner:
    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None

    def bind(self, tg: anyio.abc.TaskGroup) -> None:
        """Run spawned work in ``tg`` from now on (the hub's background group)."""
        self._tg = tg

    def __call__(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub's task group; a no-op while the hub shuts down."""
        tg = self._tg
        if tg is None or tg.cancel_scope.cancel_called:
            # Shutting down: what matters is on disk and a restart re-queues leases. Never
            # start_soon into a cancelled group: with anyio 4.16 on asyncio such a task,
            # spawned from a gRPC handler, spins the loop forever and SIGTERM never ends.
            return
        try:
            tg.start_soon(fn, *args)
        except RuntimeError:  # task group already closed: shutting down, state is on disk
            pass
