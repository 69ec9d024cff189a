"""Upos objects as the simulator keeps them: tickets, multipart uploads, their assembly.

File bytes are never stored: each part's MD5 is computed as it arrives and the
file's MD5 is fed in part order, so a 1 GiB upload costs the simulator a few
chunks of memory, not a GiB. A part that arrives before the parts below it is
held in memory until the in-order prefix reaches it.

Nothing here speaks HTTP. Hashing runs in a worker thread (through anyio, so
on either event loop) because a 10 MiB chunk would otherwise stall every other
request the simulator is serving.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread


class PartError(Exception):
    """The PUT's query does not fit the upload (HTTP 400)."""


@dataclass
class Ticket:
    """What one preupload handed out: the object path, its auth, biz_id, sizes."""

    key: str  # object key without the leading slash, e.g. n240728ad1p51if4g3ke4s3o95sz.mp4
    auth: str
    biz_id: int
    name: str
    size: int | None
    chunk_size: int
    mid: int
    ip: str
    line: str
    created_at: float

    @property
    def filename(self) -> str:
        return self.key.rsplit(".", 1)[0]


@dataclass
class PartPrint:
    """How one hashed part is recognised when it is sent again.

    `before` is the file MD5 state just before the part, `after` the digest
    just after it. A re-sent part carries the same bytes exactly when feeding
    them into a copy of `before` gives `after` again: the same guarantee as
    keeping each part's own MD5, without hashing every byte twice.
    """

    before: Any
    after: bytes


@dataclass
class Upload:
    """One multipart upload (one upload_id) of a ticket's object."""

    upload_id: str
    ticket: Ticket
    size: int | None
    chunk_size: int
    created_at: float
    received: set[int] = field(default_factory=set)  # parts that arrived at least once
    prints: dict[int, PartPrint] = field(default_factory=dict)  # parts hashed into the file
    held: dict[int, list[bytes]] = field(default_factory=dict)
    held_bytes: int = 0
    next_part: int = 1  # every part below this one is in file_md5 (or being fed)
    file_md5: Any = field(default_factory=hashlib.md5)
    corrupt: str | None = None
    completed: dict[str, Any] | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def chunks(self) -> int | None:
        if self.size is None:
            return None
        return max(1, math.ceil(self.size / self.chunk_size))

    def public(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "filename": self.ticket.filename,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "parts_received": sorted(self.received),
            "next_part": self.next_part,
            "held_parts": sorted(self.held),
            "corrupt": self.corrupt,
            "completed": self.completed is not None,
            "source_ip": self.ticket.ip,
            "mid": self.ticket.mid,
        }

    def check_part(self, query: dict[str, str], content_length: int | None) -> int:
        """Validate a chunk PUT's query against the upload; returns the part size.

        The first PUT fixes the file size when preupload and init left it open.
        """
        values: dict[str, int] = {}
        for name in ("partNumber", "chunk", "chunks", "size", "start", "end", "total"):
            raw = query.get(name)
            if raw is None or raw == "":
                raise PartError(f"missing {name}")
            try:
                values[name] = int(raw)
            except ValueError:
                raise PartError(f"{name} is not an integer: {raw!r}") from None
        total = values["total"]
        if total < 0:
            raise PartError("total is negative")
        if self.size is None:
            self.size = total
        if total != self.size:
            raise PartError(f"total {total} != file size {self.size}")
        chunks = self.chunks
        assert chunks is not None
        part = values["partNumber"]
        if not 1 <= part <= chunks:
            raise PartError(f"partNumber {part} outside 1..{chunks}")
        if values["chunk"] != part - 1:
            raise PartError(f"chunk {values['chunk']} != partNumber - 1 ({part - 1})")
        if values["chunks"] != chunks:
            raise PartError(f"chunks {values['chunks']} != {chunks}")
        start = (part - 1) * self.chunk_size
        end = min(start + self.chunk_size, self.size)
        if values["start"] != start:
            raise PartError(f"start {values['start']} != {start}")
        if values["end"] != end:
            raise PartError(f"end {values['end']} != {end}")
        if values["size"] != end - start:
            raise PartError(f"size {values['size']} != end - start ({end - start})")
        if content_length is not None and content_length != end - start:
            raise PartError(f"Content-Length {content_length} != size {end - start}")
        return end - start

    async def accept_part(self, part: int, chunks: list[bytes]) -> None:
        """Record one received part; feed the file MD5 as far as parts allow."""
        if part < self.next_part:
            # Already hashed into the file (or being hashed): a repeat must
            # carry the same bytes, else the object cannot be assembled.
            async with self.lock:
                known = self.prints[part]
                candidate = known.before.copy()
                await anyio.to_thread.run_sync(_feed, candidate, chunks)
                if candidate.digest() != known.after:
                    self.corrupt = f"part {part} sent again with different bytes"
            return
        previous = self.held.pop(part, None)  # a held part may still be replaced
        if previous is not None:
            self.held_bytes -= sum(map(len, previous))
        self.received.add(part)
        self.held[part] = chunks
        self.held_bytes += sum(map(len, chunks))
        await self.feed_ready()

    async def feed_ready(self) -> None:
        """Hash held parts into the file MD5, in order, as far as the prefix reaches."""
        async with self.lock:
            while self.next_part in self.held:
                part = self.next_part
                data = self.held.pop(part)
                self.held_bytes -= sum(map(len, data))
                self.next_part += 1
                before = self.file_md5.copy()
                await anyio.to_thread.run_sync(_feed, self.file_md5, data)
                self.prints[part] = PartPrint(before, self.file_md5.digest())


def _feed(md5: Any, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        md5.update(chunk)
