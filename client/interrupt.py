"""Ctrl-C during an HTTP call to the hub is held until the call returns.

httpcore's connection pool takes its lock in a Python-level ``__enter__``. A
KeyboardInterrupt that lands just after the lock is taken, before the ``with``
block that releases it has begun, leaves the lock held for good; the pool's own
clean-up, and closing the client on the way out, then wait on it for ever. So a
command that was told to stop while waiting on the hub would hang instead (seen
with ``bupmesh upload --wait`` on a loaded machine). Held for the length of one
call, the Ctrl-C is raised as the call returns, at a point where nothing is half
taken. A second Ctrl-C during the same call is raised at once, for a hub that
does not answer.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def held_during_call() -> Iterator[None]:
    """Around one HTTP call: a Ctrl-C in it is raised once it returns (or fails).

    Only where Python's own handler turns Ctrl-C into KeyboardInterrupt, in the
    main thread (the only one signals reach); an ignored or otherwise handled
    SIGINT is left as it is.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal held
        if held:
            raise KeyboardInterrupt
        held = True

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if held:
            raise KeyboardInterrupt
