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
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES
from uploader.archive_list import find_archive
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import ErrorKind, UploadError
from uploader.retry import RetryPolicy
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
