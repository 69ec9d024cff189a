"""The simulator's account- and session-level rules, in-process on asyncio and trio.

Preupload throttling keyed by IP, account or the pair (406 or 601 with a
voucher, held for a time or until the captcha is solved), upos sessions bound
to the preupload's address or aged out (403), per-account submission limits
(21566, 137022, the sticky 21515, 21590), ``x/web-interface/zone`` and
per-line bandwidth. Source addresses come from ``httpx.ASGITransport``'s
``client``; windows and holds run on a fake clock put into the simulator.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from uploader.sim.app import build_app
from uploader.sim.config import SimConfig
from uploader.sim.state import SimState

pytestmark = pytest.mark.anyio

SIM = "http://sim.test"
CHUNK = 64 * 1024
SECOND = "SESSDATA=second-sessdata; bili_jct=second-csrf; DedeUserID=20002"
TOO_FAST = "您上传视频过快，请您稍作休息后再继续"


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Starlette:
    app = build_app(SimConfig(chunk_size=CHUNK))
    app.state.sim.state.clock = clock
    return app


def state_of(app: Starlette) -> SimState:
    return app.state.sim.state


@pytest.fixture
async def control(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=SIM) as http:
        await http.post("/_sim/accounts", json={"cookies": SECOND, "access_key": "second-key"})
        yield http


def cookie(text: str) -> dict[str, str]:
    return {"Cookie": text}


FIRST = "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001"


class Client:
    """One source address and one account speaking to the in-process simulator."""

    def __init__(self, app: Starlette, ip: str, cookies: str = FIRST) -> None:
        transport = httpx.ASGITransport(app=app, client=(ip, 40001))
        self.http = httpx.AsyncClient(transport=transport, base_url=SIM)
        self.headers = cookie(cookies)
        self.csrf = cookies.partition("bili_jct=")[2].split(";")[0]

    async def preupload(self, size: int = 10) -> httpx.Response:
        params = {"name": "a.flv", "size": size, "r": "upos", "zone": "cs", "upcdn": "bda2"}
        return await self.http.get("/preupload", params=params, headers=self.headers)

    async def upload(self, data: bytes, *, upcdn: str = "bda2") -> dict:
        """A whole upload; returns the preupload ticket (with upload_id added)."""
        params = {"name": "a.flv", "size": len(data), "r": "upos", "zone": "cs", "upcdn": upcdn}
        pre = (await self.http.get("/preupload", params=params, headers=self.headers)).json()
        path = "/" + pre["upos_uri"].removeprefix("upos://")
        auth = {"X-Upos-Auth": pre["auth"]}
        init = await self.http.post(f"{path}?uploads&output=json", headers=auth)
        pre["upload_id"] = init.json()["upload_id"]
        pre["path"] = path
        chunks = max(1, -(-len(data) // CHUNK))
        for part in range(1, chunks + 1):
            reply = await self.put(pre, data, part)
            assert reply.text == "MULTIPART_PUT_SUCCESS", reply.text
        body = {"parts": [{"partNumber": n, "eTag": "etag"} for n in range(1, chunks + 1)]}
        done = await self.http.post(
            path, params={"output": "json", "uploadId": pre["upload_id"]}, json=body, headers=auth
        )
        assert done.json()["OK"] == 1, done.text
        return pre

    async def put(self, pre: dict, data: bytes, part: int) -> httpx.Response:
        start = (part - 1) * CHUNK
        end = min(start + CHUNK, len(data))
        chunks = max(1, -(-len(data) // CHUNK))
        params = {"partNumber": part, "uploadId": pre["upload_id"], "chunk": part - 1,
                  "chunks": chunks, "size": end - start, "start": start, "end": end,
                  "total": len(data)}  # fmt: skip
        return await self.http.put(
            pre["path"], params=params, content=data[start:end],
            headers={"X-Upos-Auth": pre["auth"]},
        )  # fmt: skip

    async def submit(self, pre: dict) -> int:
        filename = pre["upos_uri"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        body = {"title": "t", "tid": 171, "copyright": 2,
                "videos": [{"filename": filename, "title": "P1"}]}  # fmt: skip
        reply = await self.http.post(
            "/x/vu/web/add/v3", params={"csrf": self.csrf}, json=body, headers=self.headers
        )
        return reply.json()["code"]

    async def aclose(self) -> None:
        await self.http.aclose()


async def requests_of(control: httpx.AsyncClient, **filters: str) -> list[dict]:
    return (await control.get("/_sim/requests", params=filters)).json()["requests"]


# --- preupload throttling ----------------------------------------------------------


async def test_defaults_throttle_nothing(app: Starlette, control: httpx.AsyncClient) -> None:
    client = Client(app, "127.0.0.2")
    for _ in range(20):
        assert (await client.preupload()).json()["OK"] == 1
    assert (await control.get("/_sim/risk")).json() == {"throttled": [], "penalised": []}


@pytest.mark.parametrize(
    ("key", "same_account_elsewhere_refused", "other_account_same_ip_refused"),
    [("ip", False, True), ("account", True, False), ("pair", False, False)],
)
async def test_budget_keyed_by_ip_account_or_pair(
    app: Starlette,
    control: httpx.AsyncClient,
    key: str,
    same_account_elsewhere_refused: bool,
    other_account_same_ip_refused: bool,
) -> None:
    await control.post("/_sim/config", json={"risk": {"preupload_budget": 2, "key": key}})
    first = Client(app, "127.0.0.2")
    assert [(await first.preupload()).status_code for _ in range(3)] == [200, 200, 406]
    # The same account from another IP; another account from the same IP.
    same_account = Client(app, "127.0.0.3")
    same_ip = Client(app, "127.0.0.2", SECOND)
    assert ((await same_account.preupload()).status_code == 406) is same_account_elsewhere_refused
    assert ((await same_ip.preupload()).status_code == 406) is other_account_same_ip_refused
    refusals = await requests_of(control, op="preupload", code="406")
    assert len(refusals) == 1 + same_account_elsewhere_refused + other_account_same_ip_refused


async def test_406_lasts_while_the_window_is_full(
    app: Starlette, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await control.post("/_sim/config", json={"risk": {"preupload_budget": 1, "window_seconds": 60}})
    client = Client(app, "127.0.0.2")
    assert (await client.preupload()).status_code == 200
    clock.now += 30
    refused = await client.preupload()
    assert refused.status_code == 406 and refused.json() == {"code": 406, "message": TOO_FAST}
    clock.now += 29.9
    assert (await client.preupload()).status_code == 406
    clock.now += 0.2  # the first preupload left the window
    assert (await client.preupload()).status_code == 200


async def test_601_with_a_voucher_held_for_a_set_time(
    app: Starlette, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await control.post(
        "/_sim/config",
        json={"risk": {"preupload_budget": 1, "window_seconds": 60, "reply": "601",
                       "status_601": 412, "hold_seconds": 3600}},
    )  # fmt: skip
    client = Client(app, "127.0.0.2")
    assert (await client.preupload()).status_code == 200
    refused = await client.preupload()
    assert refused.status_code == 412
    body = refused.json()
    assert body["OK"] == 0 and body["code"] == 601 and body["message"] == TOO_FAST
    voucher = body["detail"]["v_voucher"]
    assert (
        voucher.startswith("voucher_") and voucher != "voucher_00000000-0000-4000-8000-000000000000"
    )
    clock.now += 600  # the window is free, the hold is not
    again = await client.preupload()
    assert again.status_code == 412 and again.json()["detail"]["v_voucher"] == voucher
    [throttled] = (await control.get("/_sim/risk")).json()["throttled"]
    assert throttled["ip"] == "127.0.0.2" and throttled["voucher"] == voucher
    assert throttled["seconds_left"] == pytest.approx(3000)
    clock.now += 3000
    assert (await client.preupload()).status_code == 200
    assert len(await requests_of(control, op="preupload", code="601")) == 2


async def test_601_until_the_captcha_is_solved(
    app: Starlette, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await control.post(
        "/_sim/config",
        json={"risk": {"preupload_budget": 1, "key": "account", "reply": "601",
                       "until_solved": True}},
    )  # fmt: skip
    client = Client(app, "127.0.0.2")
    assert (await client.preupload()).status_code == 200
    voucher = (await client.preupload()).json()["detail"]["v_voucher"]
    clock.now += 10 * 86400  # a captcha does not solve itself
    assert (await Client(app, "127.0.0.4").preupload()).json()["detail"]["v_voucher"] == voucher
    assert (await control.post("/_sim/captcha/voucher_nope/solve")).status_code == 404
    solved = await control.post(f"/_sim/captcha/{voucher}/solve")
    assert solved.status_code == 200
    assert solved.json() == {"solved": voucher, "key": {"ip": None, "mid": 10001}}
    assert (await client.preupload()).status_code == 200  # its budget starts afresh
    fresh = (await client.preupload()).json()["detail"]["v_voucher"]
    assert fresh != voucher
    assert (await control.post(f"/_sim/captcha/{voucher}/solve")).status_code == 404


async def test_until_solved_needs_601(control: httpx.AsyncClient) -> None:
    reply = await control.post("/_sim/config", json={"risk": {"until_solved": True}})
    assert reply.status_code == 400 and "until_solved" in reply.json()["error"]


# --- upos sessions -------------------------------------------------------------------


async def test_session_bound_to_the_preupload_address(
    app: Starlette, control: httpx.AsyncClient
) -> None:
    data = bytes(range(256)) * 600  # 3 parts
    owner = Client(app, "127.0.0.2")
    other = Client(app, "127.0.0.3")
    pre = (await owner.preupload(len(data))).json()
    pre["path"] = "/" + pre["upos_uri"].removeprefix("upos://")
    auth = {"X-Upos-Auth": pre["auth"]}
    assert f"uip={pre['uip']}" in pre["auth"] and pre["uip"] == "127.0.0.2"
    pre["upload_id"] = (
        await owner.http.post(f"{pre['path']}?uploads&output=json", headers=auth)
    ).json()["upload_id"]
    assert (await owner.put(pre, data, 1)).status_code == 200
    assert (await other.put(pre, data, 2)).status_code == 200  # binding off: accepted
    await control.post("/_sim/config", json={"upos": {"binding": "ip"}})
    refused = await other.put(pre, data, 3)
    assert refused.status_code == 403 and refused.content == b""
    assert refused.headers["X-Upos-Auth"].startswith("AUTH_UIP_MISMATCH")
    assert (await owner.put(pre, data, 3)).status_code == 200
    [record] = await requests_of(control, op="put", status="403")
    assert record["reason"] == "uip_mismatch" and record["ip"] == "127.0.0.3"


async def test_auth_older_than_its_lifetime_is_refused_like_upos(
    app: Starlette, control: httpx.AsyncClient
) -> None:
    wall = FakeClock(1_722_212_776.333)
    state_of(app).wall_clock = wall
    await control.post(
        "/_sim/config",
        json={"session_ttl_seconds": 30 * 86400, "upos": {"auth_lifetime_seconds": 5 * 86400}},
    )
    client = Client(app, "127.0.0.2")
    data = b"x" * 100
    pre = (await client.preupload(len(data))).json()
    pre["path"] = "/" + pre["upos_uri"].removeprefix("upos://")
    auth = {"X-Upos-Auth": pre["auth"]}
    pre["upload_id"] = (
        await client.http.post(f"{pre['path']}?uploads&output=json", headers=auth)
    ).json()["upload_id"]
    wall.now += 5 * 86400 + 17
    refused = await client.put(pre, data, 1)
    assert refused.status_code == 403 and refused.content == b""
    header = refused.headers["X-Upos-Auth"]
    assert header.startswith(f"AUTH_TS_GT_5DAY AUTH={pre['auth']} Now=")
    assert header.endswith(f"DURATION={5 * 86400 + 17}")
    [record] = await requests_of(control, op="put", status="403")
    assert record["reason"] == "AUTH_TS_GT_5DAY"


# --- submissions -----------------------------------------------------------------------


async def test_submission_min_gap_and_count_per_window_per_account(
    app: Starlette, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await control.post(
        "/_sim/config",
        json={"submit": {"min_gap_seconds": 60, "max_per_window": 2, "window_seconds": 3600}},
    )
    client = Client(app, "127.0.0.2")
    uploads = [await client.upload(b"x" * 10) for _ in range(4)]
    assert await client.submit(uploads[0]) == 0
    # Another IP does not help: the account is counted.
    elsewhere = Client(app, "127.0.0.3")
    assert await elsewhere.submit(uploads[1]) == 21566
    clock.now += 61
    assert await elsewhere.submit(uploads[1]) == 0
    clock.now += 61
    assert await client.submit(uploads[2]) == 137022
    other_account = Client(app, "127.0.0.2", SECOND)
    mine = await other_account.upload(b"y" * 10)
    assert await other_account.submit(mine) == 0  # another account, its own limits
    clock.now += 3600
    assert await client.submit(uploads[2]) == 0
    codes = [r["code"] for r in await requests_of(control, op="submit")]
    assert codes == [0, 21566, 0, 137022, 0, 0]
    submitted = (await control.get("/_sim/submissions")).json()["submissions"]
    assert len(submitted) == 4


async def test_regular_cadence_is_a_sticky_penalty(
    app: Starlette, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await control.post(
        "/_sim/config", json={"submit": {"cadence_count": 3, "cadence_tolerance_seconds": 5}}
    )
    client = Client(app, "127.0.0.2")
    uploads = [await client.upload(b"x" * 10) for _ in range(6)]
    for gap, expected in ((0, 0), (300, 0), (290, 0), (400, 0)):  # irregular: accepted
        clock.now += gap
        assert await client.submit(uploads.pop()) == expected
    clock.now += 400
    assert await client.submit(uploads.pop()) == 0  # gaps 290, 400, 400: not yet regular
    clock.now += 402
    assert await client.submit(uploads[0]) == 21515  # gaps 400, 400, 402: a machine
    clock.now += 86400
    assert await client.submit(uploads[0]) == 21515  # and it stays
    assert (await control.get("/_sim/risk")).json()["penalised"] == [10001]
    await control.post("/_sim/reset")
    assert (await control.get("/_sim/risk")).json()["penalised"] == []


async def test_submission_tool_disabled(app: Starlette, control: httpx.AsyncClient) -> None:
    await control.post("/_sim/config", json={"submit": {"tool_disabled": ["web"]}})
    client = Client(app, "127.0.0.2")
    pre = await client.upload(b"x" * 10)
    assert await client.submit(pre) == 21590
    assert (await control.get("/_sim/submissions")).json()["submissions"] == []
    [record] = await requests_of(control, op="submit", code="21590")
    assert record["ip"] == "127.0.0.2"


async def test_bad_submit_config_is_refused(control: httpx.AsyncClient) -> None:
    for body, needle in (
        ({"submit": {"cadence_count": 1}}, "cadence_count"),
        ({"submit": {"tool_disabled": ["tv"]}}, "submit.tool_disabled"),
        ({"upos": {"binding": "account"}}, "upos.binding"),
        ({"risk": {"key": "mid"}}, "risk.key"),
    ):
        reply = await control.post("/_sim/config", json=body)
        assert reply.status_code == 400 and needle in reply.json()["error"], reply.text


# --- zone and lines -------------------------------------------------------------------


async def test_zone_answers_the_callers_address(app: Starlette, control: httpx.AsyncClient) -> None:
    client = Client(app, "127.0.0.7", cookies="")
    body = (await client.http.get("/x/web-interface/zone")).json()
    assert body["code"] == 0 and body["ttl"] == 1
    data = body["data"]
    assert data["addr"] == "127.0.0.7"
    assert {"country", "province", "city", "isp", "latitude", "longitude"} <= set(data)
    await control.post(
        "/_sim/config", json={"faults": {"fail_next": [{"op": "zone", "status": 502}]}}
    )
    assert (await client.http.get("/x/web-interface/zone")).status_code == 502
    assert [r["status"] for r in await requests_of(control, op="zone")] == [200, 502]


async def test_a_line_with_a_bandwidth_cap_uploads_slowly(
    app: Starlette, control: httpx.AsyncClient
) -> None:
    rate = 200_000
    await control.post(
        "/_sim/config",
        json={"lines": {"cs_tx": {"bandwidth_bps": rate}, "cs_bda2": {"delay_seconds": 0.5}}},
    )
    data = bytes(4 * CHUNK)
    client = Client(app, "127.0.0.2")
    started = time.perf_counter()
    await client.upload(data, upcdn="tx")
    capped = time.perf_counter() - started
    # The bucket lets a small burst through, then meters the rest at the rate.
    assert capped >= (len(data) - max(rate / 20, 65536)) / rate
    with anyio.fail_after(capped):  # the uncapped line is faster, whatever its probe says
        await client.upload(data, upcdn="bda2")
    ledger = (await control.get("/_sim/uploads")).json()["uploads"]
    assert [u["line"] for u in ledger] == ["cs_tx", "cs_bda2"]
