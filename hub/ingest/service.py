"""Apply normalised ingest events: recordings, parts, and idempotency.

One lock serialises every event, so two deliveries of the same webhook (the
recorder retries, a user replays) cannot both import a file. Idempotency has
two keys: the event id (``ingest_events``) and the file itself, path + size
(``recording_parts``), so a replay with fresh ids imports nothing either. An
event is recorded as seen only after it was applied: a delivery that failed
(file not there yet, hub busy) can be retried by the recorder.

Grouping: BililiveRecorder names its session (``SessionId``). blrec does not:
its files join the room's open recording, ``LiveBeganEvent`` starts a new one
and ``LiveEndedEvent``/``RecordingFinishedEvent`` end it. The folder watcher
joins a file to the room's open recording when it starts within
``ingest.watch_session_gap_seconds`` of the last file's end
(:func:`hub.ingest.files.same_session`), and ends a recording when the room has
been quiet that long.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from hub.config import HubConfig
from hub.ingest.events import BLREC, BREC, WATCHER, IngestEvent
from hub.ingest.files import IMAGE_SUFFIXES, PathRefused, resolve_under, same_session
from hub.store.recordings import RecordingStore
from hub.submission.settings import room_settings

log = logging.getLogger("bupmesh.hub.ingest")


class IngestRefused(ValueError):
    """The event is well-formed but cannot be applied (400): path outside the recorder
    directory, not a video, nothing configured."""


class IngestService:
    def __init__(self, config: HubConfig, hub: Any, recordings: RecordingStore, *,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.hub = hub  # HubService: create_part
        self.recordings = recordings
        self.clock = clock
        self._lock = anyio.Lock()

    async def handle(self, event: IngestEvent) -> dict[str, Any]:
        """Apply one event; the answer says what happened (for the webhook's reply)."""
        if event.kind == "ignored":
            return {"result": "ignored"}
        self.refuse_if_full()
        async with self._lock:
            if await self.recordings.seen_event(event.source, event.event_id):
                return {"result": "duplicate"}
            answer = await self._apply(event)
            await self.recordings.note_event(event.source, event.event_id)
            return answer

    def refuse_if_full(self) -> None:
        """While the data directory is full an event is refused whole (HTTP 507), before
        any of it is written: the recorder's retry, or the watcher's next pass, brings
        it again once space returns."""
        space = getattr(self.hub, "space", None)
        if space is not None and space.raised:
            raise space.refusal()

    async def _apply(self, event: IngestEvent) -> dict[str, Any]:
        if event.kind == "session_end":
            rec = await self._session_of(event, create=event.source == BREC)
            if rec is not None:
                await self.recordings.end(rec["id"], event.time)
                log.info("recording %d (room %s) ended", rec["id"], rec["room_id"])
            return {"result": "ended", "recording_id": rec["id"] if rec else None}
        if event.kind == "session_start" and event.source != BREC:
            # A new live session of a room without session ids: close the previous one.
            previous = await self.recordings.open_recording(event.source, event.room_id)
            start = event.file_started or event.time
            key = f"{event.source}:{event.room_id}:{int(start)}"
            if previous is not None and previous["session_key"] != key:
                await self.recordings.end(previous["id"], event.time)
            rec = await self._create(event, key, start)
            return {"result": "started", "recording_id": rec["id"]}
        if event.kind == "cover":
            return await self._note_cover(event)
        rec = await self._session_of(event, create=True)
        assert rec is not None
        if event.kind != "file_closed":
            return {"result": "noted", "recording_id": rec["id"]}
        return await self._import_file(event, rec)

    async def _session_of(self, event: IngestEvent, *, create: bool) -> dict[str, Any] | None:
        if event.session_key is not None:
            return await self._create(event, event.session_key,
                                      event.file_started or event.time)
        rec = await self.recordings.open_recording(event.source, event.room_id)
        start = event.file_started or event.time
        if rec is not None and event.source == WATCHER and event.kind == "file_closed":
            parts = await self.recordings.parts(rec["id"])
            last_end = max((p["ended_at"] or 0 for p in parts), default=None)
            gap = self.config.ingest.watch_session_gap_seconds
            if not same_session(last_end, start, gap):
                await self.recordings.end(rec["id"], last_end or rec["started_at"])
                rec = None
        if rec is None and create:
            rec = await self._create(event, f"{event.source}:{event.room_id}:{int(start)}", start)
        return rec

    async def _create(self, event: IngestEvent, key: str, start: float) -> dict[str, Any]:
        rec = await self.recordings.get_or_create(source=event.source, session_key=key,
                                                  room_id=event.room_id, started_at=start,
                                                  info=event.info)
        if rec["account"] is None:
            account = room_settings(self.config, rec["room_id"]).account
            if account is not None:
                await self.recordings.update_submission(rec["id"], account=account)
                rec["account"] = account
        return rec

    def _path(self, event: IngestEvent) -> Path:
        assert event.path is not None
        kind = {"suffixes": IMAGE_SUFFIXES, "what": "an image"} if event.kind == "cover" else {}
        try:
            if event.source == BREC:
                return resolve_under(self.config.ingest.bililive_recorder_work_dir, event.path,
                                     setting="ingest.bililive_recorder_work_dir", **kind)
            if event.source == BLREC:
                return resolve_under(self.config.ingest.blrec_work_dir, event.path,
                                     setting="ingest.blrec_work_dir", **kind)
        except PathRefused as exc:
            raise IngestRefused(str(exc)) from None
        return Path(event.path)  # the watcher's own listing of a configured directory

    async def _import_file(self, event: IngestEvent, rec: dict[str, Any]) -> dict[str, Any]:
        path = self._path(event)
        try:
            st = await anyio.to_thread.run_sync(os.stat, path)
        except FileNotFoundError:
            raise FileNotFoundError(2, "no such file", event.path) from None
        size = st.st_size
        if event.size is not None and event.size != size:
            log.warning("%s: the recorder reported %d bytes, the file has %d; using the file",
                        path, event.size, size)
        if await self.recordings.has_file(str(path), size):
            return {"result": "duplicate", "recording_id": rec["id"]}
        # A file after the submission (or during it) is appended to the archive once it
        # exists, unless the room keeps late parts out: then it uploads, unlisted.
        late = rec["submit_state"] not in ("waiting", "failed")
        kept_out = late and not room_settings(self.config, rec["room_id"]).append_late_parts
        created = await self.hub.create_part(str(path), account=rec["account"], title=None)
        index = await self.recordings.add_part(
            rec["id"], part_id=created["part_id"], path=str(path), size=size,
            started_at=event.file_started, ended_at=event.file_ended or st.st_mtime,
            archived=-1 if kept_out else 0)
        log.info("recording %d (room %s): part %d is %s (%d bytes, part id %s)", rec["id"],
                 rec["room_id"], index, path.name, size, created["part_id"])
        if kept_out:
            log.warning("recording %d is already %s: %s uploads but is not in its archive "
                        "(append_late_parts is off)", rec["id"], rec["submit_state"],
                        path.name)
        elif late:
            log.info("recording %d is already %s: %s will be appended to its archive",
                     rec["id"], rec["submit_state"], path.name)
        return {"result": "imported", "recording_id": rec["id"], "part_id": created["part_id"],
                "task_id": created["task_id"], "index": index}

    async def _note_cover(self, event: IngestEvent) -> dict[str, Any]:
        """The recorder saved the live room's cover: the room's open recording takes it."""
        path = self._path(event)
        rec = await self.recordings.open_recording(event.source, event.room_id)
        if rec is None:
            return {"result": "noted", "recording_id": None}
        await self.recordings.set_live_cover(rec["id"], str(path))
        log.info("recording %d (room %s): live cover %s", rec["id"], rec["room_id"], path.name)
        return {"result": "noted", "recording_id": rec["id"]}

    async def end_quiet_rooms(self, now: float) -> None:
        """Watcher recordings whose room has been quiet for the session gap have ended."""
        gap = self.config.ingest.watch_session_gap_seconds
        async with self._lock:
            for rec in await self.recordings.still_open(WATCHER):
                parts = await self.recordings.parts(rec["id"])
                # Quiet since the hub last imported a file (its own clock); the files'
                # times say when the recording ended, for titles and the next grouping.
                last_seen = max((p["received_at"] or p["ended_at"] or 0 for p in parts),
                                default=rec["created_at"])
                if now - last_seen > gap:
                    last_end = max((p["ended_at"] or 0 for p in parts), default=rec["started_at"])
                    await self.recordings.end(rec["id"], last_end)
                    log.info("recording %d (room %s): quiet for %.0f s, ended", rec["id"],
                             rec["room_id"], now - last_seen)
