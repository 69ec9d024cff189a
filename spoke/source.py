"""A :class:`uploader.source.ByteSource` fed by the hub's ``Chunk`` frames.

The link thread of control calls :meth:`StreamSource.feed` (never blocks: the
credit budget already bounds what can arrive), the uploader calls
:meth:`read` and :meth:`release`. Bytes count against the agent's
:class:`~protocol.credit.CreditBudget` from grant until ``release``; releasing
wakes the link so it can grant more.

Frames are kept as received (no copy) and handed to the uploader as they are,
a chunk being the list of its frames (:class:`uploader.pieces.Pieces`), so no
byte is copied between gRPC and the PUT body. A checksum of every byte received
is kept (CRC32 when the Offer asked for it, else MD5: see
:mod:`protocol.integrity`), and the read that ends at the file's last byte waits
for ``EndOfData`` and checks the hub's checksum first, so corrupted bytes never
reach the upos completion request.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from protocol.credit import CreditBudget
from protocol.integrity import Crc32
from uploader.errors import ErrorKind, UploadError
from uploader.pieces import Pieces


class StreamError(Exception):
    """The hub broke the stream's rules (gap, overlap, beyond the file, after the end)."""


class BufferTooSmall(StreamError):
    """The uploader wants a chunk larger than this task can ever be granted."""


class StreamSource:
    """Bytes ``[start, size)`` of one file, arriving in order from the hub."""

    rewindable = False  # a one-pass stream: an expired resume session cannot restart at 0

    def __init__(
        self,
        *,
        size: int,
        start: int,
        budget: CreditBudget,
        key: str,
        on_space: Callable[[], None] = lambda: None,
        crc32: bool = False,
    ) -> None:
        if not 0 <= start <= size:
            raise ValueError(f"start {start} outside 0..{size}")
        self.size = size
        self.start = start
        self._budget = budget
        self._key = key
        self._on_space = on_space
        self._frames: deque[memoryview] = deque()
        self._pos = start  # first byte not yet handed out or discarded
        self._end = start  # next byte expected from the hub
        self._discard_until = start  # bytes below this are dropped on arrival
        self._skips: list[tuple[int, int]] = []  # released-but-unread ranges ahead of _pos
        self._handed: dict[int, int] = {}  # offset -> length held by the uploader
        # The checksum is fed as bytes leave the queue (read or discarded), in stream
        # order. MD5 of a read is computed in a worker thread (hashlib drops the GIL), so
        # the event loop keeps moving frames meanwhile; CRC32 is cheap enough (several
        # GB/s) to run inline. _to_hash holds what left the queue but is not hashed yet.
        self.crc32_mode = crc32
        self._digest: Any = Crc32() if crc32 else hashlib.md5()
        self._to_hash: deque[bytes | memoryview] = deque()
        self._hashing = False
        self._hashed = start  # offset just past the last byte fed to the checksum
        self._check_from: int | None = None  # restart the checksum here (see restart_check)
        self._hub_md5: str | None = None
        self._hub_crc32: int | None = None
        self._failure: BaseException | None = None
        self._changed = anyio.Event()

    # -- link side ---------------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Offset just past the last byte received."""
        return self._end

    @property
    def ended(self) -> bool:
        return self._hub_md5 is not None

    def _fresh_digest(self) -> Any:
        return Crc32() if self.crc32_mode else hashlib.md5()

    def _digest_so_far(self) -> Any:
        if not self._hashing:
            self._hash_pending()
        digest, at, check_from = self._digest.copy(), self._hashed, self._check_from
        for frame in self._frames:  # still queued: received but not yet read
            if check_from is not None and at >= check_from:
                digest, check_from = self._fresh_digest(), None
            digest.update(frame)
            at += len(frame)
        if check_from is not None and at >= check_from:
            digest = self._fresh_digest()
        return digest

    def restart_check(self) -> int:
        """The attempt goes on over a new stream, from the first byte not received.

        That stream's ``EndOfData`` covers only the bytes it sends (the hub cannot
        vouch for what an earlier stream delivered; the same rule as an attempt that
        resumes from a committed part), so from here on the checksum (and ``Result``'s)
        covers bytes from this offset on. Returns the offset the hub must resume at.
        """
        if self._hub_md5 is not None:
            raise StreamError("the stream already ended: nothing to resume")
        self._check_from = self._end
        return self._end

    def md5(self) -> str:
        """MD5 of every byte received so far (what Result reports); "" in CRC32 mode."""
        return "" if self.crc32_mode else self._digest_so_far().hexdigest()

    def crc32(self) -> int | None:
        """CRC32 of every byte received so far, in CRC32 mode (else None)."""
        return self._digest_so_far().value if self.crc32_mode else None

    def feed(self, offset: int, data: bytes) -> None:
        """One ``Chunk``; raises :class:`StreamError` or ``CreditError`` on a violation."""
        if self._hub_md5 is not None:
            raise StreamError("chunk after EndOfData")
        if offset != self._end:
            raise StreamError(f"chunk at offset {offset}, expected {self._end}")
        n = len(data)
        if offset + n > self.size:
            raise StreamError(f"chunk ends at {offset + n}, beyond the file size {self.size}")
        if n == 0:
            return
        self._budget.on_received(self._key, n)  # raises if beyond credit
        self._end += n
        self._frames.append(memoryview(data))
        self._discard()
        if self._budget.in_flight(self._key) == 0:
            # The pipe just ran dry: let the link grant whatever room there is now
            # instead of waiting for the next release.
            self._on_space()
        self._wake()

    def end_of_data(self, md5: str, crc32: int | None = None) -> None:
        """``EndOfData``: the hub sent its last byte; ``md5``/``crc32`` cover this
        attempt's bytes (``crc32`` is what counts in CRC32 mode)."""
        if self._hub_md5 is not None:
            raise StreamError("second EndOfData")
        if self._end != self.size:
            raise StreamError(f"EndOfData at {self._end} but the file has {self.size} bytes")
        self._hub_md5 = (md5 or "").lower()
        self._hub_crc32 = crc32
        self._wake()

    def verify(self) -> None:
        """Raise ``UploadError(FILE)`` if the hub's checksum differs from the bytes received."""
        if self._hub_md5 is None:
            raise StreamError("no EndOfData yet")
        if self.crc32_mode:
            got = self.crc32()
            if self._hub_crc32 is None or self._hub_crc32 != got:
                raise UploadError(
                    ErrorKind.FILE,
                    f"crc32 mismatch: hub streamed {_hex(self._hub_crc32)}, agent received "
                    f"{_hex(got)}",
                )
        elif self._hub_md5 != self.md5():
            raise UploadError(
                ErrorKind.FILE,
                f"md5 mismatch: hub streamed {self._hub_md5}, agent received {self.md5()}",
            )

    def fail(self, exc: BaseException) -> None:
        """Wake a waiting reader with ``exc`` (cancel, lost stream, protocol violation)."""
        if self._failure is None:
            self._failure = exc
        self._wake()

    async def wait_end(self) -> None:
        """Until ``EndOfData`` arrives (bytes after the uploader finished are discarded).

        Called once the uploader is done: whatever it still held (a chunk whose PUT it
        abandoned) is released too, or the credit it pins could keep the rest of the
        stream, and so ``EndOfData``, from ever arriving.
        """
        leftover = sum(self._handed.values())
        self._handed.clear()
        if leftover:
            self._budget_release(leftover)
            self._on_space()
        self._discard_until = max(self._discard_until, self.size)
        self._discard()
        while self._hub_md5 is None:
            self._raise_failure()
            await self._changed.wait()

    # -- uploader side (ByteSource) ----------------------------------------------------------

    async def read(self, offset: int, length: int) -> Pieces:
        if offset < self._pos:
            raise StreamError(f"read at {offset} but bytes up to {self._pos} are gone")
        self._raise_failure()
        want_end = min(offset + length, self.size)
        if want_end <= offset:
            return b""
        if want_end - offset > self._budget.window(self._key) and not (
            self._budget.raise_min_window(self._key, want_end - offset)
        ):
            raise BufferTooSmall(
                f"chunk of {want_end - offset} bytes does not fit the agent's buffer budget"
            )
        # Skip forward: whatever lies before `offset` is not wanted.
        self._discard_until = max(self._discard_until, offset)
        self._discard()
        # The chunk is the frames themselves (views into what gRPC received), taken off
        # the queue as they arrive: no copy, and no moment where a chunk exists twice.
        length = want_end - offset
        views: list[memoryview] = []
        filled = 0
        while True:
            self._raise_failure()
            if self._pos == offset + filled:
                filled = self._take(views, filled, want_end)
            if filled == length and (want_end < self.size or self._hub_md5 is not None):
                break
            await self._changed.wait()
        data = Pieces(views)
        self._handed[offset] = len(data)
        self._to_hash.extend(views)
        if self.crc32_mode:
            self._hash_pending()
        else:
            self._hashing = True
            try:
                await anyio.to_thread.run_sync(self._hash_pending)
            finally:
                self._hashing = False
                self._hash_pending()  # whatever was discarded meanwhile
        if want_end == self.size:
            self.verify()  # before the last bytes go out, so nothing corrupt is completed
        return data

    def release(self, offset: int, length: int) -> None:
        held = self._handed.pop(offset, None)
        if held is not None:
            self._budget_release(held)
            self._on_space()
            return
        if offset + length <= self._pos or length <= 0:
            return  # already gone
        # A part the uploader skips (done in an earlier attempt): drop its bytes on arrival.
        self._skips.append((offset, offset + length))
        self._skips.sort()
        self._discard()

    # -- internals ---------------------------------------------------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _budget_release(self, n: int) -> None:
        if n and self._key in self._budget:
            self._budget.on_released(self._key, n)

    def _discard(self) -> None:
        """Drop queued bytes below ``_discard_until`` (and skipped ranges at the front)."""
        freed = 0
        while True:
            while self._skips and self._skips[0][0] <= max(self._pos, self._discard_until):
                self._discard_until = max(self._discard_until, self._skips.pop(0)[1])
            limit = min(self._discard_until, self._end)
            if self._pos >= limit:
                break
            frame = self._frames[0]
            n = min(len(frame), limit - self._pos)
            if n == len(frame):
                self._to_hash.append(self._frames.popleft())
            else:
                self._to_hash.append(frame[:n])
                self._frames[0] = frame[n:]
            self._pos += n
            freed += n
        if self._pos < self._discard_until and not self._frames:
            # Nothing queued: bytes up to _discard_until are dropped when they arrive.
            pass
        if not self._hashing:
            self._hash_pending()
        if freed:
            self._budget_release(freed)
            self._on_space()

    def _hash_pending(self) -> None:
        # No queued piece straddles _check_from: frames of the earlier stream end at or
        # before it, those of the next begin there, and pieces only subdivide frames.
        while self._to_hash:
            piece = self._to_hash.popleft()
            self._restart_if_due()
            self._digest.update(piece)
            self._hashed += len(piece)
        self._restart_if_due()

    def _restart_if_due(self) -> None:
        if self._check_from is not None and self._hashed >= self._check_from:
            self._digest, self._check_from = self._fresh_digest(), None

    def _take(self, views: list[memoryview], filled: int, end: int) -> int:
        """Move queued frames (or the front of one) up to ``end`` into ``views``;
        returns the new fill level."""
        while self._frames and self._pos < end:
            frame = self._frames[0]
            n = min(len(frame), end - self._pos)
            if n == len(frame):
                self._frames.popleft()
            else:
                self._frames[0] = frame[n:]
                frame = frame[:n]
            views.append(frame)
            filled += n
            self._pos += n
        return filled

    @property
    def held_by_uploader(self) -> int:
        """Bytes handed to the uploader and not yet released (a PUT in flight)."""
        return sum(self._handed.values())

    @property
    def held_bytes(self) -> int:
        """Bytes queued here or held by the uploader (for status replies)."""
        return (self._end - self._pos) + sum(self._handed.values())


def _hex(crc: int | None) -> str:
    return "none" if crc is None else f"{crc:08x}"
