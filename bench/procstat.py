"""Figures the kernel keeps for a process: peak RSS and bytes written to disk.

``VmHWM`` in /proc/PID/status is the resident-set high-water mark, so one read
just before a process exits gives its true peak, with no sampling gaps;
``write_bytes`` in /proc/PID/io counts bytes the process caused to be written
to storage; ``utime + stime`` in /proc/PID/stat the CPU it used, which on a
shared machine says more about a pipeline's cost than its wall-clock speed, and
``minflt`` the fresh pages it touched.
"""

from __future__ import annotations

import os


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def written_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for pid {pid}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()  # fields from "state" on


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (/proc/PID/stat)."""
    fields = _stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def minor_faults(pid: int) -> int:
    """Minor page faults of a live process so far: each is a fresh page the kernel had to
    find and zero, a cost that grows with buffers not reused (and, unlike seconds, one
    that other work on the machine does not change)."""
    return int(_stat_fields(pid)[7])
