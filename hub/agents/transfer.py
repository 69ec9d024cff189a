"""Streaming task files to one agent over its one stream, strictly within credit.

One :class:`Transfer` per agent session. Each accepted task gets a
:class:`TaskStream`: the file is read sequentially from the agent's resume
offset in large blocks in a worker thread (prefetching a couple of blocks so
disk and network overlap) and cut into ``Chunk`` frames of at most 1 MiB that
never exceed the credit the agent granted (:class:`protocol.credit.CreditLedger`).
Reads and sends are both strictly sequential, so whatever the read thread feeds
its checksums is exactly the bytes streamed this attempt.

Two checksums (:mod:`protocol.integrity`), both taken in the read thread:

* the stream check, which the agent compares against ``EndOfData``: CRC32 for
  agents that announced ``crc32_integrity``; older agents keep MD5, hashed in a
  thread of its own (it runs at ~0.7 GB/s a core and would hold the reads back);
* the part digest (XXH3-128), on an attempt that streams the whole file while
  the part's digest is not known yet: the first attempt learns it for free,
  with no second pass over the file.

When such an attempt starts and the file still has the stat identity (device,
inode, size, mtime, ctime) it had when its digest was taken, the bytes read are
that file and the known digest stands; any write to the file changes its ctime,
and the identity is checked at the first and at the last read, so a change
before or during streaming is caught (the first check falls back to hashing,
the last marks the attempt's bytes as untrustworthy).
``next_message()`` serves tasks round-robin, one frame each, so a task waiting for credit or disk never stalls
another. After the last byte comes ``EndOfData(md5, crc32)``.

The session's writer owns the stream: it asks ``next_message()`` for the next
frame and, when there is none, waits for ``notify`` (or on ``wake``). Nothing
here touches gRPC. A session that streams nothing (most of a large fleet, most
of the time) holds no more than this object's few empty fields.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from hub.core.file_identity import fingerprint_of
from protocol import mesh_pb2 as pb
from protocol.chunks import encode_chunk
from protocol.credit import MAX_FRAME, CreditLedger
from protocol.integrity import Crc32, legacy_stream_check, new_part_digest

log = logging.getLogger("bupmesh.hub.transfer")

BLOCK_SIZE = 4 << 20  # one disk read; cut into 1 MiB frames
PREFETCH_BLOCKS = 3  # per task: read (and hash) ahead while frames go out


@dataclass(eq=False)
class TaskStream:
    task_id: str
    attempt: int
    path: str
    size: int
    start: int
    offset: int = 0  # next byte to send
    read_offset: int = 0  # next byte to read
    ledger: CreditLedger = field(default_factory=CreditLedger)
    blocks: deque[bytearray] = field(default_factory=deque)
    spare: list[bytearray] = field(default_factory=list)  # sent blocks, reused for reads
    # A block is reused only once it is both sent and MD5-hashed: id -> uses left
    pins: dict[int, int] = field(default_factory=dict)
    to_md5: deque[bytearray] = field(default_factory=deque)  # read, not yet MD5-hashed
    md5_running: bool = False
    head: int = 0  # bytes of blocks[0] already sent
    reading: bool = False
    crc: Crc32 | None = None  # the stream check, for agents that announced crc32_integrity
    hasher: Any = None  # the stream check (MD5) for agents that did not
    digester: Any = None  # the part digest, taken while a whole-file attempt streams
    md5: str | None = None  # set once EndOfData is queued ("" with CRC32)
    digest: str = ""  # the part digest the streamed bytes have ("" if not taken)
    known_digest: str = ""  # the part's digest, standing while the fingerprint holds
    fingerprint: str = ""
    source_changed: bool = False  # the file changed under us: its bytes prove nothing
    # where the time went (for the log line at EndOfData): waiting for credit / for disk
    started: float = field(default_factory=time.monotonic)
    credit_wait: float = 0.0
    disk_wait: float = 0.0
    _stall: tuple[str, float] | None = None
    done: bool = False  # EndOfData sent
    stopped: bool = False

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.blocks) - self.head

    @property
    def sent_bytes(self) -> int:
        return self.offset - self.start

    def agent_got_it(self, md5: str, crc32: int | None, part_digest: str) -> bool:
        """Does a ``Result``'s checksum match what this attempt streamed (all of it)?

        False too when the file changed under the attempt: then even matching bytes
        are not the part's bytes.
        """
        if not self.done or self.source_changed:
            return False
        if self.start == 0 and part_digest and self.digest and self.digest != part_digest:
            return False  # the file changed since the part's digest was taken
        if self.crc is not None:
            return crc32 is not None and crc32 == self.crc.value
        return bool(self.md5) and bool(md5) and hmac.compare_digest(self.md5, md5.lower())


class Transfer:
    """Round-robin frame source for one agent stream.

    ``spawn(fn)`` starts a background coroutine (for as long as the session lives);
    ``on_error(task_id, attempt, message)`` reports an unreadable source.
    """

    __slots__ = ("_spawn", "_on_error", "max_frame", "block_size", "tasks", "_order", "_wake",
                 "_notify", "bytes_sent", "on_credit_stall")

    def __init__(
        self,
        spawn: Callable[[Callable[[], Any]], None],
        on_error: Callable[[str, int, str], None],
        *,
        notify: Callable[[], None] | None = None,
        max_frame: int = MAX_FRAME,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        if max_frame > MAX_FRAME:
            raise ValueError("frames must stay <= 1 MiB")
        self._spawn = spawn
        self._on_error = on_error
        self.max_frame = max_frame
        self.block_size = max(block_size, max_frame)
        self.tasks: dict[str, TaskStream] = {}
        self._order: deque[str] | None = None  # made by the first start()
        self._wake: anyio.Event | None = None  # made when someone waits on it
        self._notify = notify  # called whenever a frame may have become ready
        self.bytes_sent = 0
        self.on_credit_stall: Callable[[], Any] | None = None  # hub.metrics counts stalls

    # -- events from the service ----------------------------------------------------------

    def start(self, task_id: str, attempt: int, path: str, size: int, offset: int, *,
              known_digest: str = "", fingerprint: str = "", crc32: bool = False) -> None:
        """Stream ``[offset, size)`` of ``path``; ``crc32``: check it with CRC32, not MD5.

        ``known_digest``/``fingerprint``: the part's digest and the stat identity the
        file had when it was taken (either may be empty).
        """
        if not 0 <= offset <= size:
            raise ValueError(f"resume offset {offset} outside 0..{size}")
        self.stop(task_id)
        ts = TaskStream(task_id, attempt, path, size, start=offset, offset=offset,
                        read_offset=offset)
        if crc32:
            ts.crc = Crc32()
        else:
            ts.hasher = legacy_stream_check()
        if offset == 0 and size > 0:
            ts.fingerprint = fingerprint  # checked at the first and the last read
            if known_digest and fingerprint:
                ts.known_digest = known_digest
            else:
                ts.digester = new_part_digest()
        self.tasks[task_id] = ts
        if self._order is None:
            self._order = deque()
        self._order.append(task_id)
        self._fill(ts)
        self._poke()

    def credit(self, task_id: str, attempt: int, n: int) -> bool:
        """Record a grant; False if the task/attempt is not streaming here (ignored)."""
        ts = self.tasks.get(task_id)
        if ts is None or ts.attempt != attempt or ts.stopped:
            return False
        ts.ledger.grant(n)
        self._unstall(ts)
        self._poke()
        return True

    def stop(self, task_id: str) -> TaskStream | None:
        """Stop streaming ``task_id`` (result, cancel, lease lost); buffered bytes are dropped."""
        ts = self.tasks.pop(task_id, None)
        if ts is not None:
            ts.stopped = True
            ts.blocks.clear()
            ts.spare.clear()
            ts.to_md5.clear()
            ts.pins.clear()
            try:
                self._order.remove(task_id)  # type: ignore[union-attr]  # made with the task
            except ValueError:
                pass
        return ts

    def stop_all(self) -> None:
        for task_id in list(self.tasks):
            self.stop(task_id)

    def get(self, task_id: str) -> TaskStream | None:
        return self.tasks.get(task_id)

    # -- the writer's side ----------------------------------------------------------------

    def next_message(self) -> pb.HubMessage | bytes | None:
        """The next frame to write, or None (wait on ``wake``).

        File frames come pre-serialized (``bytes`` of a ``HubMessage``): see
        :func:`encode_chunk`; the link's serializer passes bytes through.
        """
        order = self._order
        if not order:
            return None
        for _ in range(len(order)):
            task_id = order[0]
            order.rotate(-1)  # whoever is served, the next call starts after it
            ts = self.tasks[task_id]
            msg = self._frame(ts)
            if msg is not None:
                return msg
        return None

    @property
    def wake(self) -> anyio.Event:
        """Set when a frame may have become ready (for a writer that waits on an event)."""
        if self._wake is None:
            self._wake = anyio.Event()
        return self._wake

    def reset_wake(self) -> anyio.Event:
        if self._wake is None or self._wake.is_set():
            self._wake = anyio.Event()
        return self._wake

    # -- internals ------------------------------------------------------------------------

    def _frame(self, ts: TaskStream) -> pb.HubMessage | bytes | None:
        if ts.done or ts.stopped:
            return None
        if ts.offset >= ts.size:
            if ts.reading or ts.to_md5 or ts.md5_running:
                return None  # the checksums are final only once the last block is in them
            ts.md5 = ts.hasher.hexdigest() if ts.hasher is not None else ""
            ts.digest = ts.digester.hexdigest() if ts.digester is not None else ts.known_digest
            ts.spare.clear()
            ts.done = True
            took = time.monotonic() - ts.started
            log.info("task %s attempt %d: streamed %d bytes in %.2fs (%.0f MB/s); waited "
                     "%.2fs for credit, %.2fs for disk", ts.task_id, ts.attempt, ts.sent_bytes,
                     took, ts.sent_bytes / max(took, 1e-6) / 1e6, ts.credit_wait, ts.disk_wait)
            eod = pb.EndOfData(task_id=ts.task_id, attempt=ts.attempt, md5=ts.md5)
            if ts.crc is not None:
                eod.crc32 = ts.crc.value
            return pb.HubMessage(end_of_data=eod)
        if not ts.blocks:
            if ts.ledger.available > 0:
                self._stall_on(ts, "disk")
            return None
        n = ts.ledger.sendable(self.max_frame)
        if n <= 0:
            if ts._stall is None and self.on_credit_stall is not None:
                self.on_credit_stall()
            self._stall_on(ts, "credit")
            return None
        block = ts.blocks[0]
        n = min(n, len(block) - ts.head)
        ts.ledger.on_sent(n)  # raises before anything hits the wire if beyond credit
        msg = encode_chunk(ts.task_id, ts.attempt, ts.offset,
                           memoryview(block)[ts.head : ts.head + n])
        ts.offset += n
        ts.head += n
        self.bytes_sent += n
        if ts.head >= len(block):
            self._unpin(ts, ts.blocks.popleft())  # encode_chunk copied it
            ts.head = 0
            self._fill(ts)
        return msg

    def _fill(self, ts: TaskStream) -> None:
        if (
            ts.reading
            or ts.stopped
            or ts.read_offset >= ts.size
            or ts.buffered >= PREFETCH_BLOCKS * self.block_size
            or len(ts.to_md5) >= PREFETCH_BLOCKS  # MD5 fell behind: do not outrun it
        ):
            return
        ts.reading = True
        self._spawn(lambda: self._read(ts))

    async def _read(self, ts: TaskStream) -> None:
        length = min(self.block_size, ts.size - ts.read_offset)
        buffer = ts.spare.pop() if ts.spare else bytearray(self.block_size)
        try:
            data = await anyio.to_thread.run_sync(_read_block, ts, ts.read_offset, length,
                                                  buffer)
        except OSError as exc:
            ts.reading = False
            if not ts.stopped:
                self.stop(ts.task_id)
                self._on_error(ts.task_id, ts.attempt, f"cannot read source: {exc.strerror or exc}")
            return
        ts.reading = False
        if ts.stopped:
            return
        if len(data) != length:
            self.stop(ts.task_id)
            self._on_error(ts.task_id, ts.attempt, "source file shrank while streaming")
            return
        ts.blocks.append(data)
        ts.pins[id(data)] = 1
        if ts.hasher is not None:
            ts.pins[id(data)] = 2
            ts.to_md5.append(data)
            if not ts.md5_running:
                ts.md5_running = True
                self._spawn(lambda: self._hash_md5(ts))
        ts.read_offset += length
        self._unstall(ts)
        self._fill(ts)
        self._poke()

    async def _hash_md5(self, ts: TaskStream) -> None:
        """Feed read blocks to the attempt's MD5 (an agent without CRC32) in a worker
        thread of its own, in order.

        MD5 runs at ~0.7 GB/s a core, slower than everything else on the hub's path;
        hashed in the read thread it held back the reads (and so the stream) whenever
        the machine was busy. Beside it, it uses another core and only EndOfData waits
        for it. Blocks stay pinned (not reused) until hashed.
        """
        try:
            while ts.to_md5 and not ts.stopped:
                block = ts.to_md5[0]
                await anyio.to_thread.run_sync(ts.hasher.update, block)
                if ts.stopped:
                    return
                ts.to_md5.popleft()
                self._unpin(ts, block)
                self._fill(ts)
        finally:
            ts.md5_running = False
            self._poke()

    @staticmethod
    def _unpin(ts: TaskStream, block: bytearray) -> None:
        left = ts.pins.get(id(block), 1) - 1
        if left > 0:
            ts.pins[id(block)] = left
        else:
            ts.pins.pop(id(block), None)
            ts.spare.append(block)

    @staticmethod
    def _stall_on(ts: TaskStream, reason: str) -> None:
        if ts._stall is None:
            ts._stall = (reason, time.monotonic())

    @staticmethod
    def _unstall(ts: TaskStream) -> None:
        if ts._stall is not None:
            reason, since = ts._stall
            waited = time.monotonic() - since
            if reason == "credit":
                ts.credit_wait += waited
            else:
                ts.disk_wait += waited
            ts._stall = None

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._notify is not None:
            self._notify()


def _read_block(ts: TaskStream, offset: int, length: int, buffer: bytearray) -> bytearray:
    """Read one block into ``buffer`` (a reused one: no fresh pages per block) and
    account it in the attempt's CRC32 and part digest, off the event loop; returns the
    bytes read (``buffer`` itself, trimmed to them)."""
    if len(buffer) != length:
        del buffer[length:]  # the last block of a file is shorter
        if len(buffer) < length:
            buffer.extend(bytes(length - len(buffer)))
    view = memoryview(buffer)
    got = 0
    # The part's path was stored with every symlink resolved: one there now was put in
    # its place afterwards (to point the stream at another file) and is not followed.
    fd = os.open(ts.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if ts.fingerprint and offset == 0 and fingerprint_of(os.fstat(fd)) != ts.fingerprint:
            if ts.digester is None:
                ts.digester = new_part_digest()  # changed since the digest: take it anew
            else:
                ts.source_changed = True  # changed since the part was created
        while got < length:
            n = os.preadv(fd, [view[got:]], offset + got)
            if n == 0:
                break
            got += n
        if ts.fingerprint and offset + length >= ts.size:
            if fingerprint_of(os.fstat(fd)) != ts.fingerprint:
                ts.source_changed = True
    finally:
        view.release()
        os.close(fd)
    if got < length:
        del buffer[got:]
    if ts.crc is not None:  # MD5 (ts.hasher) has a thread of its own: Transfer._hash_md5
        ts.crc.update(buffer)
    if ts.digester is not None:
        ts.digester.update(buffer)
    return buffer
