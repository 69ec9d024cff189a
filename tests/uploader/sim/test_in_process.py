"""The simulator in-process, on asyncio and on trio: the proof that it is backend-neutral.

The simulator's own code (route groups, assembly hashed in worker threads,
fault delays, the QR login) runs here under anyio's pytest plugin on both
backends, served through ``httpx.ASGITransport`` instead of a socket. The
uploader, the submitter and the TV login client talk to it the way they talk
to Bilibili, so one run proves both sides neutral together.

What needs real sockets stays with the subprocess tests: a connection reset
(``drop``) needs uvicorn's transport, a stall needs a client that can give
up on a socket, source IPs need loopback addresses.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES
from uploader.archive import Review, append_parts, view_archive
from uploader.archive_list import find_archive, list_reviews
from uploader.client import BiliClient
from uploader.covers import upload_cover
from uploader.credentials import Credentials
from uploader.errors import ArchiveProblem, ErrorKind, UploadError, archive_problem
from uploader.limits import batches
from uploader.retry import RetryPolicy
from uploader.seasons import add_to_season
from uploader.sim.app import build_app
from uploader.sim.config import SimConfig
from uploader.source import BytesSource
from uploader.submit import Submission, VideoPart, submit_app, submit_web
from uploader.tv_login import PollState, TvLoginClient
from uploader.upos import UposUploader

pytestmark = pytest.mark.anyio

SIM = "http://sim.test"
CHUNK = 64 * 1024
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, maximum=0.05)


@pytest.fixture
def app() -> Starlette:
    return build_app(SimConfig(chunk_size=CHUNK))


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=SIM) as client:
        yield client


def bili(app: Starlette) -> BiliClient:
    credentials = Credentials.from_cookie_string(SIM_COOKIES, access_key=SIM_ACCESS_KEY)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
    return BiliClient(credentials, member_url=SIM, transport=transport)


async def sim_json(http: httpx.AsyncClient, path: str) -> dict:
    response = await http.get(path)
    response.raise_for_status()
    return response.json()


async def test_parts_out_of_order_and_concurrent_are_assembled(http: httpx.AsyncClient) -> None:
    data = random.Random(1).randbytes(4 * CHUNK + 99)  # 5 parts
    cookies = {"Cookie": "SESSDATA=sim-sessdata"}
    pre = (
        await http.get("/preupload", params={"name": "a.flv", "size": len(data)}, headers=cookies)
    ).json()
    path = "/" + pre["upos_uri"].removeprefix("upos://")
    auth = {"X-Upos-Auth": pre["auth"]}
    upload_id = (await http.post(f"{path}?uploads&output=json", headers=auth)).json()["upload_id"]
    statuses: dict[int, str] = {}

    async def put(part: int) -> None:
        start = (part - 1) * CHUNK
        end = min(start + CHUNK, len(data))
        params = {"partNumber": part, "uploadId": upload_id, "chunk": part - 1, "chunks": 5,
                  "size": end - start, "start": start, "end": end, "total": len(data)}  # fmt: skip
        response = await http.put(path, params=params, content=data[start:end], headers=auth)
        statuses[part] = response.text

    async with anyio.create_task_group() as tg:
        for part in (5, 3, 1, 4, 2):
            tg.start_soon(put, part)
    assert statuses == {n: "MULTIPART_PUT_SUCCESS" for n in range(1, 6)}
    parts = {"parts": [{"partNumber": n, "eTag": "etag"} for n in range(1, 6)]}
    done = await http.post(
        path, params={"output": "json", "uploadId": upload_id}, json=parts, headers=auth
    )
    assert done.json()["OK"] == 1
    [entry] = (await sim_json(http, "/_sim/uploads"))["uploads"]
    assert entry["md5"] == hashlib.md5(data).hexdigest() and entry["parts"] == 5


async def test_uploader_and_submitters_against_the_simulator(
    app: Starlette, http: httpx.AsyncClient
) -> None:
    data = random.Random(2).randbytes(3 * CHUNK + 1)
    async with bili(app) as client:
        result = await UposUploader(client, line="auto", retry=FAST_RETRY).upload(
            BytesSource(data), "rec.flv"
        )
        submission = Submission(
            title="in-process", videos=[VideoPart(filename=result.filename, title="P1")]
        )
        web = await submit_web(client, submission)
        app_result = await submit_app(client, submission)
        found = await find_archive(client, [result.filename])
    [entry] = (await sim_json(http, "/_sim/uploads"))["uploads"]
    assert entry["md5"] == hashlib.md5(data).hexdigest() and entry["biz_id"] == result.biz_id
    submissions = (await sim_json(http, "/_sim/submissions"))["submissions"]
    assert [(s["aid"], s["flavour"]) for s in submissions] == [
        (web.aid, "web"),
        (app_result.aid, "app"),
    ]
    assert found is not None and found.aid == app_result.aid  # the newest archive comes first
    probes = [r for r in (await sim_json(http, "/_sim/requests"))["requests"] if r["op"] == "probe"]
    assert probes  # line="auto" asked for the probe list and timed the lines


async def test_faults_reach_the_uploader_classified(
    app: Starlette, http: httpx.AsyncClient
) -> None:
    rules = [
        {"op": "put", "action": "status", "status": 503},
        {"op": "put", "action": "stall", "seconds": 0.05},
        {"op": "preupload", "action": "code", "code": 601, "count": 1},
    ]
    await http.post("/_sim/config", json={"faults": {"fail_next": rules}})
    async with bili(app) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        with pytest.raises(UploadError) as info:
            await uploader.upload(BytesSource(b"x" * 10), "a.flv")
        assert info.value.kind is ErrorKind.RISK_CONTROL and info.value.code == 601
        result = await uploader.upload(BytesSource(b"x" * 10), "a.flv")  # 503 retried, stall waited
    puts = [
        r["status"]
        for r in (await sim_json(http, "/_sim/requests"))["requests"]
        if r["op"] == "put"
    ]
    assert puts == [503, 200]
    assert (await sim_json(http, "/_sim/uploads"))["uploads"][0]["filename"] == result.filename


async def test_tv_login_with_the_phone(app: Starlette, http: httpx.AsyncClient) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40002))
    login = TvLoginClient(SIM, transport=transport)
    qr = await login.request_qr()
    assert (await login.poll(qr.auth_code)).state is PollState.WAITING
    for action in ("scan", "confirm"):
        response = await http.post(f"/_sim/qr/{qr.auth_code}/{action}", json={"uname": "tester"})
        response.raise_for_status()
    polled = await login.poll(qr.auth_code)
    assert polled.state is PollState.DONE and polled.result is not None
    sessdata = polled.result.cookies["SESSDATA"]
    nav = await http.get("/x/web-interface/nav", headers={"Cookie": f"SESSDATA={sessdata}"})
    assert nav.json()["data"]["uname"] == "tester"
    await http.post("/_sim/reset")  # a reset forgets the account the login created ...
    nav = await http.get("/x/web-interface/nav", headers={"Cookie": f"SESSDATA={sessdata}"})
    assert nav.json()["code"] == -101
    codes = (await sim_json(http, "/_sim/qr"))["sessions"]  # ... but not the QR codes
    assert [(c["auth_code"], c["state"]) for c in codes] == [(qr.auth_code, "used")]


async def upload(client: BiliClient, data: bytes, name: str = "rec.flv") -> VideoPart:
    result = await UposUploader(client, line="auto", retry=FAST_RETRY).upload(
        BytesSource(data), name
    )
    return VideoPart(filename=result.filename, title=name, cid=result.biz_id)


async def test_archive_features_end_to_end(app: Starlette, http: httpx.AsyncClient) -> None:
    """Cover, schedule, switches, collection, a late part appended once, review read back."""
    season = (await http.post("/_sim/seasons", json={"title": "录播"})).json()["season"]
    await http.post("/_sim/config", json={"archive": {"list_videos": False}})
    image = b"\x89PNG\r\n\x1a\n" + random.Random(3).randbytes(200)
    async with bili(app) as client:
        first = await upload(client, b"first part")
        cover = await upload_cover(client, image)
        dtime = int(time.time()) + 3 * 3600
        submission = Submission(title="标题" * 41, cover=cover, dtime=dtime, no_reprint=1,
                                up_close_danmu=True, videos=[first])  # fmt: skip
        created = await submit_web(client, submission)
        added = await add_to_season(client, aid=created.aid, cid=first.cid, title="第一场",
                                    season_id=season["season_id"])  # fmt: skip
        again = await add_to_season(client, aid=created.aid, title="第一场",
                                    season_id=season["season_id"])  # cid from the view
        late = await upload(client, b"late part", "late.flv")
        appended = await append_parts(client, created.aid, [first, late], settings=submission)
        repeated = await append_parts(client, created.aid, [late], settings=submission)
        viewed = await view_archive(client, bvid=created.bvid)
        found = await find_archive(client, [first.filename], title=submission.title)
        found_after = await find_archive(client, [first.filename, late.filename],
                                         title=submission.title)  # fmt: skip
    assert added.added and not again.added
    assert added.section_id == season["sections"][0]["section_id"]
    assert appended.added == [late.filename] and appended.videos == 2
    assert repeated.added == [] and repeated.videos == 2
    assert viewed.filenames == [first.filename, late.filename]
    assert viewed.review.review is Review.PENDING and viewed.review.state == -40  # scheduled
    assert found is None  # the archive now holds two parts: not this submission
    assert found_after is not None and found_after.aid == created.aid
    [record] = (await sim_json(http, "/_sim/archives"))["archives"]
    assert record["title"] == "标题" * 40  # cut to 80 characters before sending
    assert (record["cover"], record["dtime"], record["no_reprint"]) == (cover, dtime, 1)
    assert record["up_close_danmu"] is True and record["up_close_reply"] is False
    assert record["season"]["season_id"] == season["season_id"]
    assert [e["added"] for e in record["edits"]] == [[late.filename]]  # edited once
    [kept] = (await sim_json(http, "/_sim/covers"))["covers"]
    assert kept["url"] == cover and kept["md5"] == hashlib.md5(image).hexdigest()


async def test_review_outcomes_reach_the_uploader(app: Starlette, http: httpx.AsyncClient) -> None:
    await http.post("/_sim/config", json={"archive": {"review": {
        "outcome": "reject", "reason": "含有不适宜内容", "reason_field": "state_desc"}}})
    async with bili(app) as client:
        part = await upload(client, b"x")
        rejected = await submit_web(client, Submission(title="r", videos=[part]))
        await http.post("/_sim/config", json={"archive": {"review": {"outcome": "approve"}}})
        other = await upload(client, b"y")
        approved = await submit_app(client, Submission(title="a", videos=[other]))
        states = await list_reviews(client)
        view = await view_archive(client, aid=rejected.aid)
    assert view.review.review is Review.REJECTED and view.review.reason == "含有不适宜内容"
    assert states[rejected.aid].reason == "含有不适宜内容"
    assert states[approved.aid].review is Review.APPROVED


async def test_limits_refused_by_the_simulator_are_classified(
    app: Starlette, http: httpx.AsyncClient
) -> None:
    await http.post("/_sim/config", json={"archive": {"max_parts": 2}})
    async with bili(app) as client:
        parts = [await upload(client, bytes([n]) * 10, f"p{n}.flv") for n in range(3)]
        with pytest.raises(UploadError) as too_many:
            await submit_web(client, Submission(title="t", videos=parts))
        created = [await submit_web(client, Submission(title="t", videos=batch))
                   for batch in batches(parts, 2)]  # fmt: skip
        with pytest.raises(UploadError) as missing:
            await view_archive(client, aid=1)
        with pytest.raises(UploadError) as no_season:
            await add_to_season(client, aid=created[0].aid, cid=parts[0].cid, title="t",
                                season_id=404)  # fmt: skip
    assert archive_problem(too_many.value) is ArchiveProblem.TOO_MANY_PARTS
    assert too_many.value.code == 21058
    assert len(created) == 2 and created[0].aid != created[1].aid
    assert archive_problem(missing.value) is ArchiveProblem.NO_SUCH_ARCHIVE
    assert archive_problem(no_season.value) is ArchiveProblem.SEASON_NOT_FOUND
