"""Recordings in, videos out: ingestion, the folder watcher and submission, wired to a hub.

``hub/app.py`` builds one :class:`RecordingPipeline` beside the ``HubService``:
it opens the recording tables, hooks the submission manager into the service
(``service.submissions``), contributes the webhook and recording routes, and
runs the watcher and the submission loop in the hub's task group.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from starlette.routing import BaseRoute

from hub.api.auth import Auth
from hub.api.ingest_routes import ingest_routes
from hub.ingest.service import IngestService
from hub.ingest.watcher import FolderWatcher
from hub.service import HubService
from hub.store.recordings import RecordingStore
from hub.submission.manager import SubmissionManager


@dataclass
class RecordingPipeline:
    recordings: RecordingStore
    ingest: IngestService
    submissions: SubmissionManager
    watcher: FolderWatcher

    @classmethod
    async def attach(cls, service: HubService) -> RecordingPipeline:
        recordings = RecordingStore(service.store.db_path, clock=service.clock)
        await recordings.open()
        ingest = IngestService(service.config, service, recordings, clock=service.clock)
        submissions = SubmissionManager(service, recordings, clock=service.clock)
        await submissions.start()
        service.submissions = submissions
        return cls(recordings, ingest, submissions, FolderWatcher(ingest, clock=service.clock))

    def routes(self, auth: Auth) -> list[BaseRoute]:
        return ingest_routes(self.ingest, self.submissions, auth)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.submissions.run)
            tg.start_soon(self.watcher.run)

    def close(self) -> None:
        self.recordings.close()
