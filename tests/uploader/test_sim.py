"""The Bilibili simulator (`bupmesh sim-bili`): protocol, checks, risk model, faults, ledger.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test). Source IPs other than 127.0.0.1 come from binding the
client to 127.0.0.2, 127.0.0.3, ... on loopback.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import SIM_ACCESS_KEY, SimServer, bupmesh_command, start_sim, stop_process

COOKIES = {"SESSDATA": "sim-sessdata", "bili_jct": "sim-csrf", "DedeUserID": "10001"}
BILITV_KEY, BILITV_SECRET = "4409e2ce8ffd12b8", "59b43e04ad6965f34319062b478f83dd"
TOO_FAST = "您上传视频过快，请您稍作休息后再继续"


def client(ip: str = "127.0.0.1", timeout: float = 30, cookies: dict | None = None) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=ip),
        timeout=timeout,
        trust_env=False,
        cookies=cookies,
    )


@dataclass
class Flow:
    """One upload spoken by hand, request by request, as a real client speaks it."""

    sim: SimServer
    size: int
    ip: str = "127.0.0.1"
    name: str = "recording.flv"
    http: httpx.Client = field(init=False)
    pre: dict = field(init=False, default_factory=dict)
    upload_id: str = ""

    def __post_init__(self) -> None:
        self.http = client(self.ip, cookies=COOKIES)

    def preupload(self, **extra: object) -> httpx.Response:
        params = {
            "name": self.name,
            "size": self.size,
            "r": "upos",
            "profile": "ugcupos/bup",
            "ssl": 0,
            "version": "2.14.0",
            "build": 2140000,
            "upcdn": "bda2",
            "zone": "cs",
            "probe_version": 20221109,
            **extra,
        }
        response = self.http.get(f"{self.sim.url}/preupload", params=params)
        if response.status_code == 200 and response.json().get("OK") == 1:
            self.pre = response.json()
        return response

    @property
    def url(self) -> str:
        scheme = urllib.parse.urlsplit(self.sim.url).scheme
        return f"{scheme}:{self.pre['endpoint']}/{self.pre['upos_uri'].removeprefix('upos://')}"

    @property
    def auth(self) -> dict[str, str]:
        return {"X-Upos-Auth": self.pre["auth"]}

    @property
    def chunk_size(self) -> int:
        return self.pre["chunk_size"]

    @property
    def chunks(self) -> int:
        return max(1, math.ceil(self.size / self.chunk_size))

    def init(self, headers: dict | None = None) -> httpx.Response:
        response = self.http.post(
            f"{self.url}?uploads&output=json",
            headers=self.auth if headers is None else headers,
        )
        if response.status_code == 200:
            self.upload_id = response.json()["upload_id"]
        return response

    def part_params(self, part: int) -> dict[str, int | str]:
        start = (part - 1) * self.chunk_size
        end = min(start + self.chunk_size, self.size)
        return {
            "partNumber": part,
            "uploadId": self.upload_id,
            "chunk": part - 1,
            "chunks": self.chunks,
            "size": end - start,
            "start": start,
            "end": end,
            "total": self.size,
        }

    def put(
        self,
        part: int,
        data: bytes,
        *,
        headers: dict | None = None,
        http: httpx.Client | None = None,
        **overrides: object,
    ) -> httpx.Response:
        start = (part - 1) * self.chunk_size
        body = data[start : start + self.chunk_size]
        params = {**self.part_params(part), **overrides}
        return (http or self.http).put(
            self.url,
            params=params,
            content=body,
            headers=self.auth if headers is None else headers,
        )

    def complete(self, parts: list[int] | None = None, **overrides: object) -> httpx.Response:
        numbers = list(range(1, self.chunks + 1)) if parts is None else parts
        params = {
            "output": "json",
            "name": self.name,
            "profile": "ugcupos/bup",
            "uploadId": self.upload_id,
            "biz_id": self.pre["biz_id"],
            **overrides,
        }
        return self.http.post(
            self.url,
            params=params,
            json={"parts": [{"partNumber": n, "eTag": "etag"} for n in numbers]},
            headers=self.auth,
        )

    def upload_all(self, data: bytes) -> dict:
        assert self.preupload().json()["OK"] == 1
        assert self.init().status_code == 200
        for part in range(1, self.chunks + 1):
            response = self.put(part, data)
            assert response.text == "MULTIPART_PUT_SUCCESS", response.text
        response = self.complete()
        assert response.json()["OK"] == 1, response.text
        return response.json()

    @property
    def filename(self) -> str:
        return self.pre["upos_uri"].rsplit("/", 1)[1].rsplit(".", 1)[0]


def small_chunks(sim: SimServer, chunk_size: int = 64 * 1024, **more: object) -> None:
    sim.config(chunk_size=chunk_size, **more)


def submit_body(filename: str, biz_id: int, **extra: object) -> dict:
    return {
        "copyright": 2,
        "source": "https://live.bilibili.com/1",
        "tid": 171,
        "cover": "",
        "title": "a recording",
        "desc": "desc",
        "tag": "live,rec",
        "dynamic": "",
        "videos": [{"filename": filename, "title": "P1", "desc": "", "cid": biz_id}],
        **extra,
    }


def app_query(access_key: str = SIM_ACCESS_KEY, appkey: str = BILITV_KEY) -> str:
    params = {
        "access_key": access_key,
        "appkey": appkey,
        "build": 7800300,
        "c_locale": "zh-Hans_CN",
        "channel": "bili",
        "disable_rcmd": 0,
        "mobi_app": "android",
        "platform": "android",
        "s_locale": "zh-Hans_CN",
        "statistics": '"appId":1,"platform":3,"version":"7.80.0","abtest":""',
        "ts": int(time.time()),
    }
    encoded = urllib.parse.urlencode(sorted(params.items()))
    sign = hashlib.md5((encoded + BILITV_SECRET).encode()).hexdigest()
    return f"{encoded}&sign={sign}"


# --- the protocol ------------------------------------------------------------------


def test_full_flow_shapes_and_ledger(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(3 * 64 * 1024 + 1000)
    flow = Flow(sim, len(data))

    pre = flow.preupload().json()
    assert pre["OK"] == 1
    for key in (
        "auth",
        "biz_id",
        "chunk_size",
        "endpoint",
        "endpoints",
        "upos_uri",
        "threads",
        "timeout",
    ):
        assert key in pre
    host = urllib.parse.urlsplit(sim.url).netloc
    assert pre["endpoint"] == f"//{host}"
    assert pre["chunk_size"] == 64 * 1024 and pre["threads"] == 3
    assert pre["upos_uri"].startswith("upos://ugcfx2lf/n") and pre["upos_uri"].endswith(".flv")
    assert "uip=127.0.0.1" in pre["auth"]

    init = flow.init().json()
    assert init["OK"] == 1 and init["bucket"] == "ugcfx2lf"
    assert init["key"] == "/" + pre["upos_uri"].rsplit("/", 1)[1]
    assert init["upload_id"]

    # Parts arrive out of order and concurrently (held until the prefix reaches them).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda p: flow.put(p, data, http=client()), [4, 2, 3, 1]))
    assert [r.text for r in replies] == ["MULTIPART_PUT_SUCCESS"] * 4

    done = flow.complete().json()
    key = pre["upos_uri"].removeprefix("upos://ugcfx2lf/")
    assert done == {"OK": 1, "location": f"ugcfx2lf/{key}", "bucket": "ugcfx2lf", "key": f"/{key}"}

    [entry] = sim.uploads()
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["filename"] == flow.filename
    assert entry["size"] == len(data) and entry["parts"] == 4
    assert entry["biz_id"] == pre["biz_id"] and entry["mid"] == 10001
    assert entry["source_ip"] == "127.0.0.1" and entry["upload_id"] == flow.upload_id
    assert entry["time"] > 0

    ops = [(r["op"], r["status"]) for r in sim.requests()]
    assert ops[:2] == [("preupload", 200), ("init", 200)]
    assert sorted(r["part"] for r in sim.requests() if r["op"] == "put") == [1, 2, 3, 4]
    assert ops[-1] == ("complete", 200)
    puts = httpx.get(f"{sim.url}/_sim/requests", params={"op": "put", "upload_id": flow.upload_id})
    assert len(puts.json()["requests"]) == 4


@pytest.mark.parametrize(
    "size",
    [0, 1, 64 * 1024, 64 * 1024 + 1],
    ids=["empty", "one-byte", "one-chunk", "chunk-plus-one"],
)
def test_edge_sizes(sim: SimServer, size: int) -> None:
    small_chunks(sim)
    data = os.urandom(size)
    flow = Flow(sim, size)
    flow.upload_all(data)
    [entry] = sim.uploads()
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["parts"] == max(1, math.ceil(size / (64 * 1024)))


def test_zero_byte_file_is_one_empty_part(sim: SimServer) -> None:
    flow = Flow(sim, 0)
    flow.preupload()
    flow.init()
    assert flow.part_params(1) | {"uploadId": ""} == {
        "partNumber": 1, "uploadId": "", "chunk": 0, "chunks": 1,
        "size": 0, "start": 0, "end": 0, "total": 0,
    }  # fmt: skip
    assert flow.put(1, b"").text == "MULTIPART_PUT_SUCCESS"
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(b"").hexdigest()


def test_probe_lists_lines_and_line_delays_pick_the_fastest(sim: SimServer) -> None:
    # A whole second of delay: a loaded CI machine can spend 0.3 s on an undelayed ping.
    sim.config(lines={"cs_bda2": {"delay_seconds": 1.0}, "cs_tx": {"delay_seconds": 0.0}})
    reply = httpx.get(f"{sim.url}/preupload", params={"r": "probe"}).json()
    assert reply["OK"] == 1
    lines = {line["line"]: line for line in reply["lines"]}
    assert {"cs_bda2", "cs_tx", "cs_txa", "cs_alia", "cs_bldsa"} <= set(lines)
    assert lines["cs_tx"]["os"] == "upos"
    assert "upcdn=tx" in lines["cs_tx"]["query"] and "zone=cs" in lines["cs_tx"]["query"]
    costs = {}
    for name in ("cs_bda2", "cs_tx"):
        started = time.perf_counter()
        ping = httpx.post(f"http:{lines[name]['probe_url']}", content=bytes(102400))
        costs[name] = time.perf_counter() - started
        assert ping.status_code == 200
    assert costs["cs_bda2"] >= 1.0 > costs["cs_tx"]
    assert [r["line"] for r in sim.requests() if r["op"] == "probe" and "line" in r] == [
        "cs_bda2",
        "cs_tx",
    ]


# --- checks the real service makes -------------------------------------------------


def test_upos_auth_must_match(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.preupload()
    assert flow.init(headers={}).status_code == 403
    assert flow.init(headers={"X-Upos-Auth": "ak=1&sign=forged"}).status_code == 403
    flow.init()
    assert flow.put(1, data, headers={"X-Upos-Auth": "forged"}).status_code == 403
    other = Flow(sim, 10)
    other.preupload()
    assert flow.put(1, data, headers=other.auth).status_code == 403  # another ticket's auth
    assert flow.put(1, data).status_code == 200
    bad = flow.http.post(
        flow.url,
        params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
        json={"parts": [{"partNumber": 1, "eTag": "etag"}]},
    )
    assert bad.status_code == 403
    assert sim.uploads() == []


@pytest.mark.parametrize(
    "override",
    [
        {"partNumber": 0},
        {"partNumber": 5},
        {"chunk": 1},
        {"chunks": 3},
        {"size": 100},
        {"start": 1},
        {"end": 65535},
        {"total": 999},
        {"partNumber": "x"},
        {"size": None},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_part_ranges_must_be_consistent(sim: SimServer, override: dict) -> None:
    small_chunks(sim)
    data = os.urandom(4 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    response = flow.put(1, data, **override)
    assert response.status_code == 400, response.text
    assert response.json()["OK"] == 0 and response.json()["message"]


def test_body_length_must_match_size(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    response = flow.http.put(
        flow.url, params=flow.part_params(1), content=data[:1000], headers=flow.auth
    )
    assert response.status_code == 400
    assert "Content-Length" in response.json()["message"]

    def chunked():
        yield data[:1000]

    response = flow.http.put(
        flow.url, params=flow.part_params(1), content=chunked(), headers=flow.auth
    )
    assert response.status_code == 400
    assert "body has 1000 bytes" in response.json()["message"]


def test_unknown_upload_id_and_object(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    assert flow.put(1, data, uploadId="no-such-upload").status_code == 404
    assert flow.complete(uploadId="no-such-upload").status_code == 404
    wrong_path = flow.url.rsplit("/", 1)[0] + "/n000000nosuchobject.flv"
    assert (
        flow.http.put(
            wrong_path, params=flow.part_params(1), content=data, headers=flow.auth
        ).status_code
        == 404
    )
    assert flow.http.post(f"{wrong_path}?uploads&output=json", headers=flow.auth).status_code == 404


def test_init_params_must_match_preupload(sim: SimServer) -> None:
    flow = Flow(sim, 1000)
    flow.preupload()
    assert (
        flow.http.post(
            f"{flow.url}?uploads&output=json&filesize=999", headers=flow.auth
        ).status_code
        == 400
    )
    assert (
        flow.http.post(f"{flow.url}?uploads&output=json&partsize=5", headers=flow.auth).status_code
        == 400
    )
    ok = flow.http.post(
        f"{flow.url}?uploads&output=json&profile=ugcfx/bup&filesize=1000"
        f"&partsize={flow.chunk_size}&biz_id={flow.pre['biz_id']}",
        headers=flow.auth,
    )
    assert ok.status_code == 200 and ok.json()["OK"] == 1


def test_completion_needs_every_part_and_a_consistent_list(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(3 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    flow.put(3, data)
    assert flow.complete().status_code == 400  # part 2 never arrived
    flow.put(2, data)
    assert flow.complete(parts=[1, 2]).status_code == 400  # list misses part 3
    assert flow.complete(parts=[1, 2, 3, 4]).status_code == 400  # part 4 does not exist
    assert flow.complete(parts=[1, 2, 2, 3]).status_code == 400  # duplicate
    malformed = flow.http.post(
        flow.url,
        params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
        content=b'{"parts": "all"}',
        headers=flow.auth,
    )
    assert malformed.status_code == 400
    assert flow.complete(biz_id=1).status_code == 400
    assert sim.uploads() == []
    assert flow.complete().json()["OK"] == 1
    assert len(sim.uploads()) == 1


def test_second_completion_is_ok_but_adds_nothing(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    first = flow.upload_all(data)
    again = flow.complete()
    assert again.status_code == 200 and again.json() == first
    assert len(sim.uploads()) == 1
    assert flow.put(1, data).status_code == 400  # no more parts after completion


def test_repeated_part_same_bytes_is_fine_different_bytes_is_corrupt(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    assert flow.put(1, data).status_code == 200  # a retry of a part already hashed
    flow.put(2, data)
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()

    sim.reset()
    small_chunks(sim)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    changed = bytes([data[0] ^ 1]) + data[1:]
    assert flow.put(1, changed).status_code == 200  # upos accepts it ...
    flow.put(2, data)
    sessions = httpx.get(f"{sim.url}/_sim/sessions").json()["sessions"]
    assert "part 1" in sessions[0]["corrupt"]
    response = flow.complete()  # ... but the object can no longer be assembled
    assert response.status_code == 400 and "corrupt" in response.json()["message"]
    assert sim.uploads() == []


def test_held_part_may_be_replaced_before_it_is_hashed(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    garbage = bytes(len(data))
    flow.put(2, garbage)  # held: part 1 has not arrived
    flow.put(2, data)  # replaced before hashing
    flow.put(1, data)
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()


def test_session_expires(sim: SimServer) -> None:
    sim.config(session_ttl_seconds=0.5)
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    time.sleep(0.7)
    response = flow.put(1, data)
    assert response.status_code == 403
    assert response.headers["X-Upos-Auth"].startswith("AUTH_TS_GT_TTL")
    assert flow.init().status_code == 403


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


# --- risk model ----------------------------------------------------------------------


def test_preupload_budget_per_ip_then_406(sim: SimServer) -> None:
    sim.config(risk={"preupload_budget": 2, "window_seconds": 3600})
    flow = Flow(sim, 10)
    assert flow.preupload().status_code == 200
    assert flow.preupload().status_code == 200
    third = flow.preupload()
    assert third.status_code == 406
    assert third.json() == {"code": 406, "message": TOO_FAST}
    # Another IP has its own budget.
    assert Flow(sim, 10, ip="127.0.0.2").preupload().status_code == 200
    per_ip = httpx.get(f"{sim.url}/_sim/requests", params={"op": "preupload", "ip": "127.0.0.1"})
    assert [r["status"] for r in per_ip.json()["requests"]] == [200, 200, 406]


def test_preupload_budget_window_slides(sim: SimServer) -> None:
    sim.config(risk={"preupload_budget": 1, "window_seconds": 0.5})
    flow = Flow(sim, 10)
    assert flow.preupload().status_code == 200
    assert flow.preupload().status_code == 406
    time.sleep(0.6)
    assert flow.preupload().status_code == 200


def test_always_406_on_preupload_and_put(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(risk={"always_406": ["127.0.0.1"]})
    assert flow.put(1, data).status_code == 406
    assert flow.preupload().status_code == 406
    assert Flow(sim, 10, ip="127.0.0.2").preupload().status_code == 200


def test_code_601_and_21540(sim: SimServer) -> None:
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    sim.config(risk={"code_601": ["127.0.0.1"]})
    reply = flow.preupload()
    assert reply.status_code == 200
    body = reply.json()
    assert body["OK"] == 0 and body["code"] == 601 and body["message"] == TOO_FAST
    assert body["detail"]["v_voucher"].startswith("voucher_")
    submit = httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    assert submit.json()["code"] == 21540
    assert sim.submissions() == []


# --- faults --------------------------------------------------------------------------


def test_random_5xx(sim: SimServer) -> None:
    sim.config(faults={"status_5xx_rate": 1.0})
    reply = Flow(sim, 10).preupload()
    assert reply.status_code in (500, 502, 503, 504)
    sim.config(faults={"status_5xx_rate": 0.0})
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"status_5xx_rate": 1.0})
    assert flow.put(1, data).status_code >= 500
    assert flow.complete().status_code >= 500


def test_5xx_rate_is_seeded(sim: SimServer) -> None:
    def outcomes() -> list[int]:
        sim.reset()
        sim.config(seed=7, faults={"status_5xx_rate": 0.5})
        return [Flow(sim, 10).preupload().status_code for _ in range(12)]

    first = outcomes()
    assert first == outcomes()
    assert 200 in first and any(status >= 500 for status in first)


def test_delay(sim: SimServer) -> None:
    sim.config(faults={"delay_seconds": 0.3})
    started = time.perf_counter()
    assert Flow(sim, 10).preupload().status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_drop_put_resets_the_connection(sim: SimServer) -> None:
    sim.config(chunk_size=4 * 1024 * 1024, faults={"drop_put_rate": 1.0})
    data = os.urandom(4 * 1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        flow.put(1, data)
    assert [r["status"] for r in sim.requests() if r["op"] == "put"] == [0]
    sim.config(faults={"drop_put_rate": 0.0})
    assert flow.put(1, data).status_code == 200  # the sim keeps serving


def test_fail_next_status_code_drop_and_ip_filter(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(
        faults={
            "fail_next": [
                {"op": "put", "action": "status", "status": 503, "count": 2},
                {"op": "put", "action": "code", "code": 601, "ip": "127.0.0.9"},
                {"op": "complete", "action": "code", "code": 601},
                {"op": "submit", "action": "code", "code": 21540},
            ]
        }
    )
    assert flow.put(1, data).status_code == 503
    assert flow.put(1, data).status_code == 503
    assert flow.put(1, data).status_code == 200  # count used up; the 127.0.0.9 rule stays
    code = flow.complete()
    assert code.status_code == 200 and code.json()["code"] == 601 and code.json()["OK"] == 0
    assert flow.complete().json()["OK"] == 1
    remaining = sim.config()["faults"]["fail_next"]
    assert [(r["op"], r.get("ip")) for r in remaining] == [("put", "127.0.0.9"), ("submit", None)]
    submit = httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    assert submit.json()["code"] == 21540

    sim.config(faults={"fail_next": [{"op": "preupload", "action": "drop"}]})
    with pytest.raises(httpx.TransportError):
        Flow(sim, 10).preupload()
    sim.config(faults={"fail_next": [{"op": "preupload", "action": "status", "status": 406}]})
    assert Flow(sim, 10).preupload().status_code == 406


def test_fail_next_drop_put_mid_body(sim: SimServer) -> None:
    sim.config(chunk_size=4 * 1024 * 1024)
    data = os.urandom(4 * 1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "drop"}]})
    with pytest.raises(httpx.TransportError):
        flow.put(1, data)
    assert flow.put(1, data).status_code == 200


def test_fail_next_stall(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "stall", "seconds": 0.5}]})
    started = time.perf_counter()
    assert flow.put(1, data).status_code == 200
    assert time.perf_counter() - started >= 0.5
    sim.config(faults={"fail_next": [{"op": "complete", "action": "stall"}]})  # stalls for good
    with pytest.raises(httpx.ReadTimeout):
        flow.http.post(
            flow.url,
            params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
            json={"parts": [{"partNumber": 1, "eTag": "etag"}]},
            headers=flow.auth,
            timeout=0.5,
        )
    assert flow.complete().json()["OK"] == 1


def test_fail_next_stall_put_for_good(sim: SimServer) -> None:
    sim.config(chunk_size=1024 * 1024)
    data = os.urandom(1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "stall"}]})
    with client(timeout=0.5) as impatient, pytest.raises(httpx.TimeoutException):
        flow.put(1, data, http=impatient)
    assert flow.put(1, data).status_code == 200
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()


def test_bandwidth_cap_per_ip(sim: SimServer) -> None:
    size = 2 * 1024 * 1024
    sim.config(chunk_size=size, faults={"bandwidth_bps_per_ip": {"127.0.0.2": 4_000_000}})
    data = os.urandom(size)

    def timed_put(ip: str) -> float:
        flow = Flow(sim, size, ip=ip)
        flow.preupload()
        flow.init()
        started = time.perf_counter()
        assert flow.put(1, data).status_code == 200
        return time.perf_counter() - started

    capped = timed_put("127.0.0.2")
    free = timed_put("127.0.0.3")
    assert capped >= 0.4  # 2 MiB at 4 MB/s is ~0.52 s, less the initial burst
    assert free < capped / 3
    sim.config(faults={"bandwidth_bps": 4_000_000, "bandwidth_bps_per_ip": {"127.0.0.2": 0}})
    assert timed_put("127.0.0.3") >= 0.4  # the default cap now applies to every IP
    assert timed_put("127.0.0.2") < 0.3  # ... except one exempted by an override of 0


# --- control API -----------------------------------------------------------------------


def test_reset_clears_everything(sim: SimServer) -> None:
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    sim.config(chunk_size=123, risk={"preupload_budget": 1}, faults={"fail_next": [{"op": "put"}]})
    httpx.post(
        f"{sim.url}/_sim/accounts",
        json={"cookies": "SESSDATA=sim-sessdata; bili_jct=sim-csrf", "mid": 10001, "expired": True},
    )
    assert sim.uploads() and sim.submissions() and sim.requests()
    sim.reset()
    assert sim.uploads() == [] and sim.submissions() == [] and sim.requests() == []
    config = sim.config()
    assert config["chunk_size"] == 10 * 1024 * 1024
    assert config["risk"]["preupload_budget"] == 0 and config["faults"]["fail_next"] == []
    assert httpx.get(f"{sim.url}/_sim/sessions").json()["sessions"] == []
    assert Flow(sim, 10).preupload().json()["OK"] == 1  # built-in account is valid again
    assert flow.put(1, data).status_code == 404  # the old session is gone


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"chunk_sise": 5}', "chunk_sise: unknown setting"),
        (b'{"chunk_size": 0}', "chunk_size"),
        (b'{"threads": "many"}', "threads"),
        (b'{"faults": {"status_5xx_rate": 1.5}}', "faults.status_5xx_rate"),
        (b'{"faults": {"fail_next": [{"op": "upload"}]}}', "faults.fail_next.0.op"),
        (b'{"faults": {"fail_next": [{"op": "put", "action": "explode"}]}}', "action"),
        (b'{"risk": {"always_406": "127.0.0.1"}}', "risk.always_406"),
        (b'{"lines": {"cs_tx": {"delay_seconds": -1}}}', "delay_seconds"),
    ],
)
def test_bad_config_bodies_get_400_with_a_reason(sim: SimServer, body: bytes, needle: str) -> None:
    reply = httpx.post(f"{sim.url}/_sim/config", content=body)
    assert reply.status_code == 400
    assert needle in reply.json()["error"]
    assert sim.config()["chunk_size"] == 10 * 1024 * 1024  # nothing changed


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"nope", "not valid JSON"),
        (b'{"cookies": "bili_jct=x", "mid": 1}', "SESSDATA"),
        (b'{"cookies": "SESSDATA=x", "mid": 1}', "bili_jct"),
        (b'{"cookies": "SESSDATA=x; bili_jct=y"}', "mid"),
        (b'{"access_key": 5, "mid": 1}', "access_key"),
        (b'{"access_key": "k", "mid": 1, "colour": "red"}', "colour"),
    ],
)
def test_bad_account_bodies_get_400(sim: SimServer, body: bytes, needle: str) -> None:
    reply = httpx.post(f"{sim.url}/_sim/accounts", content=body)
    assert reply.status_code == 400
    assert needle in reply.json()["error"]


def test_config_post_deep_merges(sim: SimServer) -> None:
    sim.config(faults={"delay_seconds": 0.1}, lines={"cs_tx": {"delay_seconds": 0.2}})
    config = sim.config(faults={"drop_put_rate": 0.5})
    assert config["faults"]["delay_seconds"] == 0.1 and config["faults"]["drop_put_rate"] == 0.5
    assert config["lines"]["cs_tx"]["delay_seconds"] == 0.2 and "cs_bda2" in config["lines"]


# --- the command ----------------------------------------------------------------------


def test_cli_config_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("chunk_size: 4096\nthreads: 5\nrisk:\n  preupload_budget: 1\n")
    server = start_sim(tmp_path, "--config", str(config), "--threads", "7")
    try:
        current = server.config()
        assert current["chunk_size"] == 4096 and current["threads"] == 7
        assert current["risk"]["preupload_budget"] == 1
        server.config(chunk_size=1)
        server.reset()
        assert server.config()["chunk_size"] == 4096  # reset returns to the startup config
    finally:
        stop_process(server.proc)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "nowhere"], "listen"),
        (["--chunk-size", "0"], "chunk_size"),
    ],
)
def test_cli_bad_settings_exit_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = subprocess.run(
        bupmesh_command("sim-bili", *args), capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_cli_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("faults:\n  drop_put_rate: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "bupmesh", "sim-bili", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "faults.drop_put_rate" in result.stderr
