"""Give the heap's free pages back to the OS when a task ends (glibc only).

Big buffers (frames, chunks) are mmapped and unmapped on their own (see
``spoke.command``), but gRPC's and httpx's many small allocations land in the
heap, and a heap fragmented by one upload keeps its pages: the agent's RSS then
stays tens of MiB above idle after a task and the next burst of uploads peaks
that much higher. ``malloc_trim(0)`` returns every free page, also from the
middle of the heap, in about a millisecond; once per finished task is cheap.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
if sys.platform.startswith("linux"):
    try:
        _trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        _trim = None


def release_free_heap() -> None:
    if _trim is not None:
        _trim(0)
