"""Speaking to the simulator by hand: one upload request by request, submission bodies.

Shared by the simulator's HTTP tests. Source IPs other than 127.0.0.1 come
from binding the client to 127.0.0.2, 127.0.0.3, ... on loopback.
"""

from __future__ import annotations

import hashlib
import math
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx

from tests.conftest import SIM_ACCESS_KEY, SimServer

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
