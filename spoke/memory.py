"""Keep the agent's resident memory near its credit budget, and report it.

The agent's memory is its credit budget plus a fixed base, and glibc's defaults
work against that in two ways, each answered here:

* :func:`return_big_buffers_to_the_os`: glibc raises its mmap threshold after the
  first large free, after which 1 MiB frames come from the heap and fragment it:
  the RSS then grows well past the budget and never shrinks. A fixed threshold
  serves every frame and chunk with its own mmap, returned to the OS on release.
* :func:`release_free_heap`: gRPC's and httpx's many small allocations still land
  in the heap, and a heap fragmented by one upload keeps its pages: the RSS stays
  tens of MiB above idle after a task, and the next burst of uploads peaks that
  much higher. ``malloc_trim(0)`` returns every free page, also from the middle
  of the heap, in about a millisecond; the agent calls it when a task ends and
  once a second while tasks run.

:func:`memory_mb` is what heartbeats report, so the hub sees the effect. The
glibc calls are no-ops elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Callable
from typing import Any


def _glibc(name: str) -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc: nothing to tune or trim
        return None


_mallopt = _glibc("mallopt")
_malloc_trim = _glibc("malloc_trim")
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def return_big_buffers_to_the_os() -> None:
    """Serve every allocation of 256 KiB or more with its own mmap; at most two heap arenas.

    Called once at startup, before any buffer exists.
    """
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        # gRPC's and the hashing threads would each get a heap arena of their own.
        _mallopt(_M_ARENA_MAX, 2)


def release_free_heap() -> None:
    """Hand the heap's free pages back to the OS."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def memory_mb() -> int:
    """Resident set size in MB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
