"""Where upload bytes come from: a file on the hub, a stream fed by the mesh, or memory.

The uploader reads strictly forward and tells the source when it is done with
a range (``release``), so a streamed source can return buffer space to its
credit budget at exactly the moment Bilibili has accepted the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio.to_thread


@runtime_checkable
class ByteSource(Protocol):
    size: int

    async def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (fewer only at EOF).

        Offsets never decrease between calls; a streamed source may skip
        forward by discarding.
        """
        ...

    def release(self, offset: int, length: int) -> None:
        """The uploader is done with these bytes (PUT succeeded or part skipped)."""
        ...


class FileSource:
    """A local file read with ``pread`` in a worker thread (no shared file position)."""

    rewindable = True  # may be read from offset 0 again (fresh upload after a stale resume)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        # Open now so a missing/unreadable file fails before any request is made.
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size

    async def read(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise ValueError("FileSource is closed")
        fd = self._fd
        return await anyio.to_thread.run_sync(_pread_exact, fd, offset, length)

    def release(self, offset: int, length: int) -> None:
        """Nothing to free: the file stays on disk."""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _pread_exact(fd: int, offset: int, length: int) -> bytes:
    first = os.pread(fd, length, offset)
    if len(first) == length or not first:
        return first
    # Short reads happen on some filesystems; loop until EOF or full.
    pieces = [first]
    got = len(first)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


class BytesSource:
    """In-memory bytes (tests, small payloads); records reads and releases for assertions."""

    rewindable = True

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self.size = len(self._data)
        self.released: list[tuple[int, int]] = []
        self.reads: list[tuple[int, int]] = []

    async def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return bytes(self._data[offset : offset + length])

    def release(self, offset: int, length: int) -> None:
        self.released.append((offset, length))
