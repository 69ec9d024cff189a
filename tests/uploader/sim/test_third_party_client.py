"""A real third-party client, bilibili-api-python's `VideoUploader`, against the simulator.

This is the proof that the simulator speaks Bilibili's protocol: the library
runs its own conversation, unchanged: line probe (POST 0.1 MB to each line's
`/OK`), `GET /preupload`, `POST ?uploads&output=json`, chunk PUTs, completion
with `parts`, cover upload (`/x/vu/web/cover/up`) and `POST /x/vu/web/add/v3`.
It must end with a ledger entry whose MD5 is the file's and a submission that
names that upload.

What is changed, and only that: *where the bytes go*. The library hard-codes
`https://member.bilibili.com/...`, `https://upos-cs-upcdn*.bilivideo.com/OK`
and `https:` + the preupload `endpoint`, so we hand it an httpx client
(`bilibili_api.set_session`, the library's own hook) whose transport sends
every request for those hosts to the simulator over plain HTTP on loopback, the
way an /etc/hosts entry plus a TLS-terminating proxy would. The Host header is
left as the library wrote it, so the simulator sees `member.bilibili.com` (and
returns `//member.bilibili.com` as the upload endpoint, which is redirected the
same way) and `upos-cs-upcdnws.bilivideo.com` on probes (which is how it knows
which line a probe measures). A request to any other host fails the test, so
nothing reaches the real Bilibili. Not URL-related but needed offline: the
credential carries `buvid3`/`buvid4`, so the library does not fetch them from
api.bilibili.com.

asyncio only, not neutral: bilibili-api-python is an asyncio library (its
clients and sessions are bound to the running asyncio loop), so the test
drives it with ``asyncio.run``. The simulator side is a subprocess either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import SimServer

bilibili_api = pytest.importorskip("bilibili_api")
pytest.importorskip("PIL")

# The library passes per-request cookies and data=bytes, which httpx 0.28 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class RedirectToSimulator(httpx.AsyncBaseTransport):
    """Send Bilibili hosts to the simulator over plain HTTP; refuse anything else."""

    def __init__(self, sim_url: str) -> None:
        self.target = httpx.URL(sim_url)
        self.inner = httpx.AsyncHTTPTransport()
        self.seen_hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.seen_hosts.append(host)
        is_bilibili = host == "member.bilibili.com" or host.endswith(".bilivideo.com")
        is_sim = (host, request.url.port) == (self.target.host, self.target.port)
        if not (is_bilibili or is_sim):
            raise AssertionError(f"the library tried to reach {request.url}")
        request.url = request.url.copy_with(
            scheme="http", host=self.target.host, port=self.target.port
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_cover(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (160, 100), (251, 114, 153)).save(path, format="PNG")


async def upload_with_bilibili_api(sim: SimServer, video: Path, cover: Path) -> tuple[dict, list]:
    from bilibili_api import Credential, get_client, select_client, set_session, video_uploader

    select_client("httpx")
    transport = RedirectToSimulator(sim.url)
    session = httpx.AsyncClient(transport=transport, trust_env=False, timeout=30)
    # set_session only replaces a session the library already made for this loop.
    await get_client().get_wrapped_session().aclose()
    set_session(session)
    try:
        credential = Credential(
            sessdata="sim-sessdata",
            bili_jct="sim-csrf",
            dedeuserid="10001",
            buvid3="sim-buvid3",
            buvid4="sim-buvid4",
        )
        meta = video_uploader.VideoMeta(
            tid=171,
            title="bupmesh third-party client",
            desc="uploaded by bilibili-api-python against the simulator",
            cover=str(cover),
            tags=["bupmesh", "simulator"],
        )
        page = video_uploader.VideoUploaderPage(path=str(video), title="P1", description="part one")
        uploader = video_uploader.VideoUploader(pages=[page], meta=meta, credential=credential)
        result = await uploader.start()  # line=None: the library probes every line
        return result, transport.seen_hosts
    finally:
        await session.aclose()


def test_bilibili_api_video_uploader_uploads_and_submits(sim: SimServer, tmp_path: Path) -> None:
    # Small chunks so the library's concurrent chunk PUTs (3 at a time) run;
    # make the ws line the only fast one so the library's probe must pick it.
    sim.config(
        chunk_size=64 * 1024,
        threads=3,
        lines={
            "cs_bda2": {"delay_seconds": 0.4},
            "cs_bldsa": {"delay_seconds": 0.4},
            "cs_qn": {"delay_seconds": 0.4},
            "cs_ws": {"delay_seconds": 0.0},
        },
    )
    data = os.urandom(5 * 64 * 1024 + 12345)
    video = tmp_path / "recording.mp4"
    video.write_bytes(data)
    cover = tmp_path / "cover.png"
    make_cover(cover)

    result, hosts = asyncio.run(upload_with_bilibili_api(sim, video, cover))

    uploads = sim.uploads()
    assert len(uploads) == 1
    upload = uploads[0]
    assert upload["md5"] == hashlib.md5(data).hexdigest()
    assert upload["size"] == len(data)
    assert upload["parts"] == 6
    assert upload["mid"] == 10001
    assert upload["line"] == "cs_ws"  # the fastest probe won

    submissions = sim.submissions()
    assert len(submissions) == 1
    submission = submissions[0]
    assert result == {"aid": submission["aid"], "bvid": submission["bvid"]}
    assert submission["flavour"] == "web"
    assert submission["title"] == "bupmesh third-party client"
    assert submission["tag"] == "bupmesh,simulator"
    assert submission["tid"] == 171
    assert submission["copyright"] == 1
    assert submission["cover"].startswith("https://archive.biliimg.com/bfs/archive/")
    assert submission["videos"] == [
        {"filename": upload["filename"], "title": "P1", "desc": "part one", "cid": upload["biz_id"]}
    ]

    requests = sim.requests()
    ops = [r["op"] for r in requests]
    # Every line probed; the library may probe a line again when the machine is
    # loaded enough for its probe timeout to fire, so count lines, not requests.
    probed = {r.get("line") for r in requests if r["op"] == "probe"}
    assert probed == {"cs_bda2", "cs_bldsa", "cs_qn", "cs_ws"}
    assert ops.count("preupload") == 1 and ops.count("init") == 1
    # The library retries a chunk whose PUT timed out on a loaded machine: every part
    # must have been accepted, each at least once, and the upload completed once.
    accepted = {r["part"] for r in requests if r["op"] == "put" and r["status"] == 200}
    assert accepted == set(range(1, 7)) and ops.count("put") >= 6
    assert ops.count("complete") == 1
    assert ops.count("cover") == 1 and ops.count("submit") == 1
    assert {"member.bilibili.com", "upos-cs-upcdnws.bilivideo.com"} <= set(hosts)
