"""The two checksums of the link: the stream check and the part digest.

**Stream check.** Both ends keep a running checksum over the bytes of one
streamed attempt and compare it at ``EndOfData`` / ``Result``. MD5 was the
check at first, but at hundreds of MB/s it cost either end about a CPU-second
per GiB; CRC32 detects what a stream check is for (bytes lost, reordered or
damaged between hub and agent, not an adversary: the link is authenticated and
may use TLS). Agents that announce ``Capabilities.crc32_integrity`` get
``Offer.crc32_integrity`` and the attempt is checked with :class:`Crc32`; older
agents keep MD5 (:func:`legacy_stream_check`). The CRC32 is zlib's polynomial
(the value ``zlib.crc32`` gives), computed by zlib-ng, whose folding with
carry-less multiplication runs at well over 10 GB/s a core where the system
zlib manages 1-2.

**Part digest.** A part (one file) is identified by the XXH3-128 of its bytes
(:func:`new_part_digest`, hex in ``Offer.file_digest`` and the parts table).
Nothing outside the mesh asks for a hash of the file (Bilibili's upload takes
none), so the digest only has to tell one version of a file from another: a
local/hybrid agent proves with it that its copy is the hub's, and the hub
learns it from the first whole-file stream to notice a file that changed. XXH3
runs at tens of GB/s a core, so taking it costs a few hundredths of a CPU-second
per GiB where MD5 cost 1.5-3.

Every object here has ``update()`` and ``copy()``. The CRC32 and MD5 release the
GIL on large buffers, so updating them from a worker thread uses another core;
XXH3 is cheap enough that it does not matter where it runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import xxhash
from zlib_ng import zlib_ng

DIGEST_NAME = "xxh3-128"
"""What :func:`new_part_digest` computes, for logs and docs."""


class Crc32:
    """CRC32 (zlib's) fed incrementally, with the ``update``/``copy`` of a hashlib object."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = zlib_ng.crc32(data, self.value)

    def copy(self) -> Crc32:
        return Crc32(self.value)


def legacy_stream_check() -> Any:
    """The stream check of agents without ``crc32_integrity``: MD5 of the attempt's bytes."""
    return hashlib.md5()


def new_part_digest() -> Any:
    """A fresh XXH3-128 hasher; ``hexdigest()`` is the part digest (32 hex digits)."""
    return xxhash.xxh3_128()
