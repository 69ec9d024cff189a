"""Files the hub will upload (hub/media_roots.py), over the real service and every way in:
the admin API, a recorder's webhook and the folder watcher.

The layout makes the hard case: the data directory lies inside the media root and
inside the recorder's directory, so "inside a root" is not enough; symlinks and
``..`` lead out of the root or into the data directory; the hub's own key files
and /etc/passwd are asked for by name.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.api.app import build_http_app, http_auth
from hub.app import build_service
from hub.config import HubConfig, IngestSettings
from hub.ingest.events import BREC, IngestEvent
from hub.ingest.service import IngestRefused
from hub.pipeline import RecordingPipeline
from hub.service import HubService
from tests.support.hub import PSK

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

ADMIN = "adm-media-77"
ROOM_FILE = "录制-4242-20261129-200000-000-t.flv"


class Env:
    def __init__(self, service: HubService, pipeline: RecordingPipeline, client: httpx.AsyncClient,
                 root: Path, outside: Path) -> None:
        self.service, self.pipeline, self.client = service, pipeline, client
        self.root, self.outside = root, outside
        self.data = service.config.data_path

    async def part(self, path: str | Path) -> httpx.Response:
        return await self.client.post("/api/manage/parts", json={"file_path": str(path)},
                                      headers={"Authorization": f"Bearer {ADMIN}"})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    root, outside = tmp_path / "media", tmp_path / "outside"
    for d in (root, root / "watch", outside):
        d.mkdir()
    config = HubConfig(psk=PSK, admin_token=ADMIN, insecure=True,
                       data_dir=str(root / "data"), media_roots=[str(root)],
                       ingest=IngestSettings(bililive_recorder_work_dir=str(root),
                                             watch_dirs=[str(root / "watch")],
                                             watch_stable_seconds=0))
    service = await build_service(config)
    pipeline = await RecordingPipeline.attach(service)
    await service.accounts.add("main", cookies="SESSDATA=s; bili_jct=j; DedeUserID=1")
    auth = http_auth(service, config)
    app = build_http_app(service, config, auth=auth, extra_routes=pipeline.routes(auth))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hub") as client:
            yield Env(service, pipeline, client, root, outside)
    finally:
        pipeline.close()
        service.close()
        service.accounts.close()
        service.store.close()


def _file(path: Path, data: bytes = b"FLV" * 100) -> Path:
    path.write_bytes(data)
    return path


def _message(r: httpx.Response) -> str:
    return str(r.json()["message"])


async def test_the_api_uploads_only_from_the_roots_and_never_the_data_dir(env: Env) -> None:
    ok = await env.part(_file(env.root / "ok.flv"))
    assert ok.status_code == 200, ok.text
    secret = _file(env.outside / "secret.flv")
    evil = _file(env.data / "dropped.flv")  # a file in the data dir, even with a video name
    (env.root / "out.flv").symlink_to(secret)
    (env.root / "key.flv").symlink_to(env.data / "secret.key")
    (env.root / "dir").symlink_to(env.data, target_is_directory=True)
    cases: dict[str, Any] = {
        str(env.data / "secret.key"): "data directory",
        str(env.data / "token.secret"): "data directory",
        str(env.data / "bupmesh.db"): "data directory",
        str(evil): "data directory",
        str(env.root / "key.flv"): "data directory",  # symlink into it
        str(env.root / "dir" / "secret.key"): "data directory",  # through a linked dir
        str(env.root / "data" / ".." / "data" / "secret.key"): "data directory",
        str(env.root / "out.flv"): "outside the hub's media roots",  # symlink out
        str(env.root / ".." / "outside" / "secret.flv"): "outside the hub's media roots",
        "/etc/passwd": "outside the hub's media roots",
        str(env.outside / "missing.flv"): "outside the hub's media roots",  # no existence probe
    }
    for path, rule in cases.items():
        r = await env.part(path)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert rule in _message(r), (path, _message(r))
    assert "media_roots" in _message(await env.part("/etc/passwd"))  # says what to set
    missing = await env.part(env.root / "missing.flv")
    assert missing.status_code == 404
    # only the one good part exists
    tasks = (await env.service.list_tasks())["tasks"]
    assert [t["file_path"] for t in tasks] == [str(env.root / "ok.flv")]


async def test_a_webhook_cannot_reach_the_data_dir_through_the_recorder_dir(env: Env) -> None:
    _file(env.data / "dropped.flv")
    (env.root / "link.flv").symlink_to(env.data / "dropped.flv")
    hook = {"EventType": "FileClosed", "EventTimestamp": "2026-11-29T20:00:59+08:00",
            "EventId": "e-1", "EventData": {
                "SessionId": "s-1", "RoomId": 4242, "Name": "n", "Title": "t",
                "RelativePath": "data/dropped.flv", "FileSize": 300,
                "FileOpenTime": "2026-11-29T20:00:00+08:00",
                "FileCloseTime": "2026-11-29T20:00:59+08:00"}}
    for i, relative in enumerate(("data/dropped.flv", "link.flv", "watch/../data/dropped.flv")):
        body = {**hook, "EventId": f"e-{i}",
                "EventData": {**hook["EventData"], "RelativePath": relative}}
        r = await env.client.post("/api/webhook/bililive-recorder", json=body)
        assert r.status_code == 403, (relative, r.text)
        assert "data directory" in _message(r)
    # and the ingest service itself refuses a path out of the recorder dir (400, as before)
    with pytest.raises(IngestRefused):
        await env.pipeline.ingest.handle(IngestEvent(
            "file_closed", BREC, "e-9", "4242", 1.0, session_key="k", path="../outside/x.flv",
            size=1))
    assert (await env.service.list_tasks())["tasks"] == []


async def test_the_watcher_does_not_follow_links_out_of_the_roots(env: Env) -> None:
    watch = env.root / "watch"
    secret = _file(env.outside / "secret.flv")
    _file(env.data / "dropped.flv")
    os.symlink(secret, watch / ROOM_FILE)
    os.symlink(env.data / "dropped.flv", watch / ROOM_FILE.replace("200000", "210000"))
    good = _file(watch / ROOM_FILE.replace("200000", "220000"))
    os.utime(good, (1, 1))
    for f in (secret, env.data / "dropped.flv"):
        os.utime(f, (1, 1))
    watcher = env.pipeline.watcher
    watcher.clock = lambda: 10_000.0
    await watcher.scan_once()  # notes sizes
    await watcher.scan_once()  # imports what held still
    tasks = (await env.service.list_tasks())["tasks"]
    assert [t["file_path"] for t in tasks] == [str(good)]
    assert not await env.pipeline.recordings.has_file(str(secret), secret.stat().st_size)
