"""Parts (files to upload) and their tasks; the part digest, off the event loop.

A part is identified by its digest (XXH3-128 of the file, see
:mod:`protocol.integrity`). Creating a part checks the file and takes its stat
identity, but does not read it: on a 50 GB recording that takes as long as the
disk needs (and outlasts any HTTP timeout). The first attempt takes the digest
of the bytes as it streams them from byte 0, at no extra read. A separate pass
over the file runs only when no attempt will see it whole: a resumed stream,
or a local/hybrid agent that reads the file itself against a known digest.
No one outside the mesh asks for a part's MD5, so the hub no longer computes
one (only an agent without CRC32 still gets an MD5 of what is streamed to it);
the ``md5`` columns keep what older hubs stored.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from hub.core import lifecycle as lc
from hub.core.errors import BadRequest, NotFound
from hub.core.file_identity import fingerprint_of
from hub.core.lifecycle import TaskRecord
from hub.core.ports import Accounts
from hub.core.spawner import Spawner
from hub.core.state import HubState
from hub.store.tasks import Store
from protocol.integrity import new_part_digest

log = logging.getLogger("bupmesh.hub")

FINGERPRINT_MIN_AGE = 2.0  # seconds a file must be unmodified to skip re-hashing it


class Parts:
    def __init__(self, state: HubState, store: Store, accounts: Accounts, spawn: Spawner
                 ) -> None:
        self.state = state
        self.store = store
        self.accounts = accounts
        self.spawn = spawn
        self.hashing: set[int] = set()  # parts with a digest pass running

    async def create_part(
        self, file_path: str, *, account: str | None, title: str | None, auto_upload: bool = True
    ) -> dict[str, Any]:
        if not isinstance(file_path, str) or not file_path.strip():
            raise BadRequest("file_path is required")
        try:
            path, size, fingerprint = await anyio.to_thread.run_sync(_stat_file, file_path)
        except FileNotFoundError:
            raise NotFound(f"no such file: {file_path}") from None
        except IsADirectoryError:
            raise BadRequest(f"not a regular file: {file_path}") from None
        except OSError as exc:
            raise BadRequest(f"cannot read {file_path}: {exc.strerror or exc}") from None
        if size == 0:
            raise BadRequest(f"file is empty: {file_path}")
        account = None if account in (None, "") else str(account)
        try:
            await self.accounts.credentials(account)
        except Exception as exc:
            raise NotFound(f"account: {exc}") from None
        # The digest is learned while the first attempt streams; the stat identity taken
        # now catches a file that changes meanwhile.
        part_id = await self.store.insert_part(
            file_path=str(path), size=size, md5="", account=account, title=title,
            fingerprint=fingerprint,
        )
        task_id = None
        if auto_upload:
            task = await self.new_task(part_id)
            task_id = task.task_id
        log.info("part %d created for %s (%d bytes)", part_id, path.name, size)
        return {"part_id": part_id, "task_id": task_id}

    async def new_task(self, part_id: int, pinned: str | None = None,
                       force: bool = False) -> TaskRecord:
        """A pending task for the part (``pinned``: only that agent may take it)."""
        state = self.state
        async with state.lock:
            # Read the part under the lock: its digest may have just been filled in.
            part = await self.store.get_part(part_id)
            if part is None:
                raise NotFound(f"no part {part_id}")
            task = TaskRecord(
                task_id=f"task-{uuid.uuid4().hex[:16]}", part_id=part_id,
                file_path=part["file_path"], file_size=part["size"], file_md5=part["md5"],
                file_digest=part.get("digest") or "",
                account=part["account"], pinned_agent=pinned, force=bool(force and pinned),
                file_fingerprint=part.get("fingerprint") or "", created_at=state.clock(),
            )
            await self.store.insert_task(task)
            await self.store.add_log(task.task_id, pinned or "", "", "created",
                                     f"part {part_id}", 0)
            state.tasks[task.task_id] = task
        state.events.touch_task(task.task_id)
        state.poke()
        return task

    async def learned_digest(self, task: TaskRecord, digest: str) -> None:
        """The digest of a whole-file stream the agent confirmed receiving: the part's own,
        without a separate pass over the file (the part is uploaded by now)."""
        task.file_digest = digest
        await self.store.set_part_hash(task.part_id, digest=digest,
                                       fingerprint=task.file_fingerprint, state="uploaded")

    def request_hash(self, part_id: int) -> None:
        """Hash the part's file in the background, unless a pass over it runs already."""
        if part_id not in self.hashing:
            self.hashing.add(part_id)
            self.spawn(self._hash_part, part_id)

    async def _hash_part(self, part_id: int) -> None:
        try:
            await self.hash_part_once(part_id)
        finally:
            self.hashing.discard(part_id)

    async def hash_part_once(self, part_id: int) -> None:
        """Hash the part's file now (worker thread) and give its tasks the digest."""
        state = self.state
        part = await self.store.get_part(part_id)
        if part is None or part.get("digest"):
            return
        try:
            digest, fingerprint = await anyio.to_thread.run_sync(
                _hash_file, part["file_path"], part["size"])
            failure = None
        except _StillChanging:
            failure = "file changed while being hashed (still being written?)"
        except OSError as exc:
            failure = f"cannot read source file: {exc.strerror or exc}"
        async with state.lock:
            tasks = [t for t in state.tasks.values() if t.part_id == part_id]
            if failure is not None:
                await self.store.set_part_hash(part_id, digest="", fingerprint="", state="failed")
                for task in tasks:
                    state.lifecycle.fail(task, lc.FILE, failure)
                    await state.save(task, "", "error", failure, part_state="failed")
                log.warning("part %d: %s", part_id, failure)
                return
            # No live task: the part may have been uploaded meanwhile (a resumed attempt
            # finishes before a 50 GB hash does); keep whatever state it has.
            await self.store.set_part_hash(part_id, digest=digest, fingerprint=fingerprint,
                                           state="queued" if tasks else None)
            for task in tasks:
                task.file_digest, task.file_fingerprint = digest, fingerprint
                await self.store.save_task(task)
        log.info("part %d hashed: digest %s", part_id, digest)
        state.poke()


class _StillChanging(Exception):
    pass


def _stat_file(file_path: str) -> tuple[Path, int, str]:
    """Resolve and check a part's file; its size and stat identity (worker thread)."""
    path = Path(file_path).expanduser().resolve(strict=True)
    if not path.is_file():
        raise IsADirectoryError(str(path))
    st = path.stat()
    return path, st.st_size, _quiet_fingerprint(st)


def _quiet_fingerprint(st: os.stat_result) -> str:
    """The stat identity, or "" for a file written to in the last seconds.

    File timestamps tick coarsely (a few ms): a write within the same tick as the last
    one would leave the identity unchanged, so only a file quiet for a while gets one
    (any later write then moves its mtime); a fresh file is always hashed when streamed.
    """
    if time.time() - st.st_mtime < FINGERPRINT_MIN_AGE:
        return ""
    return fingerprint_of(st)


def _hash_file(file_path: str, expected_size: int) -> tuple[str, str]:
    """Digest and stat identity of a part's file (blocking: runs in a worker thread)."""
    path = Path(file_path)
    before = fingerprint_of(path.stat())
    h = new_part_digest()
    size = 0
    buffer = bytearray(4 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            h.update(view[:n])
            size += n
    st = path.stat()
    if fingerprint_of(st) != before or size != expected_size:
        raise _StillChanging(str(path))
    return h.hexdigest(), _quiet_fingerprint(st)
