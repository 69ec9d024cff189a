"""The uploader against Bilibili's account- and session-level rules, on asyncio and trio.

The simulator runs in-process (``httpx.ASGITransport``; ``client`` sets the
source address), so each rule is switched on in its config and the uploader,
the submitters and the zone lookup meet it the way they would meet Bilibili:
601 with a voucher, a session refused from another address or too old,
account throttles and penalties on submission, the egress address, and the
line a measured estimate prefers over the fastest probe.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import ErrorKind, StaleSessionError, UploadError
from uploader.line_choice import LineEstimator
from uploader.progress import ProgressMeter
from uploader.retry import RetryPolicy
from uploader.session import UposSession
from uploader.sim.app import build_app
from uploader.sim.config import SimConfig
from uploader.source import BytesSource
from uploader.submit import Submission, VideoPart, submit_app, submit_web
from uploader.upos import UposUploader, _RunState
from uploader.zone import egress_address, read_zone

pytestmark = pytest.mark.anyio

SIM = "http://sim.test"
CHUNK = 64 * 1024
FAST_RETRY = RetryPolicy(attempts=2, initial=0.01, maximum=0.05)


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now


def make_app(**config: object) -> Starlette:
    return build_app(msgspec.convert({"chunk_size": CHUNK, **config}, SimConfig))


def bili(app: Starlette, ip: str = "127.0.0.1") -> BiliClient:
    credentials = Credentials.from_cookie_string(SIM_COOKIES, access_key=SIM_ACCESS_KEY)
    transport = httpx.ASGITransport(app=app, client=(ip, 40001))
    return BiliClient(credentials, member_url=SIM, api_url=SIM, transport=transport)


async def control(app: Starlette, method: str, path: str, body: object = None) -> dict:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=SIM) as http:
        response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


def data_of(parts: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(parts * CHUNK - 7)


async def started(app: Starlette, ip: str, data: bytes, parts_done: int) -> UposSession:
    """A session opened from ``ip`` with its first ``parts_done`` parts accepted."""
    async with bili(app, ip) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        session = await uploader._start(len(data), "rec.flv")
        for part in range(1, parts_done + 1):
            start, end = session.part_range(part)
            state = _RunState(session=session, meter=ProgressMeter(session.size, start=0))
            await uploader._put(state, part, data[start:end], resuming=False)
            session = session.with_part_done(part)
    return session


# --- preupload risk control -----------------------------------------------------------


async def test_a_601_reaches_the_uploader_with_its_voucher() -> None:
    app = make_app()
    await control(
        app, "POST", "/_sim/config",
        {"risk": {"preupload_budget": 1, "reply": "601", "until_solved": True}},
    )  # fmt: skip
    async with bili(app, "127.0.0.2") as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        await uploader.upload(BytesSource(b"x" * 10), "a.flv")
        with pytest.raises(UploadError) as info:
            await uploader.upload(BytesSource(b"x" * 10), "b.flv")
    error = info.value
    assert error.kind is ErrorKind.RISK_CONTROL and error.code == 601 and error.status == 406
    [throttled] = (await control(app, "GET", "/_sim/risk"))["throttled"]
    assert error.voucher == throttled["voucher"]
    preuploads = (await control(app, "GET", "/_sim/requests?op=preupload"))["requests"]
    assert [r["code"] for r in preuploads] == [None, 601]  # refused once, never retried


# --- upos sessions --------------------------------------------------------------------


async def test_resume_from_another_address_is_refused_when_sessions_are_bound() -> None:
    app = make_app(upos={"binding": "ip"})
    data = data_of(4)
    session = await started(app, "127.0.0.2", data, parts_done=2)
    async with bili(app, "127.0.0.3") as client:
        # One thread: exactly one request meets the refusal.
        uploader = UposUploader(client, threads=1, retry=FAST_RETRY, restart_rejected=False)
        with pytest.raises(StaleSessionError) as info:
            await uploader.upload(BytesSource(data), "rec.flv", session=session)
    assert info.value.kind is ErrorKind.SESSION_REJECTED and info.value.status == 403
    assert "AUTH_UIP_MISMATCH" in info.value.message
    refused = (await control(app, "GET", "/_sim/requests?status=403"))["requests"]
    assert [(r["op"], r["ip"], r["reason"]) for r in refused] == [
        ("put", "127.0.0.3", "uip_mismatch")
    ]
    # The same session resumed from its own address finishes.
    async with bili(app, "127.0.0.2") as client:
        result = await UposUploader(client, retry=FAST_RETRY).upload(
            BytesSource(data), "rec.flv", session=session
        )
    [entry] = (await control(app, "GET", "/_sim/uploads"))["uploads"]
    assert entry["filename"] == result.filename
    assert entry["md5"] == hashlib.md5(data).hexdigest()


async def test_a_session_aging_out_mid_upload_is_rejected_not_retried() -> None:
    app = make_app(session_ttl_seconds=30 * 86400, upos={"auth_lifetime_seconds": 5 * 86400})
    wall = FakeClock(1_722_212_776.0)
    app.state.sim.state.wall_clock = wall

    def five_days_pass(session: UposSession) -> None:
        wall.now += 5 * 86400 + 1  # the agent sat on this upload for five days

    data = data_of(3)
    async with bili(app, "127.0.0.2") as client:
        uploader = UposUploader(
            client, line="cs_bda2", threads=1, retry=FAST_RETRY, on_commit=five_days_pass
        )
        with pytest.raises(UploadError) as info:
            await uploader.upload(BytesSource(data), "rec.flv")
    error = info.value
    assert error.kind is ErrorKind.SESSION_REJECTED and not isinstance(error, StaleSessionError)
    assert str(error).endswith("HTTP 403 on put part 2: AUTH_TS_GT_5DAY")
    puts = (await control(app, "GET", "/_sim/requests?op=put"))["requests"]
    assert [r["status"] for r in puts] == [200, 403]


# --- submissions ------------------------------------------------------------------------


async def test_account_throttles_and_penalties_on_submission() -> None:
    app = make_app(submit={"min_gap_seconds": 3600, "tool_disabled": ["app"]})
    async with bili(app, "127.0.0.2") as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        first = await uploader.upload(BytesSource(b"a" * 10), "a.flv")
        second = await uploader.upload(BytesSource(b"b" * 10), "b.flv")

        def submission(filename: str) -> Submission:
            return Submission(title="t", videos=[VideoPart(filename=filename, title="P1")])

        await submit_web(client, submission(first.filename))
        with pytest.raises(UploadError) as throttled:
            await submit_web(client, submission(second.filename))
        with pytest.raises(UploadError) as disabled:
            await submit_app(client, submission(second.filename))
    assert throttled.value.kind is ErrorKind.ACCOUNT_THROTTLE and throttled.value.code == 21566
    assert throttled.value.retry_after is None  # Bilibili does not say how long
    assert disabled.value.kind is ErrorKind.ACCOUNT_PENALTY and disabled.value.code == 21590
    assert "投稿工具已停用" in str(disabled.value)


async def test_a_regular_cadence_is_an_account_penalty() -> None:
    app = make_app(submit={"cadence_count": 2, "cadence_tolerance_seconds": 3600})
    async with bili(app, "127.0.0.2") as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        results = [await uploader.upload(BytesSource(bytes([n]) * 10), "a.flv") for n in range(3)]
        for result in results[:2]:
            await submit_web(client, Submission(title="t", videos=[VideoPart(
                filename=result.filename, title="P1")]))  # fmt: skip
        with pytest.raises(UploadError) as info:
            await submit_web(client, Submission(title="t", videos=[VideoPart(
                filename=results[2].filename, title="P1")]))  # fmt: skip
    assert info.value.kind is ErrorKind.ACCOUNT_PENALTY and info.value.code == 21515


# --- the egress address -------------------------------------------------------------------


async def test_egress_address_is_the_address_bilibili_sees() -> None:
    app = make_app()
    async with bili(app, "127.0.0.9") as client:
        assert await egress_address(client) == "127.0.0.9"
        await control(
            app, "POST", "/_sim/config",
            {"faults": {"fail_next": [{"op": "zone", "status": 502}]}},
        )  # fmt: skip
        with pytest.raises(UploadError) as info:
            await egress_address(client)
    assert info.value.kind is ErrorKind.NETWORK
    zone = (await control(app, "GET", "/_sim/requests?op=zone"))["requests"]
    assert [(r["ip"], r["status"]) for r in zone] == [("127.0.0.9", 200), ("127.0.0.9", 502)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"code": 0, "data": {"addr": "203.0.113.7", "country": "中国"}}, "203.0.113.7"),
        ({"code": 0, "data": {"addr": " 2001:DB8::1 "}}, "2001:db8::1"),
        ({"code": 0, "data": {"addr": "not-an-ip"}}, None),
        ({"code": 0, "data": {}}, None),
        ({"code": 0}, None),
        (None, None),
    ],
)
def test_read_zone(payload: object, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UploadError) as info:
            read_zone(payload)
        assert info.value.kind is ErrorKind.BAD_REQUEST
    else:
        assert read_zone(payload) == expected


# --- lines ------------------------------------------------------------------------------


@dataclass
class ScriptedRng:
    draws: list[float] = field(default_factory=list)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.99

    def choice(self, seq: list) -> object:
        return seq[0]


async def test_the_measured_line_beats_the_fastest_probe() -> None:
    # cs_bda2 answers the probe at once but uploads at 200 kB/s; cs_tx answers late, uploads fast.
    lines = {"cs_bda2": {"bandwidth_bps": 200_000}, "cs_tx": {"delay_seconds": 0.3}}
    app = make_app(lines=lines)
    # Upload 1: exploit (only seeds: the fastest probe). Upload 2: explore. Then exploit.
    estimator = LineEstimator(rng=ScriptedRng([0.99, 0.0, 0.99]), explore_rate=0.1)
    data = data_of(4)
    async with bili(app, "127.0.0.2") as client:
        for n in range(3):
            uploader = UposUploader(client, line="auto", retry=FAST_RETRY, lines=estimator)
            result = await uploader.upload(BytesSource(data), f"{n}.flv")
            assert result.line == ("cs_bda2", "cs_tx", "cs_tx")[n]
    ledger = (await control(app, "GET", "/_sim/uploads"))["uploads"]
    assert [u["line"] for u in ledger] == ["cs_bda2", "cs_tx", "cs_tx"]
    probe_lists = (await control(app, "GET", "/_sim/requests?op=probe"))["requests"]
    assert sum(1 for r in probe_lists if "line" not in r) == 1  # probed once, then measured
    slow, fast = estimator.estimate("cs_bda2"), estimator.estimate("cs_tx")
    assert slow is not None and fast is not None and fast > slow
    best = estimator.best()
    assert best is not None and best.name == "cs_tx" and best.measured
