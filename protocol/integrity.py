"""The running checksum both ends keep over the bytes of one streamed attempt.

MD5 was the stream check at first, but at hundreds of MB/s it cost the agent a
third of its CPU (about 0.7 GB/s per core); CRC32 runs at several GB/s and
detects what a stream check is for (bytes lost, reordered or damaged between
hub and agent, not an adversary: the link is authenticated and may use TLS).
Agents that announce ``Capabilities.crc32_integrity`` get ``Offer.crc32_integrity``
and the attempt is checked with :class:`Crc32`; older agents keep MD5. Either
object has ``update()``; both ``hashlib`` and ``zlib`` release the GIL on large
buffers, so updating from a worker thread really uses another core.
"""

from __future__ import annotations

import zlib


class Crc32:
    """``zlib.crc32`` fed incrementally, with the ``update``/``copy`` of a hashlib object."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def copy(self) -> Crc32:
        return Crc32(self.value)
