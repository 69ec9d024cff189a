"""Figures the kernel keeps for a process: peak RSS and bytes written to disk.

``VmHWM`` in /proc/PID/status is the resident-set high-water mark, so one read
just before a process exits gives its true peak, with no sampling gaps;
``write_bytes`` in /proc/PID/io counts bytes the process caused to be written
to storage.
"""

from __future__ import annotations


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
