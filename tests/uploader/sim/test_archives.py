"""The simulator's archives: submission fields and limits, covers, the view, the list, review.

Plain HTTP to a real simulator process (the `sim` fixture, reset before each
test). Review delays are waited on as conditions, never slept through.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.archive_flow import (
    OTHER_COOKIES,
    add_other_account,
    archives,
    body,
    decide,
    listing,
    submit,
    uploaded,
    view,
    wait_for,
)
from tests.uploader.sim.flow import COOKIES, app_query

HOUR = 3600


# -- submission fields -----------------------------------------------------------------


def test_new_fields_reach_the_ledger(sim: SimServer) -> None:
    videos = uploaded(sim)
    dtime = int(time.time()) + 3 * HOUR
    reply = submit(sim, body(
        videos, cover="https://archive.biliimg.com/bfs/archive/x.jpg", dtime=dtime,
        no_reprint=1, is_only_self=1, up_close_reply=True, up_close_danmu=True, dynamic="动态",
    ))  # fmt: skip
    assert reply["code"] == 0
    [record] = archives(sim)
    assert record["cover"].endswith("/x.jpg") and record["dtime"] == dtime
    assert (record["no_reprint"], record["is_only_self"]) == (1, 1)
    assert record["up_close_reply"] is True and record["up_close_danmu"] is True
    assert record["dynamic"] == "动态" and record["edits"] == [] and record["season"] is None
    assert record["verdict"] == "scheduled" and record["state"] == -40  # approved, not yet public


def test_defaults_when_the_new_fields_are_absent(sim: SimServer) -> None:
    assert submit(sim, body(uploaded(sim)))["code"] == 0
    [record] = sim.submissions()
    assert record["dtime"] is None and record["no_reprint"] == 0
    assert record["up_close_reply"] is False and record["is_only_self"] == 0


@pytest.mark.parametrize(
    ("ahead", "code"),
    [(HOUR, 21006), (16 * 24 * HOUR, 21006), (3 * HOUR, 0), (14 * 24 * HOUR, 0)],
)
def test_dtime_window(sim: SimServer, ahead: int, code: int) -> None:
    reply = submit(sim, body(uploaded(sim), dtime=int(time.time()) + ahead))
    assert reply["code"] == code
    if code:
        assert "15天" in reply["message"] and sim.submissions() == []


def test_dtime_window_is_a_switch(sim: SimServer) -> None:
    sim.config(archive={"dtime_min_seconds": 4 * HOUR})  # the window biliup once met
    assert submit(sim, body(uploaded(sim), dtime=int(time.time()) + 3 * HOUR))["code"] == 21006


def test_title_limits(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    assert submit(sim, body(videos, title="标" * 81))["code"] == 21103
    long_part = [videos[0], {**videos[1], "title": "p" * 81}]
    reply = submit(sim, body(long_part))
    assert reply["code"] == 21104 and reply["message"].startswith("第(2)个视频的标题过长")
    assert submit(sim, body(videos, title="标" * 80))["code"] == 0


def test_more_than_100_parts_is_21058(sim: SimServer) -> None:
    fake = [{"filename": f"n{i:05d}", "title": f"P{i}", "cid": 0} for i in range(101)]
    reply = submit(sim, body(fake))
    assert reply["code"] == 21058 and "最大值为100个" in reply["message"]


def test_part_limit_is_a_switch(sim: SimServer) -> None:
    sim.config(archive={"max_parts": 2})
    videos = uploaded(sim, 3)
    assert submit(sim, body(videos))["code"] == 21058
    assert submit(sim, body(videos[:2]))["code"] == 0


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"desc": "字" * 2001}, 21010, "简介"),
        ({"cover": "/home/rec/cover.jpg"}, -400, "cover"),
        ({"no_reprint": 2}, -400, "no_reprint"),
        ({"up_close_reply": "yes"}, -400, "up_close_reply"),
        ({"dtime": "tomorrow"}, -400, "dtime"),
    ],
)
def test_new_fields_are_checked(sim: SimServer, change: dict, code: int, needle: str) -> None:
    reply = submit(sim, body(uploaded(sim), **change))
    assert reply["code"] == code and needle in reply["message"]
    assert sim.submissions() == []


def test_app_submission_checks_the_same_fields(sim: SimServer) -> None:
    videos = uploaded(sim)
    url = f"{sim.url}/x/vu/app/add?{app_query()}"
    assert httpx.post(url, json=body(videos, title="x" * 81)).json()["code"] == 21103
    ok = httpx.post(url, json=body(videos, no_reprint=1, dtime=int(time.time()) + 3 * HOUR))
    assert ok.json()["code"] == 0 and sim.submissions()[0]["no_reprint"] == 1


# -- covers --------------------------------------------------------------------------------


def test_covers_are_kept_with_their_bytes(sim: SimServer) -> None:
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    cover = "data:image/png;base64," + base64.b64encode(image).decode()
    reply = httpx.post(f"{sim.url}/x/vu/web/cover/up", data={"cover": cover, "csrf": "sim-csrf"},
                       cookies=COOKIES).json()  # fmt: skip
    url = reply["data"]["url"]
    name = url.rsplit("/", 1)[1]
    assert name == hashlib.sha1(image).hexdigest() + ".png"
    [kept] = httpx.get(f"{sim.url}/_sim/covers").json()["covers"]
    assert (kept["url"], kept["size"], kept["md5"]) == (url, len(image), hashlib.md5(image).hexdigest())
    assert httpx.get(f"{sim.url}/_sim/covers/{name}").content == image
    assert httpx.get(f"{sim.url}/_sim/covers/nope.png").status_code == 404
    svg = "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    refused = httpx.post(f"{sim.url}/x/vu/web/cover/up", data={"cover": svg, "csrf": "sim-csrf"},
                         cookies=COOKIES).json()  # fmt: skip
    assert refused["code"] == -400
    assert submit(sim, body(uploaded(sim), cover=url))["code"] == 0
    assert sim.submissions()[0]["cover"] == url


# -- view and list -----------------------------------------------------------------------


def test_view_by_aid_or_bvid_lists_file_names(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    created = submit(sim, body(videos))["data"]
    for query in ({"aid": created["aid"]}, {"bvid": created["bvid"]}):
        reply = view(sim, **query)
        assert reply["code"] == 0
        archive = reply["data"]["archive"]
        assert (archive["aid"], archive["bvid"], archive["state"]) == (
            created["aid"], created["bvid"], 0)  # fmt: skip
        assert [v["filename"] for v in reply["data"]["videos"]] == [v["filename"] for v in videos]
        assert [v["cid"] for v in reply["data"]["videos"]] == [v["cid"] for v in videos]


def test_view_refuses_strangers_and_unknown_archives(sim: SimServer) -> None:
    created = submit(sim, body(uploaded(sim)))["data"]
    add_other_account(sim)
    assert view(sim, cookies=OTHER_COOKIES, aid=created["aid"])["code"] == -404
    assert view(sim, aid=created["aid"] + 1)["code"] == -404
    assert view(sim, bvid="BV1xx411c7mD")["code"] == -404
    assert view(sim)["code"] == -404
    assert view(sim, cookies={}, aid=created["aid"])["code"] == -101


def test_list_carries_review_fields_and_part_lists_by_switch(sim: SimServer) -> None:
    videos = uploaded(sim)
    submit(sim, body(videos))
    [item] = listing(sim)["data"]["arc_audits"]
    assert item["Archive"]["state"] == 0 and item["Archive"]["reject_reason"] == ""
    assert item["Archive"]["ctime"] > 0
    assert [v["filename"] for v in item["Videos"]] == [videos[0]["filename"]]
    sim.config(archive={"list_videos": False})
    [item] = listing(sim)["data"]["arc_audits"]
    assert item["Videos"] is None and item["Archive"]["aid"] > 0


# -- review ---------------------------------------------------------------------------------


def test_review_is_immediate_approval_by_default(sim: SimServer) -> None:
    aid = submit(sim, body(uploaded(sim)))["data"]["aid"]
    assert view(sim, aid=aid)["data"]["archive"]["state"] == 0
    assert archives(sim)[0]["verdict"] == "approved"


def test_review_waits_then_approves(sim: SimServer) -> None:
    sim.config(archive={"review": {"delay_seconds": 0.5}})
    aid = submit(sim, body(uploaded(sim)))["data"]["aid"]
    first = view(sim, aid=aid)["data"]["archive"]
    assert (first["state"], first["state_desc"]) == (-30, "审核中")
    wait_for(lambda: view(sim, aid=aid)["data"]["archive"]["state"] == 0)


@pytest.mark.parametrize("field", ["reject_reason", "state_desc"])
def test_review_rejects_with_a_reason_in_either_field(sim: SimServer, field: str) -> None:
    sim.config(archive={"review": {"outcome": "reject", "reason": "封面违规", "reason_field": field}})
    aid = submit(sim, body(uploaded(sim)))["data"]["aid"]
    archive = view(sim, aid=aid)["data"]["archive"]
    assert archive["state"] == -2 and archive[field] == "封面违规"
    other = "state_desc" if field == "reject_reason" else "reject_reason"
    assert archive[other] != "封面违规"
    [item] = listing(sim)["data"]["arc_audits"]
    assert item["Archive"][field] == "封面违规"


def test_one_archive_decided_by_the_control(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    first = submit(sim, body(videos[:1]))["data"]["aid"]
    second = submit(sim, body(videos[1:]))["data"]["aid"]
    decided = decide(sim, first, outcome="reject", reason="搬运")
    assert decided["verdict"] == "rejected" and decided["reject_reason"] == "搬运"
    decide(sim, second, outcome="pending")
    assert {a["aid"]: a["verdict"] for a in archives(sim)} == {first: "rejected",
                                                              second: "pending"}  # fmt: skip
    decide(sim, second, outcome="approve", after_seconds=0.3)
    assert view(sim, aid=second)["data"]["archive"]["state"] == -30
    wait_for(lambda: view(sim, aid=second)["data"]["archive"]["state"] == 0)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [({"outcome": "maybe"}, "outcome"), ({"outcome": "approve", "when": 1}, "when"),
     ({"outcome": "reject", "after_seconds": -1}, "after_seconds")],
)  # fmt: skip
def test_review_control_refuses_bad_bodies(sim: SimServer, payload: dict, needle: str) -> None:
    aid = submit(sim, body(uploaded(sim)))["data"]["aid"]
    reply = httpx.post(f"{sim.url}/_sim/archives/{aid}/review", json=payload)
    assert reply.status_code == 400 and needle in reply.json()["error"]
    assert httpx.post(f"{sim.url}/_sim/archives/1/review", json={"outcome": "approve"}
                      ).status_code == 404  # fmt: skip


def test_reset_forgets_archives_covers_and_collections(sim: SimServer) -> None:
    submit(sim, body(uploaded(sim)))
    httpx.post(f"{sim.url}/_sim/seasons", json={"title": "s"}).raise_for_status()
    sim.reset()
    assert archives(sim) == []
    assert httpx.get(f"{sim.url}/_sim/seasons").json()["seasons"] == []
    assert httpx.get(f"{sim.url}/_sim/covers").json()["covers"] == []
