"""The simulator's archive edit: the whole archive replaces the old one, parts appended or removed.

Plain HTTP to a real simulator process (the `sim` fixture, reset before each test).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.archive_flow import (
    OTHER_COOKIES,
    add_other_account,
    archives,
    body,
    edit,
    submit,
    uploaded,
    view,
    wait_for,
)

HOUR = 3600


def test_edit_appends_a_late_part(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    aid = submit(sim, body(videos[:1]))["data"]["aid"]
    reply = edit(sim, {**body(videos), "aid": aid})
    assert reply["code"] == 0 and reply["data"]["aid"] == aid
    [record] = archives(sim)
    assert [v["filename"] for v in record["videos"]] == [v["filename"] for v in videos]
    [change] = record["edits"]
    assert change["added"] == [videos[1]["filename"]] and change["removed"] == []
    assert [v["filename"] for v in view(sim, aid=aid)["data"]["videos"]] == [
        v["filename"] for v in videos
    ]


def test_edit_replaces_everything_it_is_given(sim: SimServer) -> None:
    """A field left out is cleared and a video left out is removed, as the real edit does."""
    videos = uploaded(sim, 2)
    aid = submit(sim, body(videos, tag="a,b", dynamic="d"))["data"]["aid"]
    payload = {**body(videos[1:]), "aid": aid}
    del payload["tag"], payload["dynamic"]
    assert edit(sim, payload)["code"] == 0
    [record] = archives(sim)
    assert record["tag"] == "" and record["dynamic"] == ""
    assert [v["filename"] for v in record["videos"]] == [videos[1]["filename"]]
    assert record["edits"][0]["removed"] == [videos[0]["filename"]]


def test_edit_counts_only_the_parts_it_adds(sim: SimServer) -> None:
    sim.config(archive={"max_parts": 2})
    videos = uploaded(sim, 5)
    aid = submit(sim, body(videos[:2]))["data"]["aid"]
    assert edit(sim, {**body(videos), "aid": aid})["code"] == 21058  # 3 new at once
    assert len(archives(sim)[0]["videos"]) == 2
    assert edit(sim, {**body(videos[:4]), "aid": aid})["code"] == 0  # 2 new: 4 in all
    assert edit(sim, {**body(videos), "aid": aid})["code"] == 0  # 1 new: 5 > max_parts in all
    assert len(archives(sim)[0]["videos"]) == 5


def test_edit_checks_titles_like_a_submission(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    aid = submit(sim, body(videos[:1]))["data"]["aid"]
    assert edit(sim, {**body(videos, title="x" * 81), "aid": aid})["code"] == 21103
    late = [videos[0], {**videos[1], "title": "p" * 81}]
    assert edit(sim, {**body(late), "aid": aid})["code"] == 21104
    assert archives(sim)[0]["edits"] == []


def test_edit_keeps_a_dtime_it_does_not_change(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    dtime = int(time.time()) + 3 * HOUR
    aid = submit(sim, body(videos[:1], dtime=dtime))["data"]["aid"]
    sim.config(archive={"dtime_min_seconds": 4 * HOUR})  # the kept dtime no longer fits
    assert edit(sim, {**body(videos, dtime=dtime), "aid": aid})["code"] == 0
    assert edit(sim, {**body(videos, dtime=dtime + 60), "aid": aid})["code"] == 21006


def test_edit_refuses_strangers_and_unknown_archives(sim: SimServer) -> None:
    videos = uploaded(sim)
    aid = submit(sim, body(videos))["data"]["aid"]
    add_other_account(sim)
    assert edit(sim, {**body(videos), "aid": aid}, cookies=OTHER_COOKIES)["code"] == -404
    assert edit(sim, {**body(videos), "aid": aid + 1})["code"] == -404
    assert edit(sim, body(videos))["code"] == -404  # no aid
    assert edit(sim, {**body(videos), "aid": aid}, csrf="wrong")["code"] == -111
    foreign = uploaded(sim, cookies=OTHER_COOKIES)
    reply = edit(sim, {**body(videos + foreign), "aid": aid})
    assert reply["code"] == -400 and "not an upload of this account" in reply["message"]
    assert archives(sim)[0]["edits"] == []


def test_an_edit_goes_back_to_review(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    aid = submit(sim, body(videos[:1]))["data"]["aid"]
    assert view(sim, aid=aid)["data"]["archive"]["state"] == 0
    sim.config(archive={"review": {"delay_seconds": 0.5}})
    assert edit(sim, {**body(videos), "aid": aid})["code"] == 0
    assert view(sim, aid=aid)["data"]["archive"]["state"] == -30
    wait_for(lambda: view(sim, aid=aid)["data"]["archive"]["state"] == 0)


def test_lose_reply_edits_but_answers_nothing(sim: SimServer) -> None:
    videos = uploaded(sim, 2)
    aid = submit(sim, body(videos[:1]))["data"]["aid"]
    sim.config(faults={"fail_next": [{"op": "edit", "action": "lose_reply"}]})
    with pytest.raises(httpx.TransportError):
        edit(sim, {**body(videos), "aid": aid})
    assert len(archives(sim)[0]["videos"]) == 2  # it took effect all the same
