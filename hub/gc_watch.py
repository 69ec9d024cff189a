"""Keep the garbage collector's full collections from stalling a big hub.

With thousands of agents the hub holds hundreds of thousands of long-lived
objects (sessions, views, gRPC state), and CPython's full (generation 2)
collection walks all of them while nothing else runs: no heartbeat is read, no
part is offered. bench/scale.py saw 0.1-0.6 s pauses every 2-4 s at 5,000
agents, each collecting almost nothing. So after a slow full collection the
survivors are frozen (``gc.freeze``: moved out of the collector's sight; they
are still freed by reference counting when released), and later collections
walk only what is new. A cycle among frozen objects that dies meanwhile is not
reclaimed until the periodic thaw (``THAW_EVERY_SECONDS``), which unfreezes and
collects everything once: one long pause an hour instead of one every few seconds.
Long pauses are logged, so an operator can tell a collector stall from slow code.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import anyio

log = logging.getLogger("bupmesh.hub.gc")

LOG_PAUSES_OVER_SECONDS = 0.1
FREEZE_AFTER_SECONDS = 0.05  # a full collection slower than this freezes its survivors
THAW_EVERY_SECONDS = 3600.0

_started: float | None = None
_last_thaw = time.monotonic()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    if _started is None:
        return
    took = time.perf_counter() - _started
    _started = None
    if info.get("generation") == 2 and took >= FREEZE_AFTER_SECONDS:
        gc.freeze()
    if took >= LOG_PAUSES_OVER_SECONDS:
        log.warning("garbage collection (generation %d) paused the hub for %.0f ms "
                    "(%d objects collected)", info.get("generation", -1), took * 1000,
                    info.get("collected", 0))


def install() -> None:
    """Watch collections until :func:`uninstall` (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def uninstall() -> None:
    """Stop watching (idempotent): once the hub has stopped there is no hub to pause."""
    while _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)


def thaw_if_due(now: float | None = None) -> bool:
    """Unfreeze and collect everything once an hour (call from a periodic task)."""
    global _last_thaw
    now = time.monotonic() if now is None else now
    if now - _last_thaw < THAW_EVERY_SECONDS:
        return False
    _last_thaw = now
    gc.unfreeze()
    gc.collect()
    return True


async def thaw_periodically(check_every_seconds: float = 60.0) -> None:
    """Run :func:`thaw_if_due` for the life of the hub."""
    while True:
        await anyio.sleep(check_every_seconds)
        thaw_if_due()
