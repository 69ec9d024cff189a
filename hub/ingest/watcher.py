"""The folder watcher: for recorders without webhooks, poll ``ingest.watch_dirs``.

Every ``ingest.watch_interval_seconds`` it lists video files (recursively),
imports those whose size and mtime held still for
``ingest.watch_stable_seconds`` (:class:`hub.ingest.files.Stability`), and ends
recordings whose room went quiet (``IngestService.end_quiet_rooms``). Polling,
not inotify: it works on network mounts and needs no extra dependency, and a
recording file is minutes old before it matters.

Each file goes through ``IngestService.handle`` as a ``file_closed`` event whose
id is its path and size, so a restart re-lists everything and imports nothing twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from hub.ingest.events import WATCHER, IngestEvent
from hub.ingest.files import VIDEO_SUFFIXES, Stability, describe_file
from hub.ingest.service import IngestService

log = logging.getLogger("bupmesh.hub.ingest")

MAX_FILES = 100_000  # per pass: a mistaken watch dir (/) must not eat the hub


def list_videos(dirs: list[str]) -> dict[str, tuple[int, float]]:
    """``path -> (size, mtime)`` of every video file under ``dirs`` (worker thread)."""
    found: dict[str, tuple[int, float]] = {}
    for top in dirs:
        for root, _subdirs, files in os.walk(Path(top).expanduser()):
            for name in files:
                if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found[os.path.realpath(path)] = (st.st_size, st.st_mtime)
                if len(found) >= MAX_FILES:
                    return found
    return found


class FolderWatcher:
    def __init__(self, ingest: IngestService, *, clock: Callable[[], float] = time.time) -> None:
        self.ingest = ingest
        self.settings = ingest.config.ingest
        self.clock = clock
        self.stability = Stability(self.settings.watch_stable_seconds)
        self._skipped: set[str] = set()  # logged once

    async def run(self) -> None:
        if not self.settings.watch_dirs:
            return
        log.info("watching %s for recordings", ", ".join(self.settings.watch_dirs))
        while True:
            try:
                await self.scan_once()
            except Exception:  # one bad pass must not end the watcher
                log.exception("folder scan failed")
            await anyio.sleep(self.settings.watch_interval_seconds)

    async def scan_once(self) -> None:
        space = getattr(self.ingest.hub, "space", None)
        if space is not None and space.raised:
            return  # nothing can be imported now; the pass after space returns sees it all
        listing = await anyio.to_thread.run_sync(list_videos, list(self.settings.watch_dirs))
        now = self.clock()
        for path in self.stability.observe(listing, now):
            size, mtime = listing[path]
            if await self.ingest.recordings.has_file(path, size):
                continue
            facts = describe_file(Path(path))
            if facts is None:
                if path not in self._skipped:
                    self._skipped.add(path)
                    log.warning("%s: no room id in its name or folder; not imported", path)
                continue
            event = IngestEvent(
                "file_closed", WATCHER, f"file:{path}:{size}", facts.room_id, mtime,
                info={"streamer": facts.streamer, "title": facts.title},
                path=path, size=size, file_started=facts.started_at or mtime, file_ended=mtime)
            try:
                await self.ingest.handle(event)
            except Exception as exc:  # a vanished or unreadable file: try again next pass
                log.warning("%s: not imported: %s", path, exc)
        await self.ingest.end_quiet_rooms(now)
