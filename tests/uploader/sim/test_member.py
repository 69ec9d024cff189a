"""The simulator's member routes: cookies and accounts, web and app submission, covers.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test): real sockets are what connection drops, stalls and
source IPs need (see `uploader.sim.inbound`).
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.flow import COOKIES, Flow, app_query, client, submit_body


def test_member_routes_check_cookies(sim: SimServer) -> None:
    def preupload(cookies: dict) -> dict:
        return httpx.get(
            f"{sim.url}/preupload",
            params={"name": "a.flv", "size": 1, "r": "upos"},
            cookies=cookies,
        ).json()

    assert preupload({})["code"] == -101
    assert preupload({"SESSDATA": "someone-else"})["code"] == -101
    assert preupload({"SESSDATA": "someone-else"})["message"] == "账号未登录"
    assert preupload(COOKIES)["OK"] == 1
    added = httpx.post(
        f"{sim.url}/_sim/accounts",
        json={
            "cookies": "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001",
            "expired": True,
        },
    )
    assert added.status_code == 200
    assert preupload(COOKIES)["code"] == -101  # expired cookies
    body = submit_body("n1", 1)
    web = httpx.post(
        f"{sim.url}/x/vu/web/add/v3", params={"csrf": "sim-csrf"}, json=body, cookies=COOKIES
    )
    assert web.json()["code"] == -101


def test_extra_accounts(sim: SimServer) -> None:
    cookies = {"SESSDATA": "second", "bili_jct": "csrf2", "DedeUserID": "20002"}
    response = httpx.post(
        f"{sim.url}/_sim/accounts",
        json={"cookies": "SESSDATA=second; bili_jct=csrf2; DedeUserID=20002", "access_key": "key2"},
    )
    assert response.json()["account"]["mid"] == 20002
    with client(cookies=cookies) as http:
        reply = http.get(
            f"{sim.url}/preupload", params={"name": "x.flv", "size": 10, "r": "upos"}
        ).json()
    assert reply["OK"] == 1 and "uid=20002" in reply["auth"]


def test_web_submission(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    body = submit_body(flow.filename, flow.pre["biz_id"])
    url = f"{sim.url}/x/vu/web/add/v3"

    wrong_csrf = httpx.post(url, params={"t": 1, "csrf": "nope"}, json=body, cookies=COOKIES)
    assert wrong_csrf.status_code == 200 and wrong_csrf.json()["code"] == -111
    no_csrf = httpx.post(url, json=body, cookies=COOKIES)
    assert no_csrf.json()["code"] == -111
    assert sim.submissions() == []

    reply = httpx.post(
        url, params={"t": int(time.time() * 1000), "csrf": "sim-csrf"}, json=body, cookies=COOKIES
    )
    payload = reply.json()
    assert payload["code"] == 0 and payload["message"] == "0" and payload["ttl"] == 1
    assert set(payload["data"]) == {"aid", "bvid"}
    assert payload["data"]["bvid"].startswith("BV1")
    [record] = sim.submissions()
    assert record["aid"] == payload["data"]["aid"] and record["flavour"] == "web"
    assert record["videos"] == [
        {"filename": flow.filename, "title": "P1", "desc": "", "cid": flow.pre["biz_id"]}
    ]
    assert record["copyright"] == 2 and record["source"] == "https://live.bilibili.com/1"
    assert record["tid"] == 171 and record["tag"] == "live,rec" and record["mid"] == 10001


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"title": ""}, "title"),
        ({"tid": "x"}, "tid"),
        ({"copyright": 3}, "copyright"),
        ({"videos": []}, "videos"),
        ({"videos": [{"filename": "n000000notuploaded", "title": "P1"}]}, "not an upload"),
    ],
)
def test_submission_body_is_checked(sim: SimServer, change: dict, needle: str) -> None:
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    body = {**submit_body(flow.filename, flow.pre["biz_id"]), **change}
    reply = httpx.post(
        f"{sim.url}/x/vu/web/add/v3", params={"csrf": "sim-csrf"}, json=body, cookies=COOKIES
    )
    assert reply.json()["code"] == -400 and needle in reply.json()["message"]
    assert sim.submissions() == []


def test_app_submission_is_signed(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    body = submit_body(flow.filename, flow.pre["biz_id"])
    url = f"{sim.url}/x/vu/app/add"

    good = httpx.post(f"{url}?{app_query()}", json=body)
    assert good.json()["code"] == 0 and set(good.json()["data"]) == {"aid", "bvid"}
    assert sim.submissions()[0]["flavour"] == "app"

    tampered = app_query().replace("channel=bili", "channel=evil")
    assert httpx.post(f"{url}?{tampered}", json=body).json()["code"] == -3
    no_sign = app_query().rsplit("&sign=", 1)[0]
    assert httpx.post(f"{url}?{no_sign}", json=body).json()["code"] == -3
    assert (
        httpx.post(f"{url}?{app_query(appkey='0000000000000000')}", json=body).json()["code"] == -1
    )
    assert httpx.post(f"{url}?{app_query(access_key='stolen')}", json=body).json()["code"] == -101
    assert len(sim.submissions()) == 1


def test_cover_upload(sim: SimServer) -> None:
    url = f"{sim.url}/x/vu/web/cover/up"
    image = "data:image/png;base64,iVBORw0KGgo="
    ok = httpx.post(url, data={"cover": image, "csrf": "sim-csrf"}, cookies=COOKIES).json()
    assert ok["code"] == 0 and ok["data"]["url"].startswith(
        "https://archive.biliimg.com/bfs/archive/"
    )
    assert (
        httpx.post(url, data={"cover": image, "csrf": "x"}, cookies=COOKIES).json()["code"] == -111
    )
    assert httpx.post(url, data={"cover": image, "csrf": "sim-csrf"}).json()["code"] == -101
    assert (
        httpx.post(url, data={"cover": "hello", "csrf": "sim-csrf"}, cookies=COOKIES).json()["code"]
        == -400
    )
