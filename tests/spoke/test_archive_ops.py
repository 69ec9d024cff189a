"""The agent's Submit operations against the real simulator: a cover and the archive fields
in one add, a lost add found by title and time with and without part lists in the archive
list, appends that add only what is missing, a collection joined once, review states, and
refusals answered with their Bilibili code and problem."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from protocol import mesh_pb2 as pb
from spoke.submitter import execute
from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES, SimServer
from tests.uploader.test_uploader_sim import ops, upload_bytes
from uploader.submit import Submission, VideoPart

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # as the agent runs it


async def part(sim: SimServer, data: bytes) -> VideoPart:
    result = await upload_bytes(sim, data)
    return VideoPart(filename=result.filename, title="P", cid=result.biz_id)


def message(sim: SimServer, submission: Submission, *, attempt: int = 1, **fields: object
            ) -> pb.Submit:  # fmt: skip
    return pb.Submit(submit_id="sub-t", attempt=attempt, member_url=sim.url, api="web",
                     submission=msgspec.json.encode(submission),
                     credentials=pb.BiliCredentials(cookies=SIM_COOKIES), **fields)


def archives(sim: SimServer) -> list[dict]:
    return httpx.get(f"{sim.url}/_sim/archives", timeout=10).json()["archives"]


def covers(sim: SimServer) -> list[dict]:
    return httpx.get(f"{sim.url}/_sim/covers", timeout=10).json()["covers"]


def new_season(sim: SimServer) -> dict:
    return httpx.post(f"{sim.url}/_sim/seasons", json={"title": "合集"}, timeout=10
                      ).json()["season"]


async def test_add_uploads_the_cover_from_the_agent_and_sends_every_field(
        sim: SimServer) -> None:
    videos = [await part(sim, b"one")]
    submission = Submission(title="t", videos=videos, dynamic="动态", no_reprint=1,
                            is_only_self=1, up_close_reply=True, up_close_danmu=True)
    result = await execute(message(sim, submission, cover=PNG))
    assert result.success, result.error_message
    [archive] = archives(sim)
    [cover] = covers(sim)
    assert archive["cover"] == cover["url"] and cover["source_ip"] == "127.0.0.1"
    assert (archive["no_reprint"], archive["is_only_self"]) == (1, 1)
    assert archive["aid"] == result.aid


async def test_app_submission_carries_the_same_fields_and_cover(sim: SimServer) -> None:
    videos = [await part(sim, b"app")]
    submission = Submission(title="t", videos=videos, dynamic="动态", no_reprint=1,
                            up_close_danmu=True, dtime=int(time.time()) + 3 * 3600)
    msg = message(sim, submission, cover=PNG)
    msg.api = "app"
    msg.credentials.access_key = SIM_ACCESS_KEY
    result = await execute(msg)
    assert result.success, result.error_message
    [archive] = archives(sim)
    assert archive["cover"] == covers(sim)[0]["url"] and archive["dtime"] == submission.dtime
    assert (archive["dynamic"], archive["no_reprint"]) == ("动态", 1)
    [submitted] = sim.submissions()
    assert submitted["flavour"] == "app"


@pytest.mark.parametrize("list_videos", [True, False], ids=["list-parts", "no-list-parts"])
async def test_a_later_add_attempt_finds_the_first_by_title_and_time(
        sim: SimServer, list_videos: bool) -> None:
    sim.config(archive={"list_videos": list_videos})
    videos = [await part(sim, b"a"), await part(sim, b"b")]
    submission = Submission(title="同一场", videos=videos)
    first = await execute(message(sim, submission))
    again = await execute(message(sim, submission, attempt=2, since_unix=1.0))
    assert (again.success, again.aid) == (True, first.aid)
    assert len(archives(sim)) == 1
    assert len(ops(sim, "view")) == (0 if list_videos else 1)


async def test_append_adds_only_what_the_archive_lacks_and_keeps_the_settings(
        sim: SimServer) -> None:
    first, late = await part(sim, b"first"), await part(sim, b"late")
    submission = Submission(title="t", videos=[first], up_close_reply=True)
    created = await execute(message(sim, submission))
    late_sub = msgspec.structs.replace(submission, videos=[first, late])
    result = await execute(message(sim, late_sub, operation="append", aid=created.aid))
    assert result.success, result.error_message
    assert (list(result.added), result.videos) == ([late.filename], 2)
    again = await execute(message(sim, late_sub, operation="append", aid=created.aid))
    assert (list(again.added), again.videos) == ([], 2)
    [archive] = archives(sim)
    assert [e["added"] for e in archive["edits"]] == [[late.filename]]
    assert archive["up_close_reply"] in (True, 1)


async def test_append_over_the_limit_is_refused_with_its_code(sim: SimServer) -> None:
    videos = [await part(sim, bytes([n])) for n in range(4)]
    created = await execute(message(sim, Submission(title="t", videos=videos[:1])))
    result = await execute(message(sim, Submission(title="t", videos=videos),
                                   operation="append", aid=created.aid, parts_per_request=2))
    assert (result.success, result.error_kind) == (False, "bad_request")
    assert (result.error_code, result.problem) == (21058, "too_many_parts")
    assert not ops(sim, "edit")


async def test_season_joins_once_and_a_missing_one_says_so(sim: SimServer) -> None:
    season = new_season(sim)
    videos = [await part(sim, b"s")]
    submission = Submission(title="第一场", videos=videos)
    created = await execute(message(sim, submission))
    for _ in range(2):
        joined = await execute(message(sim, submission, operation="season", aid=created.aid,
                                       season_id=season["season_id"]))
        assert joined.success, joined.error_message
    [archive] = archives(sim)
    assert archive["season"]["season_id"] == season["season_id"]
    missing = await execute(message(sim, submission, operation="season", aid=created.aid,
                                    season_id=season["season_id"] + 999))
    assert (missing.success, missing.problem) == (False, "season_not_found")


async def test_review_reports_listed_and_viewed_archives(sim: SimServer) -> None:
    sim.config(archive={"review": {"delay_seconds": 0, "outcome": "reject", "reason": "不行"}})
    videos = [await part(sim, b"r")]
    created = await execute(message(sim, Submission(title="t", videos=videos)))
    result = await execute(message(sim, Submission(title="t", videos=videos),
                                   operation="review", review_aids=[created.aid, 987654]))
    assert result.success, result.error_message
    [state] = result.reviews
    assert (state.aid, state.review, state.reason) == (created.aid, "rejected", "不行")


async def test_dtime_outside_its_window_is_refused_before_sending(sim: SimServer) -> None:
    videos = [await part(sim, b"d")]
    result = await execute(message(sim, Submission(title="t", videos=videos, dtime=1)))
    assert (result.success, result.error_code, result.problem) == \
        (False, 21006, "dtime_out_of_range")
    assert not ops(sim, "submit")


async def test_unknown_operations_and_missing_aids_are_bad_requests(sim: SimServer) -> None:
    submission = Submission(title="t", videos=[VideoPart(filename="x", title="P")])
    odd = await execute(message(sim, submission, operation="delete"))
    assert (odd.success, odd.error_kind) == (False, "bad_request")
    no_aid = await execute(message(sim, submission, operation="append"))
    assert (no_aid.success, no_aid.error_kind) == (False, "bad_request")
    assert "aid" in no_aid.error_message
