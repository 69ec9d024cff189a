"""Keep the agent's resident memory near its credit budget, and report it.

The agent's memory is its credit budget plus a fixed base, and every byte it
relays passes through freshly allocated buffers (gRPC's read slices, the
``bytes`` of each 1 MiB frame, the PUT body pieces h11 joins). glibc is tuned
here for both:

* :func:`tune_malloc`: a fixed mmap threshold of 4 MiB, above every buffer of the
  relay path. Below it, frames and body pieces come from the heap and reuse its
  pages; an mmap per frame (the threshold was 256 KiB once) cost a fresh, zeroed
  page for every 4 KiB relayed, 0.3-0.5 CPU-seconds per GiB in page faults.
  Fixed, because glibc's sliding threshold would otherwise move with the first
  large free. And one heap arena for every thread: gRPC's threads receive a
  frame into memory that the event loop's copy of it frees a moment later, and
  with an arena of their own the two sides each grew to their own peak (bytes in
  gRPC's buffers, bytes held for the uploader), 15 MiB more at 3 concurrent
  uploads than one heap that both reuse.
* :func:`release_free_heap`: a heap that served one upload keeps its pages when
  the task ends (the RSS would stay tens of MiB above idle, and the next burst of
  uploads peak that much higher). ``malloc_trim(0)`` returns every free page,
  also from the middle of the heap, in about a millisecond; the agent calls it
  when a task ends. (Calling it every second while tasks ran lowered the peak
  by nothing measurable and made the relay fault the same pages in again.)

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


MMAP_THRESHOLD = 4 << 20
"""Allocations this large get their own mmap: above every buffer the relay uses."""


def tune_malloc() -> None:
    """A fixed mmap threshold above the relay's buffers; one heap arena for all threads.

    Called once at startup, before any buffer exists.
    """
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        # gRPC's threads would otherwise get heap arenas of their own.
        _mallopt(_M_ARENA_MAX, 1)


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
