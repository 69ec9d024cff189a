"""Deleting and moving recording files without ever losing one (blocking IO: worker thread).

Every step checks before it acts and none overwrites:

- :func:`check` compares a file with the identity it was uploaded with (size, mtime,
  stat fingerprint) right before anything is done to it; a difference is
  :class:`Changed` and the file is left alone.
- A delete is one ``unlink``: the file is there or it is not.
- A move within one filesystem is a hard link to the destination, then the unlink
  of the source. ``link`` fails when the destination exists (nothing is ever
  replaced) and is atomic; between the two steps both names hold the same bytes.
- Across filesystems (or where links are not supported) the file is copied to a
  temporary name beside the destination (created exclusively), flushed to disk
  with ``fsync``, checked unchanged at the source, linked to its final name (again
  never over another file) and only then is the source unlinked.

The service writes a journal row before the first step and after each phase
(``start`` -> ``copied`` -> ``placed``). :func:`recover` reads such a row after a
restart and finishes the action (the destination is complete and ours) or rolls
it back (removes our temporary file; the source was never touched). Either way
the file is in place or moved: never lost, never in two half copies.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from hub.core.file_identity import fingerprint_of
from hub.retention.policy import Identity

COPY_BLOCK = 4 << 20
DONE, ROLLED_BACK = "done", "rolled_back"
# Errors of os.link meaning "no hard link here" (another filesystem, or one without
# links): the move copies instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})


class Refused(Exception):
    """Nothing was done: the file or its destination is not as it must be."""


class Changed(Refused):
    """The file is not the one that was uploaded (size, mtime or identity differ)."""


class Taken(Refused):
    """The destination exists already; a move never replaces a file."""


def identity_of(path: str) -> Identity | None:
    """The file's identity now; None when it is not there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return Identity(size=st.st_size, mtime_ns=st.st_mtime_ns, fingerprint=fingerprint_of(st))


def check(path: str, expected: Identity) -> None:
    now = identity_of(path)
    if now is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", path)
    if now != expected:
        raise Changed(f"{path} changed since it was uploaded")


def delete(path: str, expected: Identity) -> None:
    check(path, expected)
    os.unlink(path)
    _fsync_dir(os.path.dirname(path))


def temporary_for(destination: str) -> str:
    d = Path(destination)
    return str(d.with_name(f".{d.name}.bupmesh-move"))


def prepare(destination: str) -> None:
    """The destination's folder exists and the destination does not."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if os.path.lexists(destination):
        raise Taken(f"{destination} exists already")


def link(source: str, destination: str, expected: Identity) -> bool:
    """Hard-link ``source`` to ``destination``; False where links cannot be made (another
    filesystem): then the move copies."""
    check(source, expected)
    try:
        os.link(source, destination)
    except FileExistsError:
        raise Taken(f"{destination} exists already") from None
    except OSError as exc:
        if exc.errno in _NO_LINK:
            return False
        raise
    _fsync_dir(os.path.dirname(destination))
    return True


def copy(source: str, temporary: str, expected: Identity) -> None:
    """Copy to ``temporary`` (made here, never reused), on disk when this returns, from a
    source that did not change while it was read."""
    check(source, expected)
    try:
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # a leftover of ours the journal no longer knows
        os.unlink(temporary)
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(source, "rb") as src, os.fdopen(out, "wb", closefd=False) as dst:
            shutil.copyfileobj(src, dst, COPY_BLOCK)
            dst.flush()
            os.fsync(out)
        if os.fstat(out).st_size != expected.size:
            raise Changed(f"{source}: copied {os.fstat(out).st_size} bytes, "
                          f"expected {expected.size}")
    except BaseException:
        os.close(out)
        _unlink_quietly(temporary)
        raise
    os.close(out)
    try:
        check(source, expected)  # unchanged while it was read
        st = os.stat(source)
        os.utime(temporary, ns=(st.st_atime_ns, st.st_mtime_ns))  # keep the recording's time
    except BaseException:
        _unlink_quietly(temporary)
        raise
    _fsync_dir(os.path.dirname(temporary))


def place(temporary: str, destination: str) -> None:
    """Give the complete copy its final name (never over another file)."""
    try:
        os.link(temporary, destination)
    except FileExistsError:
        _unlink_quietly(temporary)
        raise Taken(f"{destination} exists already") from None
    os.unlink(temporary)
    _fsync_dir(os.path.dirname(destination))


def drop_source(source: str, destination: str, size: int) -> None:
    """The last step of a move: the source goes once the destination holds its bytes."""
    st = os.stat(destination)
    if st.st_size != size:
        raise Changed(f"{destination} has {st.st_size} bytes, expected {size}")
    try:
        os.unlink(source)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(source))


def remove_temporary(temporary: str | None) -> None:
    if temporary:
        _unlink_quietly(temporary)


def recover(row: dict[str, Any]) -> tuple[str, str]:
    """Finish or roll back a journaled action a restart found: ``(DONE | ROLLED_BACK, what
    happened)``. Only ever removes the source once the destination is complete and ours,
    and only our temporary file otherwise."""
    source, destination, temporary = row["source"], row["destination"], row["temporary"]
    size, phase = int(row["size"]), row["phase"]
    if row["op"] == "delete":
        if not os.path.lexists(source):
            return DONE, "deleted (the hub stopped just after it)"
        return ROLLED_BACK, "not deleted (the hub stopped before it): the file is in place"
    ours = phase == "placed" or _complete_copy(source, destination, temporary, size, phase)
    if ours:
        remove_temporary(temporary)
        drop_source(source, destination, size)
        return DONE, f"moved to {destination} (finished after a restart)"
    remove_temporary(temporary)
    if not os.path.lexists(source):
        return ROLLED_BACK, "the file is no longer at its place, and not moved by the hub"
    return ROLLED_BACK, "not moved (the hub stopped midway): the file is in place"


def _complete_copy(source: str, destination: str | None, temporary: str | None, size: int,
                   phase: str) -> bool:
    if not destination or not os.path.lexists(destination):
        return False
    if os.path.lexists(source) and os.path.samefile(source, destination):
        return True  # linked within one filesystem
    if phase != "copied":
        return False
    if temporary and os.path.lexists(temporary):
        return os.path.samefile(temporary, destination)  # placed, temporary not yet gone
    return os.stat(destination).st_size == size  # placed, and the temporary removed


def _fsync_dir(directory: str) -> None:
    """Make a directory's new or removed names durable (rename/link/unlink)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself was synced
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
