"""Local reads: upload a part from disk instead of the hub's stream.

An agent with ``storage_type: local`` or ``hybrid`` runs on the hub's host or
sees the hub's files on a shared mount. It lists the directories it can read
(``agent.local_roots``, paths as the hub names them) and announces them in
``Capabilities.local_paths``, so the locality strategy can prefer it. That is
only a hint: before it answers an ``Offer`` with ``Accept(local_read=true)``
the agent checks its copy itself, because the hub then streams nothing and the
``Result`` must carry the part's digest (XXH3-128, :mod:`protocol.integrity`):

* the offered path lies under one of its roots (after normalising ``..``, and
  the resolved file too, so a symlink cannot lead out of a root);
* the file there has the offered size and the offered digest (a local read is
  only ever made against a known digest: the first attempt of a part whose
  digest the hub has not taken yet is streamed). A part an older hub hashed
  comes with its MD5 instead, and the copy is checked by MD5.

Reading a 50 GB file takes longer than the hub waits for an answer to its
offer, so the check is bounded: if the hash is not done in time the attempt is
streamed, the hash finishes in its thread and is cached by the file's identity
(path, size, mtime, inode), so the next offer of that part reads locally.
Any other mismatch also means "stream", never a failed task: the hub's copy
is the truth.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from protocol.integrity import new_part_digest
from uploader.errors import ErrorKind, UploadError
from uploader.source import FileSource

log = logging.getLogger("bupmesh.agent")

HASH_BLOCK = 4 << 20
CHECK_LIMIT = 20.0  # the hub gives an Offer 30 s to be answered
CACHE_ENTRIES = 256


def normalise_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """Absolute, normalised, without trailing slashes, duplicates dropped, order kept."""
    out: list[str] = []
    for root in roots:
        norm = os.path.normpath(os.path.abspath(os.path.expanduser(str(root))))
        if norm not in out:
            out.append(norm)
    return tuple(out)


def under_roots(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` (absolute, as the hub names it) lies under one of ``roots``."""
    if not path or not os.path.isabs(path):
        return False
    norm = os.path.normpath(path)
    for root in roots:
        if root == "/" or norm == root or norm.startswith(root + os.sep):
            return True
    return False


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one version of a file without reading it."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> Fingerprint:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


class DigestCache:
    """Digest per file version and kind (``"digest"`` or ``"md5"``), shared by the agent's
    tasks (thread-safe, bounded LRU)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._data: OrderedDict[tuple[Fingerprint, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fp: Fingerprint, kind: str = "digest") -> str | None:
        with self._lock:
            value = self._data.get((fp, kind))
            if value is not None:
                self._data.move_to_end((fp, kind))
            return value

    def put(self, fp: Fingerprint, value: str, kind: str = "digest") -> None:
        key = (fp, kind)
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._entries:
                self._data.popitem(last=False)


class LocalSource:
    """A :class:`uploader.source.FileSource` that knows it was checked, for the runner.

    Offers what the runner asks of a :class:`~spoke.source.StreamSource` at the end
    of an attempt: ``wait_end`` (nothing to wait for), ``verify`` (the file is still
    the version whose digest matched: a file rewritten during the upload must not be
    completed), and the value that matched, which the ``Result`` must carry:
    ``digest`` (``Result.file_digest``) or, against an older hub, ``md5``.
    """

    rewindable = True

    def __init__(self, path: str, fingerprint: Fingerprint, *, digest: str = "",
                 md5: str = "") -> None:
        self._file = FileSource(path)
        self.path = path
        self.size = self._file.size
        self.fingerprint = fingerprint
        self.digest = digest
        self._md5 = md5

    async def read(self, offset: int, length: int) -> bytes:
        return await self._file.read(offset, length)

    def release(self, offset: int, length: int) -> None:
        """Nothing to free: the bytes stay on disk."""

    async def wait_end(self) -> None:
        return None

    def verify(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise UploadError(ErrorKind.FILE, f"local copy gone during the upload: {exc}") from None
        if Fingerprint.of(self.fingerprint.path, st) != self.fingerprint:
            raise UploadError(ErrorKind.FILE, "local copy changed during the upload")

    def md5(self) -> str:
        return self._md5

    def close(self) -> None:
        self._file.close()

    @property
    def held_by_uploader(self) -> int:
        return 0

    @property
    def held_bytes(self) -> int:
        return 0


def _hash_file(path: str, fp: Fingerprint, cache: DigestCache, kind: str) -> str:
    digest = new_part_digest() if kind == "digest" else hashlib.md5()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    value = digest.hexdigest()
    try:
        if Fingerprint.of(fp.path, os.stat(path)) == fp:  # unchanged while we read it
            cache.put(fp, value, kind)
    except OSError:
        pass
    return value


def _inspect(path: str, size: int, roots: tuple[str, ...]) -> tuple[str, Fingerprint] | str:
    """The resolved path and identity of the local copy, or why it is not the part."""
    if not under_roots(path, roots):
        return "path not under a local root"
    real = os.path.realpath(path)
    if not under_roots(real, [os.path.realpath(r) for r in roots]):
        return "path resolves outside the local roots"
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"cannot stat the local copy: {exc.strerror or exc}"
    if not os.path.isfile(real):
        return "not a regular file"
    if st.st_size != size:
        return f"local copy has {st.st_size} bytes, the part {size}"
    return real, Fingerprint.of(real, st)


async def check_local(
    path: str,
    *,
    size: int,
    digest: str = "",
    md5: str = "",
    roots: Iterable[str],
    cache: DigestCache,
    limit: float = CHECK_LIMIT,
) -> LocalSource | str:
    """A :class:`LocalSource` for ``path`` if this agent's copy is the offered part,
    else the reason it is not (the caller streams instead).

    ``digest`` is the offered part digest; an older hub offers only ``md5``."""
    kind, want = ("digest", digest) if digest else ("md5", md5)
    if not want:
        return "no digest in the offer yet"
    found = await anyio.to_thread.run_sync(_inspect, path, size, tuple(roots))
    if isinstance(found, str):
        return found
    real, fp = found
    have = cache.get(fp, kind)
    if have is None:
        with anyio.move_on_after(limit):
            try:
                have = await anyio.to_thread.run_sync(
                    _hash_file, real, fp, cache, kind, abandon_on_cancel=True
                )
            except OSError as exc:
                return f"cannot read the local copy: {exc.strerror or exc}"
        if have is None:
            return f"hashing the local copy takes longer than {limit:g}s (cached for next time)"
    if have != want.lower():
        return f"local copy's {kind} differs from the part's"
    try:
        return LocalSource(real, fp, **{kind: have})
    except OSError as exc:
        return f"cannot open the local copy: {exc.strerror or exc}"
