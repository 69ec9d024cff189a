"""Archives spoken by hand: uploads to submit, add/v3 and edit bodies, the view, the controls.

Shared by the simulator's archive, edit and collection tests.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from tests.conftest import SimServer
from tests.uploader.sim.flow import COOKIES, Flow, submit_body

OTHER_COOKIES = {"SESSDATA": "other", "bili_jct": "other-csrf", "DedeUserID": "20002"}


def uploaded(sim: SimServer, count: int = 1, cookies: dict | None = None) -> list[dict]:
    """``count`` completed uploads as submission videos (filename, title, cid)."""
    videos = []
    for n in range(1, count + 1):
        data = os.urandom(100)
        flow = Flow(sim, len(data), name=f"part{n}.flv")
        if cookies is not None:
            flow.http.cookies.clear()
            flow.http.cookies.update(cookies)
        flow.upload_all(data)
        videos.append({"filename": flow.filename, "title": f"P{n}", "desc": "",
                       "cid": flow.pre["biz_id"]})  # fmt: skip
    return videos


def body(videos: list[dict], **extra: Any) -> dict:
    return {**submit_body(videos[0]["filename"], videos[0]["cid"]), "videos": videos, **extra}


def submit(sim: SimServer, payload: dict, cookies: dict | None = None) -> dict:
    csrf = (cookies or COOKIES)["bili_jct"]
    return httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"t": int(time.time() * 1000), "csrf": csrf},
        json=payload,
        cookies=cookies or COOKIES,
    ).json()


def edit(sim: SimServer, payload: dict, cookies: dict | None = None, csrf: str | None = None
         ) -> dict:  # fmt: skip
    csrf = csrf or (cookies or COOKIES)["bili_jct"]
    return httpx.post(
        f"{sim.url}/x/vu/web/edit", params={"csrf": csrf}, json={**payload, "csrf": csrf},
        cookies=cookies or COOKIES,
    ).json()  # fmt: skip


def view(sim: SimServer, cookies: dict | None = None, **query: Any) -> dict:
    return httpx.get(
        f"{sim.url}/x/vupre/web/archive/view", params={**query, "topic_grey": 1},
        cookies=COOKIES if cookies is None else cookies,
    ).json()  # fmt: skip


def listing(sim: SimServer, **query: Any) -> dict:
    return httpx.get(
        f"{sim.url}/x/web/archives",
        params={"status": "is_pubing,pubed,not_pubed", "pn": 1, "ps": 20, **query},
        cookies=COOKIES,
    ).json()


def archives(sim: SimServer) -> list[dict]:
    return httpx.get(f"{sim.url}/_sim/archives", timeout=10).json()["archives"]


def decide(sim: SimServer, aid: int, **review: Any) -> dict:
    response = httpx.post(f"{sim.url}/_sim/archives/{aid}/review", json=review, timeout=10)
    response.raise_for_status()
    return response.json()["archive"]


def add_other_account(sim: SimServer) -> None:
    httpx.post(
        f"{sim.url}/_sim/accounts",
        json={"cookies": "; ".join(f"{k}={v}" for k, v in OTHER_COOKIES.items())},
    ).raise_for_status()


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
