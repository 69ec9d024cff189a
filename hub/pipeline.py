"""Recordings in, videos out: ingestion, the folder watcher, submission and retention,
wired to a hub.

``hub/app.py`` builds one :class:`RecordingPipeline` beside the ``HubService``:
it opens the recording and retention tables, hooks the submission manager into
the service (``service.submissions``; a part that finishes uploading also wakes
retention), contributes the webhook, recording and retention routes, and runs the
watcher, the submission loop and retention in the hub's task group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from starlette.routing import BaseRoute

from hub.api.ingest_routes import ingest_routes
from hub.api.retention_routes import retention_routes
from hub.ingest.service import IngestService
from hub.ingest.watcher import FolderWatcher
from hub.metrics import retention_gauges
from hub.retention.service import AuditSink, RetentionService
from hub.retention.store import RetentionStore
from hub.service import HubService
from hub.store.recordings import RecordingStore
from hub.submission.manager import SubmissionManager
from protocol import mesh_pb2 as pb


class _Hooks:
    """The pipeline's hooks into the agent stream: submission's, and a finished upload
    wakes retention as well as submission."""

    def __init__(self, submissions: SubmissionManager, retention: RetentionService) -> None:
        self.submissions = submissions
        self.retention = retention

    def on_hello(self, session: Any, hello: pb.Hello) -> None:
        self.submissions.on_hello(session, hello)

    async def on_result(self, session: Any, msg: pb.SubmitResult) -> None:
        await self.submissions.on_result(session, msg)

    def poke(self) -> None:
        self.submissions.poke()
        self.retention.poke()


@dataclass
class RecordingPipeline:
    recordings: RecordingStore
    ingest: IngestService
    submissions: SubmissionManager
    watcher: FolderWatcher
    retention: RetentionService

    @classmethod
    async def attach(cls, service: HubService, *, audit: AuditSink | None = None
                     ) -> RecordingPipeline:
        recordings = RecordingStore(service.store.db_path, clock=service.clock,
                                    on_change=service.events.touch_recording)
        await recordings.open()
        service.space.watch(recordings)
        kept = RetentionStore(service.store.db_path, clock=service.clock)
        await kept.open()
        service.space.watch(kept)
        retention = RetentionService(service.config, recordings, kept, clock=service.clock,
                                     audit=audit, space=service.space)
        await retention.start()  # before anything else touches a file it was moving
        service.metrics.add_gauges(lambda: retention_gauges(retention))
        ingest = IngestService(service.config, service, recordings, clock=service.clock)
        submissions = SubmissionManager(service, recordings, clock=service.clock)
        await submissions.start()
        service.submissions = _Hooks(submissions, retention)
        service.recording_views = submissions
        service.space.on_cleared(submissions.poke)
        service.space.on_cleared(retention.poke)
        return cls(recordings, ingest, submissions, FolderWatcher(ingest, clock=service.clock),
                   retention)

    def routes(self) -> list[BaseRoute]:
        config = self.ingest.config
        return [*ingest_routes(self.ingest, self.submissions, admin_token=config.admin_token,
                               webhook_secret=config.ingest.webhook_secret),
                *retention_routes(self.retention, self.recordings,
                                  admin_token=config.admin_token)]

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.submissions.run)
            tg.start_soon(self.submissions.reviews.run)
            tg.start_soon(self.watcher.run)
            tg.start_soon(self.retention.run)

    def close(self) -> None:
        self.recordings.close()
        self.retention.store.close()
