"""TV QR login and the nav check: signed forms, reply reading, and the whole flow at the simulator.

The signatures are checked against the worked examples published in
bilibili-API-collect (``docs/login/login_action/QR.md``), so the forms are
what the real passport accepts, not just what our simulator accepts.
"""

from __future__ import annotations

import urllib.parse

import httpx
import pytest

from tests.conftest import SimServer
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.nav import NavError, check_login, read_nav
from uploader.retry import RetryPolicy
from uploader.sim.passport import verify_sign
from uploader.source import BytesSource
from uploader.submit import Submission, VideoPart, submit_app
from uploader.tv_login import (
    LoginResult,
    PollState,
    TvLoginClient,
    TvLoginError,
    auth_code_form,
    poll_form,
    read_auth_code,
    read_poll,
)
from uploader.upos import UposUploader

FAST_RETRY = RetryPolicy(attempts=2, initial=0.01, maximum=0.05)


# --- sans-IO -------------------------------------------------------------------


def test_forms_match_the_published_signatures() -> None:
    # bilibili-API-collect's curl examples (ts=0): the exact signatures Bilibili accepted.
    assert auth_code_form(0) == (
        "appkey=4409e2ce8ffd12b8&local_id=0&ts=0&sign=e134154ed6add881d28fbdf68653cd9c"
    )
    assert poll_form("6214464b3025541abf6f654cf7569a01", 0) == (
        "appkey=4409e2ce8ffd12b8&auth_code=6214464b3025541abf6f654cf7569a01&local_id=0&ts=0"
        "&sign=87de3d0fee7c3f4facd244537238914e"
    )
    params = dict(urllib.parse.parse_qsl(poll_form("abc", 1_700_000_000)))
    assert verify_sign(params)
    assert not verify_sign({**params, "auth_code": "abd"})


def test_read_replies() -> None:
    qr = read_auth_code({"code": 0, "data": {"url": "https://x/?auth_code=c1", "auth_code": "c1"}})
    assert qr.auth_code == "c1" and "c1" not in repr(qr)
    with pytest.raises(TvLoginError, match="code -3"):
        read_auth_code({"code": -3, "message": "API校验密匙错误"})
    with pytest.raises(TvLoginError):
        read_auth_code({"code": 0, "data": {"url": ""}})
    assert read_poll({"code": 86039}).state is PollState.WAITING
    assert read_poll({"code": 86090}).state is PollState.SCANNED
    assert read_poll({"code": 86038}).state is PollState.EXPIRED
    with pytest.raises(TvLoginError, match="-404"):
        read_poll({"code": -404, "message": "啥都木有"})
    with pytest.raises(TvLoginError):
        read_poll("not json")
    done = read_poll(
        {
            "code": 0,
            "data": {
                "mid": 7,
                "access_token": "ak-SECRET",
                "refresh_token": "rt-SECRET",
                "expires_in": 15552000,
                "cookie_info": {"cookies": [{"name": "SESSDATA", "value": "s-SECRET"}]},
            },
        }
    )
    assert done.state is PollState.DONE and done.result is not None
    assert done.result.cookies == {"SESSDATA": "s-SECRET"}
    assert "SECRET" not in repr(done.result) and "SECRET" not in str(done)
    creds = Credentials.from_biliup_json(done.result.to_biliup_json())
    assert creds.access_key == "ak-SECRET" and creds.mid == 7
    with pytest.raises(TvLoginError, match="access_token"):
        read_poll({"code": 0, "data": {"mid": 7}})


def test_read_nav() -> None:
    ok = read_nav({"code": 0, "data": {"isLogin": True, "mid": 5, "uname": "u"}})
    assert (ok.logged_in, ok.mid, ok.uname) == (True, 5, "u")
    assert not read_nav({"code": -101, "data": {"isLogin": False}}).logged_in
    with pytest.raises(NavError):
        read_nav({"code": -412, "message": "请求被拦截"})


# --- against the simulator ----------------------------------------------------------


def phone(sim: SimServer, auth_code: str, action: str, **body: object) -> dict:
    response = httpx.post(f"{sim.url}/_sim/qr/{auth_code}/{action}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def sim_account(sim: SimServer, **body: object) -> None:
    httpx.post(f"{sim.url}/_sim/accounts", json=body, timeout=10).raise_for_status()


@pytest.mark.anyio
async def test_qr_flow_gives_an_account_that_uploads_and_submits(sim: SimServer) -> None:
    client = TvLoginClient(sim.url)
    qr = await client.request_qr()
    assert qr.auth_code in qr.url
    assert (await client.poll(qr.auth_code)).state is PollState.WAITING
    phone(sim, qr.auth_code, "scan")
    assert (await client.poll(qr.auth_code)).state is PollState.SCANNED
    phone(sim, qr.auth_code, "confirm", mid=31337, uname="tester")
    outcome = await client.poll(qr.auth_code)
    assert outcome.state is PollState.DONE
    result = outcome.result
    assert isinstance(result, LoginResult) and result.mid == 31337
    assert {"SESSDATA", "bili_jct", "DedeUserID"} <= set(result.cookies)
    # The code is used up: a second poll does not hand the tokens out again.
    assert (await client.poll(qr.auth_code)).state is PollState.EXPIRED
    codes = [r["code"] for r in sim.requests() if r["op"] == "qr_poll"]
    assert codes == [86039, 86090, 0, 86038]

    # What the login yields is a working account: upload with its cookies,
    # submit with its app token (the two uses bupmesh has for them).
    creds = Credentials.from_biliup_json(result.to_biliup_json())
    async with BiliClient(creds, member_url=sim.url) as bili:
        uploaded = await UposUploader(bili, line="cs_bda2", retry=FAST_RETRY).upload(
            BytesSource(b"x" * 1000), "qr.flv"
        )
        archive = await submit_app(
            bili,
            Submission(title="qr", videos=[VideoPart(filename=uploaded.filename, title="P1")]),
        )
    assert archive.aid > 0
    [ledger] = [u for u in sim.uploads() if u["filename"] == uploaded.filename]
    assert ledger["mid"] == 31337
    assert sim.submissions()[-1]["mid"] == 31337
    nav = await check_login(creds, api_url=sim.url)
    assert (nav.logged_in, nav.mid, nav.uname) == (True, 31337, "tester")


@pytest.mark.anyio
async def test_expired_code_and_bad_signatures(sim: SimServer) -> None:
    client = TvLoginClient(sim.url)
    qr = await client.request_qr()
    phone(sim, qr.auth_code, "expire")
    assert (await client.poll(qr.auth_code)).state is PollState.EXPIRED

    def post(path: str, form: str) -> dict:
        return httpx.post(
            f"{sim.url}/x/passport-tv-login/qrcode/{path}", content=form, timeout=10,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()

    good = poll_form(qr.auth_code, 1_700_000_000)
    assert post("poll", good)["code"] == 86038
    tampered = good.replace("ts=1700000000", "ts=1700000001")
    assert post("poll", tampered)["code"] == -3
    assert post("auth_code", auth_code_form(0).replace("appkey=4409", "appkey=0000"))["code"] == -3
    assert post("auth_code", "appkey=4409e2ce8ffd12b8&ts=0")["code"] == -400
    assert post("poll", poll_form("0" * 32, 0))["code"] == -404
    # The client turns a refusal into an error that names the code, not the form.
    with pytest.raises(TvLoginError, match="-404"):
        await client.poll("0" * 32)


@pytest.mark.anyio
async def test_nav_tells_valid_from_dead_cookies(sim: SimServer) -> None:
    live = "SESSDATA=live-s; bili_jct=live-j; DedeUserID=4100"
    dead = "SESSDATA=dead-s; bili_jct=dead-j; DedeUserID=4101"
    sim_account(sim, cookies=live)
    sim_account(sim, cookies=dead, expired=True)
    ok = await check_login(Credentials.from_cookie_string(live), api_url=sim.url)
    assert ok.logged_in and ok.mid == 4100 and ok.uname
    assert not (await check_login(Credentials.from_cookie_string(dead), api_url=sim.url)).logged_in
    unknown = Credentials.from_cookie_string("SESSDATA=who; bili_jct=x")
    assert not (await check_login(unknown, api_url=sim.url)).logged_in
    with pytest.raises(NavError, match="no cookies"):
        await check_login(Credentials({}, access_key="ak"), api_url=sim.url)
    with pytest.raises(NavError, match="cannot reach"):
        await check_login(Credentials.from_cookie_string(live), api_url="http://127.0.0.1:9")
